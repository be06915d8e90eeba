"""Notebook traffic on nbfleet's public port: ``/notebooks/<id>/…`` → the instance's Jupyter.

The app supplies ``resolve(notebook_id)``, which answers where a notebook runs (``ProxyTarget``) or
why it cannot be reached (``ProxyRefusal``). The proxy itself keeps no state per notebook and
writes nothing per request.

Client lifecycle: ``install_notebook_proxy`` stores a ``NotebookProxy`` on
``app.state.notebook_proxy``; the app's lifespan closes it at shutdown with
``await app.state.notebook_proxy.aclose()``.

What the proxy must get right for Jupyter (see research/feasibility.md §2):
- the public Host header goes upstream unchanged (Jupyter compares it with Origin on websockets);
- no cookie jar: a login cookie of one user must never be replayed for another;
- bodies stream both ways, and duplicate Set-Cookie headers survive;
- websocket frames keep their type (text/bytes) and subprotocol; a refused upstream handshake
  closes the client with a 4xxx code instead of failing with a stack trace.
"""

from __future__ import annotations

import asyncio
import html
import http.cookiejar
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes

import anyio
import httpx
from fastapi import FastAPI, Request, WebSocket
from starlette.requests import ClientDisconnect
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.client import unix_connect as ws_unix_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ..observability import metrics
from ..runtime.upstream import UpstreamClients, connectable
from ..services.addresses import NotebookAddresses
from .proxy_forward import BodyMismatch, ClientGone, ConnectionPool, UpstreamBroken, UpstreamUnreachable, forward
from .proxy_policy import filter_set_cookie, foreign_origin

log = logging.getLogger(__name__)

PREFIX = "/notebooks"
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# The server in front of us adds its own; a second copy would make the response invalid.
RESPONSE_DROP = HOP_BY_HOP | {"date", "server"}
RESPONSE_DROP_RAW = frozenset(h.encode() for h in RESPONSE_DROP)
# Framing is the fast path's own (proxy_forward.py); "expect" would make the upstream answer 100 first.
FORWARD_DROP = frozenset({"content-length", "transfer-encoding", "expect", "x-forwarded-for"})
# Set by the websocket client library itself for the upstream handshake.
WS_DROP = HOP_BY_HOP | {
    "host",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
    "content-length",
    "user-agent",
}
# nbfleet's own credentials mean nothing to Jupyter, and a notebook's owner controls what its
# server runs (config in its HOME), so they must not reach it.
DEFAULT_DROP_REQUEST_HEADERS = ("x-auth-token", "x-security-token")
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
PATH_SAFE = b"/%:@!$&'()*+,;=~-._"


@dataclass(frozen=True)
class ProxyTarget:
    """Where an instance's Jupyter answers: its Unix socket, else ``host:port``."""

    host: str = ""
    port: int = 0
    socket: str | None = None


@dataclass(frozen=True)
class ProxyRefusal:
    http_status: int
    error_code: str
    message: str


Resolver = Callable[[str], Awaitable["ProxyTarget | ProxyRefusal"]]


class NotebookProxy:
    """Owns the upstream HTTP client; one per app."""

    def __init__(
        self,
        resolve: Resolver,
        *,
        per_instance_origin: bool = False,
        connect_timeout: float = 5.0,
        drop_request_headers: Collection[str] = DEFAULT_DROP_REQUEST_HEADERS,
        forget: Callable[[str], None] | None = None,
        ws_max_message: int = 64 * 2**20,
    ):
        """``per_instance_origin``: every instance is served on an origin of its own (host routing), so
        requests from other origins can be told apart and refused; else under ``/notebooks/<id>/``.
        ``forget(id)``: drop what ``resolve`` remembers of an instance that stopped answering."""
        self.resolve = resolve
        self.forget = forget
        # A notebook sends what it likes: one message is held whole before it is passed on, so its size
        # is bounded (plots and large outputs stay well below the default).
        self.ws_max_message = ws_max_message
        self.per_instance_origin = per_instance_origin
        self.connect_timeout = connect_timeout
        self.drop_request = HOP_BY_HOP | {h.lower() for h in drop_request_headers}
        self._drop_forwarded = frozenset(h.encode() for h in self.drop_request | FORWARD_DROP)
        self._pool = ConnectionPool(connect_timeout)
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        # No read timeout: downloads, long polls and slow notebooks are legitimate.
        self._sockets = UpstreamClients(
            timeout=httpx.Timeout(None, connect=connect_timeout, pool=connect_timeout), size=1024, keepalive=20
        )

    @property
    def client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        # A pooled connection belongs to the loop that opened it; test clients run one loop each.
        if self._client is None or self._client_loop is not loop:
            jar = http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
            self._client = httpx.AsyncClient(
                cookies=jar,
                follow_redirects=False,
                trust_env=False,
                # No read timeout: downloads, long polls and slow notebooks are legitimate.
                timeout=httpx.Timeout(None, connect=self.connect_timeout, pool=self.connect_timeout),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._pool.close()
        await self._sockets.aclose()

    def _upstream(self, target: ProxyTarget, raw_target: bytes) -> tuple[httpx.AsyncClient, httpx.URL]:
        if target.socket:
            return self._sockets.get(target.socket), httpx.URL("http://notebook", raw_path=raw_target)
        return self.client, httpx.URL(f"http://{target.host}:{target.port}", raw_path=raw_target)

    # -- HTTP ----------------------------------------------------------------------------

    async def http(self, request: Request, notebook_id: str, path: str | None) -> Response:
        target = await self.resolve(notebook_id)
        if isinstance(target, ProxyRefusal):
            return refusal_response(request, target)
        if self.per_instance_origin:
            foreign = foreign_origin(request.method, request.headers)
            if foreign is not None:
                return refusal_response(request, ProxyRefusal(403, "ModelArts.0108", _cross_origin_message(foreign)))
        if path is None:
            # /notebooks/<id> → /notebooks/<id>/, where Jupyter's base_url starts.
            location = f"{request.scope.get('root_path', '')}{PREFIX}/{notebook_id}/"
            if request.url.query:
                location += "?" + request.url.query
            return RedirectResponse(location, status_code=307)

        if request.method != "HEAD" and not self._is_version_probe(request, notebook_id):
            return _Forwarded(self, request, target, notebook_id)
        client, url = self._upstream(target, _raw_target(request.scope))
        headers = self._request_headers(request)
        if self._is_version_probe(request, notebook_id) and not await self._signed_in(client, url, headers):
            # Jupyter names its version to anyone at <base>/api; nbfleet only to who could use it.
            return JSONResponse({"message": "Forbidden", "reason": None}, status_code=403)
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        upstream_request = client.build_request(
            request.method, url, headers=headers, content=metrics.counted(request.stream(), "in") if has_body else None
        )
        try:
            with metrics.upstream_timer():
                upstream = await client.send(upstream_request, stream=True)
        except ClientDisconnect:
            return Response(status_code=400)
        except httpx.TransportError as exc:
            log.warning("notebook %s: upstream unreachable: %r", notebook_id, exc)
            return refusal_response(request, await self._unreachable(notebook_id))
        return _UpstreamResponse(upstream, self._response_headers(upstream, notebook_id))

    def _is_version_probe(self, request: Request, notebook_id: str) -> bool:
        base = "/" if self.per_instance_origin else f"{PREFIX}/{notebook_id}/"
        return request.method in ("GET", "HEAD") and request.url.path.rstrip("/") == f"{base}api"

    async def _signed_in(self, client: httpx.AsyncClient, url: httpx.URL, headers) -> bool:
        """Whether the request's credentials (token or Jupyter's login cookie) open the instance's API."""
        status_url = url.copy_with(
            raw_path=url.raw_path.split(b"?", 1)[0].rstrip(b"/") + b"/status" + (b"?" + url.query if url.query else b"")
        )
        try:
            answer = await client.get(status_url, headers=headers)
        except httpx.TransportError:
            return False
        return answer.status_code == 200

    async def _unreachable(self, notebook_id: str) -> ProxyRefusal:
        """Why an instance did not answer: it stopped meanwhile (a route cached here, changed by another
        replica), so the answer every stopped instance gets; or it is not answering (502)."""
        if self.forget is not None:
            self.forget(notebook_id)
            fresh = await self.resolve(notebook_id)
            if isinstance(fresh, ProxyRefusal):
                return fresh
        return ProxyRefusal(
            502, "ModelArts.6102", f"The notebook instance {notebook_id} is not answering. Please try again later."
        )

    def _response_headers(self, upstream: httpx.Response, notebook_id: str) -> list[tuple[bytes, bytes]]:
        prefix = None if self.per_instance_origin else f"{PREFIX}/{notebook_id}/"
        headers = []
        for key, raw in upstream.headers.multi_items():
            key = key.lower()
            if key in RESPONSE_DROP:
                continue
            value = raw
            if key == "set-cookie":
                cookie = filter_set_cookie(raw, prefix)
                if cookie is None:
                    log.info("notebook %s: dropped a cookie that would leave the instance", notebook_id)
                    continue
                value = cookie
            headers.append((key.encode("latin-1"), value.encode("latin-1")))
        return headers

    def forwarded_head(self, request: Request) -> tuple[bytes, str | None]:
        """The fast path's request line and headers (no framing headers, no blank line) and how its body is
        framed upstream: None (no body), "length:<n>" or "chunked"."""
        scope = request.scope
        drop = self._drop_forwarded
        tokens = request.headers.get("connection")
        if tokens:
            drop = drop | {t.encode() for t in _connection_tokens(tokens)}
        parts = [scope["method"].encode(), b" ", _raw_target(scope), b" HTTP/1.1\r\n"]
        framing: str | None = None
        prior = None
        for key, value in scope["headers"]:
            if key == b"content-length" and framing != "chunked":
                framing = f"length:{int(value)}"
            elif key == b"transfer-encoding":  # it overrides a Content-Length (RFC 9112 §6.3)
                framing = "chunked"
            elif key == b"x-forwarded-for":
                prior = value
            if key not in drop:
                parts += (key, b": ", value, b"\r\n")
        client = scope.get("client")
        if client:
            parts += (b"x-forwarded-for: ", prior + b", " if prior else b"", client[0].encode(), b"\r\n")
        if "x-forwarded-proto" not in request.headers:
            parts += (b"x-forwarded-proto: ", scope.get("scheme", "http").encode(), b"\r\n")
        return b"".join(parts), framing

    def forwarded_response_headers(self, headers: list[tuple[bytes, bytes]], notebook_id: str) -> list:
        """The answer's headers for the client, as ``_response_headers`` filters them, from raw pairs."""
        prefix = None if self.per_instance_origin else f"{PREFIX}/{notebook_id}/"
        kept = []
        for name, value in headers:
            key = name.lower()
            if key in RESPONSE_DROP_RAW:
                continue
            if key == b"set-cookie":
                cookie = filter_set_cookie(value.decode("latin-1"), prefix)
                if cookie is None:
                    log.info("notebook %s: dropped a cookie that would leave the instance", notebook_id)
                    continue
                value = cookie.encode("latin-1")
            kept.append((key, value))
        return kept

    def _request_headers(self, request: Request) -> list[tuple[str, str]]:
        drop = self.drop_request | _connection_tokens(request.headers.get("connection", ""))
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in drop]
        client = request.client.host if request.client else None
        if client:
            prior = request.headers.get("x-forwarded-for")
            headers = [(k, v) for k, v in headers if k.lower() not in ("x-forwarded-for",)]
            headers.append(("x-forwarded-for", f"{prior}, {client}" if prior else client))
        if "x-forwarded-proto" not in request.headers:
            headers.append(("x-forwarded-proto", request.url.scheme))
        return headers

    # -- WebSocket -----------------------------------------------------------------------

    async def websocket(self, ws: WebSocket, notebook_id: str) -> None:
        try:
            target = await self.resolve(notebook_id)
        except Exception:
            log.exception("notebook %s: resolving the websocket target failed", notebook_id)
            await _refuse_ws(ws, 1011, "internal error")
            return
        if isinstance(target, ProxyRefusal):
            await _refuse_ws(ws, 4000 + target.http_status, target.message)
            return
        if self.per_instance_origin:
            foreign = foreign_origin(None, ws.headers, websocket=True)
            if foreign is not None:
                await _refuse_ws(ws, 4403, _cross_origin_message(foreign))
                return

        public_host = ws.headers.get("host") or "notebook"
        uri = f"ws://{public_host}{_raw_target(ws.scope).decode('ascii')}"
        drop = WS_DROP | {h for h in self.drop_request} | _connection_tokens(ws.headers.get("connection", ""))
        headers = [(k, v) for k, v in ws.headers.items() if k.lower() not in drop]
        offered = ws.scope.get("subprotocols") or []
        options: dict[str, Any] = dict(
            additional_headers=headers,
            subprotocols=offered or None,
            user_agent_header=None,
            compression=None,
            max_size=self.ws_max_message,
            open_timeout=self.connect_timeout,
        )
        try:
            # The public Host goes into the handshake via the URI; the socket dials the target.
            if target.socket:
                with connectable(target.socket) as path:
                    upstream = await ws_unix_connect(path, uri, **options)
            else:
                upstream = await ws_connect(uri, host=target.host, port=target.port, proxy=None, **options)
        except InvalidStatus as exc:
            status = exc.response.status_code
            await _refuse_ws(
                ws, 4000 + status if 400 <= status < 1000 else 4502, f"notebook refused the websocket: HTTP {status}"
            )
            return
        except (TimeoutError, OSError, InvalidHandshake) as exc:
            log.warning("notebook %s: upstream websocket failed: %r", notebook_id, exc)
            refusal = await self._unreachable(notebook_id)
            await _refuse_ws(ws, 4000 + refusal.http_status, refusal.message)
            return

        try:
            with metrics.websocket_open():
                await ws.accept(subprotocol=upstream.subprotocol)
                await _pump(ws, upstream)
        finally:
            with anyio.CancelScope(shield=True):
                await upstream.close()


class _Forwarded(Response):
    """A request sent on by the fast path (proxy_forward.py) when the response is served."""

    def __init__(self, proxy: NotebookProxy, request: Request, target: ProxyTarget, notebook_id: str):
        super().__init__()
        self.proxy, self.request, self.target, self.notebook_id = proxy, request, target, notebook_id

    async def __call__(self, scope, receive, send) -> None:
        proxy, notebook_id = self.proxy, self.notebook_id
        head, framing = proxy.forwarded_head(self.request)
        try:
            await forward(
                proxy._pool,
                (self.target.socket, self.target.host, self.target.port),
                head,
                framing,
                receive,
                send,
                lambda headers: proxy.forwarded_response_headers(headers, notebook_id),
                idempotent=scope["method"] in ("GET", "OPTIONS"),
            )
        except BodyMismatch as exc:
            refusal = ProxyRefusal(400, "ModelArts.0104", f"Parameter error: {exc}.")
            await refusal_response(self.request, refusal)(scope, receive, send)
        except UpstreamUnreachable as exc:
            log.warning("notebook %s: upstream unreachable: %s", notebook_id, exc)
            proxy._pool.forget(self.target.socket, self.target.host, self.target.port)
            await refusal_response(self.request, await proxy._unreachable(notebook_id))(scope, receive, send)
        except UpstreamBroken as exc:
            log.info("notebook %s: answer cut off: %s", notebook_id, exc)
        except ClientGone:
            pass


class _UpstreamResponse(StreamingResponse):
    """Streams an upstream response and always gives its connection back, even on disconnect."""

    def __init__(self, upstream: httpx.Response, raw_headers: list[tuple[bytes, bytes]]):
        super().__init__(metrics.counted(upstream.aiter_raw(), "out"), status_code=upstream.status_code)
        self.raw_headers = raw_headers
        self._upstream = upstream

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._upstream.aclose()


async def _pump(ws: WebSocket, upstream) -> None:
    """Copy frames both ways until one side closes, then close the other with the same code."""

    async def client_to_upstream() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                code = message.get("code") or 1000
                await upstream.close(code=code if _sendable(code) else 1000)
                return
            if message.get("text") is not None:
                metrics.proxied("in", message["text"])
                await upstream.send(message["text"])
            elif message.get("bytes") is not None:
                metrics.proxied("in", message["bytes"])
                await upstream.send(message["bytes"])

    async def upstream_to_client() -> None:
        try:
            async for data in upstream:
                metrics.proxied("out", data)
                if isinstance(data, str):
                    await ws.send_text(data)
                else:
                    await ws.send_bytes(data)
        except ConnectionClosed:
            pass
        code, reason = upstream.close_code, upstream.close_reason or ""
        sent, received = upstream.protocol.close_sent, upstream.protocol.close_rcvd
        if received is None and sent is not None:  # the proxy ended it (a message over the bound: 1009)
            code, reason = sent.code, "message too big" if sent.code == 1009 else sent.reason
        try:
            await ws.close(code=code if code is not None and _sendable(code) else 1000, reason=reason[:120])
        except (RuntimeError, WebSocketDisconnect, OSError):
            pass  # the client left at the same moment

    tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        exc = task.exception()
        if exc is not None and not isinstance(exc, (ConnectionClosed, WebSocketDisconnect, OSError)):
            log.warning("websocket proxy ended with %r", exc)


def _cross_origin_message(why: str) -> str:
    return (
        f"You are not authorized to perform the (notebook request) operation: {why}; a notebook accepts "
        "changes only from its own pages."
    )


def _sendable(code: int) -> bool:
    # 1005/1006/1015 describe a missing or broken close frame; they may not be sent.
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code <= 4999


async def _refuse_ws(ws: WebSocket, code: int, reason: str) -> None:
    # Accept first so the browser gets the close code and reason; a denied handshake tells it nothing.
    # Browsers fail a handshake that offered subprotocols but selected none, so select the first.
    offered = ws.scope.get("subprotocols") or []
    try:
        await ws.accept(subprotocol=offered[0] if offered else None)
        await ws.close(code=code, reason=reason.encode()[:120].decode("utf-8", "ignore"))
    except (RuntimeError, WebSocketDisconnect, OSError):
        pass


# -- rendering -----------------------------------------------------------------------------


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    if "text/html" not in accept:
        return False
    return "application/json" not in accept or accept.index("text/html") < accept.index("application/json")


def refusal_response(request: Request, refusal: ProxyRefusal) -> Response:
    if wants_html(request):
        message = html.escape(refusal.message)
        code = html.escape(refusal.error_code)
        page = (
            '<!doctype html><html><head><meta charset="utf-8"><title>Notebook unavailable</title>'
            "<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;"
            "color:#222}code{color:#666}</style></head><body>"
            f"<h1>Notebook unavailable</h1><p>{message}</p><p><code>{code}</code></p></body></html>"
        )
        return HTMLResponse(page, status_code=refusal.http_status)
    return JSONResponse(
        {"error_code": refusal.error_code, "error_msg": refusal.message}, status_code=refusal.http_status
    )


def _raw_target(scope) -> bytes:
    """Path and query exactly as the client sent them, so encoded names (%2F, %20) survive."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    raw = quote_from_bytes(raw, safe=PATH_SAFE).encode("ascii")
    query = scope.get("query_string") or b""
    if query:
        raw += b"?" + quote_from_bytes(query, safe=PATH_SAFE + b"?").encode("ascii")
    return raw


def _connection_tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def install_notebook_proxy(
    app: FastAPI,
    resolve: Resolver,
    *,
    addresses: NotebookAddresses | None = None,
    connect_timeout: float = 5.0,
    forget: Callable[[str], None] | None = None,
    drop_request_headers: Collection[str] = DEFAULT_DROP_REQUEST_HEADERS,
    ws_max_message: int = 64 * 2**20,
) -> NotebookProxy:
    """Route notebook traffic on ``app`` to the proxy (kept on ``app.state.notebook_proxy``): requests for
    ``<id>.<domain>`` hosts (host routing, the default of ``addresses``), or ``/notebooks/<id>/…`` paths."""
    per_instance_origin = addresses is not None and addresses.per_instance_origin
    proxy = NotebookProxy(
        resolve,
        per_instance_origin=per_instance_origin,
        connect_timeout=connect_timeout,
        drop_request_headers=drop_request_headers,
        forget=forget,
        ws_max_message=ws_max_message,
    )
    app.state.notebook_proxy = proxy
    if per_instance_origin:
        assert addresses is not None
        app.add_middleware(NotebookHostRouter, proxy=proxy, addresses=addresses)
        return proxy

    async def proxy_http(request: Request, notebook_id: str, path: str = "") -> Response:
        return await proxy.http(request, notebook_id, path)

    async def proxy_http_bare(request: Request, notebook_id: str) -> Response:
        return await proxy.http(request, notebook_id, None)

    async def proxy_ws(websocket: WebSocket, notebook_id: str, path: str = "") -> None:
        await proxy.websocket(websocket, notebook_id)

    app.add_api_route(PREFIX + "/{notebook_id}/{path:path}", proxy_http, methods=METHODS, include_in_schema=False)
    app.add_api_route(PREFIX + "/{notebook_id}", proxy_http_bare, methods=METHODS, include_in_schema=False)
    app.add_api_websocket_route(PREFIX + "/{notebook_id}/{path:path}", proxy_ws)
    app.add_api_websocket_route(PREFIX + "/{notebook_id}", proxy_ws)
    return proxy


class NotebookHostRouter:
    """ASGI middleware, outermost: a request whose Host names an instance (``<id>.<domain>``) goes to the
    proxy whole, path and all; nbfleet's API and console are not served on any instance's origin."""

    def __init__(self, app, *, proxy: NotebookProxy, addresses: NotebookAddresses):
        self.app = app
        self.proxy = proxy
        self.addresses = addresses

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), None)
            notebook_id = self.addresses.notebook_of_host(host)
            if notebook_id == "":  # under the notebook domain, naming no instance: not nbfleet's either
                notebook_id = "-"  # resolves to the answer every unknown instance gets
            if notebook_id is not None:
                if scope["type"] == "websocket":
                    await self.proxy.websocket(WebSocket(scope, receive, send), notebook_id)
                    return
                request = Request(scope, receive)
                try:
                    response = await self.proxy.http(request, notebook_id, "")
                except Exception:
                    log.exception("notebook %s: proxying failed", notebook_id)
                    response = JSONResponse(
                        {"error_code": "ModelArts.0010", "error_msg": "Internal error. Please try again later."},
                        status_code=500,
                    )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def close_notebook_proxy(app: FastAPI) -> None:
    """Convenience for lifespans: close the proxy's upstream client if one was installed."""
    proxy = getattr(app.state, "notebook_proxy", None)
    if proxy is not None:
        await proxy.aclose()
