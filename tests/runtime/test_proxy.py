"""The notebook reverse proxy, served by uvicorn, in front of a real Jupyter and a header-echo app."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import socket
import time
import uuid

import httpx
import pytest
import pytest_asyncio
import websockets
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from websockets.exceptions import ConnectionClosed

from nbfleet.api.proxy import ProxyRefusal, ProxyTarget, install_notebook_proxy
from nbfleet.runtime.local import LocalRuntime

from ..images import make_reachable, shared_environments
from ..support import NOTHING_STORED
from ..threaded_server import ServerThread
from .local_helpers import make_spec

# No store at all: the same on SQLite and PostgreSQL (.ci/run runs it once).
pytestmark = [pytest.mark.slow, pytest.mark.runtime_only, pytest.mark.asyncio(loop_scope="module")]

KERNEL_PROTOCOL = "v1.kernel.websocket.jupyter.org"
WS_MAX_MESSAGE = 1 << 20
STOPPED = ProxyRefusal(409, "ModelArts.6357", "The notebook instance is STOPPED; start it to open it.")


class Reporter:
    async def step(self, *args):
        pass

    async def event(self, *args):
        pass


def echo_app() -> FastAPI:
    """An upstream that shows what the proxy sent it."""
    app = FastAPI()

    @app.get("/notebooks/echo/big")
    async def big():
        async def chunks():
            for i in range(80):
                yield bytes([i]) * 65536

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    @app.api_route("/notebooks/echo/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "HEAD"])
    async def echo(request: Request, path: str):
        body = await request.body()
        response = JSONResponse(
            {
                "method": request.method,
                "raw_path": request.scope["raw_path"].decode(),
                "query": request.scope["query_string"].decode(),
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_len": len(body),
                "body_sha": hashlib.sha256(body).hexdigest(),
            }
        )
        response.set_cookie("first", "1", path="/notebooks/echo/")
        response.set_cookie("second", "2", path="/notebooks/echo/")
        return response

    @app.websocket("/notebooks/echo/ws")
    async def ws(websocket: WebSocket):
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=offered[-1] if offered else None)
        await websocket.send_text(
            json.dumps(
                {
                    "host": websocket.headers.get("host"),
                    "origin": websocket.headers.get("origin"),
                    "auth": websocket.headers.get("x-auth-token"),
                }
            )
        )
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                if message["text"] == "close-please":
                    await websocket.close(code=4321, reason="asked to")
                    return
                if message["text"].startswith("send-me:"):  # a message of that many bytes
                    await websocket.send_bytes(b"x" * int(message["text"].split(":", 1)[1]))
                    continue
                await websocket.send_text("text:" + message["text"])
            else:
                await websocket.send_bytes(b"bytes:" + message["bytes"])

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- fixtures --------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def notebook(tmp_path_factory):
    data_dir = make_reachable(tmp_path_factory.mktemp("proxy-runtime"))
    runtime = LocalRuntime(data_dir, environments=shared_environments(), path_prefix="/notebooks/")
    spec = make_spec("proxied")
    placement = await runtime.start(spec, Reporter())
    yield spec, placement
    await runtime.delete(spec, placement)
    await runtime.reap_orphans(NOTHING_STORED)
    await runtime.close()


@pytest.fixture(scope="module")
def routes(notebook):
    spec, placement = notebook
    return {
        spec.id: ProxyTarget(socket=placement.socket),
        "stopped-nb": STOPPED,
        "gone-nb": ProxyTarget("127.0.0.1", free_port()),  # nothing listens there
        "gone-socket": ProxyTarget(socket=placement.socket + ".gone"),
    }


@pytest.fixture(scope="module")
def echo(routes):
    with ServerThread(echo_app()) as server:
        routes["echo"] = ProxyTarget("127.0.0.1", server.port)
        yield server


@pytest.fixture(scope="module")
def proxy(routes, echo):
    resolved: list[str] = []

    async def resolve(notebook_id: str):
        resolved.append(notebook_id)
        return routes.get(notebook_id) or ProxyRefusal(404, "ModelArts.6309", "The instance does not exist.")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await app.state.notebook_proxy.aclose()  # the documented shutdown contract

    app = FastAPI(lifespan=lifespan)
    proxy_object = install_notebook_proxy(app, resolve, ws_max_message=WS_MAX_MESSAGE)
    assert app.state.notebook_proxy is proxy_object
    with ServerThread(app) as server:
        server.base = f"http://127.0.0.1:{server.port}"
        server.resolved = resolved
        yield server
    assert proxy_object._client is None


async def execute_via(url: str, code: str, *, origin: str | None, cookie: str | None = None, subprotocols=None) -> str:
    msg_id = uuid.uuid4().hex
    headers = [("Origin", origin)] if origin else []
    if cookie:
        headers.append(("Cookie", cookie))
    async with websockets.connect(
        url, additional_headers=headers, proxy=None, open_timeout=10, subprotocols=subprotocols
    ) as ws:
        await ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "t",
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
                    },
                }
            )
        )
        async with asyncio.timeout(30):
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("parent_header", {}).get("msg_id") == msg_id and msg["msg_type"] == "execute_result":
                    return msg["content"]["data"]["text/plain"]


async def close_code(url: str, **kwargs) -> tuple[int | None, str]:
    """Connect and read until the server closes; return the close code and reason."""
    async with websockets.connect(url, proxy=None, open_timeout=10, **kwargs) as ws:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
        return ws.close_code, ws.close_reason


# -- refusals --------------------------------------------------------------------------------


async def test_a_websocket_message_over_the_bound_closes_the_connection_instead_of_filling_memory(proxy):
    url = proxy.base.replace("http", "ws", 1) + "/notebooks/echo/ws"
    async with websockets.connect(url, proxy=None, open_timeout=10, max_size=None) as ws:
        await ws.recv()  # the greeting
        await ws.send(f"send-me:{WS_MAX_MESSAGE // 2}")
        assert len(await ws.recv()) == WS_MAX_MESSAGE // 2
        await ws.send(f"send-me:{WS_MAX_MESSAGE * 4}")
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                await ws.recv()
        assert ws.close_code == 1009  # message too big


async def test_unknown_notebook_is_a_404_json_error(proxy):
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{proxy.base}/notebooks/no-such-id/api/status")
    assert r.status_code == 404
    assert r.json() == {"error_code": "ModelArts.6309", "error_msg": "The instance does not exist."}


async def test_a_browser_gets_a_readable_page(proxy):
    async with httpx.AsyncClient() as c:
        r = await c.get(
            f"{proxy.base}/notebooks/stopped-nb/lab", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        )
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("text/html")
    assert "STOPPED" in r.text and "ModelArts.6357" in r.text


async def test_an_api_client_gets_json_for_a_stopped_notebook(proxy):
    async with httpx.AsyncClient() as c:
        r = await c.post(
            f"{proxy.base}/notebooks/stopped-nb/api/kernels", json={}, headers={"Accept": "application/json"}
        )
    assert r.status_code == 409
    assert r.json() == {"error_code": STOPPED.error_code, "error_msg": STOPPED.message}


@pytest.mark.parametrize("target", ["gone-nb", "gone-socket"])
async def test_a_dead_upstream_is_a_quick_502(proxy, target):
    started = time.monotonic()
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{proxy.base}/notebooks/{target}/api/status")
    assert r.status_code == 502
    assert r.json()["error_code"] == "ModelArts.6102"
    assert time.monotonic() - started < 5


async def test_websockets_to_refused_or_dead_targets_close_with_4xxx(proxy):
    ws_base = proxy.base.replace("http", "ws", 1)
    assert (await close_code(f"{ws_base}/notebooks/no-such-id/api/kernels/x/channels"))[0] == 4404
    code, reason = await close_code(
        f"{ws_base}/notebooks/stopped-nb/api/kernels/x/channels", subprotocols=[KERNEL_PROTOCOL]
    )
    assert code == 4409 and "STOPPED" in reason
    assert (await close_code(f"{ws_base}/notebooks/gone-nb/api/kernels/x/channels"))[0] == 4502
    assert (await close_code(f"{ws_base}/notebooks/gone-socket/api/kernels/x/channels"))[0] == 4502


async def test_bare_notebook_path_redirects_to_the_slash(proxy, notebook):
    spec, _ = notebook
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{proxy.base}/notebooks/{spec.id}?token=abc")
        assert r.status_code == 307
        assert r.headers["location"] == f"/notebooks/{spec.id}/?token=abc"
        assert (await c.get(f"{proxy.base}/notebooks/no-such-id")).status_code == 404


# -- HTTP to the echo upstream ---------------------------------------------------------------


async def test_request_details_reach_the_upstream(proxy):
    async with httpx.AsyncClient() as c:
        r = await c.post(
            f"{proxy.base}/notebooks/echo/api/contents/a%20b%2Fc.txt?x=1&y=%20",
            content=b"hello",
            headers={
                "Host": "nb.example.test:8443",
                "X-Auth-Token": "iam-secret",
                "X-Custom": "kept",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "dropped",
            },
        )
    assert r.status_code == 200
    seen = r.json()
    headers = dict(seen["headers"])
    assert headers["host"] == "nb.example.test:8443"  # the public Host, not the upstream address
    assert seen["raw_path"] == "/notebooks/echo/api/contents/a%20b%2Fc.txt"
    assert seen["query"] == "x=1&y=%20"
    assert seen["method"] == "POST" and seen["body_len"] == 5
    assert headers["x-custom"] == "kept"
    assert "x-auth-token" not in headers and "x-hop" not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"


async def test_duplicate_set_cookie_headers_survive(proxy):
    async with httpx.AsyncClient() as c:
        r = await c.get(f"{proxy.base}/notebooks/echo/x")
    cookies = r.headers.get_list("set-cookie")
    assert len(cookies) == 2
    assert cookies[0].startswith("first=1") and cookies[1].startswith("second=2")
    assert len(r.headers.get_list("date")) <= 1 and len(r.headers.get_list("server")) <= 1


async def test_bodies_stream_both_ways(proxy):
    upload = secrets.token_bytes(3 * 1024 * 1024)

    async def chunks():
        for i in range(0, len(upload), 256 * 1024):
            yield upload[i : i + 256 * 1024]

    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.put(f"{proxy.base}/notebooks/echo/upload", content=chunks())  # chunked, no length
        assert r.json()["body_len"] == len(upload)
        assert r.json()["body_sha"] == hashlib.sha256(upload).hexdigest()
        big = await c.get(f"{proxy.base}/notebooks/echo/big")
    assert big.status_code == 200 and len(big.content) == 80 * 65536
    assert big.content[:1] == b"\x00" and big.content[-1:] == b"\x4f"


async def test_websocket_frames_keep_their_type_and_subprotocol(proxy):
    url = proxy.base.replace("http", "ws", 1) + "/notebooks/echo/ws"
    async with websockets.connect(
        url,
        proxy=None,
        subprotocols=["one", "two"],
        additional_headers=[("Origin", "https://public.example"), ("X-Auth-Token", "iam-secret")],
    ) as ws:
        hello = json.loads(await ws.recv())
        assert ws.subprotocol == "two"  # chosen by the upstream
        assert hello == {"host": f"127.0.0.1:{proxy.port}", "origin": "https://public.example", "auth": None}
        await ws.send("hi")
        assert await ws.recv() == "text:hi"
        await ws.send(b"\x00\x01")
        assert await ws.recv() == b"bytes:\x00\x01"
        # The upstream closing is passed on with its code.
        await ws.send("close-please")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4321 and ws.close_reason == "asked to"


# -- a real Jupyter behind the proxy ---------------------------------------------------------


async def test_jupyter_api_through_the_proxy(proxy, notebook):
    spec, _ = notebook
    url = f"{proxy.base}/notebooks/{spec.id}/api/status"
    async with httpx.AsyncClient() as c:
        assert (await c.get(url, headers={"Authorization": f"token {spec.token}"})).status_code == 200
    async with httpx.AsyncClient() as c:
        assert (await c.get(url)).status_code == 403
    async with httpx.AsyncClient() as c:
        lab = await c.get(f"{proxy.base}/notebooks/{spec.id}/lab", headers={"Authorization": f"token {spec.token}"})
        assert lab.status_code == 200 and "JupyterLab" in lab.text


async def test_a_login_cookie_never_leaks_to_another_client(proxy, notebook):
    spec, _ = notebook
    status = f"{proxy.base}/notebooks/{spec.id}/api/status"
    async with httpx.AsyncClient() as alice, httpx.AsyncClient() as mallory:
        login = await alice.get(f"{proxy.base}/notebooks/{spec.id}/lab?token={spec.token}")
        assert login.status_code == 200
        assert any(c.startswith("username-") for c in login.headers.get_list("set-cookie"))
        assert (await alice.get(status)).status_code == 200  # her cookie works through the proxy
        assert (await mallory.get(status)).status_code == 403  # the proxy did not keep it for everyone
        assert (await mallory.get(f"{proxy.base}/notebooks/{spec.id}/api/kernels")).status_code == 403


async def test_kernel_over_the_proxied_websocket(proxy, notebook):
    spec, _ = notebook
    auth = {"Authorization": f"token {spec.token}"}
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{proxy.base}/notebooks/{spec.id}/api/kernels", json={"name": "python3"}, headers=auth)
        assert r.status_code == 201, r.text
        kernel = r.json()["id"]
    ws_url = proxy.base.replace("http", "ws", 1) + f"/notebooks/{spec.id}/api/kernels/{kernel}/channels"
    assert await execute_via(f"{ws_url}?token={spec.token}", "6*7", origin=None) == "42"

    # A browser: logged in by cookie, Origin = the proxy's address. Jupyter checks Origin against
    # Host for cookie-authenticated websockets, so this works only if the proxy kept the public Host.
    async with httpx.AsyncClient() as browser:
        login = await browser.get(f"{proxy.base}/notebooks/{spec.id}/lab?token={spec.token}")
        assert login.status_code == 200
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    assert await execute_via(ws_url, "6*7", origin=proxy.base, cookie=cookie) == "42"

    # The kernel protocol is negotiated end to end.
    async with websockets.connect(
        f"{ws_url}?token={spec.token}",
        proxy=None,
        subprotocols=[KERNEL_PROTOCOL],
        additional_headers=[("Origin", proxy.base)],
    ) as ws:
        assert ws.subprotocol == KERNEL_PROTOCOL

    # Every client that left was disconnected upstream too: Jupyter counts no open kernel sockets.
    async with httpx.AsyncClient() as c, asyncio.timeout(10):
        while (await c.get(f"{proxy.base}/notebooks/{spec.id}/api/status", headers=auth)).json()["connections"]:
            await asyncio.sleep(0.05)


async def test_jupyter_refusing_the_websocket_closes_the_client_with_4403(proxy, notebook):
    spec, _ = notebook
    async with httpx.AsyncClient() as c:
        r = await c.get(
            f"{proxy.base}/notebooks/{spec.id}/api/kernels", headers={"Authorization": f"token {spec.token}"}
        )
        kernels = r.json()
    kernel = kernels[0]["id"] if kernels else "missing"
    url = proxy.base.replace("http", "ws", 1) + f"/notebooks/{spec.id}/api/kernels/{kernel}/channels?token=wrong"
    code, reason = await close_code(url)
    assert code == 4403 and "403" in reason


async def test_resolve_is_asked_per_request_and_nothing_else_is_kept(proxy):
    before = len(proxy.resolved)
    async with httpx.AsyncClient() as c:
        await c.get(f"{proxy.base}/notebooks/echo/one")
        await c.get(f"{proxy.base}/notebooks/echo/two")
    assert proxy.resolved[before:] == ["echo", "echo"]
