"""The notebook proxy's metrics move with its traffic: upstream latency, bytes both ways, open websockets."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
import websockets
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response

from nbfleet.api.proxy import ProxyTarget, install_notebook_proxy
from nbfleet.observability.metrics import REGISTRY

from ..threaded_server import ServerThread


def upstream_app() -> FastAPI:
    app = FastAPI()

    @app.post("/notebooks/nb/echo")
    async def echo(request: Request):
        return Response(await request.body() + b"!")

    @app.websocket("/notebooks/nb/ws")
    async def ws(websocket: WebSocket):
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            await websocket.send_text("é" + message["text"])

    return app


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def proxied():
    with ServerThread(upstream_app()) as upstream:

        async def resolve(_notebook_id: str):
            return ProxyTarget("127.0.0.1", upstream.port)

        @contextlib.asynccontextmanager
        async def lifespan(app):
            yield
            await app.state.notebook_proxy.aclose()

        app = FastAPI(lifespan=lifespan)
        install_notebook_proxy(app, resolve)
        with ServerThread(app) as server:
            yield f"127.0.0.1:{server.port}"


def test_bytes_latency_and_websockets_are_counted(proxied):
    before = {d: value("nbfleet_proxy_bytes_total", direction=d) for d in ("in", "out")}
    latency = value("nbfleet_proxy_upstream_latency_seconds_count")
    answer = httpx.post(f"http://{proxied}/notebooks/nb/echo", content=b"x" * 1000)
    assert answer.content == b"x" * 1000 + b"!"
    assert value("nbfleet_proxy_bytes_total", direction="in") - before["in"] == 1000
    assert value("nbfleet_proxy_bytes_total", direction="out") - before["out"] == 1001
    assert value("nbfleet_proxy_upstream_latency_seconds_count") == latency + 1

    async def talk():
        async with websockets.connect(f"ws://{proxied}/notebooks/nb/ws") as ws:
            await ws.send("hello")
            assert await ws.recv() == "éhello"
            assert value("nbfleet_proxy_websockets_open") == 1
        for _ in range(100):
            if value("nbfleet_proxy_websockets_open") == 0:
                break
            await asyncio.sleep(0.02)

    asyncio.run(talk())
    assert value("nbfleet_proxy_websockets_open") == 0
    assert value("nbfleet_proxy_bytes_total", direction="in") - before["in"] == 1005
    assert value("nbfleet_proxy_bytes_total", direction="out") - before["out"] == 1001 + 7  # é is two bytes
