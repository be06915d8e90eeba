"""Images (spec images-flavors-tags-storage.md §2): the built-ins of the catalogue file, and users' own
images: list, show, register, delete, sync.

Registering and syncing ask the runtime's image engine what it has (``ImageEngine.inspect``). That is a
read: nothing in the world changes, so the reconciler stays the only caller of runtimes that changes
anything (saving a notebook as an image, removing a deleted image's content)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
from sqlalchemy.exc import IntegrityError

from ..auth.principal import Principal
from ..domain import errors as E
from ..domain.image_requests import check_registration, force_flag
from ..domain.images import REGISTRY, ImageStatus, ImageType, Origin, group_id
from ..domain.query import MAX_OFFSET, Page, parse_int, parse_sort
from ..domain.transitions import ImageEvent, ImageOp, check_image, image_after
from ..runtime.base import EngineImage, RuntimeFailure
from ..store import identity_repo, image_group_repo, image_repo
from ..store.db import Database
from .catalog import load_catalogue

log = logging.getLogger("nbfleet.images")

IMAGE_SORT_KEYS = {
    "create_at": "create_at",
    "createTime": "create_at",
    "update_at": "update_at",
    "updateTime": "update_at",
    "name": "name",
    "tag": "tag",
}
CAS_ATTEMPTS = 3


def builtin_swr_path(img: dict) -> str:
    return img.get("swr_path") or f"{REGISTRY}/{img['namespace']}/{img['name']}:{img['tag']}"


def builtin_image_id(namespace: str, name: str, tag: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"nbfleet:image:{namespace}/{name}:{tag}"))


class EngineReader:
    """The runtime's ``ImageEngine.inspect`` for the API's worker threads: the call runs on the server's
    event loop (where the runtime lives), the thread waits for it, at most ``timeout`` seconds."""

    def __init__(self, engine, loop: asyncio.AbstractEventLoop, timeout: float):
        self.engine = engine
        self.loop = loop
        self.timeout = timeout

    def inspect(self, swr_path: str) -> EngineImage | None:
        future = asyncio.run_coroutine_threadsafe(self.engine.inspect(swr_path), self.loop)
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise E.RequestTimedOut(
                f"The request timed out: the image engine did not answer about {swr_path} "
                f"within {self.timeout:g} s. Please try again."
            ) from None
        except RuntimeFailure as failure:
            raise E.BackendUnavailable(
                f"The image engine could not be asked about {swr_path}: {failure.reason}"
            ) from None
        except Exception as exc:  # the engine down or refusing: an outage to retry, not a server error
            log.warning("image engine: inspecting %s failed: %r", swr_path, exc)
            raise E.BackendUnavailable(
                f"The image engine could not be asked about {swr_path}. Please try again later."
            ) from None


def image_doc(row) -> dict:
    return orjson.loads(row["doc"])


def group_row(image: dict, now: int) -> dict:
    """The group row an image belongs to (created with the first image of the group)."""
    return {
        "id": image["group_id"],
        "project_id": image["project_id"],
        "owner_id": image["owner_id"],
        "type": image["type"],
        "namespace": image["namespace"],
        "name": image["name"],
        "workspace_id": image["workspace_id"],
        "description": orjson.loads(image["doc"])["description"],
        "create_at": now,
        "update_at": now,
    }


def delete_owned(conn, principal: Principal, row, *, purge: bool, now: int) -> dict:
    """Mark one of the caller's images DELETED (``purge``: its content is to be removed from the engine,
    which the reconciler does); return it as answered. BUILD_IN and other users' images are 0108."""
    image_id = row["id"]
    if row["type"] == ImageType.BUILD_IN or row["owner_id"] != principal.user_id:
        raise E.PermissionDenied("delete image")
    for _attempt in range(CAS_ATTEMPTS):
        target = check_image(row["status"], ImageOp.DELETE, row["id"]).target
        assert target is not None  # a deletion always moves the image to DELETED
        if image_repo.change_status(
            conn, row["id"], row["status"], {"status": target.value, "update_at": now, "purge": purge}
        ):
            return image_repo.to_json(image_repo.get(conn, row["id"]))
        row = image_repo.get(conn, image_id)  # a save or a sync moved it meanwhile
        if row is None or row["status"] == ImageStatus.DELETED:
            raise E.ResourceNotFound(f"The image {image_id} does not exist.")
    raise E.ImageBeingSaved(image_id)  # it kept changing under us: as busy as an image being saved


class ImageCatalog:
    """The images of the store: the built-ins (rewritten from the catalogue file at every start) and the
    images users registered or saved."""

    def __init__(
        self,
        db: Database,
        clock,
        path: Path | None = None,
        *,
        engine: EngineReader | None = None,
        runtime_name: str = "",
        on_purge: Callable[[], None] = lambda: None,
    ):
        self.db = db
        self.clock = clock
        self.engine = engine  # None: the runtime's images are not engine images (local)
        self.runtime_name = runtime_name
        self.on_purge = on_purge  # told when a forced delete leaves content to remove
        self.builtins = load_catalogue(path, "images.json")
        # swr_path -> (name, environment declaration): what the local runtime builds for an image.
        self._dev_services = {
            builtin_swr_path(img): tuple(img.get("dev_services", ("NOTEBOOK", "SSH"))) for img in self.builtins
        }
        self._environments = {builtin_swr_path(img): (img["name"], img.get("environment")) for img in self.builtins}

    def serves_jupyter(self, swr_path: str) -> bool:
        """False for a catalogue image whose dev_services lack NOTEBOOK (an SSH-only image)."""
        return "NOTEBOOK" in self._dev_services.get(swr_path, ("NOTEBOOK",))

    def environment(self, swr_path: str) -> tuple[str, dict | None]:
        """The image's name and the environment it declares (None: none, e.g. an image not in the catalogue)."""
        return self._environments.get(swr_path, (swr_path.rsplit("/", 1)[-1], None))

    def sync_builtins(self) -> None:
        """Upsert the configured built-in images (ids are stable across restarts) and their groups."""
        now = self.clock.now_ms()
        with self.db.write() as conn:
            for img in self.builtins:
                image_id = img.get("id") or builtin_image_id(img["namespace"], img["name"], img["tag"])
                cats = img.get("resource_categories", ["CPU"])
                doc = {
                    "description": img.get("description", ""),
                    "arch": img.get("arch", "X86_64").lower(),
                    # Not BUILD_IN: origin says how a user's image came to be (registered, or saved from an
                    # instance) and the spec allows only CUSTOMIZE | IMAGE_SAVE, CUSTOMIZE being its default
                    # (images-flavors-tags-storage.md §2.2, notebooks.md §3.3). type=BUILD_IN marks presets.
                    "origin": Origin.CUSTOMIZE.value,
                    "status_message": "",
                    "dev_services": img.get("dev_services", ["NOTEBOOK", "SSH"]),
                    "resource_categories": cats,
                    "support_res_categories": cats,
                    "flavor_type": None,
                    "size": img.get("size", 0),
                    "swr_instance_id": None,
                    "tags": [],
                }
                row = {
                    "id": image_id,
                    "project_id": None,
                    "owner_id": None,
                    "name": img["name"],
                    "namespace": img["namespace"],
                    "tag": img["tag"],
                    "swr_path": builtin_swr_path(img),
                    "type": "BUILD_IN",
                    "status": "ACTIVE",
                    "visibility": "PUBLIC",
                    "workspace_id": "0",
                    "service_type": img.get("service_type", "DEV"),
                    "show_name": img.get("show_name"),
                    "show_tag": img.get("show_tag"),
                    "create_at": now,
                    "update_at": now,
                    "doc": orjson.dumps(doc).decode(),
                    "group_id": group_id(None, None, img["namespace"], img["name"]),
                    "source_notebook_id": None,
                    "purge": False,
                }
                image_repo.upsert(conn, row)
                image_group_repo.ensure(conn, group_row(row, now))

    # --- read --------------------------------------------------------------------------------------
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
        for name, allowed in (
            ("type", ("BUILD_IN", "DEDICATED")),
            ("service_type", ("COMMON", "INFERENCE", "TRAIN", "DEV", "UNKNOWN")),
        ):
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
        sort: tuple[str, ...] = ("create_at",)
        if sort_key:
            try:
                sort = tuple(IMAGE_SORT_KEYS[k.strip()] for k in sort_key.split(","))
            except KeyError as exc:
                raise E.UnsupportedSortKey(f"The field does not support sorting: '{exc.args[0]}'.") from None
        _, descending = parse_sort(None, one("sort_dir"))
        offset = parse_int(one("offset"), "offset", 0, 0, MAX_OFFSET)
        limit = parse_int(one("limit"), "limit", 200, 0, MAX_OFFSET) or 200
        with self.db.read() as conn:
            rows, total = image_repo.page(
                conn,
                project_id,
                user_id,
                filters=filters,
                name=one("name"),
                fuzzy=fuzzy_raw == "true",
                sort=sort,
                descending=descending,
                offset=offset,
                limit=limit,
            )
        data = [image_repo.to_json(r) for r in rows]
        return Page(data, total, offset, limit).envelope(one_based=True)

    # --- register ----------------------------------------------------------------------------------
    def _engine_or_refuse(self, what: str) -> EngineReader:
        if self.engine is None:
            raise E.NotSupportedOnRuntime(
                what,
                self.runtime_name,
                "its pods pull their images from a registry, which nbfleet does not inspect."
                if self.runtime_name == "kubernetes"
                else "its images are environments built from the image catalogue, not images of an engine.",
            )
        return self.engine

    def register(self, principal: Principal, body) -> dict:
        """An image the engine has (or can pull) becomes a DEDICATED image of the caller, ACTIVE at once."""
        engine = self._engine_or_refuse("Registering an image")
        reg = check_registration(body)
        address = reg.address
        if address.registry is not None and address.registry.lower() == REGISTRY:
            # Built-in and saved images live there, and belong to nbfleet or to whoever saved them: registering
            # one would hand another user's saved image (its owner's files, history, credentials) to the caller.
            raise E.InvalidProperty(
                "swr_path",
                f"Images under {REGISTRY} are nbfleet's own (built-in or saved from "
                "a notebook) and cannot be registered; use them as they are, or save a notebook.",
            )
        with self.db.read() as conn:  # the cheap refusals before the engine is asked
            self._check_registrable(conn, principal, reg)
        found = engine.inspect(reg.swr_path)
        if found is None:
            raise E.ImageNotFound(reg.swr_path)
        services = [s for s in reg.services if s in found.serves]
        if not services:
            raise E.InvalidProperty(
                "swr_path",
                f"The image {reg.swr_path} serves neither a notebook (NOTEBOOK) "
                "nor SSH (SSH) of those asked for in 'services'.",
            )
        now = self.clock.now_ms()
        categories = list(reg.resource_categories)
        doc = {
            "description": reg.description,
            "arch": reg.arch.value.lower(),
            "origin": reg.origin.value,
            "status_message": "",
            "dev_services": services,
            "resource_categories": categories,
            "support_res_categories": categories,
            "flavor_type": reg.flavor_type,
            "size": found.size_kb or 0,
            "swr_instance_id": None,
            "tags": reg.tags or [],
        }
        row = {
            "id": str(uuid.uuid4()),
            "project_id": principal.project_id,
            "owner_id": principal.user_id,
            "name": address.name,
            "namespace": address.namespace,
            "tag": address.tag,
            "swr_path": reg.swr_path,
            "type": ImageType.DEDICATED.value,
            "status": ImageStatus.ACTIVE.value,
            "visibility": reg.visibility.value,
            "workspace_id": reg.workspace_id,
            "service_type": reg.service_type.value,
            "show_name": None,
            "show_tag": None,
            "create_at": now,
            "update_at": now,
            "doc": orjson.dumps(doc).decode(),
            "group_id": group_id(principal.project_id, principal.user_id, address.namespace, address.name),
            "source_notebook_id": None,
            "purge": False,
        }
        try:
            with self.db.write() as conn:
                self._check_registrable(conn, principal, reg)
                image_repo.insert_image(conn, row)
                image_repo.keep_content(conn, reg.swr_path)
                image_group_repo.ensure(conn, group_row(row, now))
                group_values = {}
                if reg.read_me is not None:
                    group_values["read_me"] = reg.read_me
                if reg.tags is not None:
                    group_values["tags"] = orjson.dumps(reg.tags).decode()
                if group_values:
                    image_group_repo.update_group(conn, row["group_id"], group_values)
                stored = image_repo.get(conn, row["id"])
        except IntegrityError:  # the same image registered by a concurrent request (the unique index)
            raise E.ImageTagConflict(address.tag, f"{address.namespace}/{address.name}") from None
        return image_repo.to_json(stored)

    @staticmethod
    def _check_registrable(conn, principal: Principal, reg) -> None:
        if reg.workspace_id != "0" and not identity_repo.workspace_exists(conn, reg.workspace_id, principal.project_id):
            raise E.WorkspaceNotFound()
        a = reg.address
        if image_repo.owned_with_tag(conn, principal.project_id, principal.user_id, a.namespace, a.name, a.tag):
            raise E.ImageTagConflict(a.tag, f"{a.namespace}/{a.name}")

    # --- delete, sync ------------------------------------------------------------------------------
    def delete(self, principal: Principal, image_id: str, body, force_query: str | None) -> dict:
        """DELETED at once; instances created from it keep it. ``force``: the reconciler also removes its
        content from the engine, once nothing uses it any more."""
        force = force_flag(body, force_query)
        with self.db.write() as conn:
            row = image_repo.get_visible(conn, image_id, principal.project_id, principal.user_id)
            if row is None:
                raise E.ResourceNotFound(f"The image {image_id} does not exist.")
            answer = delete_owned(conn, principal, row, purge=force, now=self.clock.now_ms())
        if force:
            self.on_purge()
        return answer

    def sync(self, principal: Principal, image_id: str) -> dict:
        """Ask the engine about the image again: its size, and whether it still has it (ACTIVE / ERROR)."""
        with self.db.read() as conn:
            row = image_repo.get_visible(conn, image_id, principal.project_id, principal.user_id)
        if row is None:
            raise E.ResourceNotFound(f"The image {image_id} does not exist.")
        if row["type"] == ImageType.BUILD_IN or row["owner_id"] != principal.user_id:
            raise E.PermissionDenied("sync image")
        if not check_image(row["status"], ImageOp.SYNC, image_id).reads_engine or self.engine is None:
            return image_repo.to_json(row)  # being saved, failed, or a runtime without engine images
        found = self.engine.inspect(row["swr_path"])  # a read: see the module's docstring
        target = image_after(row["status"], ImageEvent.FOUND if found else ImageEvent.MISSING)
        assert target is not None
        doc = image_doc(row)
        doc["status_message"] = "" if found else f"The image {row['swr_path']} is not in the engine any more."
        if found is not None and found.size_kb is not None:
            doc["size"] = found.size_kb
        with self.db.write() as conn:
            image_repo.change_status(
                conn,
                image_id,
                row["status"],
                {"status": target.value, "update_at": self.clock.now_ms(), "doc": orjson.dumps(doc).decode()},
            )
            # Lost to a concurrent delete or sync: the answer is what won.
            current = image_repo.get_visible(conn, image_id, principal.project_id, principal.user_id)
        if current is None:
            raise E.ResourceNotFound(f"The image {image_id} does not exist.")
        return image_repo.to_json(current)
