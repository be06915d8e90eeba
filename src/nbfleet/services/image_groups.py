"""Image groups (spec images-flavors-tags-storage.md §2.6): one owner's images of one ``namespace/name``,
all tags together; the built-in images form groups of their own.

The caller sees the built-in groups and their own; another user's group is not found (6404), like
another user's private image. A group exists while it has an image that is not DELETED."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from ..auth.principal import Principal
from ..domain import errors as E
from ..domain.image_requests import check_group_update, check_workspace, force_flag
from ..domain.images import ImageType
from ..domain.query import MAX_OFFSET, Page, parse_int
from ..store import image_group_repo
from ..store.db import Database
from .images import delete_owned


class ImageGroups:
    def __init__(self, db: Database, clock, on_purge: Callable[[], None] = lambda: None):
        self.db = db
        self.clock = clock
        self.on_purge = on_purge  # told when a forced delete leaves content to remove

    def page(self, principal: Principal, params) -> dict:
        """``GET /images/group``: name (fuzzy by default), namespace, type, workspace; 1-based paging."""

        def one(name):
            values = params.get(name)
            return values[0] if values else None

        try:
            filters = {"workspace_id": check_workspace(one("workspace_id"))}
        except E.InvalidProperty:
            raise E.InvalidParameter(
                "Parameter error: 'workspace_id' must be \"0\" or 32 lower-case letters and digits."
            ) from None
        kind = one("type")
        if kind:
            if kind.upper() not in (ImageType.BUILD_IN, ImageType.DEDICATED):
                raise E.InvalidParameter("Parameter error: 'type' must be BUILD_IN or DEDICATED.")
            filters["type"] = kind.upper()
        if one("namespace"):
            filters["namespace"] = one("namespace")
        fuzzy_raw = (one("name_fuzzy_match") or "true").lower()
        if fuzzy_raw not in ("true", "false"):
            raise E.InvalidParameter("Parameter error: 'name_fuzzy_match' must be true or false.")
        offset = parse_int(one("offset"), "offset", 0, 0, MAX_OFFSET)
        limit = parse_int(one("limit"), "limit", 200, 0, MAX_OFFSET) or 200
        if one("swr_instance_id"):  # no enterprise registry here, so nothing is in one
            rows, total = [], 0
        else:
            with self.db.read() as conn:
                rows, total = image_group_repo.page(
                    conn,
                    principal.project_id,
                    principal.user_id,
                    filters=filters,
                    name=one("name"),
                    fuzzy=fuzzy_raw == "true",
                    offset=offset,
                    limit=limit,
                )
        envelope = Page([image_group_repo.to_json(r) for r in rows], total, offset, limit).envelope(one_based=True)
        envelope["is_swr_enterprise"] = False
        return envelope

    @staticmethod
    def _own(conn, principal: Principal, group_id: str, operation: str):
        row = image_group_repo.get_visible(conn, group_id, principal.project_id, principal.user_id)
        if row is None:
            raise E.ResourceNotFound(f"The image group {group_id} does not exist.")
        if row["type"] == ImageType.BUILD_IN or row["owner_id"] != principal.user_id:
            raise E.PermissionDenied(operation)
        return row

    def update(self, principal: Principal, group_id: str, body) -> dict:
        """Replace the group's guide text and/or tags; answer the group."""
        change = check_group_update(body)
        with self.db.write() as conn:
            self._own(conn, principal, group_id, "update image group")
            values: dict = {}
            if change.read_me is not None:
                values["read_me"] = change.read_me
            if change.tags is not None:
                values["tags"] = orjson.dumps(change.tags).decode()
            if values:
                values["update_at"] = self.clock.now_ms()
                image_group_repo.update_group(conn, group_id, values)
            return image_group_repo.to_json(
                image_group_repo.get_visible(conn, group_id, principal.project_id, principal.user_id)
            )

    def delete(self, principal: Principal, group_id: str, body, force_query: str | None) -> dict:
        """Delete every image of the group, all or none (an image being saved refuses the whole call)."""
        force = force_flag(body, force_query)
        now = self.clock.now_ms()
        with self.db.write() as conn:
            self._own(conn, principal, group_id, "delete image group")
            for image in image_group_repo.live_images(conn, group_id):
                delete_owned(conn, principal, image, purge=force, now=now)
            image_group_repo.remove(conn, group_id)
        if force:
            self.on_purge()
        return {}
