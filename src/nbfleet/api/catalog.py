"""Images and the feature quota (spec images-flavors-tags-storage.md §2, §5)."""
from __future__ import annotations

from fastapi import APIRouter, Request

from ..domain.errors import InvalidParameter
from .deps import Authenticated
from .http import JSONBytes, query_params

router = APIRouter(prefix="/v1/{project_id}", default_response_class=JSONBytes)


@router.get("/images")
async def list_images(request: Request, call: Authenticated):
    params = query_params(request)
    return await call.json(lambda caller, s: s.images.page(params, caller.project_id, caller.user_id))


@router.get("/images/{image_id}")
async def show_image(image_id: str, call: Authenticated):
    return await call.json(lambda caller, s: s.images.get(image_id, caller.project_id, caller.user_id))


@router.get("/authoring/features/{feature}")
async def show_feature(feature: str, call: Authenticated):
    def quota(caller, s):
        if feature.upper() != "NOTEBOOK":
            raise InvalidParameter("Parameter error: only the NOTEBOOK feature exists.")
        return s.notebooks.feature_quota(caller)

    return await call.json(quota)
