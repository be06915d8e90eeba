"""Dependencies: the wired services and the authenticated caller of a request."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, TypeVar

import orjson
from fastapi import Depends, Request, Response

from ..auth.principal import Principal
from ..observability import context
from ..runtime.base import Runtime
from ..services.catalog import FlavorCatalog
from ..services.identity import IdentityService
from ..services.image_groups import ImageGroups
from ..services.image_saves import ImageSaves
from ..services.images import ImageCatalog
from ..services.keypairs import KeyPairService
from ..services.notebooks import NotebookService
from ..services.request_auth import PendingRequest, RequestAuthenticator
from ..services.signin import PasswordSignIn
from ..services.storage import DynamicStorageService
from ..services.tags import TagService
from .http import read_body, refuse_declared_oversize

if TYPE_CHECKING:
    from ..controller.reconciler import Reconciler

T = TypeVar("T")


@dataclass
class Services:
    identity: IdentityService
    authenticator: RequestAuthenticator
    signin: PasswordSignIn
    notebooks: NotebookService
    tags: TagService
    images: ImageCatalog
    flavors: FlavorCatalog
    reconciler: Reconciler
    runtime: Runtime
    # Where API requests do their blocking work (authentication, store, JSON): their own threads, so the
    # reconciler's store calls (asyncio's default executor) never queue in front of them.
    api_threads: ThreadPoolExecutor
    image_groups: ImageGroups
    image_saves: ImageSaves
    storage: DynamicStorageService
    keypairs: KeyPairService


async def get_services(request: Request) -> Services:
    # async: a plain def dependency would cost a thread hop on every request
    return request.app.state.services


@dataclass(frozen=True)
class Call:
    """An API call whose credentials passed every check that needs no body, with its body read.

    Finishing the authentication (the signature over the body; for a state-changing request, recording it
    against replays) reads and writes the store, and so does every use-case: ``run`` does both in one worker
    thread, off the event loop (a slow query must not stall every other request and /health)."""

    services: Services
    pending: PendingRequest
    body: bytes

    def caller(self) -> Principal:
        """The authenticated caller (blocking)."""
        principal = self.services.authenticator.finish(self.pending, self.body)
        context.note_caller(principal)
        return principal

    async def run(self, work: Callable[[Principal, Services], T]) -> T:
        """``work(caller, services)`` after authentication, both in a worker thread (in the request's context:
        its id goes with the intent it writes and into its log lines)."""
        return await asyncio.get_running_loop().run_in_executor(
            self.services.api_threads, contextvars.copy_context().run, self._work, work
        )

    async def json(self, work: Callable[[Principal, Services], object], status_code: int = 200) -> Response:
        """``run``, with the result encoded as JSON in the same worker thread."""
        content = await asyncio.get_running_loop().run_in_executor(
            self.services.api_threads, contextvars.copy_context().run, self._json, work
        )
        return Response(content, status_code=status_code, media_type="application/json")

    def _work(self, work):
        return work(self.caller(), self.services)

    def _json(self, work) -> bytes:
        return orjson.dumps(work(self.caller(), self.services))


async def authenticated(request: Request) -> Call:
    """Check the request's credentials for the project in its path as far as they go without the body,
    then read the body: an anonymous, unknown or stale request, or one declaring a body over
    ``max_body_bytes``, never costs the server its body.

    One dependency for all of it: FastAPI's dependency solving costs as much per dependency as the
    signature check itself, on every request."""
    services: Services = request.app.state.services
    limit = request.app.state.settings.max_body_bytes
    refuse_declared_oversize(request, limit)
    begin = functools.partial(
        services.authenticator.begin,
        method=request.method,
        path=request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
        raw_query=request.scope.get("query_string", b"").decode("latin-1"),
        headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.scope["headers"]},
        project_id=request.path_params["project_id"],
    )
    pending = await asyncio.get_running_loop().run_in_executor(services.api_threads, begin)  # reads the store
    return Call(services, pending, await read_body(request, limit))


def client_address(request: Request) -> str | None:
    """The peer's address (behind a proxy: what the server was told to trust, see docs/security.md)."""
    return request.client.host if request.client else None


ServicesDep = Annotated[Services, Depends(get_services)]
Authenticated = Annotated[Call, Depends(authenticated)]
