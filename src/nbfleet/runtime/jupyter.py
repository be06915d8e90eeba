"""What every runtime says to and asks of the Jupyter server of an instance, whatever runs it.

How it is started (``server_args``: a Unix socket, no redirect file with the token in it, the public Host
accepted) and how it is watched over its socket (``JupyterProbe``: readiness, the token check of
adoption, activity for idle auto-stop).
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
from .upstream import UpstreamClients

READY_POLL_S = 0.02


def base_url_for(path_prefix: str | None, instance_id: str) -> str:
    """Jupyter's ``base_url``: ``/`` when every instance has an origin of its own (host routing), else
    ``<prefix><id>/`` (path routing)."""
    return "/" if path_prefix is None else f"{path_prefix}{instance_id}/"


def normal_prefix(path_prefix: str | None) -> str | None:
    return None if path_prefix is None else "/" + path_prefix.strip("/") + "/"


def server_args(*, socket: str, root_dir: str, base_url: str) -> list[str]:
    """jupyter-server's options as nbfleet runs it (the token comes from ``JUPYTER_TOKEN``)."""
    return [
        f"--ServerApp.sock={socket}",
        "--ServerApp.sock_mode=0600",
        f"--ServerApp.root_dir={root_dir}",
        f"--ServerApp.base_url={base_url}",
        "--ServerApp.open_browser=False",
        # The redirect file holds the token; nobody opens a browser here.
        "--ServerApp.no_browser_open_file=True",
        # The proxy keeps the public Host header, which Jupyter would otherwise refuse.
        "--ServerApp.allow_remote_access=True",
    ]


class JupyterProbe:
    """Requests to instances' Jupyter servers over their sockets, with the instance's token."""

    def __init__(self, base_url: Callable[[str], str]):
        self.base_url = base_url
        self._clients = UpstreamClients(timeout=httpx.Timeout(5.0, connect=2.0), keepalive=2)

    async def get(self, placement: Placement, spec: InstanceSpec, path: str, **kwargs: Any) -> httpx.Response:
        assert placement.socket is not None  # both runtimes reach Jupyter through its socket
        client = self._clients.get(placement.socket)
        return await client.get(
            f"{self.base_url(spec.id)}{path}", headers={"Authorization": f"token {spec.token}"}, **kwargs
        )

    async def answers(self, placement: Placement, spec: InstanceSpec) -> bool:
        """Whether the server at ``placement`` accepts the instance's token."""
        if not placement.socket:
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
        if not placement.socket:
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


def _epoch_ms(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        return None
