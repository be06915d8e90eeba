"""The local runtime: one sandboxed jupyter-server per notebook instance on this host.

Layout of an instance (``<data_dir>/instances/<id>/``, see ``sandbox.InstanceDirs``)::

    work/          the volume: /home/ma-user/work inside (kept across stop/start, removed by delete)
    run/           Jupyter's Unix socket: /run/nbfleet/jupyter.sock inside
    uid            the instance's host uid (root only)
    jupyter.log    what the server prints, appended across starts

The server runs from the image's environment (``environments.py``), in the sandbox (``sandbox.py``),
inside the flavor's limits (``limits.py``), and answers only on its socket.

Recognising our processes: the process this runtime starts (the sandbox's outer bwrap) carries
``NBFLEET_INSTANCE_ID`` and ``NBFLEET_DATA_DIR`` in its environment, read back through ``/proc/<pid>/environ``
(``processes.py``). That survives restarts of nbfleet, tells apart two installations with different data
dirs on one host, and guards against signalling a recycled pid.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from ..domain.instances import FlavorLimits, InstanceSpec, Placement
from ..domain.model import StepStatus
from .base import (
    Activity,
    DynamicStorage,
    HostStorage,
    ImageEngine,
    Observation,
    Reporter,
    RuntimeFailure,
    StoreLookup,
    gpus_on_host,
)
from .environments import BuiltEnvironment, EnvironmentSpec, ImageEnvironmentError, ImageEnvironments
from .jupyter import JupyterProbe, base_url_for, normal_prefix, server_args
from .limits import LimitPlan, ResourceLimiter
from .processes import ENV_DATA_DIR, ENV_INSTANCE, InstanceProcesses, belongs
from .processes import describe_rc as _describe_rc
from .sandbox import Bubblewrap, Inside, InstanceDirs, Isolation, SandboxUnavailable
from .sessions import SessionEntry, SessionRefused, open_entry, sandbox_process
from .steps import failed_start
from .warm_pool import KeepingMembersMounted, WarmRecord, WarmRecords, fit_of

log = logging.getLogger(__name__)

LOG_ROTATE_BYTES = 10 * 1024 * 1024
DEFAULT_COMMAND = ("{python}", "-m", "jupyter_server")
# An SSH-only image runs no Jupyter: this holds the sandbox open (its PID 1 lives as long as it does) for
# SSH sessions, and ends on SIGTERM like a server would.
HOLD = (
    "import signal; print('SSH only: no Jupyter in this image; the sandbox waits for SSH sessions', "
    "flush=True); signal.pause()"
)


class LocalRuntime:
    name = "local"
    observes = True
    reports_activity = False  # observes already: idle checks run anyway
    images: ImageEngine | None = None  # its images are environments built from the catalogue, not engine images

    def __init__(
        self,
        data_dir: Path,
        *,
        isolation: Isolation | None = None,
        environments: ImageEnvironments | None = None,
        ready_timeout: float = 60.0,
        limiter: ResourceLimiter | None = None,
        jupyter_command: Sequence[str] = DEFAULT_COMMAND,
        path_prefix: str | None = None,
        stop_timeout: float = 5.0,
        extra_args: Sequence[str] = (),
        storage: HostStorage | None = None,
    ):
        """``isolation=None`` means the bubblewrap sandbox; ``limiter=None`` the best limits the host offers.
        ``jupyter_command`` may name the image's interpreter as ``{python}``. ``path_prefix``: Jupyter under
        ``<prefix><id>/`` (path routing); None: at ``/``, each instance being on an origin of its own."""
        self.data_dir = Path(data_dir).resolve()
        self.sandbox: Isolation = isolation if isolation is not None else Bubblewrap(self.data_dir)
        shared = bool(getattr(self.sandbox, "per_instance_uid", False))
        self.environments = environments or ImageEnvironments(self.data_dir / "images", shared=shared)
        self.ready_timeout = ready_timeout
        self.limiter = limiter if limiter is not None else ResourceLimiter()
        self.jupyter_command = list(jupyter_command)
        self.path_prefix = normal_prefix(path_prefix)
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self.processes = InstanceProcesses(self.data_dir, owner=self._may_own)
        self.jupyter = JupyterProbe(self.base_url)
        self._checked = False
        # Dynamic mounts (``mounts.HostMounts``): /data of every instance, prepared before it starts.
        self._host_storage = storage
        # Sandboxes started ahead of creates (``warm_pool.py``); records shared by processes of this data dir.
        self.warm_records = WarmRecords(self.data_dir)
        self.storage: DynamicStorage | None = (
            KeepingMembersMounted(storage, self.warm_records) if storage is not None else None
        )

    def _may_own(self, uid: int) -> bool:
        """Whether a process of real uid ``uid`` may be an instance's: nbfleet's own, or (as root) one of
        the instances' host uids. A local user's process with forged markers is not."""
        if uid == os.geteuid():
            return True
        uids = getattr(self.sandbox, "uids", None)
        return (
            bool(getattr(self.sandbox, "per_instance_uid", False)) and uids is not None and uids.low <= uid <= uids.high
        )

    def isolation(self) -> dict[str, Any]:
        return {**self.sandbox.describe(), "limits": self.limiter.mechanism}

    # -- paths ---------------------------------------------------------------------------

    def dirs(self, instance_id: str) -> InstanceDirs:
        return InstanceDirs.of(self.data_dir, instance_id)

    def base_url(self, instance_id: str) -> str:
        return base_url_for(self.path_prefix, instance_id)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, spec: InstanceSpec, reporter: Reporter) -> Placement:
        if spec.first_start:
            warm = await self._claim_warm(spec, reporter)
            if warm is not None:
                return warm
        iid = spec.id
        step = 1
        plan: LimitPlan | None = None
        proc: subprocess.Popen[bytes] | None = None
        try:
            dirs = self.dirs(iid)
            await reporter.step(1, StepStatus.PROCESSING, "Preparing the work volume")
            if not self._checked:  # serve checked at start; a runtime made otherwise checks here, once
                await asyncio.to_thread(self.sandbox.check, [self.environments.root])
                self._checked = True
            # A start repeated after a crash must not leave the first attempt's server running.
            await self._terminate(iid, None, grace=self.stop_timeout)
            await asyncio.to_thread(self.sandbox.prepare, dirs)
            host = self._host_storage
            data = await asyncio.to_thread(host.prepare, iid) if host is not None else None
            await reporter.step(1, StepStatus.COMPLETED, f"Work volume ready at {self.sandbox.inside(dirs).work}")

            step = 2
            await reporter.step(2, StepStatus.PROCESSING, f"Preparing the {spec.image.name} environment")
            environment = await self._environment(spec, reporter)
            plan = self.limiter.prepare(iid, spec.flavor)
            limits = plan.describe()
            sandbox = _describe_isolation(self.sandbox.describe())
            log.info("instance %s: %s; limits %s", iid, sandbox, limits)
            await reporter.event("limits", limits)
            await reporter.event("sandbox", sandbox)
            await reporter.step(2, StepStatus.COMPLETED, f"{spec.image.name} environment ready; {limits}")

            step = 3
            await reporter.step(3, StepStatus.PROCESSING, "Configuring the network")
            _remove_stale_socket(dirs.socket)
            network = (
                "private network; Jupyter reachable through nbfleet only"
                if self.sandbox.describe().get("network") == "private"
                else "Jupyter reachable through nbfleet only"
            )
            await reporter.step(3, StepStatus.COMPLETED, network[0].upper() + network[1:])

            step = 4
            await reporter.step(
                4,
                StepStatus.PROCESSING,
                "Starting Jupyter" if spec.image.serves_jupyter else "Starting the instance (SSH only, no Jupyter)",
            )
            started = time.monotonic()
            proc, log_offset = self._spawn(spec, dirs, environment, plan, data)
            await self._wait_ready(spec, dirs, proc, log_offset)
            elapsed = time.monotonic() - started
            log.info(
                "instance %s: %s (process %s) ready in %.2f s",
                iid,
                "jupyter-server" if spec.image.serves_jupyter else "SSH-only sandbox",
                proc.pid,
                elapsed,
            )
            await reporter.step(
                4,
                StepStatus.COMPLETED,
                f"{'Jupyter' if spec.image.serves_jupyter else 'Instance'} ready in {elapsed:.1f} s",
            )
        except BaseException as exc:
            # Off the event loop (it waits for the processes to end); shielded, so that it completes even
            # while this task is being cancelled.
            await asyncio.shield(asyncio.to_thread(self._kill_now, iid, proc))
            if isinstance(exc, SandboxUnavailable):  # the host's fault, told to the operator, not the user
                log.error("instance %s: the sandbox cannot run: %s", iid, exc)
                exc = RuntimeFailure("this host cannot run the notebook's sandbox; nbfleet's log says why", step)
            failure = await failed_start(exc, step, reporter, iid)
            raise failure from (None if exc is failure else exc)
        # host: the node the instance runs on (the API's ``ip``); the proxy connects to the socket.
        jupyter = spec.image.serves_jupyter
        return Placement(
            host="127.0.0.1",
            pid=proc.pid,
            socket=str(dirs.socket) if jupyter else None,
            details={
                "limits": plan.mechanism,
                "isolation": self.sandbox.name,
                "jupyter": jupyter,
                # for SSH sessions: the environment its kernels get (``session``)
                "environment": str(environment.path),
            },
        )

    async def _claim_warm(self, spec: InstanceSpec, reporter: Reporter) -> Placement | None:
        """The instance's warm-pool member, if a create took one for it and it still answers its token."""
        record = await asyncio.to_thread(self.warm_records.claim, spec.id)
        if record is None:
            return None
        placement = record.placement
        if await self._warm_usable(spec, record):
            plan = self.limiter.prepare(spec.id, spec.flavor)  # idempotent: the member's groups, as they are
            limits = plan.describe()
            sandbox = _describe_isolation(self.sandbox.describe())
            log.info("instance %s: taken from the warm pool (process %s); %s", spec.id, placement.pid, sandbox)
            await reporter.event("limits", limits)
            await reporter.event("sandbox", sandbox)
            await reporter.event("warm pool", "Started from the warm pool: the sandbox and Jupyter were ready")
            for step, text in (
                (1, f"Work volume ready at {self.sandbox.inside(self.dirs(spec.id)).work}"),
                (2, f"{spec.image.name} environment ready; {limits}"),
                (3, "Network configured"),
                (4, "Jupyter ready (warm pool)" if spec.image.serves_jupyter else "Instance ready (warm pool)"),
            ):
                await reporter.step(step, StepStatus.COMPLETED, text)
            return placement
        log.warning("instance %s: its warm-pool member is gone or does not answer; starting anew", spec.id)
        await self._terminate(spec.id, placement.pid, grace=self.stop_timeout)
        return None

    async def _warm_usable(self, spec: InstanceSpec, record: WarmRecord) -> bool:
        if record.key != (spec.image.swr_path, spec.flavor.id) or record.fit != fit_of(spec):
            return False  # not what this instance asks for (a catalogue changed while it waited): never reuse
        placement = record.placement
        if not (await self.observe(spec, placement)).alive:
            return False
        if placement.details.get("jupyter") is False:
            return not spec.image.serves_jupyter
        return spec.image.serves_jupyter and await self.jupyter.answers(placement, spec)

    def session(self, instance_id: str, placement: Placement | None) -> SessionEntry:
        """How to run commands in the running instance, for an SSH session (``sessions.py``).

        Refused without a sandbox: a session would then run on the host, as nbfleet's own user."""
        if not isinstance(self.sandbox, Bubblewrap):
            raise SessionRefused(
                "SSH needs the notebook sandbox, and this installation runs notebooks without one (single-user mode)"
            )
        if placement is None or placement.pid is None or "environment" not in placement.details:
            raise SessionRefused("the instance was started before SSH was available here; restart it")
        # The recorded process itself, checked by its markers and owner (as ``observe`` does): never a scan
        # of every process of the host, which any client could make nbfleet do for each channel.
        try:
            root = psutil.Process(placement.pid)
            ours = belongs(root, self.data_dir, instance_id) and self._may_own(root.uids().real)
        except psutil.Error:
            ours = False
        if not ours:
            raise SessionRefused("the instance is not running")
        dirs = self.dirs(instance_id)
        inside = self.sandbox.inside(dirs)
        env = self._env_for(Path(placement.details["environment"]), inside)
        groups = [str(group) for group in self.limiter.group_dirs(instance_id, placement.pid)]
        return open_entry(root, env, groups)

    async def _environment(self, spec: InstanceSpec, reporter: Reporter) -> BuiltEnvironment:
        if not spec.image.environment:
            raise RuntimeFailure(
                f"the image {spec.image.name} declares no environment the local runtime can "
                "build (an 'environment' member in the image catalogue)",
                step=2,
            )

        async def building() -> None:
            await reporter.step(
                2, StepStatus.PROCESSING, f"Building the {spec.image.name} environment (first use of this image)"
            )
            await reporter.event("image", f"Building the {spec.image.name} environment")

        try:
            declared = EnvironmentSpec.from_json(spec.image.environment)
            return await self.environments.ensure(spec.image.name, declared, on_build=building)
        except ImageEnvironmentError as exc:
            log.warning("instance %s: image %s: %s", spec.id, spec.image.name, exc)
            # What failed (a package, a version) helps the user; where on the host it was built does not.
            raise RuntimeFailure(str(exc).replace(str(self.environments.root), "<image dir>"), step=2) from None

    async def stop(self, spec: InstanceSpec, placement: Placement | None) -> None:
        if placement is None and spec.first_start and self.warm_records.holds(spec.id):
            # The clean-up before a create's start: what runs for it is the warm member its create took
            # (ready, not half-started), which that start claims. A create cannot be stopped otherwise,
            # and delete removes the record first.
            return
        await self._terminate(spec.id, placement.pid if placement else None, grace=self.stop_timeout)
        await self.jupyter.forget(placement)

    async def delete(self, spec: InstanceSpec, placement: Placement | None) -> None:
        await self.stop(spec, placement)
        dirs = self.dirs(spec.id)
        release = self.sandbox.release_after(dirs)
        try:
            await asyncio.to_thread(_remove_tree, dirs.root)
        except OSError as exc:
            raise RuntimeFailure(f"could not remove the instance's volume: {exc.strerror or exc}") from exc
        # Only once nothing of the instance is left may its host uid go to another one.
        release()
        self.warm_records.remove(spec.id)  # a warm member's record, if it never was claimed: last, as it names it

    async def observe(self, spec: InstanceSpec, placement: Placement | None) -> Observation:
        if placement is None or placement.pid is None:
            return Observation(False, "no Jupyter process recorded for the instance")
        pid = placement.pid
        try:
            proc = psutil.Process(pid)
            gone = proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:  # includes ZombieProcess
            gone = True
        if gone or self.processes.exit_code(pid) is not None:
            return Observation(False, self._exit_reason(spec.id, await self.processes.wait_exit_code(pid)))
        belongs_here = belongs(proc, self.data_dir, spec.id)
        if belongs_here:
            try:  # a local user's process with forged markers on a recycled pid is not the instance
                belongs_here = self._may_own(proc.uids().real)
            except psutil.Error:
                belongs_here = None
        if belongs_here is None:
            # Environment unreadable: the process is exiting right now.
            return Observation(False, self._exit_reason(spec.id, await self.processes.wait_exit_code(pid)))
        if not belongs_here:
            return Observation(False, "the instance's process is no longer running")
        return Observation(True)

    async def adopt(self, spec: InstanceSpec, placement: Placement | None) -> bool:
        """After a restart: is the recorded server still ours, alive and answering with the token?"""
        if placement is None or not (await self.observe(spec, placement)).alive:
            return False
        if placement.details.get("jupyter") is False:  # SSH only: alive is all there is to check
            return True
        return bool(placement.socket) and await self.jupyter.answers(placement, spec)

    async def activity(self, spec: InstanceSpec, placement: Placement) -> Activity | None:
        return await self.jupyter.activity(spec, placement)

    async def reap_orphans(self, lookup: StoreLookup) -> list[str]:
        # Only processes: a stopped instance's volume stays, and delete removes a deleted one's.
        found = {iid for iid, _ in self.processes.marked()}
        live = (await lookup(found)).live if found else frozenset()
        # Warm-pool members of live processes (this data dir may be shared) are not in the store yet.
        kept = live | self.warm_records.kept_by_live_owners()
        orphans = sorted(found - kept)
        for iid in orphans:
            log.warning("ending orphaned instance %s (not running in the store)", iid)
        await asyncio.gather(*(self._terminate(iid, None, grace=self.stop_timeout) for iid in orphans))
        # Empty groups of instances that died with nobody stopping them.
        self.limiter.sweep(kept)
        return orphans

    def has_capacity(self, flavor: FlavorLimits) -> bool:
        return gpus_on_host(flavor)

    async def close(self) -> None:
        await self.jupyter.close()

    # -- starting ------------------------------------------------------------------------

    def _command(self, spec: InstanceSpec, environment: BuiltEnvironment, dirs: InstanceDirs) -> list[str]:
        inside = self.sandbox.inside(dirs)
        if not spec.image.serves_jupyter:
            return [str(environment.python), "-I", "-S", "-c", HOLD]
        command = [part.replace("{python}", str(environment.python)) for part in self.jupyter_command]
        return [
            *command,
            *server_args(socket=inside.socket, root_dir=inside.work, base_url=self.base_url(spec.id)),
            *self.extra_args,
        ]

    def _env(self, spec: InstanceSpec, environment: BuiltEnvironment, dirs: InstanceDirs) -> dict[str, str]:
        """The notebook's environment: nothing of nbfleet's own (which may hold database URLs and secrets)."""
        env = self._env_for(environment.path, self.sandbox.inside(dirs))
        env.update(
            {
                # The token goes in the environment, not argv: argv is readable by every user through ps.
                "JUPYTER_TOKEN": spec.token,
                ENV_INSTANCE: spec.id,
                ENV_DATA_DIR: str(self.data_dir),
            }
        )
        return env

    @staticmethod
    def _env_for(environment: Path, inside: Inside) -> dict[str, str]:
        """What every process of the notebook gets (its server, kernels and SSH sessions)."""
        env = {k: os.environ[k] for k in ("LANG", "LANGUAGE", "LC_ALL", "TZ") if k in os.environ}
        env.setdefault("LANG", "C.UTF-8")
        env.update(
            {
                "PATH": os.pathsep.join(
                    [str(environment / "bin"), f"{inside.home}/.local/bin", "/usr/local/bin", "/usr/bin", "/bin"]
                ),
                "HOME": inside.home,
                "USER": inside.user,
                "LOGNAME": inside.user,
                "SHELL": "/bin/bash",
                "VIRTUAL_ENV": str(environment),
                # pip's --user layer lives in the volume, so it persists with the work and goes with it.
                "PYTHONUSERBASE": f"{inside.work}/.local",
                "JUPYTER_RUNTIME_DIR": inside.runtime_dir,
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _spawn(
        self,
        spec: InstanceSpec,
        dirs: InstanceDirs,
        environment: BuiltEnvironment,
        plan: LimitPlan,
        data: Path | None = None,
    ) -> tuple[subprocess.Popen[bytes], int]:
        launch = self.sandbox.launch(
            self._command(spec, environment, dirs),
            self._env(spec, environment, dirs),
            dirs,
            environment,
            spec.flavor,
            hostname=f"notebook-{spec.id[:8]}",
            **({"data": data} if data is not None else {}),
        )

        def preexec() -> None:  # limits first, while still allowed to join the groups; then the uid
            plan.preexec()
            if launch.become is not None:
                launch.become()

        log_path = dirs.log
        try:
            if log_path.stat().st_size > LOG_ROTATE_BYTES:
                log_path.replace(log_path.with_suffix(".log.1"))
        except FileNotFoundError:
            pass
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "ab") as fh:
                fh.write(
                    f"---- nbfleet: starting jupyter-server at "
                    f"{datetime.now().astimezone().isoformat(timespec='seconds')} ----\n".encode()
                )
                fh.flush()
                offset = fh.tell()
                proc = subprocess.Popen(
                    launch.argv,
                    cwd=launch.cwd,
                    env=launch.env,
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    pass_fds=launch.pass_fds,
                    # Own session: the server outlives nbfleet and its group can be signalled as one.
                    start_new_session=True,
                    preexec_fn=preexec,
                    close_fds=True,
                )
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeFailure(f"could not start jupyter-server: {exc}", step=4) from exc
        finally:
            launch.close()
        self.processes.track(spec.id, proc)
        return proc, offset

    async def _wait_ready(
        self, spec: InstanceSpec, dirs: InstanceDirs, proc: subprocess.Popen[bytes], log_offset: int
    ) -> None:
        def exited() -> str | None:
            rc = proc.poll()
            if rc is None:
                return None
            return (
                f"jupyter-server exited with {_describe_rc(rc)} before it was ready. "
                f"Log: {self._log_tail(spec.id, log_offset) or '(empty)'}"
            )

        if not spec.image.serves_jupyter:
            await self._wait_sandbox(proc, exited)
            return
        try:
            await self.jupyter.wait_ready(
                Placement(pid=proc.pid, socket=str(dirs.socket)), spec, self.ready_timeout, exited
            )
        except RuntimeFailure as failure:
            if "not ready" in failure.reason:
                failure.reason += f". Log: {self._log_tail(spec.id, log_offset) or '(empty)'}"
            raise

    async def _wait_sandbox(self, proc: subprocess.Popen[bytes], exited: Callable[[], str | None]) -> None:
        """An SSH-only instance is ready once its command runs inside the sandbox."""
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            reason = exited()
            if reason:
                raise RuntimeFailure(reason.replace("jupyter-server", "the instance"), step=4)
            try:
                if sandbox_process(psutil.Process(proc.pid)) is not None:
                    return
            except psutil.Error:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeFailure(f"the sandbox was not ready after {self.ready_timeout:g} s", step=4)

    # -- stopping ------------------------------------------------------------------------

    async def _terminate(self, instance_id: str, pid: int | None, grace: float) -> None:
        """End the instance's processes (gracefully first) and release its limits. Nothing running is fine."""
        await self.processes.terminate(instance_id, grace)
        self._release_limits(instance_id, pid)

    def _kill_now(self, instance_id: str, proc: subprocess.Popen[bytes] | None) -> None:
        """SIGKILL everything of the instance and release its limits, synchronously.

        Used on failed starts too, where it must also work while the task is being cancelled."""
        self.processes.kill_now(instance_id, proc)
        self._release_limits(instance_id, proc.pid if proc is not None else None)

    def _release_limits(self, instance_id: str, pid: int | None) -> None:
        try:
            self.limiter.release(instance_id, pid)
        except (OSError, ValueError):
            log.exception("instance %s: could not release resource limits", instance_id)

    # -- reading -------------------------------------------------------------------------

    def _log_tail(self, instance_id: str, offset: int = 0, limit: int = 1200, lines: int = 8) -> str:
        """The last lines jupyter-server wrote since ``offset``, on one line, at most ``limit`` chars."""
        try:
            with open(self.dirs(instance_id).log, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                start = max(offset, size - 16384)
                fh.seek(start)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        if "---- nbfleet: starting" in text:
            text = text.rsplit("---- nbfleet: starting", 1)[1].split("\n", 1)[-1]
        elif start > offset:
            text = text.split("\n", 1)[-1]  # drop the partial first line
        kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        kept = [line if len(line) <= 240 else line[:237] + "..." for line in kept]
        joined = " | ".join(kept)
        return joined if len(joined) <= limit else "..." + joined[-(limit - 3) :]

    def _exit_reason(self, instance_id: str, rc: int | None) -> str:
        reason = "Jupyter exited"
        if rc is not None:
            reason += f" with {_describe_rc(rc)}"
        tail = self._log_tail(instance_id, limit=300)
        if tail:
            reason += f"; last log: {tail}"
        return reason


def _remove_stale_socket(path: Path) -> None:
    """A socket left by a server that died is in the way of the next one's bind."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_tree(path: Path) -> None:
    """Remove an instance directory, also what its owner made unreadable (chmod 000) in it."""
    if not path.exists():
        return
    if os.geteuid() != 0:  # root reads and removes anything; the owner must first open up what it locked
        for directory, subdirs, _ in os.walk(path):
            for name in subdirs:
                try:
                    os.chmod(os.path.join(directory, name), 0o700, follow_symlinks=False)
                except (OSError, NotImplementedError):
                    pass
    shutil.rmtree(path, ignore_errors=False)


def _describe_isolation(info: dict[str, Any]) -> str:
    if info.get("mechanism") == "none":
        return "no sandbox (single-user mode): the notebook runs as nbfleet's own user"
    return (
        f"sandbox: {info['mechanism']} ({', '.join(info['namespaces'])} namespaces), "
        f"{info['user']}, host uid: {info['host_uid']}, network: {info['network']}"
    )
