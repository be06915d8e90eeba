"""The wire form (``NotebookResp``) of a stored notebook row."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from functools import lru_cache

import orjson

from ..auth.secrets import SecretBox
from ..domain.instances import Placement
from ..domain.model import STEP_DESCRIPTIONS, Status, billing_items
from ..domain.requests import FREE_FORM, free_form_fits
from .addresses import NotebookAddresses


class SealedTokens:
    """Jupyter tokens as the store keeps them: sealed with the installation's key, so that a copy of the
    database alone opens no notebook. Only the owner's view and the runtime get a token opened."""

    def __init__(self, secrets: SecretBox):
        self._secrets = secrets
        # A token changes only on start, and pages show the same ones again and again: opened once each.
        self.open = lru_cache(maxsize=8192)(secrets.open)

    def new(self) -> str:
        """A fresh token, sealed."""
        return self.seal(str(uuid.uuid4()))

    def seal(self, token: str) -> str:
        """A token chosen elsewhere (a warm-pool member's, made the same way), sealed."""
        return self._secrets.seal(token)


log = logging.getLogger("nbfleet.render")
_ADDRESSABLE = frozenset({Status.RUNNING.value, Status.SNAPSHOTTING.value})  # where endpoints have addresses


@lru_cache(maxsize=8192)
def parsed(document: str):
    """A JSON column parsed once and shared: rows of a page repeat the same documents, and callers only read."""
    return orjson.loads(document)


def progress_json(notebook_id: str, steps: list[dict] | None) -> list[dict]:
    """JobProgress items with both the SDK's and the reference's member names (A13)."""
    out = []
    for step in steps or []:
        text = step.get("description") or STEP_DESCRIPTIONS.get(step["step"], "")
        out.append(
            {
                "notebook_id": notebook_id,
                "step": step["step"],
                "status": step["status"],
                "description": text,
                "step_description": text,
            }
        )
    return out


def initial_progress() -> list[dict]:
    return [{"step": n, "status": "WAITING", "description": text} for n, text in STEP_DESCRIPTIONS.items()]


def lease_json(row) -> dict:
    return {
        "create_at": row["create_at"],
        "duration": row["lease_duration"],
        "enable": bool(row["lease_enable"]),
        "type": row["lease_type"],
        "update_at": row["lease_update_at"],
    }


def endpoints_json(spec: dict, placement: Placement | None) -> list[dict]:
    """The requested endpoints (NOTEBOOK always first-class), with addresses while ``placement`` is known."""
    out = []
    requested = spec.get("endpoints") or [{"service": "NOTEBOOK", "key_pair_names": [], "allowed_access_ips": []}]
    if not any(ep["service"] == "NOTEBOOK" for ep in requested):
        requested = [{"service": "NOTEBOOK", "key_pair_names": [], "allowed_access_ips": []}, *requested]
    for ep in requested:
        # Filled in by notebook_json while the instance runs: NOTEBOOK the public address (never the
        # upstream), SSH the gateway's.
        out.append(
            {
                "service": ep["service"],
                "dev_service": ep["service"],
                "uri": None,
                "key_pair_names": ep.get("key_pair_names") or [],
                "ssh_keys": ep.get("key_pair_names") or [],
                "allowed_access_ips": ep.get("allowed_access_ips") or [],
            }
        )
    return out


@lru_cache(maxsize=4096)
def spec_members(spec_document: str, mounted: bool, placement_document: str | None) -> dict:
    """The members that follow from the stored spec, whether its volumes are mounted and where it runs.

    A page repeats few distinct combinations (and a polling console repeats whole pages), so they are
    built once and shared: render the result, never mutate it.
    """
    spec = parsed(spec_document)
    volume = dict(spec["volume"])
    volume.pop("mount_type", None)
    placement = Placement.from_json(parsed(placement_document)) if placement_document else None
    members = {
        "custom_spec": spec.get("custom_spec"),
        "image": spec["image"],
        "volume": volume,
        "data_volumes": [
            {
                "category": v["category"],
                "mount_path": v["mount_path"],
                "url": v.get("uri"),
                "status": "MOUNTED" if mounted else "UNMOUNTED",
                "mount_type": v.get("mount_type", "STATIC"),
            }
            for v in spec.get("data_volumes") or []
        ],
        "endpoints": endpoints_json(spec, placement),
        "affinity": spec.get("affinity"),
        "run_user": spec.get("run_user"),
        "user_vpc": spec.get("user_vpc"),
        "jupyter_version": spec.get("jupyter_version"),
        "hooks": spec.get("hooks"),
        "public_network_config": spec.get("public_network_config"),
    }
    # Stored before create bounded them, a free-form member may be too deep to encode within a page (orjson
    # stops at 254 levels): it is shown as null, once logged (this result is cached), not failing the page.
    for name in FREE_FORM:
        if not free_form_fits(members[name]):
            log.error("a stored %s is beyond the bounds of a free-form member; shown as null", name)
            members[name] = None
    return members


def _with_uris(endpoints: list[dict], notebook: str, ssh: str | None) -> list[dict]:
    return [
        dict(ep, uri=notebook) if ep["service"] == "NOTEBOOK" else dict(ep, uri=ssh) if ep["service"] == "SSH" else ep
        for ep in endpoints
    ]


@lru_cache(maxsize=64)
def _billing(status: str, volume_category: str | None) -> list[str]:
    return billing_items(status, volume_category)


def notebook_json(
    row, *, token: str | None, addresses: NotebookAddresses, domain: tuple[str, str], dynamic: Sequence[dict] = ()
) -> dict:
    """Every ``NotebookResp`` member with its JSON type (numbers as numbers, booleans as booleans).

    ``token``: the instance's Jupyter token as the caller may see it (the owner: opened; others: None).
    ``dynamic``: its dynamic mounts as ``data_volumes`` items (``mount_type`` DYNAMIC), after the static ones.

    Nested objects (image, tags, …) are shared with a parse cache: render the result, never mutate it.
    """
    status = row["status"]
    running = status in _ADDRESSABLE
    from_spec = spec_members(row["spec"], status == Status.RUNNING.value, row["placement"] if running else None)
    notebook_id = row["id"]
    jupyter = addresses.base(notebook_id)
    return {
        "id": notebook_id,
        "name": row["name"],
        "description": row["description"],
        "status": status,
        "feature": row["feature"],
        "flavor": row["flavor"],
        "custom_spec": from_spec["custom_spec"],
        "image": from_spec["image"],
        "lease": lease_json(row),
        "pool": {"id": row["pool_id"], "name": row["pool_name"]} if row["pool_id"] else None,
        "volume": from_spec["volume"],
        "data_volumes": [*from_spec["data_volumes"], *dynamic] if dynamic else from_spec["data_volumes"],
        "endpoints": _with_uris(from_spec["endpoints"], f"{jupyter}/", addresses.ssh_uri(notebook_id))
        if running
        else from_spec["endpoints"],
        "action_progress": progress_json(
            notebook_id, parsed(row["action_progress"]) if row["action_progress"] else None
        ),
        "fail_reason": row["fail_reason"],
        "token": token,
        "url": f"{jupyter}/lab",
        "workspace_id": row["workspace_id"],
        "billing_items": _billing(status, row["volume_category"]),
        "user": {"id": row["user_id"], "name": row["user_name"], "domain": {"id": domain[0], "name": domain[1]}},
        "user_id": row["user_id"],
        "affinity": from_spec["affinity"],
        "run_user": from_spec["run_user"],
        "ip": row["ip"],
        "user_vpc": from_spec["user_vpc"],
        "is_need_credentials": True,
        "jupyter_version": from_spec["jupyter_version"],
        "tags": parsed(row["tags"]),
        "hooks": from_spec["hooks"],
        "public_network_config": from_spec["public_network_config"],
        "create_at": row["create_at"],
        "update_at": row["update_at"],
    }


def degraded_notebook_json(row, *, addresses: NotebookAddresses, domain: tuple[str, str]) -> dict:
    """A row that cannot be rendered in full (a stored document that does not parse or lacks a member):
    its own columns, every member derived from its documents null. Listed rather than left out, so that
    ``total`` still counts what the page shows and the owner can still find and delete the instance."""
    notebook_id = row["id"]
    return {
        "id": notebook_id,
        "name": row["name"],
        "description": row["description"],
        "status": row["status"],
        "feature": row["feature"],
        "flavor": row["flavor"],
        "custom_spec": None,
        "image": None,
        "lease": lease_json(row),
        "pool": None,
        "volume": None,
        "data_volumes": [],
        "endpoints": [],
        "action_progress": [],
        "fail_reason": row["fail_reason"],
        "token": None,
        "url": f"{addresses.base(notebook_id)}/lab",
        "workspace_id": row["workspace_id"],
        "billing_items": [],
        "user_id": row["user_id"],
        "user": {"id": row["user_id"], "name": row["user_name"], "domain": {"id": domain[0], "name": domain[1]}},
        "affinity": None,
        "run_user": None,
        "ip": row["ip"],
        "user_vpc": None,
        "is_need_credentials": True,
        "jupyter_version": None,
        "tags": [],
        "hooks": None,
        "public_network_config": None,
        "create_at": row["create_at"],
        "update_at": row["update_at"],
    }
