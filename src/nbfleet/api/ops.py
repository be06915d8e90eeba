"""Operational endpoints without authentication."""
from __future__ import annotations

from fastapi import APIRouter, Request

from .http import JSONBytes

router = APIRouter(default_response_class=JSONBytes)


@router.get("/health")
async def health(request: Request):
    runtime = request.app.state.services.runtime
    return JSONBytes({"status": "ok", "runtime": runtime.name, "isolation": runtime.isolation()})
