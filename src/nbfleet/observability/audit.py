"""The audit trail of state-changing calls (API and console), kept in the store.

One row per POST/PUT/PATCH/DELETE under /v1, /v2, /v3 and of the console (its form posts, sign-in and
sign-out), written by the HTTP middleware after the answer went out: who (from the request context),
what (method, route template, action), which instance, and how it ended (status, error code). Never a
body, a query string or a credential. Rows older than the retention are pruned at most once an hour, by
the write that finds the last pruning an hour old.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from ..store import audit_repo

log = logging.getLogger("nbfleet.audit")

AUDITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUDITED_PREFIXES = ("/v1/", "/v2/", "/v3/", "/console/")
PRUNE_EVERY_MS = 3_600_000
DAY_MS = 86_400_000


def audited(method: str, path: str) -> bool:
    return method in AUDITED_METHODS and path.startswith(AUDITED_PREFIXES)


class AuditTrail:
    def __init__(self, db, clock, *, retention_days: int):
        self.db = db
        self.clock = clock
        self.retention_ms = retention_days * DAY_MS
        self._last_prune: int | None = None
        self._prune_lock = threading.Lock()

    def record(self, row: dict) -> None:
        """Append one row (blocking), and prune old rows if the last pruning is an hour old."""
        now = self.clock.now_ms()
        with self.db.write() as conn:
            audit_repo.append(conn, {"at": now, **row})
        self.prune_if_due(now)

    def prune_if_due(self, now: int | None = None) -> int:
        now = self.clock.now_ms() if now is None else now
        with self._prune_lock:
            if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY_MS:
                return 0
            self._last_prune = now
        with self.db.write() as conn:
            removed = audit_repo.prune(conn, now - self.retention_ms)
        if removed:
            log.info("pruned %d audit rows older than %d days", removed, self.retention_ms // DAY_MS)
        return removed

    def read(self, **filters) -> list[dict]:
        with self.db.read() as conn:
            return [wire(row) for row in audit_repo.page(conn, **filters)]


def wire(row: dict) -> dict:
    """A row as the endpoint and ``nbfleet admin audit --json`` show it."""
    return {
        "id": row["id"],
        "at": row["at"],
        "time": iso(row["at"]),
        "request_id": row["request_id"],
        "user_id": row["user_id"],
        "user_name": row["user_name"],
        "project_id": row["project_id"],
        "method": row["method"],
        "route": row["route"],
        "action": row["action"],
        "instance_id": row["target"],
        "status": row["status"],
        "error_code": row["error_code"],
    }


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_since(text: str) -> int:
    """An ISO 8601 time (``2026-11-30``, ``2026-11-30T08:00:00Z``; no zone = UTC) as ms since the epoch."""
    when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)
