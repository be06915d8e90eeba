"""Render every failure as ``{"error_code", "error_msg"}`` with ``X-Request-Id``.

Domain refusals carry their own code and status; unknown routes are the gateway's 404
(APIGW.0101); anything unexpected is a 500 (ModelArts.0010) whose stack goes to the log only.
"""

from __future__ import annotations

import logging
import uuid

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..domain import errors as E
from ..store.db import store_unavailable

log = logging.getLogger("nbfleet.api")


def request_id_of(scope: Scope) -> str:
    state = scope.setdefault("state", {})
    if "request_id" not in state:
        state["request_id"] = uuid.uuid4().hex
    return state["request_id"]


def error_response(request: Request, error: E.ModelArtsError, headers: dict | None = None) -> Response:
    rid = request_id_of(request.scope)
    body = {"error_code": error.code, "error_msg": error.message, "request_id": rid}
    return Response(
        orjson.dumps(body),
        status_code=error.http_status,
        media_type="application/json",
        headers={"X-Request-Id": rid, **(headers or {})},
    )


def error_bytes_response(scope: Scope, error: E.ModelArtsError) -> Response:
    """The error body for a request refused before routing (by a middleware), with its request id."""
    rid = request_id_of(scope)
    body = {"error_code": error.code, "error_msg": error.message, "request_id": rid}
    return Response(
        orjson.dumps(body), status_code=error.http_status, media_type="application/json", headers={"X-Request-Id": rid}
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(E.ModelArtsError)
    async def _domain(request: Request, exc: E.ModelArtsError):
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return error_response(request, exc, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return error_response(request, E.ApiNotFound())
        if exc.status_code == 405:
            return error_response(request, E.MethodNotAllowed())
        return error_response(
            request, E.ModelArtsError(str(exc.detail), code="ModelArts.0101", http_status=exc.status_code)
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return error_response(request, E.InvalidParameter("Parameter error."))

    async def _store_error(request: Request, exc: Exception):
        # A database that is away (restart, failover, network) is a 503 the client retries, not a bug;
        # everything else SQLAlchemy raises (integrity, programming errors) is.
        if store_unavailable(exc):
            log.error(
                "store unavailable (request %s): %s",
                request_id_of(request.scope),
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return error_response(request, E.BackendUnavailable(), {"Retry-After": "1"})
        return await _unexpected(request, exc)

    for store_error in (DBAPIError, SATimeoutError):
        app.add_exception_handler(store_error, _store_error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        rid = request_id_of(request.scope)
        log.exception("unexpected error in request %s %s (request id %s)", request.method, request.url.path, rid)
        return error_response(request, E.InternalError(f"Internal error. Request id: {rid}"))


class RequestIdMiddleware:
    """Give every request an id and every response the ``X-Request-Id`` header; strip a trailing
    slash from API paths so ``/v1/p/notebooks/`` and ``/v1/p/notebooks`` are the same route."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith("/v1/") and len(path) > 4 and path.endswith("/"):
            scope = dict(scope, path=path.rstrip("/"))
            if "raw_path" in scope and scope["raw_path"]:
                scope["raw_path"] = scope["raw_path"].rstrip(b"/")
        rid = request_id_of(scope).encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid))
                message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, send_with_id)
