"""Flavors (operator configuration) and the catalogue files they, and the built-in images, come from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..domain import errors as E
from ..domain.instances import FlavorLimits
from ..domain.query import MAX_OFFSET, Page, parse_int, parse_sort

FLAVOR_SORT_KEYS = {"id", "name", "vcpus", "memory", "category"}


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
    memory_gb: float  # fractions allowed for small operator-defined flavors (0.5 = 512 MiB)
    gpu: dict | None = None
    storages: tuple[str, ...] = ("EVS", "EFS", "OBS", "OBSFS")
    extra: dict = field(default_factory=dict)
    # The kubernetes runtime's placement of the flavor's pods (a pod's nodeSelector and tolerations); never shown.
    node_selector: dict = field(default_factory=dict)
    tolerations: tuple[dict, ...] = ()

    def limits(self) -> FlavorLimits:
        return FlavorLimits(
            self.id,
            self.vcpus,
            int(self.memory_gb * 1024),
            (self.gpu or {}).get("gpu", 0),
            node_selector=self.node_selector,
            tolerations=self.tolerations,
        )

    def to_json(self, sold_out: bool) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "arch": self.arch.lower(),
            "category": self.category,
            "feature": self.feature,
            "free": self.free,
            "sold_out": sold_out,
            "vcpus": self.vcpus,
            "memory": int(self.memory_gb * 1024 * 1024),
            "gpu": self.gpu,
            "billing": {"code": self.id, "unit_num": 1},
            "storages": list(self.storages),
            "evs_max_size": "4096",
            "evs_sku_code": "nbfleet.evs",
            "grow_support_type": "COMMON",
        }


def load_catalogue(path: Path | None, default_name: str) -> list[dict]:
    if path is not None:
        return json.loads(Path(path).read_text())
    return json.loads(resources.files("nbfleet.catalog").joinpath(default_name).read_text())


def _flavor_fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: (tuple(v) if k in ("storages", "tolerations") else v) for k, v in entry.items()}


class FlavorCatalog:
    def __init__(self, path: Path | None = None, has_capacity=lambda limits: True):
        self.flavors = {f["id"]: Flavor(**_flavor_fields(f)) for f in load_catalogue(path, "flavors.json")}
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
        selected = [
            f
            for f in self.flavors.values()
            if f.feature == feature
            and (not category or f.category == category.upper())
            and (not pool_type or pool_type.upper() == "MANAGED")
            and not one("flavor_type")
        ]
        return paged_catalogue(
            [f.to_json(self.sold_out(f)) for f in selected],
            params,
            FLAVOR_SORT_KEYS,
            default_sort=None,
            flavors_twice=True,
        )


def paged_catalogue(
    items: list[dict], params, sort_keys: set[str], default_sort: str | None, flavors_twice: bool = False
) -> dict:
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
    chunk = items[offset : offset + limit] if limit else items[offset:]
    size = limit or len(chunk)
    envelope = Page(chunk, len(items), offset, size).envelope(one_based=True)
    if not size:
        envelope.update(current=1, pages=0, size=0)
    if flavors_twice:
        envelope["flavors"] = chunk
    return envelope
