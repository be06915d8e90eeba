"""Reaching an instance's address from the tests the way a browser does.

Every instance has an origin of its own, ``http://<id>.nb.localhost:<port>``. Browsers resolve any
``*.localhost`` name to the loopback; the C library here does not, so these helpers connect to 127.0.0.1
and send the instance's name as the Host, which is all a browser's request carries too.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.sync.client import connect as ws_connect


def _loopback(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    if not (parts.hostname or "").endswith(".localhost"):
        return url, {}
    netloc = "127.0.0.1" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), {"Host": parts.netloc}


def request(
    method: str, url: str, *, headers: dict | None = None, client: httpx.Client | None = None, **kwargs
) -> httpx.Response:
    """One HTTP request to ``url``; a fresh client (no cookies) unless ``client`` is given."""
    target, host = _loopback(url)
    merged = {**host, **(headers or {})}
    if client is not None:
        return client.request(method, target, headers=merged, **kwargs)
    with httpx.Client(timeout=kwargs.pop("timeout", 30)) as fresh:
        return fresh.request(method, target, headers=merged, **kwargs)


def get(url: str, **kwargs) -> httpx.Response:
    return request("GET", url, **kwargs)


def put(url: str, **kwargs) -> httpx.Response:
    return request("PUT", url, **kwargs)


def post(url: str, **kwargs) -> httpx.Response:
    return request("POST", url, **kwargs)


def websocket(uri: str, **kwargs):
    """A sync websocket client to ``uri`` (ws://…), connected through the loopback for ``*.localhost``."""
    parts = urlsplit(uri)
    if (parts.hostname or "").endswith(".localhost"):
        sock = socket.create_connection(("127.0.0.1", parts.port or 80), timeout=30)
        return ws_connect(uri, sock=sock, **kwargs)
    return ws_connect(uri, **kwargs)
