"""One ASGI middleware for what every request leaves behind: its metrics, its access log line and, for
a state-changing call, its audit row. Inside ``RequestIdMiddleware`` (the id is there already) and
outside the router, so it sees the matched route in the scope once the app has answered."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import audit, context, logs, metrics

log = logging.getLogger("nbfleet.audit")
_ERROR_BODY_LIMIT = 4096
_INTERNAL_ERROR = "ModelArts.0010"


@dataclass
class _Answer:
    """What the app answered: its status, and the start of an error body (for the audit's error code)."""

    status: int = 500
    error_body: bytes = b""


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        token = context.begin(state.get("request_id"))
        ctx = context.current()
        method = metrics.method_of(scope)
        audit_this = audit.audited(method, scope.get("path", ""))
        answer = _Answer()
        started = metrics.monotonic()

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
            elif (
                message["type"] == "http.response.body"
                and audit_this
                and answer.status >= 400
                and len(answer.error_body) < _ERROR_BODY_LIMIT
            ):
                answer.error_body += message.get("body", b"")[:_ERROR_BODY_LIMIT]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            seconds = metrics.monotonic() - started
            route = metrics.route_of(scope)
            status = answer.status
            metrics.observe_request(route, method, status, seconds)
            logs.request_line(method=method, route=route, status=status, duration_ms=seconds * 1000, ctx=ctx)
            if audit_this:
                await self._audit(scope, ctx, method, route, status, answer.error_body)
            context.end(token)

    async def _audit(self, scope: Scope, ctx, method: str, route: str, status: int, error_body: bytes) -> None:
        app = scope.get("app")
        trail = getattr(getattr(app, "state", None), "audit", None)
        if trail is None:
            return
        params = scope.get("path_params") or {}
        action = getattr(scope.get("route"), "name", None) or "unmatched"
        if route.startswith("/console/"):
            action = "console." + action + (f".{params['action']}" if "action" in params else "")
        row = {
            "request_id": ctx.request_id,
            "user_id": ctx.user_id,
            "user_name": ctx.user_name,
            "project_id": ctx.project_id or params.get("project_id"),
            "method": method,
            "route": route[:256],
            "action": action[:64],
            "target": (params.get("notebook_id") or ctx.target or None),
            "status": status,
            "error_code": _error_code(status, error_body),
        }
        if row["target"] is not None:
            row["target"] = str(row["target"])[:64]
        if row["project_id"] is not None:
            row["project_id"] = str(row["project_id"])[:32]
        services = getattr(getattr(app, "state", None), "services", None)
        executor = getattr(services, "api_threads", None)
        try:
            await asyncio.get_running_loop().run_in_executor(executor, trail.record, row)
        except Exception as exc:  # an answer already went out; the store's trouble is logged, not raised
            log.warning(
                "could not record the audit row of request %s: %s",
                ctx.request_id,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )


def _error_code(status: int, body: bytes) -> str | None:
    if status < 400:
        return None
    try:
        code = orjson.loads(body).get("error_code")
    except (orjson.JSONDecodeError, AttributeError):
        code = None
    if isinstance(code, str):
        return code[:32]
    return _INTERNAL_ERROR if status >= 500 else None
