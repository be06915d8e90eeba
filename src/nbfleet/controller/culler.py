"""Auto-stop decisions: TIMING leases that expired, and IDLE leases of instances left idle.

The idle rule is a small policy object whose decision carries its reason, so every automatic
stop can say why it happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ..domain.lease import Lease, idle_window
from ..runtime.base import Activity


@dataclass(frozen=True)
class Decision:
    stop: bool
    reason: str


KEEP = Decision(False, "")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lease_decision(lease: Lease, now_ms: int) -> Decision:
    """Stop when a TIMING lease has run out."""
    expires = lease.expires_at()
    if expires is not None and now_ms >= expires:
        return Decision(True, f"lease expired at {_iso(expires)}")
    return KEEP


class KernelIdlePolicy:
    """Idle = no kernel busy and no activity reported by Jupyter for the lease's idle window.

    A busy kernel is never idle, however long ago a person touched it. When Jupyter cannot be asked,
    the instance is kept (an unreachable instance is the liveness check's business, not this one's).
    """

    def decide(self, lease: Lease, activity: Activity | None, started_at_ms: int, now_ms: int) -> Decision:
        window = idle_window(lease)
        if window is None or activity is None:
            return KEEP
        if activity.busy:
            return KEEP
        last = max(activity.last_activity_ms or 0, started_at_ms)
        if now_ms - last >= window:
            return Decision(
                True,
                f"idle since {_iso(last)} ({(now_ms - last) // 1000} s without activity, limit {window // 1000} s)",
            )
        return KEEP
