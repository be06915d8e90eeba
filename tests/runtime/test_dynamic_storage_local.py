"""Dynamic storage on the local runtime, for real: a shared directory (bind mount) and a bucket directory of a
local S3-compatible server (s3fs over FUSE) attached to RUNNING sandboxed instances, read and written by
their kernels, detached, kept across stop/start; what an instance must not reach through them."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ..jupyter_client import execute, start_kernel
from ..procs import ServeProcess, SignedClient, unmount_below
from ..s3_server import SECRET_KEY, S3Server, storage_env
from .test_server_local import jupyter_processes, notebook_base

# runtime_only: the store side of mounts runs in tests/api on PostgreSQL too (.ci/run).
pytestmark = [pytest.mark.slow, pytest.mark.runtime_only]

EFS_ID = "6f1c2a9e-1111-4222-8333-0123456789ab"
RO_ID = "6f1c2a9e-2222-4222-8333-0123456789ab"  # the operator's read-only bind mount of a dataset
MARKED_RO_ID = "6f1c2a9e-3333-4222-8333-0123456789ab"  # a writable directory the operator offers read-only
BUCKET = "team-bucket"


def mount_lines() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


def _mountable() -> str | None:
    if os.geteuid() != 0:
        return "mounting needs nbfleet to run as root"
    if not os.path.exists("/dev/fuse") or shutil.which("s3fs") is None:
        return "s3fs and /dev/fuse are needed (apt-get install s3fs)"
    return None


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    why = _mountable()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("storage")
    os.chmod(root, 0o755)
    efs = root / "efs"
    (efs / "team").mkdir(parents=True)
    (efs / "team" / "from-host.txt").write_text("shared file system\n")
    # A file system's own modes apply to the instances (each its own host uid): this one lets everyone write.
    os.chmod(efs / "team", 0o1777)
    # A dataset the operator shares read-only: a read-only bind mount of a writable directory.
    dataset = root / "dataset"
    (dataset / "images").mkdir(parents=True)
    (dataset / "images" / "cat.txt").write_text("a cat\n")
    os.chmod(dataset / "images", 0o1777)  # writable but for the mount's flag
    subprocess.run(["mount", "--bind", str(dataset), str(dataset)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(dataset)], check=True)
    s3 = S3Server(root).start()
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="dir/from-s3.txt", Body=b"object storage\n")
    env = storage_env(s3, efs, EFS_ID, BUCKET)
    env["NBFLEET_STORAGE__EFS"] = json.dumps(
        {
            **json.loads(env["NBFLEET_STORAGE__EFS"]),
            RO_ID: {"path": str(dataset), "projects": ["*"]},
            MARKED_RO_ID: {"path": str(efs), "projects": ["*"], "read_only": True},
        }
    )
    proc = ServeProcess(root / "data", runtime="local", env={**env, "NBFLEET_OBSERVE_INTERVAL": "0.5"}).start()
    api = SignedClient(proc.endpoint, proc.admin_creds())
    yield proc, api, s3, efs
    for nb in api.ok("GET", "/notebooks/all", {"limit": 50})["data"]:
        api.call("DELETE", f"/notebooks/{nb['id']}")
    deadline = time.monotonic() + 60
    while api.ok("GET", "/notebooks/all", {"limit": 50})["total"] and time.monotonic() < deadline:
        time.sleep(0.2)
    api.close()
    proc.terminate()
    for leftover in jupyter_processes(proc.data_dir):
        leftover.kill()
    s3.stop()
    subprocess.run(["umount", str(dataset)], check=True)
    assert unmount_below(root) == []  # deleting the instances unmounted everything


def running(api, name: str) -> dict:
    nb = api.wait_status(api.create(name)["id"], "RUNNING", "CREATE_FAILED", timeout=120)
    assert nb["status"] == "RUNNING", nb["fail_reason"]
    return nb


def wait_mount(api, nb_id, mount_id, *statuses, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        m = api.ok("GET", f"/notebooks/{nb_id}/storage/{mount_id}")
        if m["status"] in statuses:
            return m
        assert time.monotonic() < deadline, f"mount stayed {m['status']}, wanted {statuses}"
        time.sleep(0.1)


def wait_gone(api, nb_id, mount_id, timeout=60.0):
    deadline = time.monotonic() + timeout
    while (r := api.call("GET", f"/notebooks/{nb_id}/storage/{mount_id}")).status_code == 200:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)
    assert r.json()["error_code"] == "ModelArts.6404"


def run(nb, code: str) -> str:
    base = notebook_base(nb)
    return execute(base, nb["token"], start_kernel(base, nb["token"]), code)


EFS_BODY = {
    "category": "EFS",
    "mount_path": "/data/shared/",
    "uri": "6f1c2a9e.sfsturbo.internal:/team",
    "efs_id": EFS_ID,
}
OBS_BODY = {"category": "OBS", "mount_path": "/data/bucket/", "uri": f"obs://{BUCKET}/dir/"}


def test_a_kernel_reads_and_writes_both_mounts_and_detach_removes_them(world):
    proc, api, s3, efs = world
    nb = running(api, "mounts")
    other = running(api, "neighbour")
    shared = api.ok("POST", f"/notebooks/{nb['id']}/storage", body=EFS_BODY)
    bucket = api.ok("POST", f"/notebooks/{nb['id']}/storage", body=OBS_BODY)
    assert shared["status"] == bucket["status"] == "MOUNTING"
    assert wait_mount(api, nb["id"], shared["id"], "MOUNTED", "MOUNT_FAILED")["status"] == "MOUNTED"
    mounted = wait_mount(api, nb["id"], bucket["id"], "MOUNTED", "MOUNT_FAILED")
    assert mounted["status"] == "MOUNTED", mounted["failure_reason"]

    out = run(
        nb,
        "import os\n"
        "print(sorted(os.listdir('/data')))\n"
        "print(open('/data/shared/from-host.txt').read().strip())\n"
        "print(open('/data/bucket/from-s3.txt').read().strip())\n"
        "open('/data/shared/from-kernel.txt', 'w').write('written in the sandbox\\n')\n"
        "open('/data/bucket/from-kernel.txt', 'w').write('written to the bucket\\n')\n"
        "print(sorted(os.listdir('/data/bucket')))\n"
        "print(os.stat('/data/bucket/from-kernel.txt').st_uid, os.getuid())\n"
        f"print({SECRET_KEY!r} in repr(dict(os.environ)))\n",
    )
    lines = out.strip().splitlines()
    assert lines[0] == "['bucket', 'shared']"
    assert lines[1:3] == ["shared file system", "object storage"]
    assert lines[3] == "['from-kernel.txt', 'from-s3.txt']"
    assert lines[4] == "1000 1000"  # the instance's own files, as ma-user
    assert lines[5] == "False"
    assert (efs / "team" / "from-kernel.txt").read_text() == "written in the sandbox\n"
    body = s3.client().get_object(Bucket=BUCKET, Key="dir/from-kernel.txt")["Body"].read()
    assert body == b"written to the bucket\n"

    # Credentials: a root-only file, never in a response, nor in s3fs's argv (ps shows it to every user).
    passwd = proc.data_dir / "storage" / "s3fs.passwd"
    info = os.stat(passwd)
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o600, 0)
    assert SECRET_KEY not in str(api.ok("GET", f"/notebooks/{nb['id']}/storage"))
    assert SECRET_KEY not in str(api.ok("GET", f"/notebooks/{nb['id']}"))
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                assert SECRET_KEY.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                pass

    # The neighbour sees none of it.
    assert run(other, "import os\nprint(sorted(os.listdir('/data')))").strip() == "[]"
    volumes = api.ok("GET", f"/notebooks/{nb['id']}")["data_volumes"]
    assert {(v["mount_path"], v["mount_type"], v["status"]) for v in volumes} == {
        ("/data/shared/", "DYNAMIC", "MOUNTED"),
        ("/data/bucket/", "DYNAMIC", "MOUNTED"),
    }

    api.ok("DELETE", f"/notebooks/{nb['id']}/storage/{bucket['id']}")
    wait_gone(api, nb["id"], bucket["id"])
    assert run(nb, "import os\nprint(sorted(os.listdir('/data')))").strip() == "['shared']"
    api.ok("DELETE", f"/notebooks/{nb['id']}/storage/{shared['id']}")
    wait_gone(api, nb["id"], shared["id"])
    assert run(nb, "import os\nprint(sorted(os.listdir('/data')))").strip() == "[]"
    assert (efs / "team" / "from-host.txt").exists()  # detaching leaves the file system's content alone


def test_links_planted_in_a_shared_file_system_are_never_followed(world):
    proc, api, _s3, efs = world
    nb = running(api, "planter")
    m = api.ok("POST", f"/notebooks/{nb['id']}/storage", body={**EFS_BODY, "mount_path": "/data/fs/"})
    wait_mount(api, nb["id"], m["id"], "MOUNTED")
    run(nb, "import os\nos.symlink('/', '/data/fs/escape')\nos.symlink(os.path.realpath('/etc'), '/data/fs/etc')")
    assert os.path.islink(efs / "team" / "escape")
    for uri in (
        "6f1c2a9e.sfsturbo.internal:/team/escape",
        "6f1c2a9e.sfsturbo.internal:/team/escape/etc",
        "6f1c2a9e.sfsturbo.internal:/team/etc",
    ):
        bad = api.ok("POST", f"/notebooks/{nb['id']}/storage", body={**EFS_BODY, "mount_path": "/data/x/", "uri": uri})
        failed = wait_mount(api, nb["id"], bad["id"], "MOUNT_FAILED", "MOUNTED")
        assert failed["status"] == "MOUNT_FAILED" and "not a directory" in failed["failure_reason"], failed
        api.ok("DELETE", f"/notebooks/{nb['id']}/storage/{bad['id']}")
        wait_gone(api, nb["id"], bad["id"])
    # The instance cannot write /data itself: mount points are nbfleet's.
    out = run(
        nb,
        "import os\ntry:\n    os.mkdir('/data/mine')\n    print('made')\nexcept OSError as e:\n"
        "    print(type(e).__name__)",
    )
    assert out.strip() in ("PermissionError", "OSError")
    missing = api.ok(
        "POST",
        f"/notebooks/{nb['id']}/storage",
        body={**EFS_BODY, "mount_path": "/data/y/", "uri": "6f1c2a9e.sfsturbo.internal:/team/nope"},
    )
    assert "does not exist" in wait_mount(api, nb["id"], missing["id"], "MOUNT_FAILED")["failure_reason"]


def test_a_bucket_the_store_refuses_fails_with_its_reason(world):
    proc, api, s3, _efs = world
    nb = running(api, "no-such-bucket")
    # The operator allowed a bucket the store does not have (any more): the mount fails with the store's reason.
    store = s3.client()
    kept = {
        o["Key"]: store.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
        for o in store.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    }
    for key in kept:
        store.delete_object(Bucket=BUCKET, Key=key)
    store.delete_bucket(Bucket=BUCKET)
    try:
        body = {"category": "OBSFS", "mount_path": "/data/gone/", "uri": f"obs://{BUCKET}/dir/"}
        m = api.ok("POST", f"/notebooks/{nb['id']}/storage", body=body)
        failed = wait_mount(api, nb["id"], m["id"], "MOUNT_FAILED", "MOUNTED")
        assert failed["status"] == "MOUNT_FAILED", failed
        assert "bucket or key not found" in failed["failure_reason"], failed
        assert SECRET_KEY not in failed["failure_reason"] and s3.endpoint not in failed["failure_reason"]
        assert run(nb, "import os\nprint(os.listdir('/data'))").strip() == "[]"
    finally:
        store.create_bucket(Bucket=BUCKET)
        for key, data in kept.items():
            store.put_object(Bucket=BUCKET, Key=key, Body=data)


def test_stop_and_start_keep_the_mounts(world):
    proc, api, s3, efs = world
    nb = running(api, "restarted")
    shared = api.ok("POST", f"/notebooks/{nb['id']}/storage", body=EFS_BODY)
    bucket = api.ok("POST", f"/notebooks/{nb['id']}/storage", body=OBS_BODY)
    wait_mount(api, nb["id"], shared["id"], "MOUNTED")
    wait_mount(api, nb["id"], bucket["id"], "MOUNTED")
    api.ok("POST", f"/notebooks/{nb['id']}/stop")
    api.wait_status(nb["id"], "STOPPED", timeout=60)
    assert {m["status"] for m in api.ok("GET", f"/notebooks/{nb['id']}/storage")["data"]} == {"UNMOUNTED"}
    storage_dir = proc.data_dir / "storage" / nb["id"]
    assert [line for line in mount_lines() if str(storage_dir) in line] == []
    r = api.call("POST", f"/notebooks/{nb['id']}/storage", body={**OBS_BODY, "mount_path": "/data/more/"})
    assert (r.status_code, r.json()["error_code"]) == (400, "ModelArts.6327")

    api.ok("POST", f"/notebooks/{nb['id']}/start")
    nb = api.wait_status(nb["id"], "RUNNING", timeout=120)
    wait_mount(api, nb["id"], shared["id"], "MOUNTED")
    wait_mount(api, nb["id"], bucket["id"], "MOUNTED")
    out = run(
        nb,
        "print(open('/data/shared/from-host.txt').read().strip(), '|', "
        "open('/data/bucket/from-s3.txt').read().strip())",
    )
    assert out.strip() == "shared file system | object storage"


def test_mounts_of_an_instance_gone_while_nbfleet_was_down_are_unmounted_at_start(tmp_path):
    why = _mountable()
    if why:
        pytest.skip(why)
    os.chmod(tmp_path, 0o755)
    efs = tmp_path / "efs"
    (efs / "team").mkdir(parents=True)
    (efs / "team" / "keep.txt").write_text("must survive\n")
    s3 = S3Server(tmp_path).start()
    env = {**storage_env(s3, efs, EFS_ID, BUCKET), "NBFLEET_CLAIM_SECONDS": "5"}
    first = ServeProcess(tmp_path / "data", runtime="local", env=env).start()
    try:
        api = SignedClient(first.endpoint, first.admin_creds())
        nb = running(api, "forgotten")
        m = api.ok("POST", f"/notebooks/{nb['id']}/storage", body=EFS_BODY)
        wait_mount(api, nb["id"], m["id"], "MOUNTED")
        api.close()
        first.kill()
        # The instance leaves the store while nbfleet is down (a restore of an older backup, an operator's hand).
        from sqlalchemy import create_engine, text

        engine = create_engine(first.database_url or f"sqlite:///{first.data_dir / 'nbfleet.db'}")
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM dynamic_storages WHERE notebook_id = :id"), {"id": nb["id"]})
            conn.execute(text("DELETE FROM notebook_tags WHERE notebook_id = :id"), {"id": nb["id"]})
            conn.execute(text("DELETE FROM notebooks WHERE id = :id"), {"id": nb["id"]})
        engine.dispose()
        storage_dir = first.data_dir / "storage" / nb["id"]
        assert any(str(storage_dir) in line for line in mount_lines())
        second = ServeProcess(first.data_dir, runtime="local", env=env, port=first.port).start()
        try:
            assert not any(str(storage_dir) in line for line in mount_lines())
            assert not storage_dir.exists()
            assert (efs / "team" / "keep.txt").read_text() == "must survive\n"  # unmounted, never removed
        finally:
            second.terminate()
    finally:
        first.kill()
        for leftover in jupyter_processes(first.data_dir):
            leftover.kill()
        s3.stop()
        assert unmount_below(tmp_path) == []


def test_a_server_that_cannot_mount_says_so(tmp_path):
    """nbfleet as an unprivileged user: the instance runs with an empty /data, and an attach ends in
    MOUNT_FAILED saying why, never in a pretended MOUNTED."""
    from ..procs import UnprivilegedUser

    user, why = UnprivilegedUser.available()
    if user is None:
        pytest.skip(why)
    efs = tmp_path / "efs"
    (efs / "team").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    proc = ServeProcess(
        tmp_path / "data",
        runtime="local",
        user=user,
        env={"NBFLEET_STORAGE__EFS": f'{{"{EFS_ID}": {{"path": "{efs}", "projects": ["*"]}}}}'},
    ).start()
    try:
        api = SignedClient(proc.endpoint, proc.admin_creds())
        nb = running(api, "unprivileged")
        m = api.ok("POST", f"/notebooks/{nb['id']}/storage", body=EFS_BODY)
        assert m["status"] == "MOUNTING"
        failed = wait_mount(api, nb["id"], m["id"], "MOUNT_FAILED", "MOUNTED")
        assert failed["status"] == "MOUNT_FAILED"
        assert failed["failure_reason"] == "this host cannot mount storage: nbfleet does not run as root"
        assert run(nb, "import os\nprint(os.listdir('/data'))").strip() == "[]"
        api.ok("DELETE", f"/notebooks/{nb['id']}/storage/{m['id']}")
        wait_gone(api, nb["id"], m["id"])
        api.ok("DELETE", f"/notebooks/{nb['id']}")
        api.close()
    finally:
        proc.terminate()
        for leftover in jupyter_processes(proc.data_dir):
            leftover.kill()


def test_without_fuse_an_object_store_mount_fails_with_the_reason(tmp_path):
    """A host without a FUSE device: MOUNT_FAILED naming it (HostMounts as the reconciler calls it)."""
    import asyncio
    from types import SimpleNamespace

    from nbfleet.domain.storage import StoragePolicy
    from nbfleet.runtime.base import MountSpec, RuntimeFailure
    from nbfleet.runtime.mounts import HostMounts

    why = _mountable()
    if why:
        pytest.skip(why)
    mounts = HostMounts(
        tmp_path / "data",
        StoragePolicy({}, {BUCKET: ["*"]}, True),
        owner=lambda _id: (1000, 100),
        obs_endpoint="http://127.0.0.1:9",
        obs_credentials=("AK", "SK"),
        fuse_device=str(tmp_path / "no-fuse-here"),
    )
    mounts.prepare("inst")
    try:
        with pytest.raises(RuntimeFailure, match=r"no FUSE device"):
            asyncio.run(
                mounts.attach(
                    SimpleNamespace(id="inst", project_id="p"),
                    MountSpec("m", "OBS", ("b",), f"obs://{BUCKET}/dir/", None, "p"),
                )
            )
        assert not (mounts.data("inst") / "b").exists()
        assert not (tmp_path / "data" / "storage" / "s3fs.passwd").exists()  # nothing written for nothing
    finally:
        asyncio.run(mounts.detach_all(SimpleNamespace(id="inst", project_id="p")))
    assert unmount_below(tmp_path) == []


def test_a_read_only_dataset_stays_read_only_in_the_instance(world):
    """The bind into the instance keeps the source's per-mount flags (a remount would otherwise replace ro by
    rw), and an entry the operator marks read_only is mounted read-only."""
    proc, api, _s3, efs = world
    nb = running(api, "reader")
    ro = api.ok(
        "POST",
        f"/notebooks/{nb['id']}/storage",
        body={"category": "EFS", "mount_path": "/data/ds/", "uri": "ds.internal:/images", "efs_id": RO_ID},
    )
    marked = api.ok(
        "POST",
        f"/notebooks/{nb['id']}/storage",
        body={**EFS_BODY, "mount_path": "/data/marked/", "efs_id": MARKED_RO_ID},
    )
    for m in (ro, marked):
        done = wait_mount(api, nb["id"], m["id"], "MOUNTED", "MOUNT_FAILED")
        assert done["status"] == "MOUNTED", done["failure_reason"]
    out = run(
        nb,
        "import errno\n"
        "print(open('/data/ds/cat.txt').read().strip())\n"
        "for path in ('/data/ds/new.txt', '/data/marked/new.txt'):\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        print('written')\n"
        "    except OSError as e:\n"
        "        print(errno.errorcode[e.errno])\n",
    )
    assert out.strip().splitlines() == ["a cat", "EROFS", "EROFS"]
    for m in (ro, marked):
        api.ok("DELETE", f"/notebooks/{nb['id']}/storage/{m['id']}")
        wait_gone(api, nb["id"], m["id"])


def test_a_mount_below_the_operator_directory_stays_out(world):
    """The walk from the operator's directory does not cross into something mounted below it."""
    proc, api, _s3, efs = world
    below = efs / "team" / "elsewhere"
    below.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(below)], check=True)
    try:
        (below / "inside").mkdir()
        nb = running(api, "walker")
        for uri in ("6f1c2a9e.sfsturbo.internal:/team/elsewhere", "6f1c2a9e.sfsturbo.internal:/team/elsewhere/inside"):
            m = api.ok(
                "POST", f"/notebooks/{nb['id']}/storage", body={**EFS_BODY, "mount_path": "/data/o/", "uri": uri}
            )
            failed = wait_mount(api, nb["id"], m["id"], "MOUNT_FAILED", "MOUNTED")
            assert failed["status"] == "MOUNT_FAILED" and "another mount" in failed["failure_reason"], failed
            api.ok("DELETE", f"/notebooks/{nb['id']}/storage/{m['id']}")
            wait_gone(api, nb["id"], m["id"])
    finally:
        subprocess.run(["umount", "-l", str(below)], check=True)
        below.rmdir()
