"""The audit trail, for admins (an nbfleet extension): ``GET /v1/{project_id}/nbfleet/audit``."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..domain import errors as E
from ..observability.audit import parse_since
from .deps import Authenticated
from .http import JSONBytes, first, query_params

router = APIRouter(prefix="/v1/{project_id}/nbfleet", default_response_class=JSONBytes)
MAX_LIMIT = 1000


@router.get("/audit")
async def read_audit(request: Request, call: Authenticated):
    params = query_params(request)
    filters = _filters(params)
    trail = request.app.state.audit

    def work(caller, _services):
        if not caller.is_admin:
            raise E.PermissionDenied("read the audit trail")
        events = trail.read(project_id=caller.project_id, **filters)
        return {"events": events, "count": len(events)}

    return await call.json(work)


def _filters(params) -> dict:
    raw_limit, since = first(params, "limit"), first(params, "since")
    try:
        limit = int(raw_limit) if raw_limit is not None else 100
    except ValueError:
        raise E.InvalidParameter() from None
    if not 1 <= limit <= MAX_LIMIT:
        raise E.InvalidParameter()
    try:
        since_ms = parse_since(since) if since else None
    except ValueError:
        raise E.InvalidParameter() from None
    return {"since": since_ms, "user": first(params, "user"), "instance": first(params, "instance"), "limit": limit}
