"""The notebook list query: every filter, sort key and paging rule of the seed and the SDK.

``parse_notebook_query`` turns raw query parameters into a validated ``NotebookQuery``; the
store turns that into SQL. Nothing here touches a database.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from .errors import InvalidParameter, UnsupportedSortKey
from .model import DEFAULT_WORKSPACE, Billing, Feature, Status

_D = TypeVar("_D")
_E = TypeVar("_E", bound=Enum)

# sort_key vocabulary (A19): public name -> canonical column name.
SORT_KEYS = {
    "create_at": "create_at",
    "createTime": "create_at",
    "create_time": "create_at",
    "update_at": "update_at",
    "updateTime": "update_at",
    "update_time": "update_at",
    "name": "name",
    "status": "status",
    "flavor": "flavor",
    "id": "id",
    "feature": "feature",
}
DEFAULT_LIMIT = 10
MAX_LIMIT = 50
# Every integer query parameter is bounded: a larger offset than any store holds rows for is useless, and
# beyond 64 bits the drivers refuse to bind the value at all (a 500 where a 400 belongs).
MAX_OFFSET = 2**31 - 1
MAX_TAG_FILTERS = 20  # as many as one instance can carry (services.tags.MAX_TAGS)
STRICT_LIMITS = (10, 20, 50)

_NAME_RE = re.compile(r"^[\w\-]{1,128}$")  # letters of any language, digits, _ and -
_POOL_ID_RE = re.compile(r"^[a-z][a-z0-9\-]{2,62}[a-z0-9]$")
_POOL_NAME_RE = re.compile(r"^[A-Za-z0-9\-]{1,64}$")
_OWNER_RE = re.compile(r"^[a-z0-9]{32}$")
_WORKSPACE_RE = re.compile(r"^(0|[0-9a-z]{32})$")
_FLAVOR_RE = re.compile(r"^[A-Za-z0-9._\-]{1,256}$")
_SWR_RE = re.compile(r"^[A-Za-z0-9_\-.:/]{0,2048}$")
_USERNAME_RE = re.compile(r"^[A-Za-z0-9._\-]{1,256}$")
_TAG_CHARS_RE = re.compile(r"^[\w .:/=+\-@|,]*$")
_INT_RE = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class TagFilter:
    key: str
    value: str | None  # None: the key must be present with any value


@dataclass(frozen=True)
class NotebookQuery:
    """A validated list request. Fuzzy fields match case-insensitive substrings."""

    project_id: str
    owner_id: str | None  # None: every user's instances of the project (admin /all)
    feature: Feature = Feature.NOTEBOOK
    workspace_id: str = DEFAULT_WORKSPACE
    status: Status | None = None
    pool_id: str | None = None
    image_id: str | None = None
    id: str | None = None
    ip: str | None = None
    billing: Billing | None = None
    tags: tuple[TagFilter, ...] = ()
    # fuzzy
    name: str | None = None
    pool_name: str | None = None
    flavor: str | None = None
    swr_path: str | None = None
    description: str | None = None
    username: str | None = None
    # order and page
    sort: tuple[str, ...] = ("create_at",)
    descending: bool = True
    offset: int = 0
    limit: int = DEFAULT_LIMIT

    def fuzzy_filters(self) -> dict[str, str]:
        """Fuzzy filters that are set, by column name."""
        pairs = {
            "name": self.name,
            "pool_name": self.pool_name,
            "flavor": self.flavor,
            "swr_path": self.swr_path,
            "description": self.description,
            "user_name": self.username,
        }
        return {k: v for k, v in pairs.items() if v}


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidParameter(f"Parameter error: '{name}' is given more than once.")
    return values[0]


def parse_int(raw: str | None, name: str, default: _D, low: int, high: int) -> int | _D:
    """An integer query parameter within ``low``..``high`` (else 0104); ``default`` when absent or empty."""
    if raw is None or raw == "":
        return default
    # int() alone would take " 10", "1_0" and non-ASCII digits; the length check spares int() a huge string.
    if len(raw) > 24 or not _INT_RE.fullmatch(raw):
        raise InvalidParameter(f"Parameter error: '{name}' must be an integer from {low} to {high}.")
    value = int(raw, 10)
    if not low <= value <= high:
        raise InvalidParameter(f"Parameter error: '{name}' must be an integer from {low} to {high}.")
    return value


def _match(raw: str | None, name: str, pattern: re.Pattern[str]) -> str | None:
    if raw is None or raw == "":
        return None
    if not pattern.fullmatch(raw):  # fullmatch: '$' alone would let a trailing newline through
        raise InvalidParameter(f"Parameter error: '{name}' has an invalid value.")
    return raw


def _enum(raw: str | None, name: str, enum: type[_E]) -> _E | None:
    if raw is None or raw == "":
        return None
    try:
        return enum(raw.upper())
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise InvalidParameter(f"Parameter error: '{name}' must be one of {allowed}.") from None


def _uuid(raw: str | None, name: str) -> str | None:
    if raw is None or raw == "":
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise InvalidParameter(f"Parameter error: '{name}' must be a UUID.") from None


def parse_tags(raw: str | None) -> tuple[TagFilter, ...]:
    """``k1|v1,k2|v2`` -> tag filters (repeats dropped); a bare ``k`` asks for the key's presence. At most
    ``MAX_TAG_FILTERS`` pairs: an instance has at most that many tags, so more can only match nothing."""
    if raw is None or raw == "":
        return ()
    if raw.count(",") >= MAX_TAG_FILTERS:
        raise InvalidParameter(f"Parameter error: 'tags' may hold at most {MAX_TAG_FILTERS} pairs.")
    bad = (
        raw.startswith((",", "|"))
        or raw.endswith(",")
        or ",," in raw
        or "||" in raw
        or not _TAG_CHARS_RE.fullmatch(raw)
    )
    if bad:
        raise InvalidParameter("Parameter error: 'tags' must look like k1|v1,k2|v2.")
    result = []
    for pair in raw.split(","):
        key, sep, value = pair.partition("|")
        if not key or "|" in value:
            raise InvalidParameter("Parameter error: 'tags' must look like k1|v1,k2|v2.")
        result.append(TagFilter(key, value if sep else None))
    return tuple(dict.fromkeys(result))


def parse_sort(sort_key: str | None, sort_dir: str | None) -> tuple[tuple[str, ...], bool]:
    """Validated sort columns and direction (default ``create_at`` DESC)."""
    descending = True
    if sort_dir not in (None, ""):
        if sort_dir.upper() not in ("ASC", "DESC"):
            raise InvalidParameter("Parameter error: 'sort_dir' must be ASC or DESC.")
        descending = sort_dir.upper() == "DESC"
    if sort_key in (None, ""):
        return ("create_at",), descending
    if len(sort_key) > 128:
        raise InvalidParameter("Parameter error: 'sort_key' is longer than 128 characters.")
    columns: list[str] = []
    for part in sort_key.split(","):
        part = part.strip()
        column = SORT_KEYS.get(part)
        if column is None:
            raise UnsupportedSortKey(f"The field does not support sorting: '{part}'.")
        if column not in columns:
            columns.append(column)
    return tuple(columns), descending


def parse_notebook_query(
    params: Mapping[str, Sequence[str]],
    *,
    project_id: str,
    caller_id: str,
    caller_is_admin: bool,
    all_view: bool,
    strict_limit: bool = False,
) -> NotebookQuery:
    """Validate list parameters (a mapping name -> list of values) into a ``NotebookQuery``.

    Scope (A5): a non-admin sees only their own instances and ``owner`` is ignored; an admin's
    ``/notebooks`` shows their own unless ``owner`` is given, ``/notebooks/all`` everyone's.
    """
    limit = parse_int(_one(params, "limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    if strict_limit and limit not in STRICT_LIMITS:
        raise InvalidParameter("Parameter error: 'limit' must be 10, 20 or 50.")
    offset = parse_int(_one(params, "offset"), "offset", 0, 0, MAX_OFFSET)

    owner = _match(_one(params, "owner"), "owner", _OWNER_RE)
    owner_id: str | None
    if not caller_is_admin:
        owner_id = caller_id
    elif owner is not None:
        owner_id = owner
    else:
        owner_id = None if all_view else caller_id

    workspace = _one(params, "workspace_id")
    if workspace in (None, ""):
        workspace = _one(params, "workspaceId")
    workspace = _match(workspace, "workspace_id", _WORKSPACE_RE) or DEFAULT_WORKSPACE

    description = _one(params, "description")
    if description is not None and (len(description) > 512 or "<" in description or ">" in description):
        raise InvalidParameter("Parameter error: 'description' is longer than 512 characters or contains < or >.")
    ip = _one(params, "ip")
    if ip not in (None, ""):
        try:
            ip = str(ipaddress.IPv4Address(ip))
        except ValueError:
            raise InvalidParameter("Parameter error: 'ip' must be an IPv4 address.") from None
    else:
        ip = None
    swr_path = _one(params, "swr_path")
    if swr_path is not None and not _SWR_RE.fullmatch(swr_path):
        raise InvalidParameter("Parameter error: 'swr_path' has an invalid value.")

    sort, descending = parse_sort(_one(params, "sort_key"), _one(params, "sort_dir"))
    return NotebookQuery(
        project_id=project_id,
        owner_id=owner_id,
        feature=_enum(_one(params, "feature"), "feature", Feature) or Feature.NOTEBOOK,
        workspace_id=workspace,
        status=_enum(_one(params, "status"), "status", Status),
        pool_id=_match(_one(params, "pool_id"), "pool_id", _POOL_ID_RE),
        image_id=_uuid(_one(params, "image_id"), "image_id"),
        id=_uuid(_one(params, "id"), "id"),
        ip=ip,
        billing=_enum(_one(params, "billing"), "billing", Billing),
        tags=parse_tags(_one(params, "tags")),
        name=_match(_one(params, "name"), "name", _NAME_RE),
        pool_name=_match(_one(params, "pool_name"), "pool_name", _POOL_NAME_RE),
        flavor=_match(_one(params, "flavor"), "flavor", _FLAVOR_RE),
        swr_path=swr_path or None,
        description=description or None,
        username=_match(_one(params, "username"), "username", _USERNAME_RE),
        sort=sort,
        descending=descending,
        offset=offset,
        limit=limit,
    )


@dataclass(frozen=True)
class Page:
    """One page of a list with the envelope arithmetic of spec README §8."""

    items: list[Any]
    total: int
    offset: int
    limit: int

    def envelope(self, one_based: bool = False) -> dict[str, Any]:
        size = self.limit
        pages = -(-self.total // size) if self.total and size else 0
        current = self.offset // size if size else 0
        if one_based:
            current += 1
        return {"current": current, "data": self.items, "pages": pages, "size": size, "total": self.total}
