"""Test control, an nbfleet extension under ``/v1/{project_id}/nbfleet/testing``: only on a server started
for testing (``serve --testing``, ``nbfleet.testing``), and only for the admin. See docs/testing.md.

- ``GET  …/clock`` → ``{"now_ms", "frozen"}``; ``POST …/clock`` with ``{"advance_ms": n}``, ``{"frozen": bool}``
  or ``{"run_pending": true}``;
- ``POST …/failures`` with ``{"op", "reason", "name"?, "step"?, "count"?}`` (the next ``count`` times) or
  ``{"rule": "name=<glob>;step=3;op=start"}`` (every time); ``DELETE …/failures`` forgets them all;
- ``POST …/instances/{id}/crash`` ``{"reason"?}``; ``POST …/instances/{id}/activity`` ``{"busy", "last_activity_ms"?}``;
- ``POST …/users`` ``{"name", "quota"?}`` → a user of the project with a new access key;
- ``POST …/seed`` ``{"count", "status", "owner"?, "name_prefix"?, "flavor"?, "image_id"?, …create fields}``
  → ``{"ids": […]}``;
- ``POST …/reset``: every instance gone, no scripted failures, the clock back at the wall clock's time.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..auth.principal import Principal
from ..domain import errors as E
from ..runtime.simulated import INSTANCE_OPS
from ..services.images import builtin_image_id
from .deps import Authenticated
from .http import JSONBytes, parse_json

router = APIRouter(prefix="/v1/{project_id}/nbfleet/testing", default_response_class=JSONBytes)

# What a seeded instance runs unless the request says otherwise: the catalogue's first image, a small CPU flavor.
DEFAULT_IMAGE_ID = builtin_image_id("nbfleet", "notebook-python3.11", "1.0")


def _admin(caller: Principal, services) -> Principal:
    if not caller.is_admin:
        raise E.PermissionDenied("nbfleet:testing")
    return caller


async def _caller(call) -> Principal:
    return await call.run(_admin)


def _body(call) -> dict:
    body = parse_json(call.body) or {}
    if not isinstance(body, dict):
        raise E.InvalidProperty("body", "An object is expected.")
    return body


def _int(body: dict, name: str, *, low: int, high: int, default: int | None = None) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise E.InvalidProperty(name, f"An integer from {low} to {high} is expected.")
    return value


def _text(body: dict, name: str, *, default: str | None = None, limit: int = 512) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise E.InvalidProperty(name, f"A non-empty string of at most {limit} characters is expected.")
    return value


@router.get("/clock")
async def show_clock(call: Authenticated, request: Request):
    await _caller(call)
    return request.app.state.test_control.clock_state()


@router.post("/clock")
async def move_clock(call: Authenticated, request: Request):
    await _caller(call)
    control = request.app.state.test_control
    body = _body(call)
    if "advance_ms" in body:
        return await control.advance(_int(body, "advance_ms", low=0, high=10 * 365 * 86_400_000))
    if "frozen" in body:
        if not isinstance(body["frozen"], bool):
            raise E.InvalidProperty("frozen", "true or false is expected.")
        return await control.set_frozen(body["frozen"])
    if body.get("run_pending") is True:
        return await control.run_pending()
    raise E.MissingProperty("advance_ms")


@router.post("/failures")
async def add_failure(call: Authenticated, request: Request):
    await _caller(call)
    control = request.app.state.test_control
    body = _body(call)
    try:
        if "rule" in body:
            control.add_rule(_text(body, "rule"))
        else:
            op = _text(body, "op")
            if op not in INSTANCE_OPS or op == "any":
                raise E.InvalidProperty("op", f"One of {', '.join(o for o in INSTANCE_OPS if o != 'any')}.")
            control.fail_next(
                op,
                _text(body, "reason", default=f"simulated failure of {op}"),
                name=_text(body, "name", default="*"),
                step=_int(body, "step", low=1, high=4, default=4),
                count=_int(body, "count", low=1, high=1_000_000, default=1),
            )
    except ValueError as exc:  # a rule that does not parse
        raise E.InvalidProperty("rule", str(exc)) from None
    return {}


@router.delete("/failures")
async def clear_failures(call: Authenticated, request: Request):
    await _caller(call)
    request.app.state.test_control.clear_failures()
    return {}


@router.post("/instances/{notebook_id}/crash")
async def crash(notebook_id: str, call: Authenticated, request: Request):
    control = request.app.state.test_control
    await call.run(lambda caller, s: s.notebooks.get(_admin(caller, s), notebook_id))  # 404 for unknown ids
    control.crash(notebook_id, _text(_body(call), "reason", default="the instance's process died"))
    return {}


@router.post("/instances/{notebook_id}/activity")
async def activity(notebook_id: str, call: Authenticated, request: Request):
    control = request.app.state.test_control
    await call.run(lambda caller, s: s.notebooks.get(_admin(caller, s), notebook_id))
    body = _body(call)
    if not isinstance(body.get("busy"), bool):
        raise E.InvalidProperty("busy", "true or false is expected.")
    last = body.get("last_activity_ms")
    if last is not None:
        last = _int(body, "last_activity_ms", low=0, high=2**53)
    control.set_activity(notebook_id, busy=body["busy"], last_activity_ms=last)
    return {}


@router.post("/users")
async def add_user(call: Authenticated, request: Request, project_id: str):
    control = request.app.state.test_control
    body = _body(call)
    name = _text(body, "name", limit=64)
    quota = None if body.get("quota") is None else _int(body, "quota", low=-1, high=1_000_000)
    return await call.run(lambda caller, s: control.user(_admin(caller, s).project_id, name, quota=quota))


@router.post("/seed")
async def seed(call: Authenticated, request: Request):
    control = request.app.state.test_control
    body = _body(call)
    count = _int(body, "count", low=1, high=10_000, default=1)
    status = _text(body, "status", default="RUNNING")
    prefix = _text(body, "name_prefix", default=f"seeded-{status.lower().replace('_', '-')}-", limit=60)
    owner_name = body.get("owner")

    def work(caller: Principal, services) -> dict:
        _admin(caller, services)
        owner = caller
        if owner_name is not None:
            user = control.user(caller.project_id, _text(body, "owner", limit=64))
            owner = Principal(
                user_id=user["user_id"],
                user_name=user["user_name"],
                is_admin=False,
                project_id=caller.project_id,
                domain_id=caller.domain_id,
                domain_name=caller.domain_name,
            )
        create = {k: v for k, v in body.items() if k not in ("count", "status", "owner", "name_prefix")}
        create.setdefault("flavor", "modelarts.vm.cpu.2u")
        create.setdefault("image_id", DEFAULT_IMAGE_ID)
        create.setdefault("volume", {"category": "EVS", "ownership": "MANAGED"})
        try:
            return {"ids": control.seed(owner, count=count, status=status, name_prefix=prefix, body=create)}
        except ValueError as exc:
            raise E.InvalidProperty("status", str(exc)) from None

    return await call.run(work)


@router.post("/reset")
async def reset(call: Authenticated, request: Request):
    await _caller(call)
    await request.app.state.test_control.reset()
    return {}
