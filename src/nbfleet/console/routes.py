"""The web console at ``/console/``: server-rendered pages over the same services as the API.

Pages call ``NotebookService`` with the caller's ``Principal`` exactly as the API routes do; the list
page hands its own query string, as ``{name: [values]}``, to ``NotebookService.list``, so a page and an
API call with the same query show the same rows. Refusals are the API's
``ModelArtsError``s, shown with their code and message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, parse_qsl, urlencode

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from ..api.deps import client_address
from ..api.http import JSONBytes, query_params, read_body
from ..api.inputs import has_control_character
from ..api.proxy_policy import foreign_origin
from ..domain import errors as E
from ..domain.ids import is_hex_id
from ..domain.model import Feature, Status
from ..observability import context
from ..services.identity import TOKEN_FROM_PASSWORD
from . import session as S
from . import views as V
from .navigation import console_page

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(ts=V.timestamp, duration=V.duration_text)
router = APIRouter(prefix="/console", include_in_schema=False)

MAX_FORM_BYTES = 64 * 1024
LIST_STATUSES = [s.value for s in Status if s is not Status.DELETED]


class ConsoleRefusal(Exception):
    """A request the console answers with an error page (or JSON for its polling endpoints)."""

    def __init__(self, status: int, code: str, message: str, *, sign_in: bool = False):
        super().__init__(message)
        self.status, self.code, self.message, self.sign_in = status, code, message, sign_in


def require_session(request: Request) -> S.Session:
    session = S.current_session(request)
    if session is None:
        raise ConsoleRefusal(401, "ModelArts.0203", "Sign in to use the console.", sign_in=True)
    context.note_caller(session.principal)
    return session


Console = Annotated[S.Session, Depends(require_session)]


def _services(request: Request):
    return request.app.state.services


async def _form(request: Request, expected_csrf: str | None) -> dict[str, str]:
    """The urlencoded form of a POST, refused unless it comes from the console's own pages (a browser names
    the origin of a form it sends) and carries the expected CSRF token. The origin check holds even when
    a page of another site managed to plant a cookie for the console's host."""
    foreign = foreign_origin(request.method, request.headers)
    if foreign is not None:
        raise ConsoleRefusal(
            403,
            "ModelArts.0108",
            f"The form did not come from this console ({foreign}). Reload the page and try again.",
        )
    try:
        body = await read_body(request, MAX_FORM_BYTES)
    except E.PayloadTooLarge:
        raise ConsoleRefusal(413, "ModelArts.6400", "The form is too large.") from None
    form: dict[str, str] = {}
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if any(has_control_character(k) or has_control_character(v) for k, v in form.items()):
        raise ConsoleRefusal(400, "ModelArts.6336", "The form holds a control character.")
    if expected_csrf is None or not S.csrf_ok(expected_csrf, form.get(S.CSRF_FIELD)):
        raise ConsoleRefusal(
            403,
            "ModelArts.0108",
            "The form did not come from this console session (missing or wrong CSRF token). "
            "Reload the page and try again.",
        )
    return form


def _error(exc: E.ModelArtsError) -> dict:
    return {"code": exc.code, "message": exc.message}


# Pages load scripts and styles from /console/static only, and may not be framed (clickjacking).
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def render(
    request: Request,
    name: str,
    context: dict,
    *,
    session: S.Session | None = None,
    status_code: int = 200,
    page: bool = True,
) -> Response:
    """A template with the session's user, CSRF token and (for whole pages) the pending flash message."""
    flash = S.take_flash(request) if page else None
    base = {
        "session": session,
        "principal": session.principal if session else None,
        "csrf": session.csrf if session else "",
        "flash": flash,
        "csrf_field": S.CSRF_FIELD,
    }
    response = templates.TemplateResponse(
        request, name, {**base, **context}, status_code=status_code, headers=SECURITY_HEADERS
    )
    if flash is not None:
        S.clear_flash(response)
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# --- sign-in -------------------------------------------------------------------------------------
@router.get("")
@router.get("/")
async def home(request: Request):
    return redirect("/console/notebooks" if S.current_session(request) else "/console/login")


@router.get("/login")
async def login_page(request: Request):
    if S.current_session(request) is not None:
        return redirect(console_page(request.query_params.get("next"), "/console/notebooks"))
    return _login_form(request, {}, None)


def _login_form(request: Request, values: dict, error: dict | None, status_code: int = 200) -> Response:
    token = S.new_login_csrf()
    response = render(
        request,
        "login.html",
        {
            "values": values,
            "error": error,
            "login_csrf": token,
            "next": console_page(request.query_params.get("next"), ""),
        },
        status_code=status_code,
    )
    S.set_login_csrf_cookie(request, response, token)
    return response


@router.post("/login")
async def login(request: Request):
    form = await _form(request, request.cookies.get(S.LOGIN_CSRF_COOKIE))
    services = _services(request)
    identity = services.identity
    name, project = form.get("user", "").strip(), form.get("project", "").strip()
    values = {"user": name, "project": project}
    try:
        user = await run_in_threadpool(services.signin.sign_in, name, form.get("password", ""), client_address(request))
    except E.SystemBusy as exc:  # throttled: say when to come back
        when = V.timestamp(services.signin.clock.now_ms() + exc.retry_after * 1000)
        response = _login_form(request, values, {"code": exc.code, "message": f"{exc.message} (at {when})"}, 429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    if user is None:
        return _login_form(
            request, values, {"code": "APIGW.0301", "message": "The user name or password is wrong."}, 401
        )
    scope = identity.member_project(
        user["id"],
        project_id=project if is_hex_id(project) else None,
        project_name=None if is_hex_id(project) else project or None,
    )
    if scope is None:
        return _login_form(
            request,
            values,
            {"code": "ModelArts.0210", "message": f"You are not a member of the project {project!r}."},
            403,
        )
    context.note_project(scope[0])
    token, _expires = identity.create_token(user["id"], scope[0], origin=TOKEN_FROM_PASSWORD)
    response = redirect(console_page(form.get("next"), "/console/notebooks"))
    S.set_session_cookie(request, response, token, identity.token_ttl_ms // 1000)
    S.clear_login_csrf_cookie(response)
    return response


@router.post("/logout")
async def logout(request: Request, session: Console):
    await _form(request, session.csrf)
    _services(request).identity.revoke_token(session.token)
    response = redirect("/console/login")
    S.clear_session_cookie(response)
    return response


# --- notebook list -------------------------------------------------------------------------------
@router.get("/notebooks")
async def list_mine(request: Request, session: Console):
    return _list_page(request, session, all_view=False)


@router.get("/notebooks/all")
async def list_all(request: Request, session: Console):
    return _list_page(request, session, all_view=True)


def _list_page(request: Request, session: S.Session, *, all_view: bool) -> Response:
    services = _services(request)
    params = form_query(request)
    error, status_code = None, 200
    try:
        page = services.notebooks.list(session.principal, params, all_view=all_view)
    except E.ModelArtsError as exc:
        error, status_code = _error(exc), exc.http_status
        page = {"current": 0, "data": [], "pages": 0, "size": 0, "total": 0}
    state = {k: v[0] for k, v in params.items() if v and v[0] != ""}
    strict = services.notebooks.settings.strict_delete
    rows = [{"nb": nb, "live": V.status_json(nb, strict_delete=strict)} for nb in page["data"]]
    path = request.url.path
    here = path + ("?" + request.url.query if request.url.query else "")
    offset = _int(state.get("offset"), 0)
    limit = _int(state.get("limit"), 10)
    sort_key = state.get("sort_key", "create_at")
    sort_dir = state.get("sort_dir", "DESC").upper()

    def link(**changes) -> str:
        merged = {**state, **changes}
        return path + "?" + urlencode({k: v for k, v in merged.items() if v not in (None, "")})

    sort_links = {
        key: link(
            sort_key=key, offset=None, sort_dir=("ASC" if sort_dir == "DESC" else "DESC") if key == sort_key else first
        )
        for key, first in V.SORTABLE.items()
    }
    pager = {
        "offset": offset,
        "limit": limit,
        "total": page["total"],
        "current": page["current"] + 1,
        "pages": page["pages"],
        "first": offset + 1 if page["data"] else 0,
        "last": offset + len(page["data"]),
        "prev": link(offset=max(0, offset - limit)) if offset > 0 else None,
        "next": link(offset=offset + limit) if offset + limit < page["total"] else None,
    }
    return render(
        request,
        "list.html",
        {
            "rows": rows,
            "error": error,
            "state": state,
            "all_view": all_view,
            "here": here,
            "sort_key": sort_key,
            "sort_dir": sort_dir,
            "sort_links": sort_links,
            "sortable": V.SORTABLE,
            "pager": pager,
            "statuses": LIST_STATUSES,
            "features": [f.value for f in Feature],
            "limits": sorted({*V.LIST_LIMITS, limit}),
            "now": services.notebooks.clock.now_ms(),
            "nav": "all" if all_view else "mine",
        },
        session=session,
        status_code=status_code,
    )


def form_query(request: Request) -> dict[str, list[str]]:
    """The query string as ``{name: [values]}``, the mapping the API hands to ``NotebookService.list``.

    Decoded the way HTML forms encode (``+`` is a space), since forms and the page's script build it.
    """
    return parse_qs(request.url.query, keep_blank_values=True)


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


@router.get("/api/status")
async def live_status(request: Request, session: Console):
    """Status, allowed actions and lease of the listed notebooks (the list page polls this)."""
    services = _services(request)
    strict = services.notebooks.settings.strict_delete
    out = {}
    for notebook_id in query_params(request).get("id", [])[:50]:
        try:
            out[notebook_id] = V.status_json(
                services.notebooks.get(session.principal, notebook_id), strict_delete=strict
            )
        except E.NotebookNotFound:
            out[notebook_id] = V.gone_json()
    return JSONBytes(
        {"now": services.notebooks.clock.now_ms(), "notebooks": out}, headers={"Cache-Control": "no-store"}
    )


# --- create --------------------------------------------------------------------------------------
def _create_page(
    request: Request, session: S.Session, values: dict, error: dict | None, status_code: int = 200
) -> Response:
    services = _services(request)
    principal = session.principal
    flavors = [{**f.to_json(services.flavors.sold_out(f))} for f in services.flavors.flavors.values()]
    images = sorted(
        (
            i
            for i in services.images.page({"limit": ["200"]}, principal.project_id, principal.user_id)["data"]
            if {"NOTEBOOK", "SSH"} & set(i["dev_services"])
        ),
        key=lambda i: (i["name"], i["tag"]),
    )
    if not values.get("image_id"):  # preselect an image the preselected flavor can run
        flavor = services.flavors.get(values.get("flavor", ""))
        fitting = [i for i in images if flavor is None or flavor.category in i["resource_categories"]]
        values = {**values, "image_id": (fitting or images or [{"id": ""}])[0]["id"]}
    keypairs = [k["keypair"]["name"] for k in services.keypairs.list(principal)["keypairs"]]
    return render(
        request,
        "create.html",
        {
            "values": values,
            "error": error,
            "flavors": flavors,
            "images": images,
            "keypairs": keypairs,
            "lease_choices": V.lease_choices(services.notebooks.limits),
            "nav": "new",
        },
        session=session,
        status_code=status_code,
    )


@router.get("/notebooks/new")
async def create_form(request: Request, session: Console):
    return _create_page(
        request, session, {"flavor": "modelarts.vm.cpu.2u", "lease_duration": "3600000", "lease_type": "TIMING"}, None
    )


@router.post("/notebooks/new")
async def create_notebook(request: Request, session: Console):
    form = await _form(request, session.csrf)
    services = _services(request)
    values = {
        k: form.get(k, "")
        for k in (
            "name",
            "flavor",
            "image_id",
            "lease_duration",
            "lease_type",
            "description",
            "ssh_key",
            "ssh_public_key",
            "ssh_key_name",
            "ssh_allow",
        )
    }
    flavor = services.flavors.get(values["flavor"])
    body = {
        "name": values["name"].strip(),
        "flavor": values["flavor"],
        "image_id": values["image_id"],
        "description": values["description"],
        "feature": flavor.feature if flavor else Feature.NOTEBOOK.value,
        "volume": {"category": "EVS", "ownership": "MANAGED"},
    }
    try:
        body["lease"] = {
            "duration": int(values["lease_duration"] or 3_600_000),
            "type": values["lease_type"] or "TIMING",
        }
        nb = await run_in_threadpool(_create_with_ssh, services, session.principal, body, values)
    except ValueError:
        return _create_page(
            request, session, values, {"code": "ModelArts.0104", "message": "The lease duration must be a number."}, 400
        )
    except E.ModelArtsError as exc:
        return _create_page(request, session, values, _error(exc), exc.http_status)
    response = redirect(f"/console/notebooks/{nb['id']}")
    S.set_flash(request, response, "ok", f"Creating {nb['name']}.")
    return response


def _create_with_ssh(services, principal, body: dict, values: dict) -> dict:
    """Create the notebook, with an SSH endpoint when a key pair was chosen or a public key pasted. A pasted
    key is registered first (under the name given) and removed again if the notebook is refused, so a
    refused form changes nothing."""
    keys = [values["ssh_key"]] if values.get("ssh_key") else []
    allowed = [part for part in re.split(r"[\s,]+", values.get("ssh_allow") or "") if part]
    registered = None
    if (values.get("ssh_public_key") or "").strip():
        registered = (values.get("ssh_key_name") or "").strip() or "console-key"
        services.keypairs.create(principal, {"keypair": {"name": registered, "public_key": values["ssh_public_key"]}})
        keys.append(registered)
    if keys or allowed:
        body["endpoints"] = [{"service": "SSH", "key_pair_names": keys, "allowed_access_ips": allowed}]
    try:
        return services.notebooks.create(principal, body)
    except BaseException:
        if registered is not None:
            services.keypairs.delete(principal, registered)
        raise


# --- detail --------------------------------------------------------------------------------------
def _detail_context(request: Request, session: S.Session, notebook_id: str) -> dict:
    services = _services(request)
    nb = services.notebooks.get(session.principal, notebook_id)
    events = services.notebooks.events(session.principal, notebook_id, {"limit": ["20"], "sort_dir": ["DESC"]})
    return {
        "nb": nb,
        "events": events["data"],
        "events_total": events["total"],
        "live": V.status_json(nb, strict_delete=services.notebooks.settings.strict_delete),
        "open_url": V.open_url(nb),
        "ssh": V.ssh_access(nb),
        "progressing": nb["status"] in V.PROGRESSING,
        "lease_choices": V.lease_choices(services.notebooks.limits),
        "now": services.notebooks.clock.now_ms(),
    }


@router.get("/notebooks/{notebook_id}")
async def detail_page(request: Request, notebook_id: str, session: Console):
    try:
        context = _detail_context(request, session, notebook_id)
    except E.ModelArtsError as exc:
        return render(request, "error.html", {"error": _error(exc)}, session=session, status_code=exc.http_status)
    return render(request, "detail.html", context, session=session)


@router.get("/notebooks/{notebook_id}/live")
async def detail_live(request: Request, notebook_id: str, session: Console):
    """The changing part of the detail page (status, actions, progress, lease, events), for polling."""
    try:
        context = _detail_context(request, session, notebook_id)
    except E.ModelArtsError as exc:
        return JSONBytes({"error_code": exc.code, "error_msg": exc.message}, status_code=exc.http_status)
    return render(request, "_live.html", context, session=session, page=False)


# --- actions -------------------------------------------------------------------------------------
@router.post("/notebooks/{notebook_id}/{action}")
async def act(request: Request, notebook_id: str, action: str, session: Console):
    form = await _form(request, session.csrf)
    notebooks = _services(request).notebooks
    principal = session.principal
    detail = f"/console/notebooks/{notebook_id}"
    target = console_page(form.get("next"), detail)
    duration = form.get("duration") or None
    calls = {
        "start": (lambda: notebooks.start(principal, notebook_id, duration, None), "Start requested"),
        "stop": (lambda: notebooks.stop(principal, notebook_id), "Stop requested"),
        "delete": (lambda: notebooks.delete(principal, notebook_id), "Delete requested"),
        "renew": (lambda: notebooks.renew_lease(principal, notebook_id, duration, None), "Lease renewed"),
    }
    if action not in calls:
        raise ConsoleRefusal(404, "APIGW.0101", "No such action.")
    call, done = calls[action]
    if action == "delete" and target == detail:
        target = "/console/notebooks"
    try:
        await run_in_threadpool(call)
    except E.ModelArtsError as exc:
        response = redirect(target)
        S.set_flash(request, response, "error", exc.message, exc.code)
        return response
    response = redirect(target)
    S.set_flash(request, response, "ok", done + ".")
    return response


# --- wiring --------------------------------------------------------------------------------------
def install_console(app: FastAPI) -> None:
    """Add the console's routes, static files and error pages to ``app``."""
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=str(HERE / "static")), name="console-static")

    @app.exception_handler(ConsoleRefusal)
    async def _refused(request: Request, exc: ConsoleRefusal):
        wants_json = request.url.path.startswith("/console/api/") or request.url.path.endswith("/live")
        if wants_json:
            return JSONBytes({"error_code": exc.code, "error_msg": exc.message}, status_code=exc.status)
        if exc.sign_in:
            here = request.url.path + ("?" + request.url.query if request.url.query else "")
            target = "/console/login" + ("?" + urlencode({"next": here}) if request.method == "GET" else "")
            return redirect(target)
        session = S.current_session(request)
        return render(
            request,
            "error.html",
            {"error": {"code": exc.code, "message": exc.message}},
            session=session,
            status_code=exc.status,
        )
