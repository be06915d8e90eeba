"""The HTTP server's own refusals in the API's error format.

uvicorn answers a request it cannot parse (a request line longer than its parser takes, about 64 KiB
with httptools; a malformed line or header) itself, with a plain-text 400, before the application sees
anything: no middleware or exception handler can change that answer. These protocol classes, given to
uvicorn by ``nbfleet serve``, keep uvicorn's behaviour (400, then close the connection) and only
replace the body with ``{"error_code", "error_msg", "request_id"}`` and add ``X-Request-Id``.
"""

from __future__ import annotations

import uuid

import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..domain.errors import ModelArtsError

UNPARSABLE = ModelArtsError(
    "Invalid HTTP request: the request line or a header is malformed or too long.",
    code="ModelArts.0101",
    http_status=400,
)


def unparsable_response() -> bytes:
    """The whole 400 response (status line, headers, body) for a request that could not be parsed."""
    rid = uuid.uuid4().hex
    body = orjson.dumps({"error_code": UNPARSABLE.code, "error_msg": UNPARSABLE.message, "request_id": rid})
    return b"".join(
        [
            b"HTTP/1.1 400 Bad Request\r\n",
            b"content-type: application/json\r\n",
            b"content-length: ",
            str(len(body)).encode(),
            b"\r\n",
            b"x-request-id: ",
            rid.encode(),
            b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class ModelArtsH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        self.transport.write(unparsable_response())
        self.transport.close()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional in uvicorn; without it uvicorn parses with h11
    HttpToolsProtocol = None  # type: ignore[misc,assignment]  # the optional import's usual fallback
    ModelArtsHttpToolsProtocol = None
else:

    class ModelArtsHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[no-redef]
        def send_400_response(self, msg: str) -> None:
            self.transport.write(unparsable_response())
            self.transport.close()


def http_protocol() -> type:
    """The protocol class for ``uvicorn.run(http=…)``: httptools where installed (uvicorn's own choice)."""
    return ModelArtsHttpToolsProtocol or ModelArtsH11Protocol
