"""Dynamic storage mounts (spec images-flavors-tags-storage.md §4): the attach body, and who may mount what.

Pure: the request rules, the statuses of a mount, and the operator's allow-lists (``StoragePolicy``). The
host side (bind mounts, s3fs) is ``runtime/mounts.py``; it asks the same policy again at mount time, so a
file system the operator takes away is not mounted again on the next start.
"""

from __future__ import annotations

import posixpath
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, overload

from . import errors as E
from .ids import is_uuid

DATA_ROOT = "/data"
MAX_MOUNT_PATH = 256
MAX_URI = 256
# One mount point is one directory name at most this long, made of characters that need no quoting
# anywhere (mount tables, s3fs options, logs); deeper paths are made of several of them.
# \Z, never $: '$' also matches before a trailing newline ('/data/a\n' would pass).
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
# obs://bucket/dir/...: S3 bucket names (3-63 lower-case letters, digits, '.', '-').
_OBS_URI = re.compile(r"^obs://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?\Z", re.DOTALL)
# <host>:/<path> of a shared file system (e.g. 0a1b….sfsturbo.internal:/dir).
_EFS_URI = re.compile(r"^([A-Za-z0-9][A-Za-z0-9.-]{0,252}):(/.*)\Z", re.DOTALL)


class Category(StrEnum):
    OBS = "OBS"
    OBSFS = "OBSFS"
    EFS = "EFS"


class MountStatus(StrEnum):
    MOUNTING = "MOUNTING"
    MOUNTED = "MOUNTED"
    MOUNT_FAILED = "MOUNT_FAILED"
    UNMOUNTING = "UNMOUNTING"
    UNMOUNT_FAILED = "UNMOUNT_FAILED"
    UNMOUNTED = "UNMOUNTED"  # kept while the instance is stopped; mounted again when it starts


@dataclass(frozen=True)
class AttachRequest:
    """A valid ``DataVolumesReq``: ``mount_path`` normalised (``/data/a/b/``), ``uri`` as sent."""

    category: Category
    mount_path: str
    uri: str
    efs_id: str | None

    @property
    def parts(self) -> tuple[str, ...]:
        """The mount point below /data, as directory names."""
        return tuple(self.mount_path.strip("/").split("/")[1:])


@overload
def _string(body: dict[str, Any], name: str, *, required: Literal[True], limit: int) -> str: ...
@overload
def _string(body: dict[str, Any], name: str, *, required: bool, limit: int) -> str | None: ...
def _string(body: dict[str, Any], name: str, *, required: bool, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise E.MissingProperty(name)
        return None
    if not isinstance(value, str):
        raise E.WrongType(name, "string")
    if required and not value:
        raise E.MissingProperty(name)
    if len(value) > limit:
        raise E.InvalidProperty(name, f"At most {limit} characters.")
    return value


def normal_mount_path(text: str) -> str:
    """``/data/<dir>[/<dir>…]`` with a trailing slash, or 6336. Nothing is resolved: no '..', '.', '//' or
    odd characters are accepted at all, so the path means the same thing to nbfleet and to the host."""
    if not text.startswith(DATA_ROOT + "/"):
        raise E.InvalidProperty("mount_path", "It must be a sub-directory of /data/, e.g. /data/wang/.")
    segments = text[len(DATA_ROOT) + 1 :].rstrip("/").split("/")
    if segments == [""] or not all(_SEGMENT.match(s) and s not in (".", "..") for s in segments):
        raise E.InvalidProperty(
            "mount_path",
            "It must be a sub-directory of /data/ made of directory names "
            "of letters, digits, '.', '_' and '-' (no '..', no empty names), e.g. /data/wang/.",
        )
    if posixpath.normpath(text) != DATA_ROOT + "/" + "/".join(segments):
        raise E.InvalidProperty("mount_path")
    return DATA_ROOT + "/" + "/".join(segments) + "/"


def obs_location(uri: str) -> tuple[str, str]:
    """(bucket, prefix without slashes at either end) of ``obs://bucket/dir/``; 6358 for a bucket root."""
    m = _OBS_URI.match(uri)
    if m is None:
        raise E.InvalidProperty("uri", "An OBS uri looks like obs://bucket/dir/.")
    bucket, path = m.group(1), (m.group(2) or "/")
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise E.ObsBucketRoot()
    if (
        path.replace("//", "/") != path
        or any(s in (".", "..") for s in segments)
        or any(ord(c) < 0x20 or c in "\\:," for c in path)
    ):
        raise E.InvalidProperty("uri", "An OBS directory may not contain '.', '..' or empty names, ',', ':' or '\\'.")
    return bucket, "/".join(segments)


def efs_location(uri: str) -> tuple[str, str, tuple[str, ...]]:
    """(host, export path, directory names) of ``<host>:/<path>``."""
    m = _EFS_URI.match(uri)
    if m is None:
        raise E.InvalidProperty("uri", "An EFS uri looks like <id>.sfsturbo.internal:/dir.")
    host, path = m.group(1), m.group(2)
    segments = tuple(s for s in path.split("/") if s)
    if any(s in (".", "..") for s in segments) or any(ord(c) < 0x20 for c in path):
        raise E.InvalidProperty("uri", "An EFS path may not contain '.' or '..'.")
    return host, "/" + "/".join(segments), segments


def parse_attach(body: object) -> AttachRequest:
    """The attach body, checked in the order of the spec: members (6335/6332), then values (6336/6358)."""
    if not isinstance(body, dict):
        raise E.InvalidPayload("Invalid request payload: the body must be a JSON object.")
    category = _string(body, "category", required=True, limit=16)
    mount_path = _string(body, "mount_path", required=True, limit=MAX_MOUNT_PATH)
    uri = _string(body, "uri", required=True, limit=MAX_URI)
    efs_id = _string(body, "efs_id", required=False, limit=64)
    try:
        kind = Category(category.upper())
    except ValueError:
        raise E.InvalidProperty("category", "It must be OBS, OBSFS or EFS.") from None
    if kind is Category.EFS and not efs_id:
        raise E.MissingProperty("efs_id")
    if efs_id is not None and kind is not Category.EFS and efs_id:
        raise E.InvalidProperty("efs_id", "It is only given with category EFS.")
    if kind is Category.EFS and not is_uuid(efs_id):
        raise E.InvalidProperty("efs_id", "It must be a UUID.")
    path = normal_mount_path(mount_path)
    if any(ord(c) < 0x20 for c in uri):
        raise E.InvalidProperty("uri")
    if kind is Category.EFS:
        efs_location(uri)
    else:
        obs_location(uri)
    return AttachRequest(kind, path, uri, efs_id.lower() if kind is Category.EFS and efs_id else None)


def collides(a: str, b: str) -> bool:
    """Whether two normalised mount paths are the same or one lies inside the other. Nested mounts are
    refused: a mount point inside another mount would be made in a directory the instance can write, where
    it could have put a link."""
    return a.startswith(b) or b.startswith(a)


# --- what the operator allows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EfsSource:
    """Where an attached EFS directory is on the host: the operator's directory and the names below it."""

    root: Path
    below: tuple[str, ...]
    read_only: bool = False


class StoragePolicy:
    """The operator's allow-lists: which file systems and buckets each project may mount.

    ``efs``: key = a file-system id (UUID) or an export ``host:/path``; value = ``{"path": host directory,
    "projects": [project ids] or ["*"], "read_only": bool}``. ``obs_buckets``: bucket -> ``[project ids]`` or ``["*"]``.
    Nothing listed, nothing allowed.
    """

    def __init__(self, efs: Mapping[str, object], obs_buckets: Mapping[str, list[str]], obs_configured: bool):
        self.efs = {(k.lower() if is_uuid(k) else k): v for k, v in efs.items()}
        self.obs_buckets = dict(obs_buckets)
        self.obs_configured = obs_configured

    @staticmethod
    def _allowed(projects: Any, project_id: str) -> bool:
        return "*" in projects or project_id in projects

    def efs_source(self, project_id: str, efs_id: str, uri: str) -> EfsSource | None:
        """The host directory for ``uri`` if the project may mount it, else None (unknown and not allowed
        look the same, so a caller learns nothing about other projects' file systems)."""
        host, path, segments = efs_location(uri)
        entry = self.efs.get(efs_id.lower())
        below = segments
        if entry is None:  # an export prefix: the longest configured "host:/path" the uri lies in
            best = None
            for key, candidate in self.efs.items():
                m = _EFS_URI.match(key)
                if m is None or m.group(1) != host:
                    continue
                export = tuple(s for s in m.group(2).split("/") if s)
                if segments[: len(export)] == export and (best is None or len(export) > len(best[0])):
                    best = (export, candidate)
            if best is None:
                return None
            below, entry = segments[len(best[0]) :], best[1]
        root = Path(_get(entry, "path"))
        # The most specific entry decides, whichever key the request named: an entry for a directory below
        # this one (offered to other projects, or read-only) is the operator's word on that directory.
        wanted = _host_parts(root) + tuple(below)
        deciding: list[object] = []
        depth = -1
        for candidate in self.efs.values():
            have = _host_parts(Path(_get(candidate, "path")))
            if wanted[: len(have)] != have or len(have) < depth:
                continue
            if len(have) > depth:
                deciding, depth = [], len(have)
            deciding.append(candidate)
        # Several entries for the same directory: the one the request named if it is one of them, else any
        # of them that offers it (read-only unless one offers it writable).
        if any(c is entry for c in deciding):
            deciding = [entry]
        allowing = [c for c in deciding if self._allowed(_get(c, "projects") or [], project_id)]
        if not allowing:
            return None
        return EfsSource(root, tuple(below), all(bool(_get(c, "read_only")) for c in allowing))

    def obs_allowed(self, project_id: str, bucket: str) -> bool:
        return self.obs_configured and self._allowed(self.obs_buckets.get(bucket) or [], project_id)

    def check(self, project_id: str, request: AttachRequest) -> None:
        """6336 naming ``uri`` when the project may not mount it."""
        if request.category is Category.EFS:
            assert request.efs_id is not None  # parse_attach requires it for EFS
            if self.efs_source(project_id, request.efs_id, request.uri) is None:
                raise E.InvalidProperty(
                    "uri", "No shared file system with this id and path is available to this project."
                )
        else:
            bucket, _ = obs_location(request.uri)
            if not self.obs_allowed(project_id, bucket):
                raise E.InvalidProperty("uri", "This bucket is not available to this project.")


def _get(entry: object, name: str) -> Any:
    return entry.get(name) if isinstance(entry, Mapping) else getattr(entry, name, None)


def _host_parts(path: Path) -> tuple[str, ...]:
    """The operator's directory as names, normalised without touching the host (the operator's paths are
    compared as written)."""
    return tuple(p for p in posixpath.normpath(str(path)).split("/") if p)


def new_mount_id() -> str:
    return str(uuid.uuid4())
