"""Talking to an instance's Jupyter over its Unix socket (the proxy and the runtime's own probes).

A socket path can be longer than the 107 bytes ``connect()`` accepts (a deep data dir). Such a path is
reached through ``/proc/self/fd/<fd of its directory>/<name>``, which is short and names the same file.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import http.cookiejar
import os
from pathlib import Path
from typing import Iterator

import httpx

MAX_UNIX_PATH = 107


@contextlib.contextmanager
def connectable(path: str) -> Iterator[str]:
    """A path ``connect()`` accepts for the socket at ``path``, valid inside the ``with`` block."""
    if len(os.fsencode(path)) <= MAX_UNIX_PATH:
        yield path
        return
    directory, name = os.path.split(path)
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


class _SocketTransport(httpx.AsyncHTTPTransport):
    """An HTTP transport to one socket; keeps the directory open while a long path is in use."""

    def __init__(self, path: str, **kwargs):
        self._dir_fd: int | None = None
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            directory, name = os.path.split(path)
            self._dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            path = f"/proc/self/fd/{self._dir_fd}/{name}"
        super().__init__(uds=path, **kwargs)

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            if self._dir_fd is not None:
                os.close(self._dir_fd)
                self._dir_fd = None


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
        if loop is not self._loop:   # a pooled connection belongs to the loop that opened it
            self._clients.clear()
            self._loop = loop
        key = str(socket_path)
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        transport = _SocketTransport(key, limits=httpx.Limits(max_connections=None,
                                                                max_keepalive_connections=self.keepalive))
        client = httpx.AsyncClient(transport=transport, cookies=_no_cookies(), trust_env=False,
                                   follow_redirects=False, timeout=self.timeout, base_url="http://notebook")
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
