"""What every runtime says to and asks of the Jupyter server of an instance, whatever runs it.

How it is started (``server_args``: a Unix socket, or a TCP port where only a network address can reach it
(kubernetes), no redirect file with the token in it, the public Host accepted) and how it is watched over its
socket or address (``JupyterProbe``: readiness, the token check of adoption, activity for idle auto-stop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

import httpx

from ..domain.instances import InstanceSpec, Placement
from .base import Activity, RuntimeFailure
from .upstream import UpstreamClients, _no_cookies

READY_POLL_S = 0.02


def base_url_for(path_prefix: str | None, instance_id: str) -> str:
    """Jupyter's ``base_url``: ``/`` when every instance has an origin of its own (host routing), else
    ``<prefix><id>/`` (path routing)."""
    return "/" if path_prefix is None else f"{path_prefix}{instance_id}/"


def normal_prefix(path_prefix: str | None) -> str | None:
    return None if path_prefix is None else "/" + path_prefix.strip("/") + "/"


def server_args(*, socket: str | None = None, port: int | None = None, root_dir: str, base_url: str) -> list[str]:
    """jupyter-server's options as nbfleet runs it (the token comes from ``JUPYTER_TOKEN``): on the Unix
    socket ``socket``, else on ``port`` of every address (a pod's, behind its Service)."""
    if socket is not None:
        listen = [f"--ServerApp.sock={socket}", "--ServerApp.sock_mode=0600"]
    elif port is not None:
        listen = ["--ServerApp.ip=0.0.0.0", f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    else:
        raise ValueError("jupyter-server listens on a socket or a port")
    return [
        *listen,
        f"--ServerApp.root_dir={root_dir}",
        f"--ServerApp.base_url={base_url}",
        "--ServerApp.open_browser=False",
        # The redirect file holds the token; nobody opens a browser here.
        "--ServerApp.no_browser_open_file=True",
        # The proxy keeps the public Host header, which Jupyter would otherwise refuse.
        "--ServerApp.allow_remote_access=True",
    ]


def reachable(placement: Placement) -> bool:
    """Whether ``placement`` says where a Jupyter server answers (a socket, or host and port)."""
    return bool(placement.socket or (placement.host and placement.port))


class JupyterProbe:
    """Requests to instances' Jupyter servers over their sockets (or ``host:port``), with the instance's token."""

    def __init__(self, base_url: Callable[[str], str]):
        self.base_url = base_url
        self._timeout = httpx.Timeout(5.0, connect=2.0)
        self._clients = UpstreamClients(timeout=self._timeout, keepalive=2)
        self._tcp: httpx.AsyncClient | None = None
        self._tcp_loop: asyncio.AbstractEventLoop | None = None

    def _client(self, placement: Placement) -> tuple[httpx.AsyncClient, str]:
        if placement.socket:
            return self._clients.get(placement.socket), ""
        assert placement.host and placement.port  # a placement without a socket has a network address
        loop = asyncio.get_running_loop()
        if self._tcp is None or self._tcp_loop is not loop:  # a pooled connection belongs to its loop
            self._tcp = httpx.AsyncClient(
                cookies=_no_cookies(),
                trust_env=False,
                follow_redirects=False,
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            )
            self._tcp_loop = loop
        host = f"[{placement.host}]" if ":" in placement.host else placement.host
        return self._tcp, f"http://{host}:{placement.port}"

    async def get(self, placement: Placement, spec: InstanceSpec, path: str, **kwargs: Any) -> httpx.Response:
        client, origin = self._client(placement)
        return await client.get(
            f"{origin}{self.base_url(spec.id)}{path}", headers={"Authorization": f"token {spec.token}"}, **kwargs
        )

    async def answers(self, placement: Placement, spec: InstanceSpec) -> bool:
        """Whether the server at ``placement`` accepts the instance's token."""
        if not reachable(placement):
            return False
        try:
            return (await self.get(placement, spec, "api/status")).status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_ready(
        self,
        placement: Placement,
        spec: InstanceSpec,
        timeout: float,
        exited: Callable[[], Coroutine[Any, Any, str | None] | str | None],
    ) -> None:
        """Until ``/api/status`` answers 200 with the token; ``exited()`` (awaitable or not) says why the
        server can no longer come up (it ended), and ends the wait with that reason."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            why = exited()
            if asyncio.iscoroutine(why):
                why = await why
            if why:
                raise RuntimeFailure(why, step=4)
            try:
                r = await self.get(placement, spec, "api/status", timeout=httpx.Timeout(2.0, connect=0.5))
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if time.monotonic() >= deadline:
                raise RuntimeFailure(f"jupyter-server was not ready within {timeout:g} s (last probe: {last})", step=4)
            await asyncio.sleep(READY_POLL_S)

    async def activity(self, spec: InstanceSpec, placement: Placement) -> Activity | None:
        # /api/status does not count as activity; other endpoints do unless told not to track.
        if not reachable(placement):
            return None
        try:
            status = await self.get(placement, spec, "api/status")
            kernels = await self.get(placement, spec, "api/kernels", params={"no_track_activity": "1"})
        except httpx.HTTPError:
            return None
        if status.status_code != 200 or kernels.status_code != 200:
            return None
        # What the server answers is its owner's to shape: anything but the documented form counts as
        # "cannot tell", never as an error of nbfleet's.
        try:
            info = status.json()
            kernel_list = kernels.json()
        except ValueError:
            return None
        if (
            not isinstance(info, dict)
            or not isinstance(kernel_list, list)
            or not all(isinstance(k, dict) for k in kernel_list)
        ):
            return None
        times = [_epoch_ms(info.get("last_activity"))]
        times += [_epoch_ms(k.get("last_activity")) for k in kernel_list]
        known = [t for t in times if t is not None]
        busy_count = sum(1 for k in kernel_list if k.get("execution_state") == "busy")
        connections = info.get("connections")
        detail = (
            f"{len(kernel_list)} kernel(s), {busy_count} busy, "
            f"{connections if isinstance(connections, int) else 0} connection(s)"
        )
        return Activity(last_activity_ms=max(known) if known else None, busy=busy_count > 0, detail=detail)

    async def forget(self, placement: Placement | None) -> None:
        if placement is not None and placement.socket:
            await self._clients.drop(placement.socket)

    async def close(self) -> None:
        await self._clients.aclose()
        if self._tcp is not None and self._tcp_loop is asyncio.get_running_loop():
            await self._tcp.aclose()
        self._tcp = None


def _epoch_ms(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        return None
