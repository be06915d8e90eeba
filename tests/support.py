"""Test helpers: requests signed by the official SDK's own signer, and an in-process API client."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from nbfleet.runtime.base import InStore, StoreLookup


@dataclass
class Creds:
    ak: str
    sk: str
    project_id: str
    user_id: str = ""


def encode_query(params) -> str:
    """The SDK's query encoding: sorted pairs, strict percent-encoding."""
    if isinstance(params, dict):
        params = list(params.items())
    pairs = sorted(
        (str(k), "true" if v is True else "false" if v is False else str(v)) for k, v in params if v is not None
    )
    return "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in pairs)


def sign_headers(
    creds: Creds,
    method: str,
    path: str,
    query: str,
    body: bytes,
    host: str,
    sdk_date: str | None = None,
    *,
    call_id: bool = False,
) -> dict[str, str]:
    """Headers signed by the SDK's signer. ``call_id``: with a signed ``X-Client-Call-Id`` of its own, so that
    two identical calls within one second (same ``X-Sdk-Date``) are two requests, not one repeated, which
    nbfleet refuses as a replay (docs/api.md); the SDK signs every header it sends, so any client can."""
    headers = {"Content-Type": "application/json", "User-Agent": "nbfleet-tests", "X-Project-Id": creds.project_id}
    if sdk_date:
        headers["X-Sdk-Date"] = sdk_date
    if call_id:
        headers["X-Client-Call-Id"] = uuid.uuid4().hex
    pairs = []
    for item in query.split("&") if query else []:
        k, _, v = item.partition("=")
        from urllib.parse import unquote

        pairs.append((unquote(k), unquote(v)))
    request = SdkRequest(
        method=method,
        schema="http",
        host=host,
        resource_path=path,
        query_params=pairs,
        header_params=headers,
        body=body or "",
    )
    Signer(BasicCredentials(creds.ak, creds.sk, creds.project_id)).sign(request)
    return dict(request.header_params)


class Api:
    """Signed calls against an in-process app (starlette TestClient)."""

    def __init__(self, client, creds: Creds, services):
        self.client = client
        self.creds = creds
        self.services = services

    def call(
        self,
        method: str,
        path: str,
        query=None,
        body=None,
        *,
        creds: Creds | None = None,
        raw_body: bytes | None = None,
        headers: dict | None = None,
        project_id: str | None = None,
    ):
        creds = creds or self.creds
        project = project_id or creds.project_id
        full_path = f"/v1/{project}{path}" if not path.startswith(("/v1/", "/v3/")) and path != "/health" else path
        qs = encode_query(query or {})
        data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else b"")
        signed = sign_headers(creds, method, full_path, qs, data, "testserver", call_id=True)
        signed.update(headers or {})
        url = full_path + ("?" + qs if qs else "")
        return self.client.request(method, url, content=data, headers=signed)

    def ok(self, method: str, path: str, query=None, body=None, **kw) -> dict:
        response = self.call(method, path, query, body, **kw)
        assert response.status_code == 200, response.text
        return response.json()

    def error(self, method: str, path: str, query=None, body=None, **kw) -> tuple[int, str]:
        response = self.call(method, path, query, body, **kw)
        assert response.status_code >= 400, response.text
        payload = response.json()
        assert set(payload) >= {"error_code", "error_msg"}, payload
        assert response.headers.get("x-request-id")
        return response.status_code, payload["error_code"]

    def new_user(self, name: str, *, admin: bool = False, project_id: str | None = None) -> Creds:
        user = self.services.identity.create_user(name, project_id or self.creds.project_id, is_admin=admin)
        return Creds(user.ak, user.sk, user.project_id, user.user_id)

    def wait_status(self, notebook_id: str, *statuses: str, creds: Creds | None = None, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            nb = self.ok("GET", f"/notebooks/{notebook_id}", creds=creds)
            if nb["status"] in statuses:
                return nb
            if time.monotonic() > deadline:
                raise AssertionError(f"{notebook_id} stayed {nb['status']}, wanted {statuses}")
            time.sleep(0.02)

    def image_id(self, name: str = "notebook-python3.11") -> str:
        images = self.ok("GET", "/images")["data"]
        return next(i["id"] for i in images if i["name"] == name)

    def create(self, name: str = "nb", *, creds: Creds | None = None, wait: bool = True, **extra) -> dict:
        body = {
            "name": name,
            "image_id": self.image_id(),
            "flavor": "modelarts.vm.cpu.2u",
            "volume": {"category": "EVS", "ownership": "MANAGED"},
        }
        body.update(extra)
        nb = self.ok("POST", "/notebooks", body=body, creds=creds)
        if wait:
            nb = self.wait_status(nb["id"], "RUNNING", "CREATE_FAILED", creds=creds)
        return nb


def end_process(proc, timeout: float = 10.0) -> None:
    """Ask a child process (an ``ssh -L`` tunnel) to end, and kill it if it has not within ``timeout``: a
    client that is slow to act on SIGTERM on a loaded machine must not fail the test that only used it."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def store_lookup(live: Iterable[str] = (), stopped: Iterable[str] = ()) -> StoreLookup:
    """A runtime's orphan check as a store holding ``live`` instances (running or in a transition) and
    ``stopped`` ones (stored, not live); any other id is not in the store."""
    live_ids, stored_ids = set(live), set(live) | set(stopped)

    async def lookup(ids: set[str]) -> InStore:
        return InStore(live=frozenset(ids & live_ids), stored=frozenset(ids & stored_ids))

    return lookup


NOTHING_STORED = store_lookup()
