"""Request bodies are bounded: by Content-Length before reading, by counting while a chunked body streams.

The notebook proxy is not bounded: uploads to Jupyter may be large.
"""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI, Request
from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.runtime.base import Placement

from ..conftest import make_settings
from ..support import Creds, sign_headers
from ..threaded_server import ServerThread

LIMIT = 4096


@pytest.fixture
def small(tmp_path):
    """An in-process nbfleet whose body limit is 4 KiB, and its admin's credentials."""
    settings = make_settings(tmp_path, max_body_bytes=LIMIT)
    with TestClient(create_app(settings, announce=lambda _text: None)) as client:
        creds = json.loads((settings.data_dir / "credentials.json").read_text())
        yield client, Creds(creds["ak"], creds["sk"], creds["project_id"], creds["user_id"])


def oversized_create(creds: Creds) -> bytes:
    return json.dumps({"name": "big", "description": "x" * (2 * LIMIT)}).encode()


def assert_413(response):
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["error_code"] == "ModelArts.6400" and str(LIMIT) in body["error_msg"]


def test_declared_length_over_the_limit_is_413(small):
    client, creds = small
    path = f"/v1/{creds.project_id}/notebooks"
    body = oversized_create(creds)
    assert_413(client.post(path, content=body, headers=sign_headers(creds, "POST", path, "", body, "testserver")))
    assert_413(client.post(path, content=body))  # anonymous: the same answer


def test_chunked_body_over_the_limit_is_413(small):
    client, creds = small
    path = f"/v1/{creds.project_id}/notebooks"
    body = oversized_create(creds)
    headers = sign_headers(creds, "POST", path, "", body, "testserver")

    def chunks():  # no Content-Length: the body is sent chunked
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = client.post(path, content=chunks(), headers=headers)
    assert_413(response)
    listed = client.get(path, headers=sign_headers(creds, "GET", path, "", b"", "testserver"))
    assert listed.json()["total"] == 0


def test_chunked_body_under_the_limit_is_accepted(small):
    client, creds = small
    path = f"/v1/{creds.project_id}/notebooks/{'0' * 8}-0000-4000-8000-{'0' * 12}"
    body = json.dumps({"description": "fits"}).encode()
    headers = sign_headers(creds, "PUT", path, "", body, "testserver")
    response = client.put(path, content=iter([body[:5], body[5:]]), headers=headers)
    assert response.status_code == 400 and response.json()["error_code"] == "ModelArts.6309"  # read, authenticated


def test_token_and_console_bodies_are_bounded_too(small):
    client, _creds = small
    chunked = (b"x" * 1000 for _ in range(8))
    assert_413(client.post("/v3/auth/tokens", content=chunked, headers={"Content-Type": "application/json"}))
    assert_413(
        client.post("/v3/auth/tokens", content=b"{" + b" " * LIMIT + b"}", headers={"Content-Type": "application/json"})
    )
    form = client.post(
        "/console/login",
        content=b"user=a&password=" + b"x" * 70_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 413 and "too large" in form.text


def _upload_counter() -> FastAPI:
    """A stand-in for a notebook's Jupyter that counts the bytes of an upload."""
    app = FastAPI()

    @app.post("/upload")  # a notebook on its own origin: Jupyter at /
    async def upload(request: Request):
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"received": size}

    return app


def test_uploads_through_the_notebook_proxy_are_not_bounded(small, monkeypatch):
    client, _creds = small
    notebook_id = "0" * 8 + "-0000-4000-8000-" + "1" * 12
    with ServerThread(_upload_counter(), lifespan="off") as upstream:
        monkeypatch.setattr(
            client.app.state.routes, "lookup", lambda _id: Placement(host="127.0.0.1", port=upstream.port)
        )
        upload = b"u" * (LIMIT * 64)
        response = client.post(f"http://{notebook_id}.nb.localhost/upload", content=upload)
        assert response.status_code == 200 and response.json() == {"received": len(upload)}, response.text
