"""Talking to an instance's Jupyter over its Unix socket (the proxy and the runtime's own probes).

The socket lies in a directory the instance itself can write (its Jupyter creates the socket there), so
the instance can put anything at that name: a link to another instance's socket, or to a socket of the
host (the container engine's, a database's), which nbfleet, connecting as itself, would otherwise follow.
Every connection therefore opens the name without following a link, checks that it is a socket, and
connects to exactly that file through ``/proc/self/fd/<fd>`` (which also keeps the address short: a
socket address may not be longer than 107 bytes, a deep data dir's path may).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import http.cookiejar
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpcore
import httpx


@contextlib.contextmanager
def connectable(path: str) -> Iterator[str]:
    """An address for ``connect()`` that names the socket file at ``path`` itself, valid inside the
    ``with`` block; ``ConnectionRefusedError`` when ``path`` is a link or anything but a socket."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConnectionRefusedError(errno.ENOENT, "the instance's socket does not exist") from None
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise ConnectionRefusedError(errno.ECONNREFUSED, "the instance's socket is not a socket")
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


class _VerifiedSocketBackend(httpcore.AnyIOBackend):
    """httpcore's network backend, connecting to Unix sockets only through ``connectable``."""

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            with connectable(path) as address:
                return await super().connect_unix_socket(address, timeout=timeout, socket_options=socket_options)
        except ConnectionRefusedError as exc:  # as httpcore reports a failed connect, so httpx maps it
            raise httpcore.ConnectError(str(exc)) from None


class _SocketTransport(httpx.AsyncHTTPTransport):
    """An HTTP transport to one instance's socket, every connection verified."""

    def __init__(self, path: str, limits: httpx.Limits):
        # httpx's transport takes no network backend, so its pool is made here (all its request handling
        # needs) with the verifying backend, rather than by its __init__.
        self._pool = httpcore.AsyncConnectionPool(
            uds=path,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_VerifiedSocketBackend(),
        )


def _no_cookies() -> http.cookiejar.CookieJar:
    # A login cookie from one request must never authenticate another (another user's).
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class UpstreamClients:
    """One pooled HTTP client per instance socket, the least recently used closed beyond ``size``."""

    def __init__(self, *, timeout: httpx.Timeout, size: int = 256, keepalive: int = 20):
        self.timeout = timeout
        self.size = size
        self.keepalive = keepalive
        self._clients: collections.OrderedDict[str, httpx.AsyncClient] = collections.OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self, socket_path: str | Path) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a pooled connection belongs to the loop that opened it
            self._clients.clear()
            self._loop = loop
        key = str(socket_path)
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        transport = _SocketTransport(key, httpx.Limits(max_connections=None, max_keepalive_connections=self.keepalive))
        client = httpx.AsyncClient(
            transport=transport,
            cookies=_no_cookies(),
            trust_env=False,
            follow_redirects=False,
            timeout=self.timeout,
            base_url="http://notebook",
        )
        self._clients[key] = client
        while len(self._clients) > self.size:
            _, old = self._clients.popitem(last=False)
            _close_later(old)
        return client

    async def drop(self, socket_path: str | Path) -> None:
        client = self._clients.pop(str(socket_path), None)
        if client is not None:
            await client.aclose()

    async def aclose(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.aclose()


def _close_later(client: httpx.AsyncClient) -> None:
    try:
        asyncio.get_running_loop().create_task(client.aclose())
    except RuntimeError:
        pass
