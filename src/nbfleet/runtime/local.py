"""The local runtime: one jupyter-server process per notebook instance on this host.

Layout of an instance (``<data_dir>/instances/<id>/``)::

    work/                  the notebook root (kept across stop/start, removed by delete)
    .jupyter/              JUPYTER_CONFIG_DIR
    .local/share/jupyter/  JUPYTER_DATA_DIR
    .jupyter-runtime/      JUPYTER_RUNTIME_DIR (kernel connection files)
    jupyter.log            stdout+stderr of the server, appended across starts

HOME is the instance directory, so ``~/work`` is the work dir as on ModelArts
(``/home/ma-user/work``) and nothing Jupyter writes for itself lands in the user's files.

Recognising our processes: every process of an instance carries ``NBFLEET_INSTANCE_ID`` and
``NBFLEET_DATA_DIR`` in its environment (kernels and terminals inherit them), read back through
``/proc/<pid>/environ``. That survives restarts of nbfleet, tells apart two nbfleet installations
with different data dirs on one host, and guards against signalling a recycled pid. A pidfile
could do neither for the kernels, which jupyter_client starts in sessions of their own.
"""
from __future__ import annotations

import asyncio
import http.cookiejar
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Sequence

import httpx
import psutil

from ..domain.model import StepStatus
from .base import Activity, FlavorLimits, InstanceSpec, Observation, Placement, Reporter, RuntimeFailure
from .limits import LimitPlan, ResourceLimiter
from .processes import (ENV_DATA_DIR, ENV_INSTANCE, alive as _alive, belongs, describe_rc as _describe_rc,
                        marked_processes, reap as _reap, signal_group as _signal_group)

log = logging.getLogger(__name__)

# Only these reach the notebook: nbfleet's own environment may hold database URLs and secrets.
PASSED_ENV = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "TMPDIR")
LOG_ROTATE_BYTES = 10 * 1024 * 1024
READY_POLL_S = 0.02


class LocalRuntime:
    name = "local"
    observes = True

    def __init__(
        self,
        data_dir: Path,
        *,
        port_range: tuple[int, int] = (20000, 29999),
        ready_timeout: float = 60.0,
        limiter: ResourceLimiter | None = None,
        jupyter_command: Sequence[str] | None = None,
        base_url_prefix: str = "/notebooks/",
        stop_timeout: float = 5.0,
        extra_args: Sequence[str] = (),
    ):
        """``limiter=None`` means ``ResourceLimiter()``: the best mechanism the host offers."""
        self.data_dir = Path(data_dir).resolve()
        self.port_range = port_range
        self.ready_timeout = ready_timeout
        self.limiter = limiter if limiter is not None else ResourceLimiter()
        self.jupyter_command = list(jupyter_command or [sys.executable, "-m", "jupyter_server"])
        self.base_url_prefix = "/" + base_url_prefix.strip("/") + "/"
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self._children: dict[str, subprocess.Popen] = {}  # started by this process, to reap them
        self._reserved_ports: set[int] = set()
        self._client: httpx.AsyncClient | None = None

    # -- paths ---------------------------------------------------------------------------

    def instance_dir(self, instance_id: str) -> Path:
        if not instance_id or "/" in instance_id or instance_id in (".", ".."):
            raise RuntimeFailure(f"unusable instance id {instance_id!r}")
        return self.data_dir / "instances" / instance_id

    def work_dir(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / "work"

    def log_path(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / "jupyter.log"

    def base_url(self, instance_id: str) -> str:
        return f"{self.base_url_prefix}{instance_id}/"

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # No cookie jar: a login cookie from one probe must never authenticate another request.
            jar = http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
            self._client = httpx.AsyncClient(cookies=jar, trust_env=False, follow_redirects=False,
                                             timeout=httpx.Timeout(5.0, connect=2.0))
        return self._client

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, spec: InstanceSpec, reporter: Reporter) -> Placement:
        iid = spec.id
        step = 1
        plan: LimitPlan | None = None
        proc: subprocess.Popen | None = None
        port: int | None = None
        try:
            home = self.instance_dir(iid)
            await reporter.step(1, StepStatus.PROCESSING, "Preparing the work directory")
            # A start repeated after a crash must not leave the first attempt's server running.
            await self._terminate(iid, None, grace=self.stop_timeout)
            work = self.work_dir(iid)
            for d in (work, home / ".jupyter", home / ".local/share/jupyter", home / ".jupyter-runtime"):
                d.mkdir(parents=True, exist_ok=True)
            await reporter.step(1, StepStatus.COMPLETED, f"Work directory {work}")

            step = 2
            await reporter.step(2, StepStatus.PROCESSING, "Setting resource limits")
            plan = self.limiter.prepare(iid, spec.flavor)
            limits = plan.describe()
            log.info("instance %s: limits %s", iid, limits)
            await reporter.event("limits", limits)
            await reporter.step(2, StepStatus.COMPLETED, limits)

            step = 3
            await reporter.step(3, StepStatus.PROCESSING, "Allocating a port")
            port = self._pick_port()
            await reporter.step(3, StepStatus.COMPLETED,
                                f"Port 127.0.0.1:{port} allocated; route {self.base_url(iid)} bound")

            step = 4
            await reporter.step(4, StepStatus.PROCESSING, "Starting jupyter-server")
            started = time.monotonic()
            proc, log_offset = self._spawn(spec, port, plan)
            await self._wait_ready(spec, port, proc, log_offset)
            elapsed = time.monotonic() - started
            log.info("instance %s: jupyter-server pid %s ready on port %s in %.2f s", iid, proc.pid, port, elapsed)
            await reporter.step(4, StepStatus.COMPLETED, f"Jupyter ready in {elapsed:.1f} s")
        except BaseException as exc:
            self._kill_now(iid, proc)
            if isinstance(exc, RuntimeFailure):
                failure = exc
            elif isinstance(exc, Exception):
                failure = RuntimeFailure(f"{type(exc).__name__}: {exc}", step)
            else:  # cancelled: clean up, then let the cancellation through
                raise
            if failure.step is None:
                failure.step = step
            try:
                await reporter.step(failure.step, StepStatus.FAILED, failure.reason)
            except Exception:
                log.exception("instance %s: could not report the failed step", iid)
            raise failure from (None if exc is failure else exc)
        finally:
            if port is not None:
                self._reserved_ports.discard(port)
        return Placement(host="127.0.0.1", port=port, pid=proc.pid,
                         details={"limits": plan.mechanism, "work_dir": str(work)})

    async def stop(self, spec: InstanceSpec, placement: Placement | None) -> None:
        await self._terminate(spec.id, placement.pid if placement else None, grace=self.stop_timeout)

    async def delete(self, spec: InstanceSpec, placement: Placement | None) -> None:
        await self.stop(spec, placement)
        home = self.instance_dir(spec.id)
        try:
            await asyncio.to_thread(shutil.rmtree, home)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RuntimeFailure(f"could not remove {home}: {exc}") from exc

    async def observe(self, spec: InstanceSpec, placement: Placement | None) -> Observation:
        if placement is None or placement.pid is None:
            return Observation(False, "no jupyter process recorded for the instance")
        pid = placement.pid
        try:
            proc = psutil.Process(pid)
            gone = proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:  # includes ZombieProcess
            gone = True
        if gone or self._exit_code(pid) is not None:
            return Observation(False, self._exit_reason(spec.id, pid, await self._wait_exit_code(pid)))
        belongs = self._belongs(proc, spec.id)
        if belongs is None:
            # Environment unreadable: the process is exiting right now.
            return Observation(False, self._exit_reason(spec.id, pid, await self._wait_exit_code(pid)))
        if not belongs:
            return Observation(False, f"process {pid} is no longer this instance's jupyter-server")
        return Observation(True)

    async def adopt(self, spec: InstanceSpec, placement: Placement | None) -> bool:
        """After a restart: is the recorded server still ours, alive and answering with the token?"""
        if placement is None or not (await self.observe(spec, placement)).alive:
            return False
        try:
            r = await self.client.get(self._url(placement, spec.id, "api/status"), headers=_auth(spec))
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def activity(self, spec: InstanceSpec, placement: Placement) -> Activity | None:
        # /api/status does not count as activity; other endpoints do unless told not to track.
        try:
            status = await self.client.get(self._url(placement, spec.id, "api/status"), headers=_auth(spec))
            kernels = await self.client.get(self._url(placement, spec.id, "api/kernels"),
                                            params={"no_track_activity": "1"}, headers=_auth(spec))
        except httpx.HTTPError:
            return None
        if status.status_code != 200 or kernels.status_code != 200:
            return None
        try:
            info = status.json()
            kernel_list = kernels.json()
        except ValueError:
            return None
        times = [_epoch_ms(info.get("last_activity"))]
        times += [_epoch_ms(k.get("last_activity")) for k in kernel_list]
        known = [t for t in times if t is not None]
        busy_count = sum(1 for k in kernel_list if k.get("execution_state") == "busy")
        detail = (f"{len(kernel_list)} kernel(s), {busy_count} busy, "
                  f"{info.get('connections', 0)} connection(s)")
        return Activity(last_activity_ms=max(known) if known else None, busy=busy_count > 0, detail=detail)

    async def reap_orphans(self, known_ids: set[str]) -> list[str]:
        orphans = sorted({iid for iid, _ in self._marked_processes() if iid not in known_ids})
        for iid in orphans:
            log.warning("ending orphaned instance %s (not in the store)", iid)
        await asyncio.gather(*(self._terminate(iid, None, grace=self.stop_timeout) for iid in orphans))
        # Groups of instances that died with nobody stopping them.
        self.limiter.sweep(known_ids)
        return orphans

    def has_capacity(self, flavor: FlavorLimits) -> bool:
        return flavor.gpus <= 0 or Path("/dev/nvidia0").exists()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- starting ------------------------------------------------------------------------

    def _pick_port(self) -> int:
        """A port free on 127.0.0.1 now. Jupyter runs with port_retries=0, so a port taken in the
        meantime fails the start loudly instead of moving the server somewhere we do not look."""
        lo, hi = self.port_range
        count = hi - lo + 1
        # A random start keeps two nbfleet processes on one host from racing for the same ports.
        first = random.randrange(count)
        for i in range(count):
            port = lo + (first + i) % count
            if port in self._reserved_ports:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                # Same option as tornado, so a port in TIME_WAIT counts as free, a listener as taken.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            self._reserved_ports.add(port)
            return port
        raise RuntimeFailure(f"no free port on 127.0.0.1 in the range {lo}-{hi}", step=3)

    def _command(self, spec: InstanceSpec, port: int) -> list[str]:
        return [
            *self.jupyter_command,
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.work_dir(spec.id)}",
            f"--ServerApp.base_url={self.base_url(spec.id)}",
            "--ServerApp.open_browser=False",
            "--ServerApp.allow_root=True",
            # The proxy keeps the public Host header, which Jupyter would otherwise refuse.
            "--ServerApp.allow_remote_access=True",
            *self.extra_args,
        ]

    def _env(self, spec: InstanceSpec) -> dict[str, str]:
        home = self.instance_dir(spec.id)
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        # The interpreter that runs Jupyter first on PATH, so `python`/`pip` in a terminal match the kernel.
        bindir = str(Path(self.jupyter_command[0]).parent) if os.sep in self.jupyter_command[0] else None
        path = env.get("PATH", os.defpath)
        if bindir and bindir not in path.split(os.pathsep):
            path = bindir + os.pathsep + path
        env.update({
            "PATH": path,
            "HOME": str(home),
            "SHELL": os.environ.get("SHELL", "/bin/bash"),
            "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
            "JUPYTER_DATA_DIR": str(home / ".local/share/jupyter"),
            "JUPYTER_RUNTIME_DIR": str(home / ".jupyter-runtime"),
            "PYTHONUNBUFFERED": "1",
            # The token goes in the environment, not argv: argv is readable by every user through ps.
            "JUPYTER_TOKEN": spec.token,
            ENV_INSTANCE: spec.id,
            ENV_DATA_DIR: str(self.data_dir),
        })
        return env

    def _spawn(self, spec: InstanceSpec, port: int, plan: LimitPlan) -> tuple[subprocess.Popen, int]:
        log_path = self.log_path(spec.id)
        try:
            if log_path.stat().st_size > LOG_ROTATE_BYTES:
                log_path.replace(log_path.with_suffix(".log.1"))
        except FileNotFoundError:
            pass
        with open(log_path, "ab") as fh:
            fh.write(f"---- nbfleet: starting jupyter-server on 127.0.0.1:{port} at "
                     f"{datetime.now().astimezone().isoformat(timespec='seconds')} ----\n".encode())
            fh.flush()
            offset = fh.tell()
            try:
                proc = subprocess.Popen(
                    self._command(spec, port),
                    cwd=self.work_dir(spec.id), env=self._env(spec),
                    stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                    # Own session: the server outlives nbfleet and its group can be signalled as one.
                    start_new_session=True, preexec_fn=plan.preexec, close_fds=True,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise RuntimeFailure(f"could not start jupyter-server: {exc}", step=4) from exc
        self._children[spec.id] = proc
        return proc, offset

    async def _wait_ready(self, spec: InstanceSpec, port: int, proc: subprocess.Popen, log_offset: int) -> None:
        url = f"http://127.0.0.1:{port}{self.base_url(spec.id)}api/status"
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        while True:
            rc = proc.poll()
            if rc is not None:
                tail = self._log_tail(spec.id, log_offset)
                if "is not available" in tail or "already in use" in tail:
                    raise RuntimeFailure(f"port {port} is already in use: jupyter-server could not bind it "
                                         f"(exit code {rc}). Log: {tail}", step=4)
                raise RuntimeFailure(f"jupyter-server exited with {_describe_rc(rc)} before it was ready. "
                                     f"Log: {tail or '(empty)'}", step=4)
            try:
                r = await self.client.get(url, headers=_auth(spec), timeout=httpx.Timeout(2.0, connect=0.5))
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if time.monotonic() >= deadline:
                tail = self._log_tail(spec.id, log_offset)
                raise RuntimeFailure(f"jupyter-server was not ready on port {port} within {self.ready_timeout:g} s "
                                     f"(last probe: {last}). Log: {tail or '(empty)'}", step=4)
            await asyncio.sleep(READY_POLL_S)

    # -- stopping ------------------------------------------------------------------------

    def _marked_processes(self, instance_id: str | None = None) -> list[tuple[str, psutil.Process]]:
        return marked_processes(self.data_dir, instance_id)

    def _belongs(self, proc: psutil.Process, instance_id: str) -> bool | None:
        return belongs(proc, self.data_dir, instance_id)

    async def _terminate(self, instance_id: str, pid: int | None, grace: float) -> None:
        """SIGTERM the instance's server (it shuts its kernels down itself), SIGKILL what is left
        after ``grace`` seconds, then remove the limit groups. Nothing running is fine."""
        procs = [p for _, p in self._marked_processes(instance_id)]
        pids = {p.pid for p in procs}
        roots = []
        for p in procs:
            try:
                if p.ppid() not in pids:
                    roots.append(p)
            except psutil.Error:
                pass
        for p in roots:
            _signal_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while procs and time.monotonic() < deadline:
            self._reap_child(instance_id)
            procs = [p for p in procs if _alive(p)]
            if procs:
                await asyncio.sleep(0.02)
        if procs:
            log.warning("instance %s: %d process(es) ignored SIGTERM for %.1f s; killing",
                        instance_id, len(procs), grace)
        self._kill_now(instance_id, None, pid)

    def _kill_now(self, instance_id: str, proc: subprocess.Popen | None, pid: int | None = None) -> None:
        """SIGKILL everything of the instance and release its limits, synchronously.

        Used on failed starts too, where it must also work while the task is being cancelled."""
        pid = pid if pid is not None else proc.pid if proc is not None else None
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGKILL)
        for _, p in self._marked_processes(instance_id):
            _signal_group(p.pid, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            self._reap_child(instance_id)
            if not self._marked_processes(instance_id):
                break
            time.sleep(0.01)
        try:
            self.limiter.release(instance_id, pid)
        except (OSError, ValueError):
            log.exception("instance %s: could not release resource limits", instance_id)
        child = self._children.get(instance_id)
        if child is not None and child.poll() is not None:
            del self._children[instance_id]

    def _child(self, pid: int) -> subprocess.Popen | None:
        return next((c for c in self._children.values() if c.pid == pid), None)

    def _exit_code(self, pid: int) -> int | None:
        """Exit status of an ended server we can still collect (our own child), else None."""
        child = self._child(pid)
        return child.poll() if child is not None else _reap(pid)

    async def _wait_exit_code(self, pid: int, timeout: float = 1.0) -> int | None:
        """The exit status of an ending server, waiting briefly if it is our child.

        A multi-threaded leader shows as a zombie before its other threads are gone, and only
        becomes collectable after them."""
        child = self._child(pid)
        if child is None:
            return _reap(pid)
        deadline = time.monotonic() + timeout
        while child.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return child.returncode

    def _reap_child(self, instance_id: str) -> None:
        child = self._children.get(instance_id)
        if child is not None:
            child.poll()

    # -- reading -------------------------------------------------------------------------

    def _url(self, placement: Placement, instance_id: str, path: str) -> str:
        return f"http://{placement.host}:{placement.port}{self.base_url(instance_id)}{path}"

    def _log_tail(self, instance_id: str, offset: int = 0, limit: int = 1200, lines: int = 8) -> str:
        """The last lines jupyter-server wrote since ``offset``, on one line, at most ``limit`` chars."""
        try:
            with open(self.log_path(instance_id), "rb") as fh:
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
        return joined if len(joined) <= limit else "..." + joined[-(limit - 3):]

    def _exit_reason(self, instance_id: str, pid: int, rc: int | None) -> str:
        reason = f"jupyter process {pid} exited"
        if rc is not None:
            reason += f" with {_describe_rc(rc)}"
        tail = self._log_tail(instance_id, limit=300)
        if tail:
            reason += f"; last log: {tail}"
        return reason


def _auth(spec: InstanceSpec) -> dict[str, str]:
    return {"Authorization": f"token {spec.token}"}


def _epoch_ms(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    except ValueError:
        return None
