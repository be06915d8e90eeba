"""Operational endpoints: /health (no authentication) and /metrics (a bearer token of its own)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..domain import errors as E
from ..observability import metrics
from .errors import error_response
from .http import JSONBytes

router = APIRouter(default_response_class=JSONBytes)


@router.get("/health")
async def health(request: Request):
    runtime = request.app.state.services.runtime
    body = {"status": "ok", "runtime": runtime.name, "isolation": runtime.isolation()}
    warm = getattr(request.app.state, "warm_pool", None)
    if warm is not None:  # what the warm pool holds and what each member costs (RSS), for the operator
        body["warm_pool"] = await asyncio.to_thread(warm.describe)
    return JSONBytes(body)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request):
    """Prometheus text exposition. Off (the gateway's 404, as for any unknown path) unless
    ``NBFLEET_METRICS_TOKEN`` is set; then a scraper must send ``Authorization: Bearer <token>`` (401)."""
    token = request.app.state.settings.metrics_token
    if token is None or not token.get_secret_value():
        return error_response(request, E.ApiNotFound())
    if not metrics.bearer_matches(request.headers.get("authorization"), token.get_secret_value()):
        response = error_response(request, E.AuthenticationFailed("a bearer token is required for /metrics"))
        response.headers["WWW-Authenticate"] = 'Bearer realm="nbfleet metrics"'
        return response
    body = await asyncio.get_running_loop().run_in_executor(  # the scrape reads the store
        request.app.state.services.api_threads, metrics.exposition, request.app.state.metrics_scrape
    )
    return Response(body, media_type=metrics.CONTENT_TYPE)
