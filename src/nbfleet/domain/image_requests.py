"""Validation of the image API's bodies and flags (spec images-flavors-tags-storage.md §2.2, §2.4–§2.6).

Shape first (6400 not an object, 6335 missing, 6332 wrong JSON type), then each member's rule (6336).
Enum members are case-insensitive and kept upper case (spec A18)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import errors as E
from .images import (
    Arch,
    DevService,
    FlavorType,
    ImageAddress,
    Origin,
    ResourceCategory,
    ServiceType,
    Visibility,
    check_image_name,
    check_namespace,
    check_tag,
    parse_swr_path,
)
from .requests import check_types

MAX_TAGS = 20
MAX_DESCRIPTION = 512
MAX_READ_ME_ON_REGISTER = 3000
MAX_READ_ME = 30000
TAG_KEY_MAX, TAG_VALUE_MAX = 128, 255
_WORKSPACE_RE = re.compile(r"^(0|[0-9a-z]{32})$")
_TAG_KEY_RE = re.compile(r"^[\w .:+\-@/]{1,128}$")
_TAG_VALUE_RE = re.compile(r"^[\w .:+\-@/=,]{0,255}$")

REGISTER_SCHEMA = {
    "swr_path": "str",
    "arch": "str",
    "description": "str",
    "origin": "str",
    "resource_category": "array",
    "service_type": "str",
    "services": "array",
    "visibility": "str",
    "workspace_id": "str",
    "flavor_type": "str",
    "tags": "array",
    "swr_instance_id": "str",
    "read_me": "str",
}
SAVE_SCHEMA = {
    "name": "str",
    "namespace": "str",
    "tag": "str",
    "description": "str",
    "workspace_id": "str",
    "swr_instance_id": "str",
    "swr_instance_domain": "str",
}
GROUP_UPDATE_SCHEMA = {"read_me": "str", "tags": "array"}


@dataclass(frozen=True)
class Registration:
    """A register body, checked, with its defaults."""

    address: ImageAddress
    swr_path: str
    arch: Arch
    description: str
    origin: Origin
    resource_categories: tuple[str, ...]
    service_type: ServiceType
    services: tuple[str, ...]
    visibility: Visibility
    workspace_id: str
    flavor_type: str | None
    tags: list[dict[str, Any]] | None  # None: not given (the group keeps its tags)
    read_me: str | None


@dataclass(frozen=True)
class SaveRequest:
    """A create-image body (save a notebook as an image), checked, with its defaults."""

    namespace: str
    name: str
    tag: str
    description: str
    workspace_id: str


@dataclass(frozen=True)
class GroupUpdate:
    read_me: str | None  # None: unchanged
    tags: list[dict[str, Any]] | None  # None: unchanged


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise E.InvalidPayload("Invalid request payload: the body must be a JSON object.")
    return body


def _enum(value: str | None, member: str, enum: Any, default: Any) -> Any:
    if value is None:
        return default
    try:
        return enum(value.upper())
    except ValueError:
        raise E.InvalidProperty(member, "Allowed values: " + ", ".join(e.value for e in enum) + ".") from None


def _enum_list(values: list[Any] | None, member: str, enum: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    if values is None:
        return default
    if any(not isinstance(v, str) for v in values):
        raise E.WrongType(member, "array of str")
    if not values:
        raise E.InvalidProperty(member, "Name at least one value.")
    chosen: list[str] = []
    for value in values:
        item = _enum(value, member, enum, None).value
        if item not in chosen:
            chosen.append(item)
    return tuple(chosen)


def check_workspace(value: str | None) -> str:
    workspace = value or "0"
    if not _WORKSPACE_RE.fullmatch(workspace):
        raise E.InvalidProperty("workspace_id", 'Use "0" or 32 lower-case letters and digits.')
    return workspace


def check_image_description(value: str | None) -> str:
    description = value or ""
    if len(description) > MAX_DESCRIPTION:
        raise E.InvalidProperty("description", f"At most {MAX_DESCRIPTION} characters.")
    return description


def _no_enterprise_registry(body: dict[str, Any], *members: str) -> None:
    for member in members:
        if body.get(member):
            raise E.InvalidProperty(member, "nbfleet has no enterprise registry instances.")


def check_tags(tags: list[Any], member: str = "tags") -> list[dict[str, Any]]:
    """Image (group) tags: at most 20, each ``"key=value"``, ``"key"`` or ``{key, value}``; keys unique."""
    if len(tags) > MAX_TAGS:
        raise E.InvalidProperty(member, f"At most {MAX_TAGS} tags.")
    out: list[dict[str, Any]] = []
    key: Any
    value: Any
    for i, tag in enumerate(tags):
        where = f"{member}[{i}]"
        if isinstance(tag, str):
            key, _, value = tag.partition("=")
        elif isinstance(tag, dict):
            key, value = tag.get("key"), tag.get("value", "")
            if key is None:
                raise E.MissingProperty(f"{where}.key")
            if not isinstance(key, str) or not isinstance(value if value is not None else "", str):
                raise E.WrongType(where, "string key and value")
            value = value or ""
        else:
            raise E.WrongType(where, "str or object")
        if not _TAG_KEY_RE.fullmatch(key) or key != key.strip():
            raise E.InvalidProperty(
                f"{where}.key", f"Use 1 to {TAG_KEY_MAX} letters, digits, spaces or '.:+-@/_' (no space at either end)."
            )
        if not _TAG_VALUE_RE.fullmatch(value):
            raise E.InvalidProperty(
                f"{where}.value", f"Use at most {TAG_VALUE_MAX} letters, digits, spaces or '.:+-@/=,_'."
            )
        if any(existing["key"] == key for existing in out):
            raise E.InvalidProperty(where, f"The key '{key}' is given twice.")
        out.append({"key": key, "value": value})
    return out


def check_registration(body: Any) -> Registration:
    """``POST /images``: a reference to an existing image and how it is to be catalogued."""
    body = _object(body)
    if body.get("swr_path") is None:
        raise E.MissingProperty("swr_path")
    check_types(body, REGISTER_SCHEMA)
    address = parse_swr_path(body["swr_path"])
    _no_enterprise_registry(body, "swr_instance_id")
    read_me = body.get("read_me")
    if read_me is not None and len(read_me) > MAX_READ_ME_ON_REGISTER:
        raise E.InvalidProperty("read_me", f"At most {MAX_READ_ME_ON_REGISTER} characters.")
    flavor_type = body.get("flavor_type")
    return Registration(
        address=address,
        swr_path=body["swr_path"],
        arch=_enum(body.get("arch"), "arch", Arch, Arch.X86_64),
        description=check_image_description(body.get("description")),
        origin=_enum(body.get("origin"), "origin", Origin, Origin.CUSTOMIZE),
        resource_categories=_enum_list(
            body.get("resource_category"), "resource_category", ResourceCategory, ("CPU", "GPU")
        ),
        service_type=_enum(body.get("service_type"), "service_type", ServiceType, ServiceType.UNKNOWN),
        services=_enum_list(body.get("services"), "services", DevService, ("NOTEBOOK", "SSH")),
        visibility=_enum(body.get("visibility"), "visibility", Visibility, Visibility.PRIVATE),
        workspace_id=check_workspace(body.get("workspace_id")),
        flavor_type=_enum(flavor_type, "flavor_type", FlavorType, None).value if flavor_type else None,
        tags=check_tags(body["tags"]) if body.get("tags") is not None else None,
        read_me=read_me,
    )


def check_save(body: Any, now_ms: int) -> SaveRequest:
    """``POST /notebooks/{id}/create-image``; the tag defaults to the UTC time, ``YYYYMMDDHHMMSS``."""
    body = _object(body)
    for required in ("name", "namespace"):
        if body.get(required) is None:
            raise E.MissingProperty(required)
    check_types(body, SAVE_SCHEMA)
    _no_enterprise_registry(body, "swr_instance_id", "swr_instance_domain")
    tag = body.get("tag")
    if tag is None or tag == "":
        tag = datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y%m%d%H%M%S")
    return SaveRequest(
        namespace=check_namespace(body["namespace"]),
        name=check_image_name(body["name"]),
        tag=check_tag(tag),
        description=check_image_description(body.get("description")),
        workspace_id=check_workspace(body.get("workspace_id")),
    )


def check_group_update(body: Any) -> GroupUpdate:
    """``PUT /images/group/{id}``: the group's guide text and tags (each replaced when given)."""
    body = _object(body) if body is not None else {}
    check_types(body, GROUP_UPDATE_SCHEMA)
    read_me = body.get("read_me")
    if read_me is not None and len(read_me) > MAX_READ_ME:
        raise E.InvalidProperty("read_me", f"At most {MAX_READ_ME} characters.")
    return GroupUpdate(read_me=read_me, tags=check_tags(body["tags"]) if body.get("tags") is not None else None)


def force_flag(body: Any, query_value: str | None) -> bool:
    """Delete's force flag: the SDK's body ``{"is_force": bool}`` wins over the reference page's query
    ``force=true|false`` (spec A16); default false."""
    if body is not None:
        body = _object(body)
        value = body.get("is_force")
        if value is not None:
            if not isinstance(value, bool):
                raise E.WrongType("is_force", "bool")
            return value
    if query_value is None or query_value == "":
        return False
    if query_value.lower() not in ("true", "false"):
        raise E.InvalidParameter("Parameter error: 'force' must be true or false.")
    return query_value.lower() == "true"
