"""Images and the feature quota (spec images-flavors-tags-storage.md §2, §5)."""
from __future__ import annotations

from fastapi import APIRouter, Request

from ..domain.errors import InvalidParameter
from .deps import Authenticated
from .http import JSONBytes, query_params

router = APIRouter(prefix="/v1/{project_id}", default_response_class=JSONBytes)


@router.get("/images")
async def list_images(request: Request, call: Authenticated):
    return JSONBytes(call.services.images.page(query_params(request), call.caller.project_id, call.caller.user_id))


@router.get("/images/{image_id}")
async def show_image(image_id: str, call: Authenticated):
    return JSONBytes(call.services.images.get(image_id, call.caller.project_id, call.caller.user_id))


@router.get("/authoring/features/{feature}")
async def show_feature(feature: str, call: Authenticated):
    if feature.upper() != "NOTEBOOK":
        raise InvalidParameter("Parameter error: only the NOTEBOOK feature exists.")
    return JSONBytes(call.services.notebooks.feature_quota(call.caller))
