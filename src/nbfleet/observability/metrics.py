"""Prometheus metrics (``GET /metrics``).

Every label takes values from a fixed, small set: route templates (never raw paths), methods, status
codes, statuses and event kinds of the state machine. Never an instance, project or user id, never
free text: the number of series does not grow with the fleet.

Counters and histograms live in one registry for the process (there is one app per process; ``serve``
has no worker processes, each replica is scraped on its own). Gauges that describe the store (instances
by status, work queued) are computed at scrape time by ``ScrapeCollector``, with one GROUP BY query.
"""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

HTTP_REQUESTS = Counter(
    "nbfleet_http_requests",
    "API and console requests answered, by route template, method and status code",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "nbfleet_http_request_duration_seconds",
    "Time to answer an API or console request, by route template, method and status class",
    ["route", "method", "status_class"],
    buckets=_FAST,
    registry=REGISTRY,
)
TRANSITION_DURATION = Histogram(
    "nbfleet_transition_duration_seconds",
    "From the intent (the API call) to the reconciler's final status write, by kind and outcome",
    ["kind", "outcome"],
    buckets=_SLOW,
    registry=REGISTRY,
)
RECONCILER_FAILURES = Counter(
    "nbfleet_reconciler_failures",
    "Failed transitions written by the reconciler, by failure event",
    ["event"],
    registry=REGISTRY,
)
SWEEP_DURATION = Histogram(
    "nbfleet_reconciler_sweep_duration_seconds",
    "Duration of one reconciler sweep (claiming work, storage work, and every observe_interval the observation)",
    buckets=_FAST,
    registry=REGISTRY,
)
AUTO_STOPS = Counter(
    "nbfleet_auto_stops",
    "Instances stopped by nbfleet itself, by reason kind (idle | lease)",
    ["reason"],
    registry=REGISTRY,
)
PROXY_UPSTREAM = Histogram(
    "nbfleet_proxy_upstream_latency_seconds",
    "Time until a notebook answers a proxied HTTP request with its headers",
    buckets=_FAST,
    registry=REGISTRY,
)
PROXY_WEBSOCKETS = Gauge(
    "nbfleet_proxy_websockets_open", "Websockets open through the notebook proxy", registry=REGISTRY
)
PROXY_BYTES = Counter(
    "nbfleet_proxy_bytes",
    "Bytes through the notebook proxy: in = from clients to notebooks, out = from notebooks to clients",
    ["direction"],
    registry=REGISTRY,
)
for _direction in ("in", "out"):
    PROXY_BYTES.labels(_direction)

# The kind of work a transition from each transitional status finishes.
_KINDS = {
    "INIT": "create",
    "CREATING": "create",
    "STARTING": "start",
    "STOPPING": "stop",
    "DELETING": "delete",
    "SNAPSHOTTING": "save_image",
    "RUNNING": "running",
    "ERROR": "error",
}


def route_of(scope) -> str:
    """The template of the route that served ``scope`` (``/v1/{project_id}/notebooks``), or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def method_of(scope) -> str:
    method = scope.get("method", "")
    return method if method in _METHODS else "OTHER"


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_DURATION.labels(route, method, f"{status // 100}xx").observe(seconds)


def kind_of(status: str) -> str:
    return _KINDS.get(status, "other")


def transition(from_status: str, event: str, failed: bool, seconds: float | None) -> None:
    """A transition the reconciler wrote (``event`` names a state-machine event, a bounded set)."""
    if failed:
        RECONCILER_FAILURES.labels(event).inc()
    if seconds is not None:
        TRANSITION_DURATION.labels(kind_of(from_status), "failed" if failed else "ok").observe(max(seconds, 0.0))


def auto_stop(reason: str) -> None:
    """``reason``: ``idle`` or ``lease``."""
    AUTO_STOPS.labels("idle" if reason == "idle" else "lease").inc()


@contextlib.contextmanager
def sweep_timer() -> Iterator[None]:
    with SWEEP_DURATION.time():
        yield


@contextlib.contextmanager
def upstream_timer() -> Iterator[None]:
    with PROXY_UPSTREAM.time():
        yield


@contextlib.contextmanager
def websocket_open() -> Iterator[None]:
    with PROXY_WEBSOCKETS.track_inprogress():
        yield


def proxied(direction: str, frame: str | bytes) -> None:
    """A websocket frame through the proxy (text counted as its UTF-8 bytes)."""
    size = len(frame) if isinstance(frame, bytes) or frame.isascii() else len(frame.encode())
    PROXY_BYTES.labels(direction).inc(size)


async def counted(chunks: AsyncIterator[bytes], direction: str) -> AsyncIterator[bytes]:
    """``chunks``, counting their bytes as proxied in ``direction``."""
    child = PROXY_BYTES.labels(direction)
    async for chunk in chunks:
        child.inc(len(chunk))
        yield chunk


class ScrapeCollector:
    """Gauges read from the store and from this replica at scrape time."""

    def __init__(self, *, db, runtime_name: str, reconciler, statuses, transitional):
        self.db = db
        self.runtime_name = runtime_name
        self.reconciler = reconciler
        self.statuses = [str(s) for s in statuses]
        self.transitional = {str(s) for s in transitional}

    def describe(self):
        return []

    def collect(self):
        from ..store import notebook_repo

        with self.db.read() as conn:
            counts = notebook_repo.count_by_status(conn)
        instances = GaugeMetricFamily(
            "nbfleet_instances",
            "Instances in the store, by status (every status is "
            "reported, 0 included) and by the runtime of this replica",
            labels=["status", "runtime"],
        )
        for status in self.statuses:
            instances.add_metric([status, self.runtime_name], counts.get(status, 0))
        yield instances
        yield GaugeMetricFamily(
            "nbfleet_reconciler_queue_depth",
            "Instances in a transitional status (work asked for and not yet finished), over all replicas",
            value=sum(n for s, n in counts.items() if s in self.transitional),
        )
        inflight = getattr(self.reconciler, "inflight", {})
        yield GaugeMetricFamily(
            "nbfleet_reconciler_claims_held",
            "Instances this replica's reconciler works on right now",
            value=len(inflight),
        )
        pool = self.db.engine.pool
        checked_out = getattr(pool, "checkedout", None)
        yield GaugeMetricFamily(
            "nbfleet_db_pool_checked_out",
            "Database connections of this process in use",
            value=checked_out() if checked_out else 0,
        )
        yield GaugeMetricFamily(
            "nbfleet_db_pool_max", "Database connections this process may open at once", value=self.db.max_connections
        )


def exposition(scrape: CollectorRegistry | None) -> bytes:
    """The text exposition of the process's metrics and of ``scrape`` (blocking: ``scrape`` reads the store)."""
    return generate_latest(REGISTRY) + (generate_latest(scrape) if scrape is not None else b"")


def scrape_registry(collector: ScrapeCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def monotonic() -> float:
    return time.perf_counter()
