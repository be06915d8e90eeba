"""``POST /v3/auth/tokens``: the password subset of the IAM (Keystone v3) token API.

A client sends a user name, password and domain, scoped to a project by id or name, and gets an
``X-Auth-Token`` back in the ``X-Subject-Token`` header, as Huawei Cloud IAM answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, overload

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ..domain import errors as E
from ..services.identity import TOKEN_FROM_PASSWORD
from .deps import ServicesDep, client_address
from .http import JSONBytes, parse_json, read_body

router = APIRouter(default_response_class=JSONBytes)

WRONG_CREDENTIALS = "the user name or password is wrong"


@dataclass(frozen=True)
class PasswordAuth:
    user_name: str
    password: str
    domain_name: str | None
    project_id: str | None
    project_name: str | None
    scoped: bool  # a project scope was asked for


def _object(value, path: str) -> dict:
    if not isinstance(value, dict):
        raise E.InvalidPayload(f"Invalid request payload: '{path}' must be an object.")
    return value


@overload
def _text(container: dict[str, Any], key: str, path: str, *, required: Literal[True]) -> str: ...
@overload
def _text(container: dict[str, Any], key: str, path: str, *, required: bool) -> str | None: ...
def _text(container: dict[str, Any], key: str, path: str, *, required: bool) -> str | None:
    value = container.get(key)
    if value is None:
        if required:
            raise E.MissingProperty(f"{path}.{key}")
        return None
    if not isinstance(value, str) or (required and not value):
        raise E.WrongType(f"{path}.{key}", "string")
    return value


def parse_password_auth(body) -> PasswordAuth:
    """The members of a password-auth body this API understands; anything malformed is a 400."""
    auth = _object(_object(body, "body").get("auth"), "auth")
    identity = _object(auth.get("identity"), "auth.identity")
    methods = identity.get("methods")
    if not isinstance(methods, list) or methods != ["password"]:
        raise E.InvalidParameter(
            "Parameter error: 'auth.identity.methods' must be [\"password\"]; "
            "only password authentication is supported."
        )
    user = _object(
        _object(identity.get("password"), "auth.identity.password").get("user"), "auth.identity.password.user"
    )
    name = _text(user, "name", "auth.identity.password.user", required=True)
    password = _text(user, "password", "auth.identity.password.user", required=True)
    domain_name = None
    if user.get("domain") is not None:
        domain_name = _text(
            _object(user["domain"], "auth.identity.password.user.domain"),
            "name",
            "auth.identity.password.user.domain",
            required=False,
        )
    project_id = project_name = None
    scoped = False
    scope = auth.get("scope")
    if scope is not None and _object(scope, "auth.scope").get("project") is not None:
        project = _object(scope["project"], "auth.scope.project")
        project_id = _text(project, "id", "auth.scope.project", required=False)
        project_name = _text(project, "name", "auth.scope.project", required=False)
        if not project_id and not project_name:
            raise E.MissingProperty("auth.scope.project.id")
        scoped = True
    return PasswordAuth(name, password, domain_name, project_id, project_name, scoped)


def _iso(ms: int) -> str:
    """IAM's timestamp form: ``2024-05-01T10:00:00.000000Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@router.post("/v3/auth/tokens", status_code=201)
async def issue_token(request: Request, services: ServicesDep):
    body = await read_body(request, request.app.state.settings.max_body_bytes)
    auth = parse_password_auth(parse_json(body, allow_empty=False))
    # Argon2 (~0.1 s of CPU) and the store's reads and writes: in a worker thread, off the event loop.
    document, token = await run_in_threadpool(_issue, services, auth, client_address(request))
    return JSONBytes(document, status_code=201, headers={"X-Subject-Token": token})


def _issue(services, auth: PasswordAuth, address: str | None) -> tuple[dict, str]:
    """The token response body and the token, or the refusal (blocking)."""
    identity = services.identity
    user = services.signin.sign_in(auth.user_name, auth.password, address, domain_name=auth.domain_name)
    if user is None:
        raise E.AuthenticationFailed(WRONG_CREDENTIALS)
    project = None
    if auth.scoped:
        project = identity.member_project(user["id"], project_id=auth.project_id, project_name=auth.project_name)
        if project is None:
            raise E.AuthenticationFailed("the user has no access to the project")
    token, expires = identity.create_token(user["id"], project[0] if project else None, origin=TOKEN_FROM_PASSWORD)
    domain_id, domain_name = identity.domain()
    issued = expires - identity.token_ttl_ms
    body = {
        "token": {
            "expires_at": _iso(expires),
            "issued_at": _iso(issued),
            "methods": ["password"],
            "user": {
                "id": user["id"],
                "name": user["name"],
                "domain": {"id": domain_id, "name": domain_name},
                "password_expires_at": "",
            },
            "catalog": [],
            "roles": [],
        }
    }
    if project is not None:
        body["token"]["project"] = {
            "id": project[0],
            "name": project[1],
            "domain": {"id": domain_id, "name": domain_name},
        }
    else:
        body["token"]["domain"] = {"id": domain_id, "name": domain_name}
    return body, token
