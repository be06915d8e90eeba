"""Dynamic mounts made on the host and seen inside running instances (``DynamicStorage`` for the local and
docker runtimes).

How a mount reaches a running instance without a restart: before the instance starts, nbfleet makes the
instance's data directory D a mount point of its own (``mount --bind D D``) with shared propagation, and the
sandbox (bubblewrap: a bind of D at ``/data``; docker: a bind with ``rslave`` propagation) shows D at
``/data``. A later mount on the host at ``D/x`` propagates into the instance's mount namespace as ``/data/x``.
One host-side mount serves both runtimes.

Layout (all made by nbfleet, as root)::

    <data dir>/storage/                0711  passable, not listable
    <data dir>/storage/s3fs.passwd     0600  the object store's key pair; read by s3fs only
    <data dir>/storage/<id>/           0711 (docker runtime: 0700; dockerd binds D as root)
    <data dir>/storage/<id>/data/      D, 0750 root:<instance's gid>: /data inside; mount points below it
    <data dir>/storage/<id>/obs/       0700  mounts first land here (s3fs; a shared file system's bind, to
                                             set its flags), out of the instance's reach
    <data dir>/storage/<id>/obs/<mount id>/, <mount id>.log and <mount id>.tmp/ (s3fs's temporary files)

Why paths are walked through file descriptors: an instance can create links in anything it can write (a
shared file system, a bucket), and another instance of the same file system can too. So neither the source
below the operator's directory nor the mount point is ever named by a path the kernel resolves again: each
directory is opened with ``O_NOFOLLOW`` relative to its parent, and ``mount(2)`` is given
``/proc/self/fd/<n>``, which is the opened directory itself. That is why this module calls ``mount(2)`` and
``umount2(2)`` through ctypes rather than mount(8): mount(8) canonicalises its arguments (resolving links
again, by path) and reports errors as text, where the syscall reports an errno.

s3fs runs as a daemon of its own (it outlives nbfleet, like the instances), from a minimal environment (no
NBFLEET_* variable reaches it), with its credentials in a root-only file named by ``passwd_file`` (never in
argv, where every local user could read them with ps).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import errno
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

from ..domain.instances import InstanceSpec, MountSpec
from ..domain.storage import Category, StoragePolicy, obs_location
from .base import RuntimeFailure

log = logging.getLogger(__name__)
_T = TypeVar("_T")

MS_BIND = 4096
MS_REMOUNT = 32
MS_NOSUID = 2
MS_NODEV = 4
MS_SHARED = 1 << 20
MS_PRIVATE = 1 << 18
MS_RDONLY = 1
MS_NOEXEC = 8
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_RELATIME = 1 << 21
# statvfs(3)'s per-mount flags -> mount(2)'s: a bind remount replaces every per-mount flag, so those of the
# source are carried over (an operator's read-only dataset stays read-only; in a user namespace a remount that
# clears a locked flag fails with EPERM anyway).
_CARRIED_FLAGS = (
    (os.ST_RDONLY, MS_RDONLY),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)
# Host-side mount work runs on threads of its own, never the event loop's default executor (which the store
# calls use): a mount stuck on a slow file system or object store can take a worker until it ends, and
# only this many.
MOUNT_WORKERS = 4
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _mount(source: str | None, target: str, flags: int, fstype: str | None = None) -> None:
    if (
        _libc.mount(
            source.encode() if source else None, target.encode(), fstype.encode() if fstype else None, flags, None
        )
        != 0
    ):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _umount(target: str, flags: int = 0) -> None:
    if _libc.umount2(target.encode(), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def mount_points() -> list[str]:
    """Mount points of nbfleet's mount namespace, as /proc/self/mountinfo lists them (field 5, unescaped).

    ``os.path.ismount`` cannot tell a bind mount of a directory of the same file system from a directory."""
    out = []
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh:
            field = line.split(b" ")[4]
            out.append(field.decode("unicode_escape") if b"\\" in field else field.decode())
    return out


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def carried_flags(fd: int) -> int:
    """The mount(2) flags of the mount that ``fd`` lies in which a bind remount must keep."""
    have = os.fstatvfs(fd).f_flag
    return sum(ms for st, ms in _CARRIED_FLAGS if have & st)


def mount_id(fd: int) -> int:
    """The id of the mount ``fd`` lies in (``mnt_id`` of /proc/self/fdinfo): unlike ``st_dev`` it also tells
    a bind mount of the same file system apart."""
    with open(f"/proc/self/fdinfo/{fd}") as fh:
        for line in fh:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    raise OSError(errno.ENOSYS, "no mnt_id in /proc/self/fdinfo")


def _open_dir(name: str, parent: int | None = None) -> int:
    """A directory, never through a link (``O_NOFOLLOW``): ELOOP/ENOTDIR if ``name`` is anything else."""
    return os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)


class HostMounts:
    """``DynamicStorage`` through mounts on this host (see the module's text)."""

    def __init__(
        self,
        data_dir: Path,
        policy: StoragePolicy,
        *,
        owner: Callable[[str], tuple[int, int]],
        obs_endpoint: str | None = None,
        obs_credentials: tuple[str, str] | None = None,
        obs_region: str = "us-east-1",
        s3fs: str | None = None,
        mount_timeout: float = 30.0,
        fuse_device: str = "/dev/fuse",
        private_instance_dirs: bool = False,
    ):
        """``owner(instance id)`` -> (uid, gid) on the host that files of the instance's object-store mounts
        belong to (who ``ma-user`` is on the host), and the group that may list ``/data``.

        ``private_instance_dirs``: ``storage/<id>`` is 0700 (root only). For the docker runtime, where every
        container's group is the same host gid (100, often the host's ``users``) and dockerd, as root, makes
        the bind: a 0711 directory would let every host account of that group into every container's /data."""
        self.root = Path(data_dir).resolve() / "storage"
        self.policy = policy
        self.owner = owner
        self.obs_endpoint = obs_endpoint
        self.obs_credentials = obs_credentials
        self.obs_region = obs_region
        self.s3fs = s3fs or shutil.which("s3fs")
        self.mount_timeout = mount_timeout
        self.fuse_device = fuse_device
        self.instance_dir_mode = 0o700 if private_instance_dirs else 0o711
        self._executor = concurrent.futures.ThreadPoolExecutor(MOUNT_WORKERS, thread_name_prefix="nbfleet-mounts")
        # One host-side change per instance at a time: a mount whose wait was given up (timeout, a stop) still
        # runs in its thread, and the unmount that follows must come after it, not beside it.
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, instance_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(instance_id, threading.Lock())

    # --- places ------------------------------------------------------------------------------------------
    def instance_dir(self, instance_id: str) -> Path:
        if not instance_id or "/" in instance_id or instance_id in (".", ".."):
            raise RuntimeFailure(f"unusable instance id {instance_id!r}")
        return self.root / instance_id

    def data(self, instance_id: str) -> Path:
        """D: what the instance sees at /data."""
        return self.instance_dir(instance_id) / "data"

    def _staging(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / "obs"

    @staticmethod
    def can_mount() -> bool:
        return os.geteuid() == 0

    # --- before the instance starts ----------------------------------------------------------------------
    def prepare(self, instance_id: str) -> Path:
        """Make D (idempotent) and, when this host can mount, a shared mount point of its own, so that what
        is mounted below it later propagates into the running instance. Returns D."""
        data = self.data(instance_id)
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)
        self.instance_dir(instance_id).mkdir(mode=self.instance_dir_mode, exist_ok=True)
        # mkdir's mode passes through nbfleet's umask
        os.chmod(self.instance_dir(instance_id), self.instance_dir_mode)
        data.mkdir(mode=0o750, exist_ok=True)
        if not self.can_mount():  # nothing will be mounted; the instance may still see an empty /data
            os.chmod(data, 0o700)
            return data
        _, gid = self.owner(instance_id)
        os.chown(data, 0, gid, follow_symlinks=False)
        os.chmod(data, 0o750)
        if str(data) not in mount_points():
            # The host's / may be private: without a mount of its own, D could not be made shared.
            _mount(str(data), str(data), MS_BIND)
            _mount(None, str(data), MS_SHARED)
        return data

    # --- DynamicStorage ----------------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def attach(self, spec: InstanceSpec, mount: MountSpec) -> None:
        await self._run(self._locked, spec.id, self._attach, spec, mount)

    async def detach(self, spec: InstanceSpec, mount: MountSpec) -> None:
        await self._run(self._locked, spec.id, self._detach, spec.id, mount)

    async def detach_all(self, spec: InstanceSpec) -> None:
        await self._run(self._locked, spec.id, self._detach_all, spec.id)

    def _locked(self, instance_id: str, fn: Callable[..., _T], *args: Any) -> _T:
        # Bounded: a change still running for the instance (a mount whose wait was given up) must not hold a
        # second worker for as long as it takes.
        lock = self._lock(instance_id)
        if not lock.acquire(timeout=self.mount_timeout):
            raise RuntimeFailure("another change of this instance's storage is still under way; try again later")
        try:
            return fn(*args)
        finally:
            lock.release()

    def close(self) -> None:
        """Stop taking mount work (what runs finishes on its own threads)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def reap(self, known_ids: set[str]) -> list[str]:
        """Unmount what is left of instances the store does not know (deleted while nbfleet was down);
        return their ids."""

        def orphans() -> list[str]:
            try:
                names = [p.name for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()]
            except FileNotFoundError:
                return []
            found = [name for name in names if name not in known_ids]
            for name in found:
                self._locked(name, self._detach_all, name)
            return found

        return await self._run(orphans)

    # --- attach ------------------------------------------------------------------------------------------
    def _attach(self, spec: InstanceSpec, mount: MountSpec) -> None:
        if not self.can_mount():
            raise RuntimeFailure("this host cannot mount storage: nbfleet does not run as root")
        data = self.data(spec.id)
        if str(data) not in mount_points():
            raise RuntimeFailure("the instance was started without a mountable /data; stop and start it again")
        target = data.joinpath(*mount.parts)
        if str(target) in mount_points():
            return  # mounted by an attempt that was cut short: done
        with ExitStack() as stack:
            if mount.category == Category.EFS:
                source = self._efs_staged(spec, mount, self._efs_source(spec, mount, stack), stack)
            else:
                source = self._s3fs_mount(spec, mount)
                stack.callback(os.close, source)
            parent_fd, target_fd = self._make_mount_point(data, mount.parts, stack)
            try:
                # Not recursive: what the operator mounted below the shared directory stays out.
                _mount(_fd_path(source), _fd_path(target_fd), MS_BIND)
                # The flags apply to the new mount, reached through the same (link-free) parent.
                mounted = _open_dir(mount.parts[-1], parent_fd)
                stack.callback(os.close, mounted)
                # The instance's copy came with the flags of the source (see _efs_staged); this is the host's.
                _mount(None, _fd_path(mounted), MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | carried_flags(source))
            except OSError as exc:
                self._detach(spec.id, mount)
                raise RuntimeFailure(f"mounting at /data/{'/'.join(mount.parts)} failed: {exc.strerror}") from exc

    def _efs_staged(self, spec: InstanceSpec, mount: MountSpec, source: int, stack: ExitStack) -> int:
        """The source bound first in the root-only staging directory and given its flags there; returns it
        (the caller binds it into D, and the staging bind goes when ``stack`` closes).

        Why: a bind into D reaches the instance by propagation at once, with the flags it has then, and a
        later remount does not propagate. A bind copies the flags of what it binds, so the flags are set
        before D sees it: nosuid, nodev, those of the source's mount (a read-only dataset stays read-only),
        and read-only when the operator's entry says so."""
        where = self.policy.efs_source(spec.project_id, mount.efs_id or "", mount.uri)
        staging_root = self._staging(spec.id)
        staging_root.mkdir(mode=0o700, exist_ok=True)
        os.chmod(staging_root, 0o700)
        stage = staging_root / mount.id
        self._unmount_quietly(str(stage))  # left by an attempt that was cut short
        stage.mkdir(mode=0o700, exist_ok=True)
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | carried_flags(source)
        if where is None or where.read_only:
            flags |= MS_RDONLY
        try:
            _mount(_fd_path(source), str(stage), MS_BIND)
            stack.callback(_remove_empty, stage, stop=staging_root)  # callbacks run last first: after the unmount
            stack.callback(self._unmount_quietly, str(stage))
            _mount(None, str(stage), MS_PRIVATE)
            _mount(None, str(stage), flags)
        except OSError as exc:
            raise RuntimeFailure(f"mounting at /data/{'/'.join(mount.parts)} failed: {exc.strerror}") from exc
        fd = _open_dir(str(stage))
        stack.callback(os.close, fd)
        return fd

    def _efs_source(self, spec: InstanceSpec, mount: MountSpec, stack: ExitStack) -> int:
        """The source directory, walked from the operator's directory without following any link."""
        where = self.policy.efs_source(spec.project_id, mount.efs_id or "", mount.uri)
        if where is None:
            raise RuntimeFailure("this file system is not available to the project any more")
        try:
            fd = os.open(where.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # the operator's: trusted
        except OSError as exc:
            log.error("EFS directory %s of %s: %s", where.root, mount.uri, exc)
            raise RuntimeFailure(
                "the file system cannot be reached on this host; the operator's log says why"
            ) from None
        stack.callback(os.close, fd)
        top = mount_id(fd)
        walked = []
        for name in where.below:
            walked.append(name)
            try:
                fd = _open_dir(name, fd)
            except FileNotFoundError:
                raise RuntimeFailure(f"/{'/'.join(walked)} does not exist on the file system") from None
            except OSError as exc:  # ELOOP (a link), ENOTDIR: never followed
                raise RuntimeFailure(
                    f"/{'/'.join(walked)} on the file system is not a directory ({exc.strerror})"
                ) from None
            stack.callback(os.close, fd)
            # Something mounted below the operator's directory (by the operator, or another file system) is
            # not part of what was offered.
            if mount_id(fd) != top:
                raise RuntimeFailure(f"/{'/'.join(walked)} is another mount, not part of the file system")
        return fd

    def _make_mount_point(self, data: Path, parts: tuple[str, ...], stack: ExitStack) -> tuple[int, int]:
        """(parent, mount point) directories below D, made where missing, walked without following links."""
        fd = parent = _open_dir(str(data))
        stack.callback(os.close, fd)
        for name in parts:
            parent = fd
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                fd = _open_dir(name, fd)
            except OSError as exc:
                raise RuntimeFailure(f"cannot make the mount point /data/{'/'.join(parts)}: {exc.strerror}") from None
            stack.callback(os.close, fd)
        return parent, fd

    def _s3fs_mount(self, spec: InstanceSpec, mount: MountSpec) -> int:
        """Mount the bucket directory with s3fs in the instance's staging directory; return its fd (the
        caller binds it into D). Waits until s3fs answers, or says why it did not."""
        bucket, prefix = obs_location(mount.uri)
        if not self.policy.obs_allowed(spec.project_id, bucket):
            raise RuntimeFailure("this bucket is not available to the project any more")
        if self.obs_endpoint is None or self.obs_credentials is None:
            raise RuntimeFailure("no object storage is configured on this host")
        if not os.path.exists(self.fuse_device):
            raise RuntimeFailure(f"this host cannot mount object storage: it has no FUSE device ({self.fuse_device})")
        if not self.s3fs:
            raise RuntimeFailure("this host cannot mount object storage: s3fs is not installed")
        staging_root = self._staging(spec.id)
        staging_root.mkdir(mode=0o700, exist_ok=True)
        os.chmod(staging_root, 0o700)
        staging = staging_root / mount.id
        staging.mkdir(mode=0o700, exist_ok=True)
        logfile = staging_root / f"{mount.id}.log"
        # s3fs's temporary files (what a tenant writes, before upload): in the root-only staging directory,
        # not in the host's /tmp.
        tmpdir = staging_root / f"{mount.id}.tmp"
        tmpdir.mkdir(mode=0o700, exist_ok=True)
        if str(staging) in mount_points() and not _answers(staging):
            self._unmount_quietly(str(staging))  # an s3fs of an earlier attempt that died: mount afresh
        if str(staging) not in mount_points():
            passwd = self._passwd_file()
            uid, gid = self.owner(spec.id)
            logfile.unlink(missing_ok=True)
            options = ",".join(
                [
                    f"passwd_file={passwd}",
                    f"url={self.obs_endpoint}",
                    f"endpoint={self.obs_region}",
                    "use_path_request_style",
                    "allow_other",
                    f"uid={uid}",
                    f"gid={gid}",
                    "umask=0077",
                    "mp_umask=0077",
                    f"logfile={logfile}",
                    "dbglevel=err",
                    "nosuid",
                    "nodev",
                    f"tmpdir={tmpdir}",
                ]
            )
            try:
                result = subprocess.run(
                    [self.s3fs, f"{bucket}:/{prefix}", str(staging), "-o", options],
                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=self.mount_timeout,
                    start_new_session=True,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                # The operator's log has the details (paths, the endpoint); the user a reason without them.
                log.error("s3fs for mount %s of instance %s could not run: %s", mount.id, spec.id, exc)
                raise RuntimeFailure(
                    "the object store could not be mounted on this host; the operator's log says why"
                ) from None
            if result.returncode != 0:
                log.error(
                    "s3fs for mount %s of instance %s failed (%s): %s",
                    mount.id,
                    spec.id,
                    result.returncode,
                    result.stderr.strip()[:2000],
                )
                raise RuntimeFailure("the object store could not be mounted on this host; the operator's log says why")
        self._wait_s3fs(staging, logfile)
        return _open_dir(str(staging))

    def _wait_s3fs(self, staging: Path, logfile: Path) -> None:
        """s3fs answers before it has checked the bucket; it is mounted once its root answers (twice, apart),
        and failed once its log says so (its exit leaves a dead mount or none). The root is only stat'ed,
        never listed: listing makes s3fs ask the store about every object of the directory."""
        deadline = time.monotonic() + self.mount_timeout
        answered = 0
        while time.monotonic() < deadline:
            problem = _s3fs_problem(logfile)
            if problem:
                self._unmount_quietly(str(staging))
                raise RuntimeFailure(f"the object store refused the mount: {problem}")
            if str(staging) in mount_points():
                try:
                    os.stat(staging)
                    os.statvfs(staging)
                    answered += 1
                    if answered >= 2:  # twice, apart: the bucket check that runs after the mount passed
                        return
                except OSError:
                    answered = 0
            time.sleep(0.2)
        self._unmount_quietly(str(staging))
        raise RuntimeFailure(f"s3fs did not answer within {self.mount_timeout:g} s")

    def _passwd_file(self) -> Path:
        """The key pair for s3fs: root's, 0600, written anew each time (the operator may have changed it)."""
        path = self.root / "s3fs.passwd"
        assert self.obs_credentials is not None  # object storage is offered only with credentials
        ak, sk = self.obs_credentials
        # Written aside and renamed into place: an s3fs starting meanwhile for another mount reads the old
        # file or the new one, never a half-written one.
        fresh = self.root / f".s3fs.passwd.{os.getpid()}.{threading.get_ident()}"
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            os.fchown(fh.fileno(), 0, 0)
            fh.write(f"{ak}:{sk}\n")
        os.replace(fresh, path)
        return path

    # --- detach ------------------------------------------------------------------------------------------
    def _detach(self, instance_id: str, mount: MountSpec) -> None:
        data = self.data(instance_id)
        target = data.joinpath(*mount.parts)
        staging = self._staging(instance_id) / mount.id
        mounted = mount_points()
        for path in (target, staging):  # the instance's view first, then what s3fs serves
            if str(path) in mounted:
                self._unmount(str(path))
        _remove_empty(target, stop=data)
        _remove_empty(staging, stop=self._staging(instance_id))
        (self._staging(instance_id) / f"{mount.id}.log").unlink(missing_ok=True)
        _remove_tree_of_files(self._staging(instance_id) / f"{mount.id}.tmp")

    def _detach_all(self, instance_id: str) -> None:
        top = self.instance_dir(instance_id)
        if not top.exists():
            return
        prefix = str(top) + "/"
        # Deepest first: the binds in D, then s3fs's mounts, D's own mount last.
        for path in sorted((p for p in mount_points() if p.startswith(prefix)), key=len, reverse=True):
            self._unmount(path)
        for directory, _subdirs, files in os.walk(top, topdown=False):
            for name in files:
                if name.endswith(".log") or os.path.dirname(directory) == str(self._staging(instance_id)):
                    os.unlink(os.path.join(directory, name))
            try:
                os.rmdir(directory)  # never rmtree: a directory that still holds anything stays
            except OSError:
                pass

    def _unmount(self, path: str) -> None:
        """A plain unmount; a lazy one only when the mount is busy (a process of the instance still has a
        file open there); anything else is a failure the caller reports (UNMOUNT_FAILED)."""
        try:
            _umount(path, UMOUNT_NOFOLLOW)
        except OSError as exc:
            if exc.errno == errno.EINVAL and path not in mount_points():
                return  # gone meanwhile
            if exc.errno != errno.EBUSY:
                raise RuntimeFailure(f"unmounting failed: {exc.strerror}") from None
            try:
                _umount(path, UMOUNT_NOFOLLOW | MNT_DETACH)
            except OSError as again:
                raise RuntimeFailure(f"unmounting failed: {again.strerror}") from None

    def _unmount_quietly(self, path: str) -> None:
        try:
            if path in mount_points():
                _umount(path, UMOUNT_NOFOLLOW | MNT_DETACH)
        except OSError as exc:
            log.warning("could not remove the failed mount at %s: %s", path, exc)


def _answers(path: Path) -> bool:
    try:
        os.stat(path)  # never a listing (see _wait_s3fs)
        return True
    except OSError:
        return False


def _remove_tree_of_files(path: Path) -> None:
    """s3fs's temporary directory: root's, only files (never a mount point), gone once s3fs is."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    for name in names:
        try:
            os.unlink(path / name)
        except OSError as exc:
            log.warning("could not remove s3fs's temporary file %s: %s", path / name, exc)
    try:
        os.rmdir(path)
    except OSError:
        pass


def _remove_empty(path: Path, *, stop: Path) -> None:
    """Remove ``path`` and its parents up to ``stop`` (excluded) while they are empty directories."""
    while path != stop and stop in path.parents:
        try:
            os.rmdir(path)
        except OSError:
            return
        path = path.parent


def _s3fs_problem(logfile: Path) -> str | None:
    try:
        text = logfile.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        # s3fs logs its own start at [CRT] too ("change debug level ..."); that one is no failure.
        if ("[CRT]" in line and "debug level" not in line) or "Exiting FUSE event loop" in line:
            # "… s3fs.cpp:s3fs_check_service(3593): bucket or key not found(host=…) - result of …"
            message = line.split("):", 1)[-1].strip()
            return message.split("(host=", 1)[0].strip() or "s3fs stopped"
    return None
