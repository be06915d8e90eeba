"""Save a running notebook as an image (spec images-flavors-tags-storage.md §2.5).

The call records intent in one transaction: a new image (INIT, ``source_notebook_id`` = the notebook)
and the notebook RUNNING -> SNAPSHOTTING. The reconciler does the saving (``controller/image_work.py``)
and moves both on: the image to ACTIVE or CREATE_FAILED, the notebook back to RUNNING."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import orjson
from sqlalchemy.exc import IntegrityError

from ..auth.principal import Principal
from ..domain import errors as E
from ..domain.image_requests import check_save
from ..domain.images import ImageStatus, ImageType, Origin, Visibility, group_id, saved_image_address
from ..domain.transitions import Op, check
from ..observability import context
from ..store import identity_repo, image_group_repo, image_repo
from ..store import notebook_repo as repo
from .images import group_row
from .notebooks import NotebookService


class ImageSaves:
    def __init__(
        self,
        notebooks: NotebookService,
        *,
        has_engine: bool,
        runtime_name: str,
        on_change: Callable[[], None] = lambda: None,
    ):
        self.nb = notebooks
        self.has_engine = has_engine  # False: the runtime's images are not engine images (local)
        self.runtime_name = runtime_name
        self.on_change = on_change  # wakes the reconciler

    def save(self, principal: Principal, notebook_id: str, body) -> dict:
        """``POST /notebooks/{id}/create-image``: answer the new image (INIT) at once."""
        if not self.has_engine:
            raise E.NotSupportedOnRuntime(
                "Saving a notebook as an image",
                self.runtime_name,
                "a pod cannot be saved as an image through the cluster's API."
                if self.runtime_name == "kubernetes"
                else "its images are environments built from the image catalogue, and "
                "what a notebook installs stays in its own work volume.",
            )
        now = self.nb.clock.now_ms()
        request = check_save(body, now)
        address = saved_image_address(request.namespace, request.name, request.tag)
        swr_path = str(address)
        try:
            with self.nb.db.write() as conn:
                notebook = self.nb._visible(conn, principal, notebook_id)  # 6309
                target = check(notebook["status"], Op.SAVE_IMAGE)  # 6327, 6357, 6326
                assert target is not None  # a save always moves the instance to SNAPSHOTTING
                if request.workspace_id != "0" and not identity_repo.workspace_exists(
                    conn, request.workspace_id, principal.project_id
                ):
                    raise E.WorkspaceNotFound()
                if image_repo.owned_with_tag(
                    conn, principal.project_id, principal.user_id, request.namespace, request.name, request.tag
                ) or image_repo.address_taken(conn, swr_path):
                    raise E.ImageTagConflict(request.tag, f"{request.namespace}/{request.name}")
                row = self._image_row(principal, notebook, request, swr_path, now)
                image_repo.insert_image(conn, row)
                image_group_repo.ensure(conn, group_row(row, now))
                if not repo.compare_and_set(
                    conn,
                    notebook_id,
                    notebook["version"],
                    {"status": target.value, "update_at": now, "request_id": context.request_id()},
                    bump=True,
                ):
                    current = self.nb._current(conn, notebook_id)
                    check(current["status"], Op.SAVE_IMAGE)
                    raise E.IllegalTransition("ModelArts.6357", current["status"], Op.SAVE_IMAGE)
                repo.add_event(
                    conn,
                    notebook_id,
                    notebook["project_id"],
                    now,
                    "snapshotting",
                    f"Saving the instance as image {request.namespace}/{request.name}:{request.tag}",
                )
                answer = image_repo.to_json(image_repo.get(conn, row["id"]))
        except IntegrityError:  # the same image saved by a concurrent request (the unique indexes)
            raise E.ImageTagConflict(request.tag, f"{request.namespace}/{request.name}") from None
        self.on_change()
        return answer

    @staticmethod
    def _image_row(principal: Principal, notebook, request, swr_path: str, now: int) -> dict:
        """The new image: what it can run on and serve is what the notebook's image could."""
        source = orjson.loads(notebook["spec"])["image"]
        categories = list(source.get("resource_categories") or ["CPU"])
        doc = {
            "description": request.description,
            "arch": source.get("arch") or "x86_64",
            "origin": Origin.IMAGE_SAVE.value,
            "status_message": "",
            "dev_services": list(source.get("dev_services") or ["NOTEBOOK"]),
            "resource_categories": categories,
            "support_res_categories": categories,
            "flavor_type": source.get("flavor_type"),
            "size": 0,
            "swr_instance_id": None,
            "tags": [],
        }
        return {
            "id": str(uuid.uuid4()),
            "project_id": principal.project_id,
            "owner_id": principal.user_id,
            "name": request.name,
            "namespace": request.namespace,
            "tag": request.tag,
            "swr_path": swr_path,
            "type": ImageType.DEDICATED.value,
            "status": ImageStatus.INIT.value,
            "visibility": Visibility.PRIVATE.value,
            "workspace_id": request.workspace_id,
            "service_type": source.get("service_type") or "UNKNOWN",
            "show_name": None,
            "show_tag": None,
            "create_at": now,
            "update_at": now,
            "doc": orjson.dumps(doc).decode(),
            "group_id": group_id(principal.project_id, principal.user_id, request.namespace, request.name),
            "source_notebook_id": notebook["id"],
            "purge": False,
        }
