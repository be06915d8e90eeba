"""When the reconciler tries again an instance whose work failed unexpectedly, and when it gives up."""

from __future__ import annotations


class RetrySchedule:
    """Failed attempts per instance, and the time before which each is not tried again.

    The pause doubles with each failure (from ``base_seconds``, at most ``max_seconds``); after ``limit``
    attempts in all the caller gives the instance its failed status. Times are the caller's monotonic
    clock (the event loop's). Kept in memory: after a restart an instance simply gets ``limit`` more tries.
    """

    def __init__(self, limit: int, base_seconds: float, max_seconds: float):
        self.limit = limit
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self._entries: dict[str, tuple[int, float]] = {}  # id -> (failed attempts, time of the next)

    def succeeded(self, notebook_id: str) -> None:
        self._entries.pop(notebook_id, None)

    def failed(self, notebook_id: str, now: float) -> int | None:
        """Record a failed attempt: the attempts so far when this was the last allowed one (give up), else
        None (the next attempt is scheduled)."""
        attempts = self._entries.get(notebook_id, (0, 0.0))[0] + 1
        if attempts >= self.limit:
            self._entries.pop(notebook_id, None)
            return attempts
        pause = min(self.base_seconds * 2**attempts, self.max_seconds)
        self._entries[notebook_id] = (attempts, now + pause)
        return None

    def waiting(self, now: float) -> list[str]:
        """Instances whose next attempt is not due yet."""
        return [notebook_id for notebook_id, (_n, due) in self._entries.items() if due > now]
