"""SSH key pairs of the caller: ``/v3/{project_id}/keypairs`` (create, list, delete), shaped like the
ModelArts key pair service's answers (``services/keypairs.py``)."""

from __future__ import annotations

from fastapi import APIRouter

from .deps import Authenticated
from .http import JSONBytes, parse_json

router = APIRouter(prefix="/v3/{project_id}", default_response_class=JSONBytes)


@router.get("/keypairs")
async def list_keypairs(call: Authenticated):
    return await call.json(lambda caller, s: s.keypairs.list(caller))


@router.post("/keypairs")
async def create_keypair(call: Authenticated):
    return await call.json(lambda caller, s: s.keypairs.create(caller, parse_json(call.body, allow_empty=False)))


@router.delete("/keypairs/{keypair_name}")
async def delete_keypair(keypair_name: str, call: Authenticated):
    return await call.json(lambda caller, s: s.keypairs.delete(caller, keypair_name))
