"""Notebook tags (spec images-flavors-tags-storage.md §3): add, remove, and the tags in use."""

from __future__ import annotations

import re
from collections.abc import Callable

import orjson

from ..auth.principal import Principal
from ..domain import errors as E
from ..domain.transitions import Op, check
from ..store import notebook_repo as repo
from .notebooks import NotebookService

MAX_TAGS = 20
CAS_ATTEMPTS = 5  # concurrent writes to one instance are rare; losing this often means something is wrong
_KEY_RE = re.compile(r"^[\w .:=+\-@]{1,128}$")
_VALUE_RE = re.compile(r"^[\w .:/=+\-@]{0,255}$")


def _parse(body, *, need_value: bool) -> list[tuple[str, str | None]]:
    if not isinstance(body, dict):
        raise E.InvalidPayload("Invalid request payload: the body must be a JSON object.")
    tags = body.get("tags")
    if tags is None:
        raise E.MissingProperty("tags")
    if not isinstance(tags, list):
        raise E.WrongType("tags", "array")
    if not tags:
        raise E.InvalidProperty("tags", "At least one tag is needed.")
    out = []
    for i, tag in enumerate(tags):
        if not isinstance(tag, dict):
            raise E.WrongType(f"tags[{i}]", "object")
        key, value = tag.get("key"), tag.get("value")
        if key is None:
            raise E.MissingProperty(f"tags[{i}].key")
        if not isinstance(key, str) or (value is not None and not isinstance(value, str)):
            raise E.WrongType(f"tags[{i}]", "string key and value")
        if not _KEY_RE.match(key) or key != key.strip() or key.startswith("_sys_"):
            raise E.InvalidProperty(f"tags[{i}].key")
        if value is not None and not _VALUE_RE.match(value):
            raise E.InvalidProperty(f"tags[{i}].value")
        out.append((key, value if value is not None else ("" if need_value else None)))
    return out


class TagService:
    def __init__(self, notebooks: NotebookService):
        self.nb = notebooks

    def _write(
        self, principal: Principal, notebook_id: str, change: Callable[[dict], dict[str, str]], *, adding: bool
    ) -> None:
        """Apply ``change`` (current tags -> new tags) with a compare-and-set that bumps the version, and
        replace the tag rows the list filters use only when it won, in the same transaction: the tags
        shown and the tags filtered on can never differ. A write that moved the row meanwhile (a status
        change) makes it read the row again and re-apply ``change`` to what it finds."""
        with self.nb.db.write() as conn:
            for _attempt in range(CAS_ATTEMPTS):
                row = self.nb._visible(conn, principal, notebook_id)  # 6309 once deleted meanwhile
                if adding and row["status"] == "DELETING":  # tags go with the instance; nothing to add now
                    check(row["status"], Op.UPDATE_A)
                tags = sorted(change({t["key"]: t["value"] for t in orjson.loads(row["tags"])}).items())
                document = orjson.dumps([{"key": k, "value": v} for k, v in tags]).decode()
                if repo.compare_and_set(conn, notebook_id, row["version"], {"tags": document}, bump=True):
                    repo.replace_tags(conn, notebook_id, tags)
                    return
        raise E.IllegalTransition("ModelArts.6357", row["status"], Op.UPDATE_A)

    def add(self, principal: Principal, notebook_id: str, body) -> None:
        """Upsert tags; more than 20 in all is refused."""
        wanted = _parse(body, need_value=True)

        def upsert(current: dict[str, str]) -> dict[str, str]:
            current.update({k: v or "" for k, v in wanted})
            if len(current) > MAX_TAGS:
                raise E.InvalidProperty("tags", f"At most {MAX_TAGS} tags per instance.")
            return current

        self._write(principal, notebook_id, upsert, adding=True)

    def remove(self, principal: Principal, notebook_id: str, body) -> None:
        """Remove tags whose key matches (and value, when one is given); unknown keys are ignored."""
        unwanted = _parse(body, need_value=False)

        def without(current: dict[str, str]) -> dict[str, str]:
            for key, value in unwanted:
                if key in current and (value is None or current[key] == value):
                    del current[key]
            return current

        self._write(principal, notebook_id, without, adding=False)

    def in_use(self, principal: Principal, workspace_id: str | None) -> dict:
        """Every distinct key over the caller's notebooks in the project (admins: all of them)."""
        with self.nb.db.read() as conn:
            rows = repo.tags_in_use(
                conn, principal.project_id, None if principal.is_admin else principal.user_id, workspace_id
            )
        grouped: dict[str, list[str]] = {}
        for key, value in rows:
            grouped.setdefault(key, []).append(value)
        return {"tags": [{"key": k, "values": v} for k, v in grouped.items()]}
