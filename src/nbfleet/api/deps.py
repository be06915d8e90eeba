"""Dependencies: the wired services and the authenticated caller of a request."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, TypeVar

import orjson
from fastapi import Depends, Request, Response

from ..auth.principal import Principal
from ..services.catalog import FlavorCatalog, ImageCatalog
from ..services.identity import IdentityService
from ..services.notebooks import NotebookService
from ..services.tags import TagService

T = TypeVar("T")


@dataclass
class Services:
    identity: IdentityService
    notebooks: NotebookService
    tags: TagService
    images: ImageCatalog
    flavors: FlavorCatalog
    reconciler: object
    runtime: object
    # Where API requests do their blocking work (authentication, store, JSON): their own threads, so the
    # reconciler's store calls (asyncio's default executor) never queue in front of them.
    api_threads: ThreadPoolExecutor


async def get_services(request: Request) -> Services:
    # async: a plain def dependency would cost a thread hop on every request
    return request.app.state.services


@dataclass(frozen=True)
class Call:
    """An API call whose caller is not known yet: what authenticating it needs, and the services.

    Authenticating reads the store, and so does every use-case: ``run`` does both in one worker thread,
    off the event loop (a slow query must not stall every other request and /health), with one thread
    hop per request rather than one for each."""

    services: Services
    method: str
    path: str
    raw_query: str
    headers: dict[str, str]
    body: bytes
    project_id: str

    def caller(self) -> Principal:
        """Authenticate the request (signature or token) for the project in its path (blocking)."""
        return self.services.identity.authenticate(method=self.method, path=self.path, raw_query=self.raw_query,
                                                   headers=self.headers, body=self.body, project_id=self.project_id)

    async def run(self, work: Callable[[Principal, Services], T]) -> T:
        """``work(caller, services)`` after authentication, both in a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.services.api_threads, self._work, work)

    async def json(self, work: Callable[[Principal, Services], object], status_code: int = 200) -> Response:
        """``run``, with the result encoded as JSON in the same worker thread."""
        content = await asyncio.get_running_loop().run_in_executor(self.services.api_threads, self._json, work)
        return Response(content, status_code=status_code, media_type="application/json")

    def _work(self, work):
        return work(self.caller(), self.services)

    def _json(self, work) -> bytes:
        return orjson.dumps(work(self.caller(), self.services))


async def authenticated(request: Request) -> Call:
    """The request's credentials and body, read without blocking; ``Call.run`` authenticates.

    One dependency for both halves: FastAPI's dependency solving costs as much per dependency as the
    signature check itself, on every request."""
    return Call(services=request.app.state.services, method=request.method,
                path=request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
                raw_query=request.scope.get("query_string", b"").decode("latin-1"),
                headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.scope["headers"]},
                body=await request.body(), project_id=request.path_params["project_id"])


ServicesDep = Annotated[Services, Depends(get_services)]
Authenticated = Annotated[Call, Depends(authenticated)]
