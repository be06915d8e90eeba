"""Notebook instances as values: what one should be (``InstanceSpec`` and its parts), where it runs
(``Placement``, stored with the instance). Ids are in ``ids.py``.

These are the reconciler's words as much as the runtimes', so they live here, not in ``runtime/``;
``runtime.base`` re-exports them for code that imported them from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True)
class FlavorLimits:
    """The resources a flavor grants, as the runtime needs them."""

    id: str
    vcpus: int
    memory_mb: int
    gpus: int = 0
    # Where a cluster may run the flavor (the kubernetes runtime; other runtimes ignore them): the pod's
    # nodeSelector and tolerations, as the flavor catalogue gives them. Not part of the flavor's identity.
    node_selector: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    tolerations: tuple[Mapping[str, Any], ...] = field(default=(), hash=False, compare=False)


@dataclass(frozen=True)
class ImageRef:
    """The instance's image: its name, where a container runtime pulls it from, and what a runtime that
    builds environments itself (local) builds (``environment``: ``{"python": "3.11", "packages": [...]}``)."""

    name: str
    swr_path: str
    environment: Mapping[str, Any] | None = None
    # False for an image that serves SSH only (its dev_services lack NOTEBOOK): nothing serves Jupyter,
    # the instance only holds its sandbox open for SSH sessions.
    serves_jupyter: bool = True


@dataclass(frozen=True)
class InstanceSpec:
    """What the reconciler asks a runtime to run."""

    id: str
    name: str
    token: str
    flavor: FlavorLimits
    image: ImageRef
    owner_id: str
    project_id: str
    first_start: bool = False  # True while the instance is being created (CREATING), False on a restart
    volume_gb: int | None = None  # the EVS work volume's capacity in GB, for runtimes that size volumes (kubernetes)


@dataclass
class Placement:
    """Where a running instance answers; stored with the instance so any process can find it.

    Jupyter answers on a Unix socket (``socket``) in a directory only the instance and nbfleet share, or
    on ``host:port`` for runtimes that can only offer a network address. ``details`` is for the runtime
    itself and never shown to users."""

    host: str = ""
    port: int = 0
    pid: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    socket: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "pid": self.pid, "details": self.details, "socket": self.socket}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Placement | None:
        if not data:
            return None
        return cls(
            host=data.get("host") or "",
            port=data.get("port") or 0,
            pid=data.get("pid"),
            details=data.get("details") or {},
            socket=data.get("socket"),
        )

    @classmethod
    def from_column(cls, text: str | bytes | None) -> Placement | None:
        """The placement stored in an instance's ``placement`` column (JSON text), or None when it has none."""
        return cls.from_json(orjson.loads(text)) if text else None

    def to_column(self) -> str:
        """What ``from_column`` reads back."""
        return orjson.dumps(self.to_json()).decode()


@dataclass(frozen=True)
class MountSpec:
    """A dynamic mount as the reconciler asks a runtime for it (spec §4): ``parts`` is the mount point below
    ``/data`` inside the instance, already checked (plain directory names); ``uri``/``efs_id`` as attached."""

    id: str
    category: str  # EFS | OBS | OBSFS
    parts: tuple[str, ...]
    uri: str
    efs_id: str | None
    project_id: str
