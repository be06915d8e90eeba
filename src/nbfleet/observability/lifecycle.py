"""What the reconciler reports: one call per transition it writes, per work it takes up, per auto-stop.

A transition is timed from the row's ``update_at`` before it (the moment the intent was recorded, or the
previous transition) to the write; its log line carries the request id stored with the intent.
"""

from __future__ import annotations

from . import context, logs, metrics

_TRANSITIONAL = frozenset({"INIT", "CREATING", "STARTING", "STOPPING", "DELETING", "SNAPSHOTTING"})
_FAILURES = frozenset({"provision_failed", "start_failed", "stop_failed", "delete_failed", "lost"})


def _request_id(row) -> str | None:
    try:
        return row["request_id"]
    except (KeyError, IndexError):
        return None


def work_taken(row) -> None:
    """The reconciler took up work on ``row``: its log lines carry the request that asked for it (none for
    work nobody asked for, such as an auto-stop of a RUNNING instance)."""
    context.bind_work(_request_id(row) if row["status"] in _TRANSITIONAL else None)


def transition(row, event: str, to_status: str, now_ms: int) -> None:
    """The reconciler moved ``row`` (as it was read) along ``event`` to ``to_status`` at ``now_ms``."""
    from_status = str(row["status"])
    event = str(event)
    failed = event in _FAILURES
    elapsed_ms = max(now_ms - row["update_at"], 0) if from_status in _TRANSITIONAL else None
    metrics.transition(from_status, event, failed, elapsed_ms / 1000 if elapsed_ms is not None else None)
    logs.transition_line(
        instance_id=row["id"],
        from_status=from_status,
        to_status=str(to_status),
        kind=metrics.kind_of(from_status) if from_status in _TRANSITIONAL else event,
        event=event,
        duration_ms=elapsed_ms,
        request_id=_request_id(row) if from_status in _TRANSITIONAL else None,
    )


def deleted(row, now_ms: int) -> None:
    """The row of a deleted instance went from the store."""
    transition(row, "deleted", "DELETED", now_ms)


def auto_stop(reason: str) -> None:
    """An auto-stop was decided; ``reason``: idle | lease."""
    metrics.auto_stop(reason)
