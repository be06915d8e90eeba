"""Notebook routes (spec notebooks.md §1). Literal paths are registered before ``{id}`` paths.

Each route hands its work to ``Call.json``/``Call.run``: authentication, then body parsing (never before
the caller is known) and the use-case, together in a worker thread.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from .deps import Authenticated
from .http import JSONBytes, first, parse_json, query_params

router = APIRouter(prefix="/v1/{project_id}/notebooks", default_response_class=JSONBytes)


@router.get("/all")
async def list_all_notebooks(request: Request, call: Authenticated):
    params = query_params(request)
    return await call.json(lambda caller, s: s.notebooks.list(caller, params, all_view=True))


@router.get("/flavors")
async def list_flavors(request: Request, call: Authenticated):
    params = query_params(request)
    return await call.json(lambda caller, s: s.flavors.page(params))


@router.get("/tags")
async def notebook_tags_in_use(request: Request, call: Authenticated):
    workspace_id = first(query_params(request), "workspace_id")
    return await call.json(lambda caller, s: s.tags.in_use(caller, workspace_id))


@router.get("")
async def list_notebooks(request: Request, call: Authenticated):
    params = query_params(request)
    return await call.json(lambda caller, s: s.notebooks.list(caller, params, all_view=False))


@router.post("")
async def create_notebook(call: Authenticated):
    return await call.json(lambda caller, s: s.notebooks.create(caller, parse_json(call.body, allow_empty=False)))


@router.get("/{notebook_id}")
async def show_notebook(notebook_id: str, call: Authenticated):
    return await call.json(lambda caller, s: s.notebooks.get(caller, notebook_id))


@router.put("/{notebook_id}")
async def update_notebook(notebook_id: str, call: Authenticated):
    return await call.json(
        lambda caller, s: s.notebooks.update(caller, notebook_id, parse_json(call.body, allow_empty=True) or {})
    )


@router.delete("/{notebook_id}")
async def delete_notebook(notebook_id: str, call: Authenticated):
    return await call.json(lambda caller, s: s.notebooks.delete(caller, notebook_id))


@router.post("/{notebook_id}/start")
async def start_notebook(notebook_id: str, request: Request, call: Authenticated):
    params = query_params(request)
    duration, lease_type = first(params, "duration"), first(params, "type")
    return await call.json(lambda caller, s: s.notebooks.start(caller, notebook_id, duration, lease_type))


@router.post("/{notebook_id}/stop")
async def stop_notebook(notebook_id: str, call: Authenticated):
    return await call.json(lambda caller, s: s.notebooks.stop(caller, notebook_id))


@router.get("/{notebook_id}/lease")
async def show_lease(notebook_id: str, call: Authenticated):
    return await call.json(lambda caller, s: s.notebooks.show_lease(caller, notebook_id))


@router.patch("/{notebook_id}/lease")
async def renew_lease(notebook_id: str, request: Request, call: Authenticated):
    duration = first(query_params(request), "duration")
    return await call.json(
        lambda caller, s: s.notebooks.renew_lease(
            caller, notebook_id, duration, parse_json(call.body, allow_empty=True)
        )
    )


@router.get("/{notebook_id}/flavors")
async def switchable_flavors(notebook_id: str, request: Request, call: Authenticated):
    params = query_params(request)
    return await call.json(lambda caller, s: s.notebooks.switchable_flavors(caller, notebook_id, params))


@router.post("/{notebook_id}/create-image")
async def create_image(notebook_id: str, call: Authenticated):
    """Save the RUNNING notebook as an image (spec images-flavors-tags-storage.md §2.5)."""
    return await call.json(
        lambda caller, s: s.image_saves.save(caller, notebook_id, parse_json(call.body, allow_empty=False))
    )


@router.get("/{notebook_id}/events")
async def notebook_events(notebook_id: str, request: Request, call: Authenticated):
    params = query_params(request)
    return await call.json(lambda caller, s: s.notebooks.events(caller, notebook_id, params))


@router.post("/{notebook_id}/tags/create", status_code=204)
async def create_notebook_tags(notebook_id: str, call: Authenticated):
    await call.run(lambda caller, s: s.tags.add(caller, notebook_id, parse_json(call.body, allow_empty=False)))
    return Response(status_code=204)


@router.delete("/{notebook_id}/tags/delete", status_code=204)
async def delete_notebook_tags(notebook_id: str, call: Authenticated):
    await call.run(lambda caller, s: s.tags.remove(caller, notebook_id, parse_json(call.body, allow_empty=False)))
    return Response(status_code=204)
