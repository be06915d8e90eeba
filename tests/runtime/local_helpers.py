"""Helpers for tests that drive ``LocalRuntime`` directly: specs, reporters, and Jupyter over the socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
import uuid
from pathlib import Path

import httpx
import psutil
from websockets.asyncio.client import unix_connect

from nbfleet.domain.model import StepStatus
from nbfleet.runtime.base import FlavorLimits, ImageRef, InstanceSpec, Placement
from nbfleet.runtime.upstream import UpstreamClients, connectable

from ..images import DEFAULT_IMAGE, catalogue_environment

FLAVOR = FlavorLimits("modelarts.vm.cpu.2u", vcpus=2, memory_mb=4096)
# For tests that only need the server to get as far as answering: skips ~1-2 s of extension loading.
BARE_SERVER = [
    "--ServerApp.jpserver_extensions={'jupyterlab': False, 'jupyter_lsp': False, "
    "'notebook_shim': False, 'jupyter_server_terminals': False}"
]


class RecordingReporter:
    def __init__(self):
        self.steps: list[tuple[int, StepStatus, str | None]] = []
        self.events: list[tuple[str, str]] = []

    async def step(self, number, status, description=None):
        self.steps.append((number, status, description))

    async def event(self, kind, message):
        self.events.append((kind, message))


def make_spec(name: str = "nb", *, image: str = DEFAULT_IMAGE, environment: dict | None | bool = True) -> InstanceSpec:
    ref = ImageRef(image, "swr/test:latest", catalogue_environment(image) if environment is True else environment)
    return InstanceSpec(
        id=f"t-{name}-{uuid.uuid4().hex[:8]}",
        name=name,
        token=secrets.token_hex(16),
        flavor=FLAVOR,
        image=ref,
        owner_id="u",
        project_id="p",
    )


def _own_pid_namespace() -> str:
    return os.readlink("/proc/self/ns/pid")


def marked(data_dir: Path, instance_id: str | None = None) -> list[psutil.Process]:
    """Live processes of ``data_dir``'s instances: the processes nbfleet started (marked in their
    environment, in nbfleet's PID namespace) and everything below them, sandboxes included."""
    roots = marked_roots(data_dir, instance_id)
    found = {p.pid: p for p in roots}
    for root in roots:
        with contextlib.suppress(psutil.Error):
            for child in root.children(recursive=True):
                if child.status() != psutil.STATUS_ZOMBIE:
                    found[child.pid] = child
    return list(found.values())


def marked_roots(data_dir: Path, instance_id: str | None = None) -> list[psutil.Process]:
    own = _own_pid_namespace()
    roots = []
    for p in psutil.process_iter():
        try:
            env = p.environ()
            if p.status() == psutil.STATUS_ZOMBIE or os.readlink(f"/proc/{p.pid}/ns/pid") != own:
                continue
        except (psutil.Error, OSError):
            continue
        if env.get("NBFLEET_DATA_DIR") == str(data_dir.resolve()) and instance_id in (
            None,
            env.get("NBFLEET_INSTANCE_ID"),
        ):
            roots.append(p)
    return roots


def instance_servers(data_dir: Path) -> dict[str, int]:
    """Instance id -> pid of the jupyter-server of each instance of ``data_dir`` that runs."""
    found = {}
    for root in marked_roots(data_dir):
        with contextlib.suppress(psutil.Error):
            iid = root.environ().get("NBFLEET_INSTANCE_ID")
            for child in root.children(recursive=True):
                cmdline = child.cmdline()
                if cmdline and "jupyter_server" in cmdline and child.status() != psutil.STATUS_ZOMBIE:
                    found[iid] = child.pid
    return found


def in_sandbox(processes: list[psutil.Process]) -> list[psutil.Process]:
    own = _own_pid_namespace()
    out = []
    for p in processes:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{p.pid}/ns/pid") != own:
                out.append(p)
    return out


class Jupyter:
    """One instance's Jupyter, reached the way nbfleet's proxy reaches it: over its Unix socket."""

    def __init__(self, spec: InstanceSpec, placement: Placement, base: str = "/"):
        self.spec = spec
        self.placement = placement
        self.base = base  # Jupyter's base_url: "/" unless the runtime routes by path

    @contextlib.asynccontextmanager
    async def client(self):
        """A fresh client each time: Jupyter's login cookie must not authenticate later requests."""
        clients = UpstreamClients(timeout=httpx.Timeout(30.0))
        try:
            yield clients.get(self.placement.socket)
        finally:
            await clients.aclose()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.spec.token}"}

    async def request(self, method: str, path: str, *, token: bool = True, **kwargs) -> httpx.Response:
        async with self.client() as c:
            return await c.request(method, self.base + path, headers=self.auth if token else {}, **kwargs)

    async def new_kernel(self) -> str:
        r = await self.request("POST", "api/kernels", json={"name": "python3"})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    async def execute(self, kernel_id: str, code: str, *, timeout: float = 60) -> dict:
        """Run ``code``; returns {"result", "stream", "error", "states"} once the reply came."""
        msg_id = uuid.uuid4().hex
        out = {"result": None, "stream": "", "error": None, "states": []}
        uri = f"ws://notebook{self.base}api/kernels/{kernel_id}/channels?token={self.spec.token}"
        with connectable(self.placement.socket) as path:
            ws = await unix_connect(path, uri, max_size=None, open_timeout=10)
        async with ws:
            await ws.send(
                json.dumps(
                    {
                        "header": {
                            "msg_id": msg_id,
                            "msg_type": "execute_request",
                            "username": "test",
                            "session": uuid.uuid4().hex,
                            "version": "5.3",
                        },
                        "parent_header": {},
                        "metadata": {},
                        "channel": "shell",
                        "buffers": [],
                        "content": {
                            "code": code,
                            "silent": False,
                            "store_history": False,
                            "user_expressions": {},
                            "allow_stdin": False,
                            "stop_on_error": True,
                        },
                    }
                )
            )
            async with asyncio.timeout(timeout):
                while True:
                    msg = json.loads(await ws.recv())
                    if msg.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    kind = msg["msg_type"]
                    if kind == "execute_result":
                        out["result"] = msg["content"]["data"]["text/plain"]
                    elif kind == "stream":
                        out["stream"] += msg["content"]["text"]
                    elif kind == "error":
                        out["error"] = f"{msg['content']['ename']}: {msg['content']['evalue']}"
                    elif kind == "status":
                        out["states"].append(msg["content"]["execution_state"])
                    elif kind == "execute_reply":
                        return out

    async def terminal(self, command: str, until: str, *, timeout: float = 30) -> str:
        """Type ``command`` into a new terminal; return what it printed once ``until`` appeared."""
        r = await self.request("POST", "api/terminals")
        assert r.status_code == 200, r.text
        name = r.json()["name"]
        uri = f"ws://notebook{self.base}terminals/websocket/{name}?token={self.spec.token}"
        with connectable(self.placement.socket) as path:
            ws = await unix_connect(path, uri, max_size=None, open_timeout=10)
        seen = ""
        async with ws:
            await ws.send(json.dumps(["stdin", command + "\r"]))
            async with asyncio.timeout(timeout):
                while until not in seen:
                    message = json.loads(await ws.recv())
                    if message[0] == "stdout":
                        seen += message[1]
        await self.request("DELETE", f"api/terminals/{name}")
        return seen

    async def run(self, code: str, kernel_id: str | None = None) -> str:
        """Run ``code`` in a (new) kernel and return what it printed; a kernel error fails the test."""
        kernel_id = kernel_id or await self.new_kernel()
        out = await self.execute(kernel_id, code)
        assert out["error"] is None, out["error"]
        return out["stream"]


def delete_every_instance(client, timeout: float = 60) -> None:
    """Delete whatever instances the server holds (a ``SignedClient`` of its admin) and wait until they
    are gone (bounded)."""
    for nb in client.ok("GET", "/notebooks/all", {"limit": 50})["data"]:
        client.call("DELETE", f"/notebooks/{nb['id']}")
    deadline = time.monotonic() + timeout
    while client.ok("GET", "/notebooks/all", {"limit": 50})["total"] and time.monotonic() < deadline:
        time.sleep(0.2)
