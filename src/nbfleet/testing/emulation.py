"""An nbfleet for the tests of code that calls the ModelArts notebook API: ``with emulator() as env: …``.

The server runs in this process, in a thread of its own with its own event loop, on a free 127.0.0.1 port,
with the simulated runtime (the real state machine, progress steps, leases; no Jupyter), a throwaway SQLite
store in a temporary directory and a clock that the test moves (``env.clock``). Everything a test does to
the server beyond the API — moving time, scripting failures, seeding — goes over HTTP to the test routes
(``api/testing.py``), which exist only on a server started for testing.

A migrated and bootstrapped store is made once per process and copied for each server, so a server costs
its thread, its port and a copy of a small file (see ``bench/testing_fixture.py``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

START_TIMEOUT = 30.0
STORE_FILES = ("nbfleet.db", "secret.key", "credentials.json")


class EmulatorError(Exception):
    """The emulated server could not start, or refused a test's control request."""


@dataclass(frozen=True)
class User:
    """A user of the emulated project with an access key of its own."""

    name: str
    user_id: str
    project_id: str
    ak: str
    sk: str
    endpoint: str = field(repr=False, default="")

    def client(self, **options: Any):
        """An official SDK client (``huaweicloudsdkmodelarts``) signing as this user."""
        return sdk_client(self.endpoint, self.ak, self.sk, self.project_id, **options)


def sdk_client(endpoint: str, ak: str, sk: str, project_id: str, *, timeout: tuple[float, float] = (5, 30)):
    try:
        from huaweicloudsdkcore.auth.credentials import BasicCredentials
        from huaweicloudsdkcore.http.http_config import HttpConfig
        from huaweicloudsdkmodelarts.v1 import ModelArtsClient
    except ImportError as exc:  # the emulator itself does not need the SDK; a client does
        raise EmulatorError("the official SDK is not installed: pip install huaweicloudsdkmodelarts") from exc
    config = HttpConfig.get_default_config()
    config.timeout = timeout
    return (
        ModelArtsClient.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(ak, sk, project_id))
        .with_endpoint(endpoint)
        .build()
    )


class Clock:
    """The emulated server's clock, moved by the test. Every call returns when the server has done what
    the time it moved to asks for (steps completed, leases run out, instances stopped)."""

    def __init__(self, env: Emulator):
        self._env = env

    def now_ms(self) -> int:
        return self._env._control("GET", "/clock")["now_ms"]

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms() / 1000, UTC)

    @property
    def frozen(self) -> bool:
        return self._env._control("GET", "/clock")["frozen"]

    def advance(
        self,
        delta: timedelta | None = None,
        *,
        days: float = 0,
        hours: float = 0,
        minutes: float = 0,
        seconds: float = 0,
        milliseconds: float = 0,
    ) -> datetime:
        """Move the clock forward (``advance(hours=2)`` or ``advance(timedelta(hours=2))``); returns the new time."""
        step = (delta or timedelta()) + timedelta(
            days=days, hours=hours, minutes=minutes, seconds=seconds, milliseconds=milliseconds
        )
        ms = int(step.total_seconds() * 1000)
        if ms < 0:
            raise ValueError("the clock only moves forward")
        state = self._env._control("POST", "/clock", {"advance_ms": ms})
        return datetime.fromtimestamp(state["now_ms"] / 1000, UTC)

    def freeze(self) -> None:
        """Stop the clock: simulated steps then complete only when the test advances it."""
        self._env._control("POST", "/clock", {"frozen": True})

    def unfreeze(self) -> None:
        self._env._control("POST", "/clock", {"frozen": False})

    def run_pending(self) -> datetime:
        """Move the clock just as far as the transitions under way need to finish (create, start, stop,
        delete, mounts, image saves); a lease is not reached unless it falls before they end."""
        state = self._env._control("POST", "/clock", {"run_pending": True})
        return datetime.fromtimestamp(state["now_ms"] / 1000, UTC)


class Emulator:
    """A running emulated server: where it is, who may call it, and what a test may do to it."""

    def __init__(self, endpoint: str, project_id: str, ak: str, sk: str, *, data_dir: Path | None = None):
        self.endpoint = endpoint
        self.project_id = project_id
        self.ak = ak
        self.sk = sk
        self.data_dir = data_dir
        self.clock = Clock(self)
        self._api = None
        self._server: _ServerThread | None = None

    # --- clients -----------------------------------------------------------------------------------------
    @property
    def admin(self) -> User:
        return User("admin", "", self.project_id, self.ak, self.sk, self.endpoint)

    def client(self, **options: Any):
        """An official SDK client signing with the admin's key (``User.client`` for other users)."""
        return sdk_client(self.endpoint, self.ak, self.sk, self.project_id, **options)

    def api(self):
        """nbfleet's own signed HTTP client (``nbfleet.cli.client.ApiClient``), for calls the SDK has no method
        for; shared, closed with the emulator."""
        if self._api is None:
            from ..cli.client import ApiClient, Credentials

            self._api = ApiClient(Credentials(self.endpoint, self.project_id, self.ak, self.sk))
        return self._api

    def _control(self, method: str, path: str, body: dict | None = None) -> dict:
        from ..cli.client import ApiError

        try:
            return self.api().request(method, f"/nbfleet/testing{path}", body=body) or {}
        except ApiError as exc:
            raise EmulatorError(f"{exc.code}: {exc.message}") from None

    # --- what a test does to the server ----------------------------------------------------------------
    def user(self, name: str, *, quota: int | None = None) -> User:
        """A user of the project (made on first use) with a new access key; ``quota``: its instance quota
        (-1 unlimited), for exercising ModelArts.6419-style refusals."""
        body: dict[str, Any] = {"name": name}
        if quota is not None:
            body["quota"] = quota
        u = self._control("POST", "/users", body)
        return User(u["user_name"], u["user_id"], u["project_id"], u["ak"], u["sk"], self.endpoint)

    def seed(
        self,
        count: int = 1,
        *,
        status: str = "RUNNING",
        owner: str | None = None,
        name_prefix: str | None = None,
        **create_fields: Any,
    ) -> list[str]:
        """``count`` instances in ``status`` (RUNNING, STOPPED, CREATING, CREATE_FAILED, START_FAILED, ERROR,
        FROZEN) owned by ``owner`` (a user name, made on first use; default the admin), in one call. Other
        keyword arguments are create-request fields (``flavor``, ``image_id``, ``duration``, ``description``…).
        Seeded instances count towards their owner's quota but are never refused by it. Returns their ids."""
        body: dict[str, Any] = {"count": count, "status": status, **create_fields}
        if owner is not None:
            body["owner"] = owner
        if name_prefix is not None:
            body["name_prefix"] = name_prefix
        return self._control("POST", "/seed", body)["ids"]

    def fail_next(self, op: str, reason: str | None = None, *, name: str = "*", step: int = 4, count: int = 1) -> None:
        """The next ``count`` times ``op`` (create, start, stop, delete, commit, mount) runs for an instance
        whose name matches ``name`` (a glob), it fails — a create or start at progress step ``step`` (1-4),
        leaving the instance in CREATE_FAILED or START_FAILED with ``reason``."""
        body: dict[str, Any] = {"op": op, "name": name, "step": step, "count": count}
        if reason is not None:
            body["reason"] = reason
        self._control("POST", "/failures", body)

    def add_failure_rule(self, rule: str) -> None:
        """A standing rule in the simulated runtime's syntax, e.g. ``"name=gpu-*;step=2;op=start"``."""
        self._control("POST", "/failures", {"rule": rule})

    def clear_failures(self) -> None:
        self._control("DELETE", "/failures")

    def crash(self, notebook_id: str, reason: str | None = None) -> None:
        """The instance dies as if its process had; the server notices at once and marks it ERROR."""
        self._control("POST", f"/instances/{notebook_id}/crash", {"reason": reason} if reason else {})
        self._control("POST", "/clock", {"advance_ms": 0})  # an observation, now

    def set_activity(self, notebook_id: str, *, busy: bool = False, last_activity: datetime | int | None = None):
        """What the instance reports for idle auto-stop (IDLE leases): busy kernels are never idle; otherwise
        it is idle since ``last_activity`` (a datetime or epoch ms; default: since it started)."""
        if isinstance(last_activity, datetime):
            last_activity = int(last_activity.timestamp() * 1000)
        self._control("POST", f"/instances/{notebook_id}/activity", {"busy": busy, "last_activity_ms": last_activity})

    def reset(self) -> None:
        """An empty server again: every instance gone, no scripted failures, the clock at the wall clock's
        time (users and keys stay)."""
        self._control("POST", "/reset")

    # --- lifetime ------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the server in a thread --------------------------------------------------------------------------------
_template_lock = threading.Lock()
_template_dir: Path | None = None


def _template() -> Path:
    """A migrated, bootstrapped data dir, made once per process (copies of it start in milliseconds)."""
    global _template_dir
    with _template_lock:
        if _template_dir is None or not (_template_dir / "nbfleet.db").exists():
            from ..app import open_store

            path = Path(tempfile.mkdtemp(prefix="nbfleet-testing-template-"))
            settings = _settings_class()(data_dir=path, runtime="simulated")
            db, identity = open_store(settings)
            try:
                identity.bootstrap(path, "http://127.0.0.1")
            finally:
                db.dispose()  # the last connection closed: the WAL is folded into the file
            _template_dir = path
            atexit.register(shutil.rmtree, path, True)  # nothing of a test run stays behind
        return _template_dir


@functools.cache
def _settings_class():
    """Settings that come from the arguments alone: an emulated server is the same on every machine, whatever
    NBFLEET_* variables (a database URL, a runtime) the test's environment holds."""
    from ..settings import Settings

    class EmulatorSettings(Settings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, **other_sources):
            return (init_settings,)

    return EmulatorSettings


def _fresh_data_dir() -> tuple[Path, dict]:
    source = _template()
    target = Path(tempfile.mkdtemp(prefix="nbfleet-testing-"))
    for name in STORE_FILES:
        shutil.copy2(source / name, target / name)
    creds = json.loads((target / "credentials.json").read_text())
    return target, creds


class _ServerThread:
    """uvicorn in a daemon thread, stopped at once (no polling tick) when asked."""

    def __init__(self, app, sock: socket.socket):
        import uvicorn

        stop = self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit: asyncio.Event | None = None
        owner = self

        class Server(uvicorn.Server):
            async def main_loop(self) -> None:
                owner._loop = asyncio.get_running_loop()
                owner._exit = asyncio.Event()
                if stop.is_set():
                    return
                await owner._exit.wait()

            def install_signal_handlers(self) -> None:  # the test's process keeps its own handlers
                return None

            async def shutdown(self, sockets=None) -> None:
                """uvicorn's shutdown, without its fixed 0.1 s pauses (a test's server has no slow clients):
                stop accepting, ask each connection to end, give their requests up to 5 s, then the app's
                own shutdown (the reconciler and the store)."""
                if not hasattr(self, "server_state") or not hasattr(self, "servers"):
                    await super().shutdown(sockets)  # a uvicorn whose insides differ: its own way
                    return
                for server in self.servers:
                    server.close()
                for connection in list(self.server_state.connections):
                    connection.shutdown()
                deadline = asyncio.get_running_loop().time() + 5
                while (
                    self.server_state.connections or self.server_state.tasks
                ) and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.002)
                for task in list(self.server_state.tasks):
                    task.cancel()
                await self.lifespan.shutdown()

        self.sock = sock
        self.server = Server(
            uvicorn.Config(
                app,
                log_level="warning",
                lifespan="on",
                access_log=False,
                server_header=False,
                date_header=False,
                timeout_graceful_shutdown=5,
            )
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="nbfleet-emulator", daemon=True)

    def _run(self) -> None:
        # uvloop when it is there (uvicorn[standard] brings it), as ``nbfleet serve`` runs: with asyncio's own
        # loop every request after a connection's first waited ~40 ms for a delayed ACK (measured). The loop
        # is this thread's alone; the process's event loop policy is left as the test set it.
        loop: asyncio.AbstractEventLoop
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # reported by start()
            self.error = exc
        finally:
            loop.close()

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.server.started and self._exit is not None):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise EmulatorError(f"the emulated nbfleet did not start: {self.error or 'timed out'}")
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self.server.should_exit = True
        if self._loop is not None and self._exit is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                self._loop.call_soon_threadsafe(self._exit.set)
        self.thread.join(START_TIMEOUT)
        self.sock.close()


def start_emulator(
    *,
    step_seconds: float = 2.0,
    frozen: bool = False,
    failures: list[str] | tuple[str, ...] = (),
    settings: dict[str, Any] | None = None,
) -> Emulator:
    """Start an emulated server (see ``emulator``); the caller closes it."""
    from ..app import create_app
    from ..clock import ControlledClock

    data_dir, creds = _fresh_data_dir()
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = _settings_class()(
            **{
                "data_dir": data_dir,
                "host": "127.0.0.1",
                "port": port,
                "runtime": "simulated",
                "testing": True,
                "migrate": False,
                "simulated_delay": step_seconds,
                "simulated_fail": list(failures),
                "ssh_port": 0,
                "refuse_replayed_requests": False,
                **(settings or {}),
            }
        )
        app = create_app(config, clock=ControlledClock(frozen=frozen), announce=lambda text: None)
        server = _ServerThread(app, sock)
        server.start()
    except BaseException:
        sock.close()
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    env = Emulator(f"http://127.0.0.1:{port}", creds["project_id"], creds["ak"], creds["sk"], data_dir=data_dir)
    env._server = server
    return env


class emulator(contextlib.ContextDecorator):  # noqa: N801 - used like a function: ``with emulator() as env``
    """An emulated nbfleet for the duration of a ``with`` block, or of a decorated function (which gets the
    ``Emulator`` as its first argument, as freezegun's ``as_arg`` does).

    ``step_seconds``: how long each simulated progress step takes on the emulated clock (a create or start
    has four; a stop, delete or mount one); ``frozen``: start with the clock stopped, so that nothing
    completes until the test advances it; ``failures``: standing failure rules; ``settings``: any other
    nbfleet setting (``{"instance_quota": 3}``, lease limits…).
    """

    def __init__(
        self,
        *,
        step_seconds: float = 2.0,
        frozen: bool = False,
        failures: list[str] | tuple[str, ...] = (),
        settings: dict[str, Any] | None = None,
    ):
        self._options: dict[str, Any] = {
            "step_seconds": step_seconds,
            "frozen": frozen,
            "failures": failures,
            "settings": settings,
        }
        self._env: Emulator | None = None

    def __enter__(self) -> Emulator:
        self._env = start_emulator(**self._options)
        return self._env

    def __exit__(self, *exc: object) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def __call__(self, func):
        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            with emulator(**self._options) as env:
                return func(env, *args, **kwargs)

        return wrapped
