"""Dependencies: the wired services and the authenticated caller of a request."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ..auth.principal import Principal
from ..services.catalog import FlavorCatalog, ImageCatalog
from ..services.identity import IdentityService
from ..services.notebooks import NotebookService
from ..services.tags import TagService


@dataclass
class Services:
    identity: IdentityService
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
    """An authenticated API call: the caller, scoped to the path's project, and the services."""
    caller: Principal
    services: Services


async def authenticated(request: Request) -> Call:
    """Authenticate the request (signature or token) for the project in its path.

    One dependency for both halves: FastAPI's dependency solving costs as much per dependency as the
    signature check itself, on every request."""
    services: Services = request.app.state.services
    body = await request.body()
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.scope["headers"]}
    caller = services.identity.authenticate(
        method=request.method, path=request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
        raw_query=request.scope.get("query_string", b"").decode("latin-1"), headers=headers, body=body,
        project_id=request.path_params["project_id"])
    return Call(caller, services)


ServicesDep = Annotated[Services, Depends(get_services)]
Authenticated = Annotated[Call, Depends(authenticated)]
