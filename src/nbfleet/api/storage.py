"""Dynamic storage routes (spec images-flavors-tags-storage.md §4): ``/notebooks/{id}/storage[/{storage_id}]``.

They sit two and three segments below ``/notebooks``, where no literal route of the notebook router lives,
so their order relative to it does not matter."""

from __future__ import annotations

from fastapi import APIRouter

from .deps import Authenticated
from .http import JSONBytes, parse_json

router = APIRouter(prefix="/v1/{project_id}/notebooks/{instance_id}/storage", default_response_class=JSONBytes)


@router.post("")
async def attach_dynamic_storage(instance_id: str, call: Authenticated):
    return await call.json(
        lambda caller, s: s.storage.attach(caller, instance_id, parse_json(call.body, allow_empty=False))
    )


@router.get("")
async def list_dynamic_storages(instance_id: str, call: Authenticated):
    return await call.json(lambda caller, s: s.storage.list(caller, instance_id))


@router.get("/{storage_id}")
async def show_dynamic_storage(instance_id: str, storage_id: str, call: Authenticated):
    return await call.json(lambda caller, s: s.storage.show(caller, instance_id, storage_id))


@router.delete("/{storage_id}")
async def detach_dynamic_storage(instance_id: str, storage_id: str, call: Authenticated):
    return await call.json(lambda caller, s: s.storage.detach(caller, instance_id, storage_id))
