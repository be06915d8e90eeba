"""The sandbox's pieces that need no process: uid allocation, reachability, the bwrap command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbfleet.runtime.base import FlavorLimits
from nbfleet.runtime.environments import (
    BuiltEnvironment,
    EnvironmentSpec,
    ImageEnvironmentError,
    Interpreter,
    reachable_by_others,
)
from nbfleet.runtime.sandbox import Bubblewrap, InstanceDirs, SandboxUnavailable, _untraversable, parse_uid_range

from ..images import make_reachable


def test_uid_ranges_are_parsed_and_bounded():
    assert parse_uid_range("1500000000-1509999999") == (1_500_000_000, 1_509_999_999)
    for bad in ("", "5", "10-5", "0-100", "1000-2000000000000", "a-b"):
        with pytest.raises(SandboxUnavailable):
            parse_uid_range(bad)


def test_each_instance_gets_a_uid_of_its_own_kept_across_starts_and_released_on_delete(tmp_path):
    sandbox = Bubblewrap(tmp_path, bwrap="/bin/true", uid_range=(2_000_000, 2_000_049), per_instance_uid=True)
    dirs = [InstanceDirs(tmp_path / "instances" / f"i{n}") for n in range(50)]
    for d in dirs:
        d.root.mkdir(parents=True)
    uids = [sandbox.host_uid(d) for d in dirs]
    assert len(set(uids)) == 50 and all(2_000_000 <= u <= 2_000_049 for u in uids)
    assert [sandbox.host_uid(d) for d in dirs] == uids  # chosen once
    extra = InstanceDirs(tmp_path / "instances" / "one-too-many")
    extra.root.mkdir()
    with pytest.raises(Exception, match="no free host uid"):
        sandbox.host_uid(extra)
    sandbox.release_after(dirs[7])()  # a deleted instance gives its uid back
    assert sandbox.host_uid(extra) == uids[7]


def test_the_first_directory_other_users_cannot_pass_is_named(tmp_path):
    make_reachable(tmp_path)
    open_dir = tmp_path / "open" / "data"
    open_dir.mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / "open", 0o711)
    private = tmp_path / "private"
    (private / "data").mkdir(parents=True)
    os.chmod(private, 0o700)
    if _untraversable(tmp_path) is not None:
        pytest.skip(f"{_untraversable(tmp_path)} above the test's directory is private already")
    assert _untraversable(open_dir) is None
    assert _untraversable(private / "data") == private.resolve()
    assert reachable_by_others(open_dir) and not reachable_by_others(private / "data")


def test_environment_declarations_are_checked():
    spec = EnvironmentSpec.from_json({"python": "3.11", "packages": ["jupyter-server", "numpy>=1.26"]})
    assert spec.packages == ("jupyter-server", "numpy>=1.26")
    for bad in (
        {"python": "3", "packages": ["jupyter-server"]},
        {"python": "3.11; rm -rf /", "packages": ["jupyter-server"]},
        {"python": "3.11", "packages": ["numpy"]},  # nothing to serve notebooks
        {"python": "3.11", "packages": ["jupyter-server", "--index-url=http://evil"]},
        {"python": "3.11", "packages": ["jupyter-server", "-e ."]},
    ):
        with pytest.raises(ImageEnvironmentError):
            EnvironmentSpec.from_json(bad)


def _launch(tmp_path, **options):
    sandbox = Bubblewrap(tmp_path / "data", bwrap="/usr/bin/bwrap", per_instance_uid=False, **options)
    dirs = InstanceDirs(tmp_path / "data" / "instances" / "abc")
    env_dir = tmp_path / "images" / "notebook-x"
    interpreter = Interpreter(
        Path("/usr/bin/python3.11"), "3.11.2", Path("/usr"), (Path("/usr/lib/python3/dist-packages"),)
    )
    environment = BuiltEnvironment(env_dir, env_dir / "bin" / "python", interpreter)
    launch = sandbox.launch(
        ["python", "-m", "jupyter_server"],
        {"JUPYTER_TOKEN": "t", "NBFLEET_INSTANCE_ID": "abc", "NBFLEET_DATA_DIR": str(tmp_path)},
        dirs,
        environment,
        FlavorLimits("f", 1, 512),
        hostname="notebook-abc",
    )
    launch.close()
    return launch.argv, dirs, env_dir


def test_the_sandbox_binds_only_the_volume_the_socket_dir_and_the_image(tmp_path):
    argv, dirs, env_dir = _launch(tmp_path)
    command = argv[argv.index("--") + 1 :]
    args = argv[: argv.index("--")]
    assert command == ["python", "-m", "jupyter_server"]
    writable = [(args[i + 1], args[i + 2]) for i, a in enumerate(args) if a == "--bind"]
    assert writable == [(str(dirs.work), "/home/ma-user/work"), (str(dirs.run), "/run/nbfleet")]
    assert ("--ro-bind", str(env_dir), str(env_dir)) in zip(args, args[1:], args[2:], strict=False)
    # /tmp before anything that could be bound below it; the root read-only after everything.
    assert args.index("/tmp") < args.index(str(env_dir))
    assert args[args.index("--remount-ro") + 1] == "/" and args.index("--remount-ro") > args.index("/run/nbfleet")
    # The host's own site-packages are hidden; nbfleet's markers are not for the notebook.
    assert ("--tmpfs", "/usr/lib/python3/dist-packages") in zip(args, args[1:], strict=False) or not Path(
        "/usr/lib/python3/dist-packages"
    ).is_dir()
    assert ("--unsetenv", "NBFLEET_INSTANCE_ID") in zip(args, args[1:], strict=False)
    assert "--unshare-net" in args and "--disable-userns" in args and "--die-with-parent" in args
    assert not any("JUPYTER_TOKEN" in a or a == "t" for a in argv)  # the token never in argv
    # Memory-backed scratch space is bounded by the flavor.
    tmp = args.index("/tmp")
    assert args[tmp - 3 : tmp] == ["--size", str(512 * 2**20), "--tmpfs"]


def test_host_networking_is_an_explicit_choice(tmp_path):
    argv, _, _ = _launch(tmp_path, network="host")
    assert "--unshare-net" not in argv
