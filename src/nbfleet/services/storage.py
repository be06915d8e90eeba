"""Dynamic storage use-cases (spec images-flavors-tags-storage.md §4): attach, list, show, detach.

Like every state change, attach and detach record intent (a mount row MOUNTING, or UNMOUNTING) and answer
at once; the reconciler mounts and unmounts on the host and writes MOUNTED / MOUNT_FAILED or removes the
row. A refused request writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from ..auth.principal import Principal
from ..domain import errors as E
from ..domain.storage import MountStatus, StoragePolicy, collides, new_mount_id, parse_attach
from ..domain.transitions import Op, check
from ..store import storage_repo
from .mount_view import mount_json
from .notebooks import NotebookService


class DynamicStorageService:
    def __init__(
        self,
        notebooks: NotebookService,
        policy: StoragePolicy,
        *,
        max_mounts: int,
        on_change: Callable[[], None] = lambda: None,
    ):
        self.nb = notebooks
        self.policy = policy
        self.max_mounts = max_mounts
        self.on_change = on_change

    def attach(self, principal: Principal, notebook_id: str, body) -> dict:
        """Check the body (6335/6332/6336/6358), the instance (6309, not RUNNING 6327), the operator's
        allow-list (6336 on ``uri``) and the mount path against the instance's mounts (6336); then record
        the mount MOUNTING."""
        request = parse_attach(body)
        with self.nb.db.write() as conn:
            storage_repo.lock_notebook(conn, notebook_id)
            row = self.nb._visible(conn, principal, notebook_id)
            check(row["status"], Op.RUN_ONLY)
            self.policy.check(row["project_id"], request)
            existing = storage_repo.of_notebook(conn, notebook_id)
            if any(collides(request.mount_path, m["mount_path"]) for m in existing) or any(
                collides(request.mount_path, _normal(v.get("mount_path"))) for v in _static(row)
            ):
                raise E.InvalidProperty("mount_path", "It is, contains or lies in another mount of the instance.")
            if len(existing) >= self.max_mounts:
                raise E.InvalidProperty("mount_path", f"An instance has at most {self.max_mounts} dynamic mounts.")
            now = self.nb.clock.now_ms()
            mount = {
                "id": new_mount_id(),
                "notebook_id": notebook_id,
                "project_id": row["project_id"],
                "category": request.category.value,
                "mount_path": request.mount_path,
                "uri": request.uri,
                "efs_id": request.efs_id,
                "status": MountStatus.MOUNTING.value,
                "failure_reason": None,
                "version": 1,
                "create_at": now,
                "update_at": now,
            }
            storage_repo.insert_mount(conn, mount)
            self.nb._event(conn, row, "storage", f"Mounting {request.category.value} at {request.mount_path}")
        self.on_change()
        return mount_json(mount)

    def list(self, principal: Principal, notebook_id: str) -> dict:
        with self.nb.db.read() as conn:
            self.nb._visible(conn, principal, notebook_id)
            rows = storage_repo.of_notebook(conn, notebook_id)
        data = [mount_json(r) for r in rows]
        return {"current": 1, "data": data, "pages": 1 if data else 0, "size": len(data), "total": len(data)}

    def show(self, principal: Principal, notebook_id: str, mount_id: str) -> dict:
        with self.nb.db.read() as conn:
            self.nb._visible(conn, principal, notebook_id)
            return mount_json(self._mount(conn, notebook_id, mount_id))

    def detach(self, principal: Principal, notebook_id: str, mount_id: str) -> dict:
        """The mount UNMOUNTING (the instance must be RUNNING: 6327); an unknown mount is 6404. A detach of a
        mount already UNMOUNTING answers it as it is."""
        with self.nb.db.write() as conn:
            storage_repo.lock_notebook(conn, notebook_id)
            row = self.nb._visible(conn, principal, notebook_id)
            mount = self._mount(conn, notebook_id, mount_id)
            check(row["status"], Op.RUN_ONLY)
            if mount["status"] == MountStatus.UNMOUNTING:
                return mount_json(mount)
            values = {
                "status": MountStatus.UNMOUNTING.value,
                "failure_reason": None,
                "update_at": self.nb.clock.now_ms(),
            }
            if not storage_repo.change(conn, mount_id, mount["version"], values):
                raise E.IllegalTransition("ModelArts.6357", row["status"], Op.RUN_ONLY)
            self.nb._event(conn, row, "storage", f"Unmounting {mount['mount_path']}")
            mount = storage_repo.get(conn, mount_id)
        self.on_change()
        return mount_json(mount)

    @staticmethod
    def _mount(conn, notebook_id: str, mount_id: str):
        mount = storage_repo.get(conn, mount_id)
        if mount is None or mount["notebook_id"] != notebook_id:
            raise E.ResourceNotFound(f"The storage {mount_id} does not exist.")
        return mount


def _static(row) -> list[dict]:
    try:
        return orjson.loads(row["spec"]).get("data_volumes") or []
    except (orjson.JSONDecodeError, AttributeError):
        return []


def _normal(path) -> str:
    """A static volume's mount path in the form of dynamic ones (trailing slash), for the collision check."""
    return (path.rstrip("/") + "/") if isinstance(path, str) and path else "\0"
