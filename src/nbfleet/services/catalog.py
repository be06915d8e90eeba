"""Flavors (operator configuration) and images (built-ins from configuration, kept in the store)."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import orjson

from ..domain import errors as E
from ..domain.query import MAX_OFFSET, Page, parse_int, parse_sort
from ..runtime.base import FlavorLimits
from ..store import image_repo
from ..store.db import Database

REGISTRY = "registry.nbfleet.local"
FLAVOR_SORT_KEYS = {"id", "name", "vcpus", "memory", "category"}
IMAGE_SORT_KEYS = {"create_at": "create_at", "createTime": "create_at", "update_at": "update_at",
                   "updateTime": "update_at", "name": "name", "tag": "tag"}


@dataclass(frozen=True)
class Flavor:
    id: str
    name: str
    description: str
    arch: str
    category: str
    feature: str
    free: bool
    vcpus: int
    memory_gb: float   # fractions allowed for small operator-defined flavors (0.5 = 512 MiB)
    gpu: dict | None = None
    storages: tuple[str, ...] = ("EVS", "EFS", "OBS", "OBSFS")
    extra: dict = field(default_factory=dict)

    def limits(self) -> FlavorLimits:
        return FlavorLimits(self.id, self.vcpus, int(self.memory_gb * 1024), (self.gpu or {}).get("gpu", 0))

    def to_json(self, sold_out: bool) -> dict:
        return {
            "id": self.id, "name": self.name, "description": self.description, "arch": self.arch.lower(),
            "category": self.category, "feature": self.feature, "free": self.free, "sold_out": sold_out,
            "vcpus": self.vcpus, "memory": int(self.memory_gb * 1024 * 1024), "gpu": self.gpu,
            "billing": {"code": self.id, "unit_num": 1}, "storages": list(self.storages),
            "evs_max_size": "4096", "evs_sku_code": "nbfleet.evs", "grow_support_type": "COMMON",
        }


def load_catalogue(path: Path | None, default_name: str) -> list[dict]:
    if path is not None:
        return json.loads(Path(path).read_text())
    return json.loads(resources.files("nbfleet.catalog").joinpath(default_name).read_text())


class FlavorCatalog:
    def __init__(self, path: Path | None = None, has_capacity=lambda limits: True):
        self.flavors = {f["id"]: Flavor(**{k: (tuple(v) if k == "storages" else v) for k, v in f.items()})
                        for f in load_catalogue(path, "flavors.json")}
        self.has_capacity = has_capacity

    def get(self, flavor_id: str) -> Flavor | None:
        return self.flavors.get(flavor_id)

    def sold_out(self, flavor: Flavor) -> bool:
        return not self.has_capacity(flavor.limits())

    def page(self, params) -> dict:
        """``GET /notebooks/flavors`` with its filters, sort and 1-based paging."""
        def one(name):
            values = params.get(name)
            return values[0] if values else None

        feature = (one("feature") or "NOTEBOOK").upper()
        if feature not in ("NOTEBOOK", "DEFAULT"):
            raise E.InvalidParameter("Parameter error: 'feature' must be NOTEBOOK or DEFAULT.")
        category = one("category")
        if category and category.upper() not in ("CPU", "GPU", "ASCEND"):
            raise E.InvalidParameter("Parameter error: 'category' must be CPU, GPU or ASCEND.")
        pool_type = one("type")
        if pool_type and pool_type.upper() not in ("MANAGED", "DEDICATED"):
            raise E.InvalidParameter("Parameter error: 'type' must be MANAGED or DEDICATED.")
        selected = [f for f in self.flavors.values() if f.feature == feature
                    and (not category or f.category == category.upper())
                    and (not pool_type or pool_type.upper() == "MANAGED")
                    and not one("flavor_type")]
        return paged_catalogue([f.to_json(self.sold_out(f)) for f in selected], params, FLAVOR_SORT_KEYS,
                               default_sort=None, flavors_twice=True)


def paged_catalogue(items: list[dict], params, sort_keys: set[str], default_sort: str | None,
                    flavors_twice: bool = False) -> dict:
    """Sort and page a small in-memory catalogue (flavors) with the 1-based envelope."""
    def one(name):
        values = params.get(name)
        return values[0] if values else None

    sort_key = one("sort_key")
    if sort_key:
        for key in sort_key.split(","):
            if key.strip() not in sort_keys:
                raise E.UnsupportedSortKey(f"The field does not support sorting: '{key.strip()}'.")
        _, descending = parse_sort(None, one("sort_dir"))
        keys = [k.strip() for k in sort_key.split(",")]
        items = sorted(items, key=lambda f: tuple(f[k] for k in keys) + (f["id"],), reverse=descending)
    offset = parse_int(one("offset"), "offset", 0, 0, MAX_OFFSET)
    limit = parse_int(one("limit"), "limit", None, 1, MAX_OFFSET)
    chunk = items[offset:offset + limit] if limit else items[offset:]
    size = limit or len(chunk)
    envelope = Page(chunk, len(items), offset, size).envelope(one_based=True)
    if not size:
        envelope.update(current=1, pages=0, size=0)
    if flavors_twice:
        envelope["flavors"] = chunk
    return envelope


def builtin_swr_path(img: dict) -> str:
    return img.get("swr_path") or f"{REGISTRY}/{img['namespace']}/{img['name']}:{img['tag']}"


def builtin_image_id(namespace: str, name: str, tag: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"nbfleet:image:{namespace}/{name}:{tag}"))


class ImageCatalog:
    def __init__(self, db: Database, clock, path: Path | None = None):
        self.db = db
        self.clock = clock
        self.builtins = load_catalogue(path, "images.json")
        # swr_path -> (name, environment declaration): what the local runtime builds for an image.
        self._environments = {builtin_swr_path(img): (img["name"], img.get("environment"))
                              for img in self.builtins}

    def environment(self, swr_path: str) -> tuple[str, dict | None]:
        """The image's name and the environment it declares (None: none, e.g. an image not in the catalogue)."""
        return self._environments.get(swr_path, (swr_path.rsplit("/", 1)[-1], None))

    def sync_builtins(self) -> None:
        """Upsert the configured built-in images (ids are stable across restarts)."""
        now = self.clock.now_ms()
        with self.db.write() as conn:
            for img in self.builtins:
                image_id = img.get("id") or builtin_image_id(img["namespace"], img["name"], img["tag"])
                cats = img.get("resource_categories", ["CPU"])
                doc = {
                    "description": img.get("description", ""), "arch": img.get("arch", "X86_64").lower(),
                    "origin": "CUSTOMIZE", "status_message": "",
                    "dev_services": img.get("dev_services", ["NOTEBOOK", "SSH"]), "resource_categories": cats,
                    "support_res_categories": cats, "flavor_type": None, "size": img.get("size", 0),
                    "swr_instance_id": None, "tags": [],
                }
                image_repo.upsert(conn, {
                    "id": image_id, "project_id": None, "owner_id": None, "name": img["name"],
                    "namespace": img["namespace"], "tag": img["tag"],
                    "swr_path": builtin_swr_path(img),
                    "type": "BUILD_IN", "status": "ACTIVE", "visibility": "PUBLIC", "workspace_id": "0",
                    "service_type": img.get("service_type", "DEV"), "show_name": img.get("show_name"),
                    "show_tag": img.get("show_tag"),
                    "create_at": now, "update_at": now, "doc": orjson.dumps(doc).decode(),
                })

    def get(self, image_id: str, project_id: str, user_id: str) -> dict:
        with self.db.read() as conn:
            row = image_repo.get_visible(conn, image_id, project_id, user_id)
        if row is None:
            raise E.ResourceNotFound(f"The image {image_id} does not exist.")
        return image_repo.to_json(row)

    def page(self, params, project_id: str, user_id: str) -> dict:
        def one(name):
            values = params.get(name)
            return values[0] if values else None

        filters = {}
        for name, allowed in (("type", ("BUILD_IN", "DEDICATED")),
                              ("service_type", ("COMMON", "INFERENCE", "TRAIN", "DEV", "UNKNOWN"))):
            value = one(name)
            if value:
                if value.upper() not in allowed:
                    raise E.InvalidParameter(f"Parameter error: '{name}' must be one of {', '.join(allowed)}.")
                filters[name] = value.upper()
        for exact in ("namespace", "show_name", "show_tag"):
            if one(exact):
                filters[exact] = one(exact)
        workspace = one("workspace_id") or "0"
        filters["workspace_id"] = workspace
        fuzzy_raw = (one("name_fuzzy_match") or "true").lower()
        if fuzzy_raw not in ("true", "false"):
            raise E.InvalidParameter("Parameter error: 'name_fuzzy_match' must be true or false.")
        sort_key = one("sort_key")
        sort = ("create_at",)
        if sort_key:
            try:
                sort = tuple(IMAGE_SORT_KEYS[k.strip()] for k in sort_key.split(","))
            except KeyError as exc:
                raise E.UnsupportedSortKey(f"The field does not support sorting: '{exc.args[0]}'.") from None
        _, descending = parse_sort(None, one("sort_dir"))
        offset = parse_int(one("offset"), "offset", 0, 0, MAX_OFFSET)
        limit = parse_int(one("limit"), "limit", 200, 0, MAX_OFFSET) or 200
        with self.db.read() as conn:
            rows, total = image_repo.page(conn, project_id, user_id, filters=filters, name=one("name"),
                                          fuzzy=fuzzy_raw == "true", sort=sort, descending=descending,
                                          offset=offset, limit=limit)
        data = [image_repo.to_json(r) for r in rows]
        return Page(data, total, offset, limit).envelope(one_based=True)
