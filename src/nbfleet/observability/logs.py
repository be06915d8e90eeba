"""Log set-up for ``serve``: text (as always) or JSON, one object per line.

Every record gets ``request_id`` from the request context (``context``), so a reconciler line about an
instance carries the id of the API call that asked for the work. The access line of a request (logger
``nbfleet.access``) and the line of a lifecycle transition (``nbfleet.transition``) carry their fields as
record attributes, which the JSON formatter writes as keys; they never carry bodies, query strings or
credentials.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from . import context

access_log = logging.getLogger("nbfleet.access")
transition_log = logging.getLogger("nbfleet.transition")

# Record attributes written as JSON keys when present (set with ``extra=``).
FIELDS = (
    "method",
    "route",
    "status",
    "duration_ms",
    "project_id",
    "user_id",
    "instance_id",
    "from_status",
    "to_status",
    "kind",
    "event",
    "outcome",
)


class RequestContextFilter(logging.Filter):
    """Adds ``request_id`` (or None) to every record that has none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = context.request_id()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or context.request_id(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(log_format: str = "text", level: str = "info") -> None:
    """Log to stderr in ``log_format`` (text | json) at ``level``. In text, per-request access lines stay
    off (as they always were) unless the level is debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet_access = log_format != "json" and level.lower() != "debug"
    access_log.setLevel(logging.WARNING if quiet_access else logging.NOTSET)


def request_line(*, method: str, route: str, status: int, duration_ms: float, ctx) -> None:
    """The access line of one request."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        "%s %s %s %.1f ms",
        method,
        route,
        status,
        duration_ms,
        extra={
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(duration_ms, 1),
            "request_id": ctx.request_id if ctx else None,
            "project_id": ctx.project_id if ctx else None,
            "user_id": ctx.user_id if ctx else None,
        },
    )


def transition_line(
    *,
    instance_id: str,
    from_status: str,
    to_status: str,
    kind: str,
    event: str,
    duration_ms: int | None,
    request_id: str | None,
) -> None:
    """The line of one lifecycle transition written by the reconciler."""
    transition_log.info(
        "instance %s: %s -> %s (%s%s)",
        instance_id,
        from_status,
        to_status,
        kind,
        f", {duration_ms} ms" if duration_ms is not None else "",
        extra={
            "instance_id": instance_id,
            "from_status": from_status,
            "to_status": to_status,
            "kind": kind,
            "event": event,
            "duration_ms": duration_ms,
            "request_id": request_id or context.request_id(),
        },
    )
