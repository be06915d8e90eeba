"""Dependencies: the wired services and the authenticated caller of a request."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from ..auth.principal import Principal
from ..services.catalog import FlavorCatalog, ImageCatalog
from ..services.identity import IdentityService
from ..services.notebooks import NotebookService
from ..services.request_auth import RequestAuthenticator
from ..services.signin import PasswordSignIn
from ..services.tags import TagService
from .http import read_body, refuse_declared_oversize


@dataclass
class Services:
    identity: IdentityService
    authenticator: RequestAuthenticator
    signin: PasswordSignIn
    notebooks: NotebookService
    tags: TagService
    images: ImageCatalog
    flavors: FlavorCatalog
    reconciler: object
    runtime: object


async def get_services(request: Request) -> Services:
    # async: a plain def dependency would cost a thread hop on every request
    return request.app.state.services


@dataclass(frozen=True)
class Call:
    """An authenticated API call: the caller, scoped to the path's project, the services and the body."""
    caller: Principal
    services: Services
    body: bytes


async def authenticated(request: Request) -> Call:
    """Authenticate the request (signature or token) for the project in its path, then read its body.

    The body is read only after the credentials passed every check that needs no body, and only up to
    ``max_body_bytes`` (a larger declared length is refused first): an anonymous or oversized request
    never costs the server its body. One dependency for all of it: FastAPI's dependency solving costs as
    much per dependency as the signature check itself, on every request."""
    services: Services = request.app.state.services
    limit = request.app.state.settings.max_body_bytes
    refuse_declared_oversize(request, limit)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.scope["headers"]}
    pending = services.authenticator.begin(
        method=request.method, path=request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
        raw_query=request.scope.get("query_string", b"").decode("latin-1"), headers=headers,
        project_id=request.path_params["project_id"])
    body = await read_body(request, limit)
    if pending.writes:  # a state-changing signed request: its signature is recorded (a store write)
        caller = await run_in_threadpool(services.authenticator.finish, pending, body)
    else:
        caller = services.authenticator.finish(pending, body)
    return Call(caller, services, body)


def client_address(request: Request) -> str | None:
    """The peer's address (behind a proxy: what the server was told to trust, see docs/security.md)."""
    return request.client.host if request.client else None


ServicesDep = Annotated[Services, Depends(get_services)]
Authenticated = Annotated[Call, Depends(authenticated)]
