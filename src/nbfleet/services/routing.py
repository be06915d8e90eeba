"""Where the notebook proxy sends a request: the instance's placement, looked up in the store and kept
for a moment, so a page load's dozens of requests cost one lookup and none runs on the event loop.

A status change made by this process forgets the instance's route at once; another replica's change is
seen within ``ttl`` seconds. A stale route can only point at a socket that is gone (the request then
fails with 502), never at another instance: a socket path belongs to one instance for its whole life.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from ..domain import errors as E
from ..domain.instances import Placement

# Every refusal looks the same, so nobody learns from the proxy which ids exist or what state they are in.
NOT_AVAILABLE = E.ModelArtsError(
    "The notebook instance does not exist or is not running; start it and try again.",
    code="ModelArts.6309",
    http_status=404,
)


class RouteCache:
    def __init__(
        self,
        lookup: Callable[[str], Placement | E.ModelArtsError],
        *,
        ttl: float = 1.0,
        refusal_ttl: float = 0.2,
        size: int = 4096,
    ):
        self.lookup = lookup
        self.ttl = ttl
        self.refusal_ttl = refusal_ttl
        self.size = size
        self._entries: dict[str, tuple[float, Placement | None]] = {}

    async def resolve(self, notebook_id: str) -> Placement | E.ModelArtsError:
        now = time.monotonic()
        entry = self._entries.get(notebook_id)
        if entry is None or entry[0] <= now:
            found = await run_in_threadpool(self.lookup, notebook_id)
            placement = found if isinstance(found, Placement) else None
            if len(self._entries) >= self.size:
                self._entries.clear()  # cheap and rare: entries live a second
            entry = (now + (self.ttl if placement is not None else self.refusal_ttl), placement)
            self._entries[notebook_id] = entry
        return entry[1] if entry[1] is not None else NOT_AVAILABLE

    def forget(self, notebook_id: str) -> None:
        """The instance's status changed here: look it up again next time."""
        self._entries.pop(notebook_id, None)
