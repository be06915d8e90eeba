"""Validation of create and update bodies (spec notebooks.md §1.1, §1.5, §2).

Validation runs in the order of the §1.1 table. The checks that need no catalogue live here; the
service interleaves the catalogue look-ups (flavor, image, workspace, key pairs, quota).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from . import errors as E
from .lease import DEFAULT_DURATION_MS, LeaseLimits, check_duration, parse_type
from .model import MAIN_MOUNT_PATH, Feature, LeaseType, Ownership, VolumeCategory
from .query import parse_int

_NAME_RE = re.compile(r"^[\w\-]+$")
_DESCRIPTION_FORBIDDEN = "&<>\"'/"
_WORKSPACE_RE = re.compile(r"^(0|[0-9a-z]{32})$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
EVS_MIN_GB, EVS_MAX_GB = 5, 4096
MAX_ALLOWED_IPS = 5
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Members stored as the caller sent them (beyond their typed members): their nesting and size are bounded,
# so that one instance cannot make the pages that show it unrenderable or huge.
FREE_FORM = ("affinity", "custom_spec", "user_vpc")
MAX_FREE_FORM_DEPTH = 8
MAX_FREE_FORM_BYTES = 16 * 1024


class _Service(StrEnum):
    NOTEBOOK = "NOTEBOOK"
    SSH = "SSH"


class _HookType(StrEnum):
    COMMAND = "COMMAND"
    SCRIPT = "SCRIPT"


class _HookMode(StrEnum):
    BLOCK = "BLOCK"
    ASYNC = "ASYNC"


class _NetworkType(StrEnum):
    SHARED = "SHARED"
    EXCLUSIVE = "EXCLUSIVE"
    FORBIDDEN = "FORBIDDEN"


# JSON types of the members; nested objects have their own schema.
_T = {"str": (str,), "int": (int,), "bool": (bool,), "object": (dict,), "array": (list,), "number": (int, float)}

VOLUME_SCHEMA = {
    "category": "str",
    "ownership": "str",
    "capacity": "int",
    "uri": "str",
    "id": "str",
    "mount_path": "str",
    "read_only": "bool",
    "dew_secret_name": "str",
}
LEASE_SCHEMA = {"duration": "int", "type": "str"}
ENDPOINT_SCHEMA = {"service": "str", "key_pair_names": "array", "allowed_access_ips": "array"}
HOOK_CONFIG_SCHEMA = {"script": "str", "type": "str", "mode": "str"}
RUN_USER_SCHEMA = {"uid": "int", "gid": "int"}
NETWORK_SCHEMA = {"public_network_type": "str"}
USER_VPC_SCHEMA = {
    "vpc_id": "str",
    "subnet_id": "str",
    "security_group_ids": "array",
    "connect_cidrs": "array",
    "nat_id": "str",
    "eip_id": "str",
}
CUSTOM_SPEC_SCHEMA = {
    "cpu": "number",
    "memory": "number",
    "gpu": "number",
    "gpu_type": "str",
    "arch": "str",
    "category": "str",
    "resource_flavor": "str",
}
CREATE_SCHEMA = {
    "name": "str",
    "image_id": "str",
    "volume": "object",
    "flavor": "str",
    "description": "str",
    "feature": "str",
    "custom_spec": "object",
    "pool_id": "str",
    "workspace_id": "str",
    "endpoints": "array",
    "hooks": "object",
    "lease": "object",
    "duration": "int",
    "affinity": "object",
    "run_user": "object",
    "data_volumes": "array",
    "user_vpc": "object",
    "public_network_config": "object",
}
UPDATE_SCHEMA = {
    "name": "str",
    "description": "str",
    "flavor": "str",
    "image_id": "str",
    "endpoints": "array",
    "storage_new_size": "int",
    "hooks": "object",
    "dew_secret_name": "str",
    "public_network_config": "object",
}
_NESTED = {
    "volume": VOLUME_SCHEMA,
    "lease": LEASE_SCHEMA,
    "run_user": RUN_USER_SCHEMA,
    "public_network_config": NETWORK_SCHEMA,
    "user_vpc": USER_VPC_SCHEMA,
    "custom_spec": CUSTOM_SPEC_SCHEMA,
}
_NESTED_LISTS = {"endpoints": ENDPOINT_SCHEMA, "data_volumes": VOLUME_SCHEMA}


def _type_ok(value: Any, type_name: str) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) and type_name in ("int", "number"):
        return False
    return isinstance(value, _T[type_name])


def check_types(body: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> None:
    """Raise 6332 for the first member whose JSON type differs from the schema."""
    for name, type_name in schema.items():
        value = body.get(name)
        path = prefix + name
        if not _type_ok(value, type_name):
            raise E.WrongType(path, type_name)
        if value is None:
            continue
        if name in _NESTED and type_name == "object" and not prefix:
            check_types(value, _NESTED[name], path + ".")
        if name in _NESTED_LISTS and not prefix:
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise E.WrongType(f"{path}[{i}]", "object")
                check_types(item, _NESTED_LISTS[name], f"{path}[{i}].")
        if name in ("key_pair_names", "allowed_access_ips", "security_group_ids", "connect_cidrs") and any(
            not isinstance(v, str) for v in value
        ):
            raise E.WrongType(path, "array of str")
    if not prefix and isinstance(body.get("hooks"), dict):
        _check_hooks_types(body["hooks"])


def _check_hooks_types(hooks: dict[str, Any]) -> None:
    container = hooks.get("container_hooks")
    if container is None:
        return
    if not isinstance(container, dict):
        raise E.WrongType("hooks.container_hooks", "object")
    for stage in ("pre_start", "post_start"):
        config = container.get(stage)
        if config is None:
            continue
        if not isinstance(config, dict):
            raise E.WrongType(f"hooks.container_hooks.{stage}", "object")
        check_types(config, HOOK_CONFIG_SCHEMA, f"hooks.container_hooks.{stage}.")


def nesting_depth(value: Any, stop_at: int) -> int:
    """Levels of objects and arrays in ``value`` (a scalar is 0), counted up to ``stop_at + 1`` at most."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > stop_at:
            return deepest
        pending.extend((child, depth + 1) for child in children)
    return deepest


def free_form_fits(value: Any) -> bool:
    """Whether a free-form member is within ``MAX_FREE_FORM_DEPTH`` levels and ``MAX_FREE_FORM_BYTES`` of JSON."""
    if value is None:
        return True
    if nesting_depth(value, MAX_FREE_FORM_DEPTH) > MAX_FREE_FORM_DEPTH:
        return False
    return len(orjson.dumps(value)) <= MAX_FREE_FORM_BYTES


def check_free_form(body: dict[str, Any]) -> None:
    """6336 for a free-form member nested deeper or larger than the bounds."""
    for name in FREE_FORM:
        if not free_form_fits(body.get(name)):
            raise E.InvalidProperty(
                name, f"At most {MAX_FREE_FORM_DEPTH} levels deep and {MAX_FREE_FORM_BYTES} bytes as JSON."
            )


def check_name(name: str) -> str:
    if not 1 <= len(name) <= 128 or not _NAME_RE.fullmatch(name):
        raise E.InvalidProperty("name", "Use 1 to 128 letters, digits, hyphens (-) or underscores (_).")
    return name


def check_description(description: str) -> str:
    for ch in description:
        if ch in _DESCRIPTION_FORBIDDEN:
            raise E.ForbiddenCharacter(ch)
    if len(description) > 512:
        raise E.InvalidProperty("description", "At most 512 characters.")
    return description


def _upper_enum(value: str | None, name: str, enum: Any, default: Any = None) -> Any:
    if value is None:
        return default
    try:
        return enum(value.upper())
    except ValueError:
        raise E.InvalidProperty(name, "Allowed values: " + ", ".join(e.value for e in enum) + ".") from None


@dataclass
class CreateShape:
    """A create body after the shape checks (§1.1 rows 1–7)."""

    name: str
    image_id: str
    flavor: str | None
    description: str
    feature: Feature
    workspace_id: str
    pool_id: str | None
    body: dict[str, Any] = field(repr=False)


def check_create_shape(body: Any) -> CreateShape:
    """Shape checks of a create body: required members, JSON types, name, description, feature."""
    if not isinstance(body, dict):
        raise E.InvalidPayload("Invalid request payload: the body must be a JSON object.")
    for required in ("name", "image_id"):
        if body.get(required) is None:
            raise E.MissingProperty(required)
    if body.get("flavor") is None and body.get("custom_spec") is None:
        raise E.MissingProperty("flavor")
    if body.get("volume") is None:
        raise E.StorageRequired()
    check_types(body, CREATE_SCHEMA)
    check_free_form(body)
    name = check_name(body["name"])
    description = check_description(body.get("description") or "")
    feature = _upper_enum(body.get("feature"), "feature", Feature, Feature.NOTEBOOK)
    workspace = body.get("workspace_id") or "0"
    if not _WORKSPACE_RE.fullmatch(workspace):
        raise E.InvalidProperty("workspace_id", 'Use "0" or 32 lower-case letters and digits.')
    return CreateShape(
        name=name,
        image_id=body["image_id"],
        flavor=body.get("flavor"),
        description=description,
        feature=feature,
        workspace_id=workspace,
        pool_id=body.get("pool_id"),
        body=body,
    )


def check_volume(volume: dict[str, Any], *, main: bool, prefix: str = "volume") -> dict[str, Any]:
    """Validate one VolumeMountRequest and return it with defaults applied and enums upper-cased."""
    if volume.get("category") is None:
        raise E.MissingProperty(f"{prefix}.category")
    if volume.get("ownership") is None:
        raise E.MissingProperty(f"{prefix}.ownership")
    raw_category = volume["category"].upper()
    category = _upper_enum("EFS" if raw_category == "SFS" else raw_category, f"{prefix}.category", VolumeCategory)
    ownership = _upper_enum(volume["ownership"], f"{prefix}.ownership", Ownership)
    if ownership is Ownership.DEDICATED and category is not VolumeCategory.EFS:
        raise E.InvalidProperty(f"{prefix}.ownership", "DEDICATED ownership is only possible with EFS.")
    out = {"category": category.value, "ownership": ownership.value, "read_only": bool(volume.get("read_only", False))}
    if category is VolumeCategory.EVS:
        capacity = volume.get("capacity", EVS_MIN_GB)
        if capacity is None:
            capacity = EVS_MIN_GB
        if not EVS_MIN_GB <= capacity <= EVS_MAX_GB:
            raise E.EvsSizeOutOfRange(EVS_MIN_GB, EVS_MAX_GB)
        out["capacity"] = capacity
    elif category is VolumeCategory.EFS:
        out["capacity"] = volume.get("capacity") or 50
    uri = volume.get("uri")
    if category in (VolumeCategory.OBS, VolumeCategory.OBSFS):
        if not uri:
            raise E.ObsPathRequired()
        if not uri.endswith("/"):
            raise E.ObsPathSlash()
        bucket_path = uri[len("obs://") :] if uri.startswith("obs://") else uri.lstrip("/")
        if bucket_path.strip("/").count("/") == 0:
            raise E.ObsBucketRoot()
        if not volume.get("dew_secret_name"):
            raise E.MissingProperty(f"{prefix}.dew_secret_name")
    if category is VolumeCategory.EFS and ownership is Ownership.DEDICATED:
        if not uri:
            raise E.MissingProperty(f"{prefix}.uri")
        if not volume.get("id"):
            raise E.MissingProperty(f"{prefix}.id")
    if uri is not None:
        if len(uri) > 1024:
            raise E.InvalidProperty(f"{prefix}.uri", "At most 1024 characters.")
        out["uri"] = uri
    if volume.get("id") is not None:
        out["id"] = volume["id"]
    if volume.get("dew_secret_name") is not None:
        if not _SECRET_RE.fullmatch(volume["dew_secret_name"]):
            raise E.InvalidProperty(f"{prefix}.dew_secret_name")
        out["dew_secret_name"] = volume["dew_secret_name"]
    mount_path = volume.get("mount_path")
    if main:
        mount_path = MAIN_MOUNT_PATH
    elif not mount_path or len(mount_path) > 256 or not mount_path.startswith("/"):
        raise E.InvalidProperty(f"{prefix}.mount_path", "An absolute path of at most 256 characters.")
    out["mount_path"] = mount_path
    out["mount_type"] = "STATIC"
    return out


def check_endpoints(endpoints: list[Any]) -> list[dict[str, Any]]:
    """Validate EndpointsReq items; key pair names are checked against the store by the service."""
    result = []
    for i, ep in enumerate(endpoints):
        service = _upper_enum(ep.get("service") or "NOTEBOOK", f"endpoints[{i}].service", _Service)
        ips = ep.get("allowed_access_ips") or []
        if len(ips) > MAX_ALLOWED_IPS:
            raise E.InvalidProperty(f"endpoints[{i}].allowed_access_ips", f"At most {MAX_ALLOWED_IPS} addresses.")
        for ip in ips:
            try:  # an address (one host) or a network in CIDR form without host bits, e.g. 203.0.113.0/24
                if not isinstance(ip, str):
                    raise ValueError(ip)
                ipaddress.IPv4Network(ip)
            except ValueError:
                raise E.InvalidProperty(
                    f"endpoints[{i}].allowed_access_ips", f"'{ip}' is not an IPv4 address or network."
                ) from None
        result.append(
            {
                "service": service.value,
                "key_pair_names": list(ep.get("key_pair_names") or []),
                "allowed_access_ips": list(ips),
            }
        )
    return result


def check_hooks(hooks: dict[str, Any]) -> dict[str, Any]:
    container = hooks.get("container_hooks") or {}
    out = {}
    for stage in ("pre_start", "post_start"):
        config = container.get(stage)
        if config is None:
            continue
        out[stage] = {
            "script": config.get("script"),
            "type": _upper_enum(config.get("type") or "SCRIPT", f"hooks.{stage}.type", _HookType).value,
            "mode": _upper_enum(config.get("mode") or "ASYNC", f"hooks.{stage}.mode", _HookMode).value,
        }
    return {"container_hooks": out}


def check_network(config: dict[str, Any]) -> dict[str, Any]:
    kind = _upper_enum(
        config.get("public_network_type"),
        "public_network_config.public_network_type",
        _NetworkType,
        _NetworkType.SHARED,
    )
    return {"public_network_type": kind.value}


def check_secret_name(value: str) -> str:
    if not _SECRET_RE.fullmatch(value):
        raise E.InvalidProperty("dew_secret_name", "Use 1 to 64 letters, digits, _ or -.")
    return value


@dataclass(frozen=True)
class LeaseRequest:
    duration: int
    type: LeaseType


def lease_from_create(body: dict[str, Any], limits: LeaseLimits) -> LeaseRequest:
    """Top-level ``duration`` wins and forces TIMING; else ``lease``; else 1 h TIMING."""
    if body.get("duration") is not None:
        request = LeaseRequest(body["duration"], LeaseType.TIMING)
    elif body.get("lease") is not None:
        lease = body["lease"]
        duration = lease.get("duration")
        request = LeaseRequest(
            DEFAULT_DURATION_MS if duration is None else duration, parse_type(lease.get("type"), "lease.type")
        )
    else:
        request = LeaseRequest(DEFAULT_DURATION_MS, LeaseType.TIMING)
    check_duration(request.duration, request.type, limits)
    return request


def lease_from_body(body: Any, limits: LeaseLimits) -> LeaseRequest:
    """Renew-lease body (LeaseReq) with its defaults."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise E.InvalidPayload("Invalid request payload: the body must be a JSON object.")
    check_types(body, LEASE_SCHEMA)
    duration = body.get("duration")
    request = LeaseRequest(DEFAULT_DURATION_MS if duration is None else duration, parse_type(body.get("type")))
    check_duration(request.duration, request.type, limits)
    return request


def lease_from_query(
    duration: str | None, lease_type: str | None, limits: LeaseLimits, default_type: LeaseType = LeaseType.TIMING
) -> LeaseRequest:
    """Start/renew query parameters: ``duration`` in ms (default 1 h) and ``type``."""
    d = parse_int(duration, "duration", DEFAULT_DURATION_MS, INT64_MIN, INT64_MAX)
    kind = parse_type(lease_type) if lease_type not in (None, "") else default_type
    check_duration(d, kind, limits)
    return LeaseRequest(d, kind)


def check_update_shape(body: Any) -> dict[str, Any]:
    """Type and format checks of an update body; returns only the members that were given."""
    if not isinstance(body, dict):
        raise E.InvalidPayload("Invalid request payload: the body must be a JSON object.")
    check_types(body, UPDATE_SCHEMA)
    changes = {k: v for k, v in body.items() if k in UPDATE_SCHEMA and v is not None}
    if "name" in changes:
        check_name(changes["name"])
    if "description" in changes:
        check_description(changes["description"])
    if "endpoints" in changes:
        changes["endpoints"] = check_endpoints(changes["endpoints"])
    if "hooks" in changes:
        changes["hooks"] = check_hooks(changes["hooks"])
    if "public_network_config" in changes:
        changes["public_network_config"] = check_network(changes["public_network_config"])
    if "dew_secret_name" in changes:
        check_secret_name(changes["dew_secret_name"])
    return changes
