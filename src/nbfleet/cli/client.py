"""A small HTTP client for the notebook API v1, signing every request as the official SDK does.

The canonicalisation is not written twice: the signer side reuses ``canonical_request`` and ``sign``
from ``nbfleet.auth.signature`` (the server's verifier), so client and server cannot drift apart.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from .. import __version__
from ..auth.signature import ALGORITHM, DATE_FORMAT, canonical_query, canonical_request, sign

# The SDK's default (connect, read) timeouts are 60 s; a CLI user should hear about a dead endpoint sooner.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class ApiError(Exception):
    """The API answered with an error body (HTTP >= 400)."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id


class ApiConnectionError(Exception):
    """The endpoint could not be reached (refused, DNS, TLS, timeout)."""


@dataclass(frozen=True)
class Credentials:
    endpoint: str
    project_id: str
    ak: str
    sk: str


def _parse_error(response: httpx.Response) -> ApiError:
    """The error pair, looked up under the same member names the SDK tries, in the same order."""
    request_id = response.headers.get("x-request-id")
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        request_id = request_id or body.get("request_id")
        for code_key, msg_key in (("error_code", "error_msg"), ("errorCode", "errorMsg"), ("code", "message")):
            if body.get(code_key) is not None and body.get(msg_key) is not None:
                return ApiError(response.status_code, str(body[code_key]), str(body[msg_key]), request_id)
    text = " ".join(response.text.split())[:200] or response.reason_phrase  # e.g. a proxy's HTML page
    return ApiError(response.status_code, f"HTTP.{response.status_code}", text, request_id)


def _query_string(params: Mapping[str, Any] | None) -> str:
    """Strictly encoded, sorted query; ``None`` values are left out and booleans spelled true/false."""
    pairs = []
    for name, value in (params or {}).items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        pairs.append(f"{quote(name, safe='~')}={quote(text, safe='~')}")
    return canonical_query("&".join(pairs))


class ApiClient:
    """Signed calls to ``{endpoint}/v1/{project_id}/…``; answers are parsed JSON or ``ApiError``."""

    def __init__(
        self,
        creds: Credentials,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ):
        endpoint = creds.endpoint.strip().rstrip("/")
        if "://" not in endpoint:
            endpoint = "https://" + endpoint  # what the SDK does with a bare host
        self.creds = creds
        self.base = httpx.URL(endpoint)
        self.http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)
        self.user_agent = f"nbfleet-cli/{__version__}"

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request_raw(
        self, method: str, path: str, params: Mapping[str, Any] | None = None, body: Any = None, *, version: str = "v1"
    ) -> httpx.Response:
        """Send one signed request; ``path`` is relative to ``/{version}/{project_id}``."""
        full_path = f"{self.base.path.rstrip('/')}/{version}/{quote(self.creds.project_id, safe='')}{path}"
        query = _query_string(params)
        data = json.dumps(body).encode() if body is not None else b""
        host = self.base.netloc.decode("ascii")  # carries :port only when it is not the scheme's default
        headers = {
            "content-type": "application/json",
            "host": host,
            "user-agent": self.user_agent,
            "x-project-id": self.creds.project_id,
            "x-sdk-date": datetime.now(UTC).strftime(DATE_FORMAT),
            # Signed like every header here: two identical commands within one second (the date's resolution)
            # are two requests, not a replay that the server refuses with ModelArts.0208 (docs/api.md).
            "x-client-request-id": uuid.uuid4().hex,
        }
        signed = tuple(sorted(headers))
        canonical = canonical_request(method, full_path, query, headers, signed, data)
        signature = sign(self.creds.sk, headers["x-sdk-date"], canonical)
        headers["authorization"] = (
            f"{ALGORITHM} Access={self.creds.ak}, SignedHeaders={';'.join(signed)}, Signature={signature}"
        )
        url = f"{self.base.scheme}://{host}{full_path}" + (f"?{query}" if query else "")
        try:
            response = self.http.request(method, url, content=data, headers=headers)
        except httpx.TimeoutException as exc:
            raise ApiConnectionError(f"{self.base} did not answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ApiConnectionError(f"cannot reach {self.base}: {exc}") from exc
        if response.status_code >= 400:
            raise _parse_error(response)
        if response.content and "json" not in response.headers.get("content-type", ""):
            raise ApiError(
                response.status_code,
                f"HTTP.{response.status_code}",
                f"{self.base} answered {response.headers.get('content-type') or 'something'}, not JSON: "
                "is it a ModelArts-compatible endpoint?",
                response.headers.get("x-request-id"),
            )
        return response

    def request(
        self, method: str, path: str, params: Mapping[str, Any] | None = None, body: Any = None, *, version: str = "v1"
    ) -> Any:
        response = self.request_raw(method, path, params, body, version=version)
        return response.json() if response.content else None

    # --- the calls the CLI makes ------------------------------------------------------------------
    def list_notebooks(self, params: Mapping[str, Any], *, all_view: bool = False) -> httpx.Response:
        return self.request_raw("GET", "/notebooks/all" if all_view else "/notebooks", params)

    def notebook(self, notebook_id: str) -> dict:
        return self.request("GET", f"/notebooks/{quote(notebook_id, safe='')}")

    def create_notebook(self, body: dict) -> dict:
        return self.request("POST", "/notebooks", body=body)

    def start_notebook(self, notebook_id: str, duration: int | None = None, lease_type: str | None = None) -> dict:
        return self.request(
            "POST", f"/notebooks/{quote(notebook_id, safe='')}/start", {"duration": duration, "type": lease_type}
        )

    def stop_notebook(self, notebook_id: str) -> dict:
        return self.request("POST", f"/notebooks/{quote(notebook_id, safe='')}/stop")

    def delete_notebook(self, notebook_id: str) -> dict:
        return self.request("DELETE", f"/notebooks/{quote(notebook_id, safe='')}")

    def renew_lease(self, notebook_id: str, duration: int, lease_type: str | None = None) -> dict:
        path = f"/notebooks/{quote(notebook_id, safe='')}/lease"
        if lease_type:  # only the body can carry an IDLE lease; the query form always means TIMING
            return self.request("PATCH", path, body={"duration": duration, "type": lease_type})
        return self.request("PATCH", path, {"duration": duration})

    def events(self, notebook_id: str, params: Mapping[str, Any]) -> httpx.Response:
        return self.request_raw("GET", f"/notebooks/{quote(notebook_id, safe='')}/events", params)

    def keypairs(self) -> list[dict]:
        return [item["keypair"] for item in self.request("GET", "/keypairs", version="v3")["keypairs"]]

    def add_keypair(self, name: str, public_key: str) -> dict:
        body = {"keypair": {"name": name, "public_key": public_key}}
        return self.request("POST", "/keypairs", body=body, version="v3")["keypair"]

    def delete_keypair(self, name: str) -> None:
        self.request("DELETE", f"/keypairs/{quote(name, safe='')}", version="v3")

    def images(self, params: Mapping[str, Any]) -> httpx.Response:
        return self.request_raw("GET", "/images", params)

    def flavors(self, params: Mapping[str, Any]) -> httpx.Response:
        return self.request_raw("GET", "/notebooks/flavors", params)
