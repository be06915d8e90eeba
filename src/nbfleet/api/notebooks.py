"""Notebook routes (spec notebooks.md §1). Literal paths are registered before ``{id}`` paths."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from .deps import Authenticated
from .http import JSONBytes, first, parse_json, query_params

router = APIRouter(prefix="/v1/{project_id}/notebooks", default_response_class=JSONBytes)


@router.get("/all")
async def list_all_notebooks(request: Request, call: Authenticated):
    return JSONBytes(call.services.notebooks.list(call.caller, query_params(request), all_view=True))


@router.get("/flavors")
async def list_flavors(request: Request, call: Authenticated):
    return JSONBytes(call.services.flavors.page(query_params(request)))


@router.get("/tags")
async def notebook_tags_in_use(request: Request, call: Authenticated):
    return JSONBytes(call.services.tags.in_use(call.caller, first(query_params(request), "workspace_id")))


@router.get("")
async def list_notebooks(request: Request, call: Authenticated):
    return JSONBytes(call.services.notebooks.list(call.caller, query_params(request), all_view=False))


@router.post("")
async def create_notebook(call: Authenticated):
    body = parse_json(call.body, allow_empty=False)
    return JSONBytes(await run_in_threadpool(call.services.notebooks.create, call.caller, body))


@router.get("/{notebook_id}")
async def show_notebook(notebook_id: str, call: Authenticated):
    return JSONBytes(call.services.notebooks.get(call.caller, notebook_id))


@router.put("/{notebook_id}")
async def update_notebook(notebook_id: str, call: Authenticated):
    body = parse_json(call.body, allow_empty=True)
    return JSONBytes(await run_in_threadpool(call.services.notebooks.update, call.caller, notebook_id,
                                             {} if body is None else body))


@router.delete("/{notebook_id}")
async def delete_notebook(notebook_id: str, call: Authenticated):
    return JSONBytes(await run_in_threadpool(call.services.notebooks.delete, call.caller, notebook_id))


@router.post("/{notebook_id}/start")
async def start_notebook(notebook_id: str, request: Request, call: Authenticated):
    params = query_params(request)
    return JSONBytes(await run_in_threadpool(call.services.notebooks.start, call.caller, notebook_id,
                                             first(params, "duration"), first(params, "type")))


@router.post("/{notebook_id}/stop")
async def stop_notebook(notebook_id: str, call: Authenticated):
    return JSONBytes(await run_in_threadpool(call.services.notebooks.stop, call.caller, notebook_id))


@router.get("/{notebook_id}/lease")
async def show_lease(notebook_id: str, call: Authenticated):
    return JSONBytes(call.services.notebooks.show_lease(call.caller, notebook_id))


@router.patch("/{notebook_id}/lease")
async def renew_lease(notebook_id: str, request: Request, call: Authenticated):
    body = parse_json(call.body, allow_empty=True)
    duration = first(query_params(request), "duration")
    return JSONBytes(await run_in_threadpool(call.services.notebooks.renew_lease, call.caller, notebook_id,
                                             duration, body))


@router.get("/{notebook_id}/flavors")
async def switchable_flavors(notebook_id: str, request: Request, call: Authenticated):
    return JSONBytes(call.services.notebooks.switchable_flavors(call.caller, notebook_id, query_params(request)))


@router.get("/{notebook_id}/events")
async def notebook_events(notebook_id: str, request: Request, call: Authenticated):
    return JSONBytes(call.services.notebooks.events(call.caller, notebook_id, query_params(request)))


@router.post("/{notebook_id}/tags/create", status_code=204)
async def create_notebook_tags(notebook_id: str, call: Authenticated):
    body = parse_json(call.body, allow_empty=False)
    await run_in_threadpool(call.services.tags.add, call.caller, notebook_id, body)
    return Response(status_code=204)


@router.delete("/{notebook_id}/tags/delete", status_code=204)
async def delete_notebook_tags(notebook_id: str, call: Authenticated):
    body = parse_json(call.body, allow_empty=False)
    await run_in_threadpool(call.services.tags.remove, call.caller, notebook_id, body)
    return Response(status_code=204)
