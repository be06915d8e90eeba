"""Images, image groups and the feature quota (spec images-flavors-tags-storage.md §2, §5).

``/images/group`` is registered before ``/images/{image_id}``: a literal segment must never be taken for
an id (spec §2.3)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..domain.errors import InvalidParameter
from .deps import Authenticated
from .http import JSONBytes, first, parse_json, query_params

router = APIRouter(prefix="/v1/{project_id}", default_response_class=JSONBytes)


@router.get("/images")
async def list_images(request: Request, call: Authenticated):
    params = query_params(request)
    return await call.json(lambda caller, s: s.images.page(params, caller.project_id, caller.user_id))


@router.post("/images")
async def register_image(call: Authenticated):
    return await call.json(lambda caller, s: s.images.register(caller, parse_json(call.body, allow_empty=False)))


@router.get("/images/group")
async def list_image_groups(request: Request, call: Authenticated):
    params = query_params(request)
    return await call.json(lambda caller, s: s.image_groups.page(caller, params))


@router.put("/images/group/{group_id}")
async def update_image_group(group_id: str, call: Authenticated):
    return await call.json(
        lambda caller, s: s.image_groups.update(caller, group_id, parse_json(call.body, allow_empty=True))
    )


@router.delete("/images/group/{group_id}")
async def delete_image_group(group_id: str, request: Request, call: Authenticated):
    force = first(query_params(request), "force")
    return await call.json(
        lambda caller, s: s.image_groups.delete(caller, group_id, parse_json(call.body, allow_empty=True), force)
    )


@router.get("/images/{image_id}")
async def show_image(image_id: str, call: Authenticated):
    return await call.json(lambda caller, s: s.images.get(image_id, caller.project_id, caller.user_id))


@router.delete("/images/{image_id}")
async def delete_image(image_id: str, request: Request, call: Authenticated):
    force = first(query_params(request), "force")
    return await call.json(
        lambda caller, s: s.images.delete(caller, image_id, parse_json(call.body, allow_empty=True), force)
    )


@router.post("/images/{image_id}/sync")
async def sync_image(image_id: str, call: Authenticated):
    return await call.json(lambda caller, s: s.images.sync(caller, image_id))


@router.get("/authoring/features/{feature}")
async def show_feature(feature: str, call: Authenticated):
    def quota(caller, s):
        if feature.upper() != "NOTEBOOK":
            raise InvalidParameter("Parameter error: only the NOTEBOOK feature exists.")
        return s.notebooks.feature_quota(caller)

    return await call.json(quota)
