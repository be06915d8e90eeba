"""The runtime protocol: the seam between the reconciler and whatever runs notebooks.

A runtime is told *what* an instance should be (``InstanceSpec``) and reports *where* it runs
(``Placement``, persisted by the reconciler in the store). Every method is idempotent, because
after a crash the reconciler repeats whatever it was doing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..domain.instances import FlavorLimits, ImageRef, InstanceSpec, MountSpec, Placement
from ..domain.model import StepStatus

# FlavorLimits, ImageRef, InstanceSpec, MountSpec and Placement live in domain.instances; re-exported here.
__all__ = [
    "Activity",
    "DynamicStorage",
    "EngineImage",
    "FlavorLimits",
    "HostStorage",
    "ImageEngine",
    "InStore",
    "ImageRef",
    "InstanceSpec",
    "MountSpec",
    "Observation",
    "Placement",
    "Reporter",
    "Runtime",
    "RuntimeFailure",
    "StoreLookup",
    "gpus_on_host",
]


def gpus_on_host(flavor: FlavorLimits) -> bool:
    """Whether a runtime on this host can serve ``flavor`` at all: GPU flavors need a GPU."""
    return flavor.gpus <= 0 or Path("/dev/nvidia0").exists()


@dataclass(frozen=True)
class Observation:
    alive: bool
    reason: str | None = None


@dataclass(frozen=True)
class Activity:
    """What the instance itself says about its use, for idle auto-stop."""

    last_activity_ms: int | None
    busy: bool
    detail: str = ""


@dataclass(frozen=True)
class InStore:
    """What the store says of the instances a runtime found objects of, read *after* it listed them.

    Read after, not before: an object listed at t0 was made by a replica that had already moved its row into
    a transition, so a read at t1 > t0 shows it live; a read before the listing could miss a start another
    replica began in between, and its fresh pod or container would be taken for an orphan.
    """

    live: frozenset[str]  # running or in a transition: what runs for them stays
    stored: frozenset[str]  # in the store in any status (live included): their volumes stay


# Given instance ids, what the store says of them (ids it does not answer for are not in the store).
StoreLookup = Callable[[set[str]], Awaitable[InStore]]


class RuntimeFailure(Exception):
    """A step of start/stop/delete failed; ``step`` is the action_progress step (1–4) or None."""

    def __init__(self, reason: str, step: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.step = step


class Reporter(Protocol):
    """How a runtime tells the reconciler what it is doing."""

    async def step(self, number: int, status: StepStatus, description: str | None = None) -> None: ...

    async def event(self, kind: str, message: str) -> None: ...


@dataclass(frozen=True)
class EngineImage:
    """An image as the engine that runs it knows it (``ImageEngine.inspect``)."""

    swr_path: str
    size_kb: int | None = None
    # What the image can serve, as far as the engine can tell ("NOTEBOOK", "SSH"); empty: nothing usable.
    serves: tuple[str, ...] = ()


class ImageEngine(Protocol):
    """The images of a runtime that runs images (a container engine; the simulated runtime pretends).

    A runtime without one (``Runtime.images is None``, the local runtime, whose images are environments
    built from the catalogue) supports neither registering engine images nor saving an instance as one.
    Saving goes through the reconciler like every change to an instance; ``inspect`` only reads.
    """

    async def inspect(self, swr_path: str) -> EngineImage | None:
        """The image if the engine has it (or can pull it), else None."""

    async def commit(self, spec: InstanceSpec, placement: Placement, swr_path: str) -> EngineImage:
        """Save the RUNNING instance as a new image ``swr_path``: what its owner installed, not its work
        volume. ``RuntimeFailure`` says why it could not."""

    async def remove(self, swr_path: str) -> None:
        """Remove the image's content from the engine (gone already is fine)."""


class DynamicStorage(Protocol):
    """Mounts that appear under ``/data`` of a RUNNING instance without a restart (``Runtime.storage``).

    Every call is idempotent (the reconciler repeats it after a crash) and raises ``RuntimeFailure`` with a
    reason the instance's owner may read (no credentials, no host paths)."""

    async def attach(self, spec: InstanceSpec, mount: MountSpec) -> None:
        """Mount it; already mounted is fine."""

    async def detach(self, spec: InstanceSpec, mount: MountSpec) -> None:
        """Unmount it; not mounted is fine."""

    async def detach_all(self, spec: InstanceSpec) -> None:
        """Unmount everything of the instance (stop, delete, loss); nothing mounted is fine."""

    async def reap(self, known_ids: set[str]) -> list[str]:
        """After a restart: unmount what is left mounted for instances not in ``known_ids``; return their ids."""


class HostStorage(DynamicStorage, Protocol):
    """Dynamic mounts on this host (``mounts.HostMounts``), which also make each instance's /data."""

    def prepare(self, instance_id: str) -> Path:
        """The instance's data directory, made ready for mounts below it (idempotent)."""


class Runtime(Protocol):
    """What every runtime implements. The reconciler is its only caller, one call per instance at a time.

    Isolation is part of the contract, not an option of a runtime: whatever an instance's owner runs in
    it reaches nothing but the instance's own work (not nbfleet's data, environment or processes, not
    another instance), sees its volume at ``/home/ma-user/work`` as an unprivileged ``ma-user``, and answers
    only where ``Placement`` says, at an address no other instance can take.
    """

    name: str
    # False: nothing runs (simulated), so there is nothing to watch, adopt or reap: the reconciler calls
    # neither ``observe`` nor ``adopt`` nor ``reap_orphans``.
    observes: bool
    # True: ``activity`` reports kernel activity worth an idle check even when ``observes`` is False (a
    # runtime that runs nothing itself but can ask something that does). The observer runs idle checks
    # when ``observes or reports_activity``, liveness checks only when ``observes``.
    reports_activity: bool
    images: ImageEngine | None  # None: images are not engine images (see ImageEngine)
    storage: DynamicStorage | None  # None: no dynamic mounts (attach ends in MOUNT_FAILED)

    def isolation(self) -> dict[str, Any]:
        """What keeps instances apart on this runtime, for ``GET /health`` and the start events."""

    async def start(self, spec: InstanceSpec, reporter: Reporter) -> Placement:
        """Prepare storage, limits, port and process, and return once the instance answers."""

    async def stop(self, spec: InstanceSpec, placement: Placement | None) -> None:
        """Stop the instance's processes; its storage stays."""

    async def delete(self, spec: InstanceSpec, placement: Placement | None) -> None:
        """Stop everything and remove the instance's storage."""

    async def observe(self, spec: InstanceSpec, placement: Placement | None) -> Observation:
        """Is the instance still alive where it was placed?"""

    async def adopt(self, spec: InstanceSpec, placement: Placement | None) -> bool:
        """After nbfleet restarted: is what runs at ``placement`` still this instance's, alive and answering
        its token? False: the reconciler marks the instance lost."""

    async def activity(self, spec: InstanceSpec, placement: Placement) -> Activity | None:
        """Usage signal for idle auto-stop, or None if the runtime cannot tell."""

    async def reap_orphans(self, lookup: StoreLookup) -> list[str]:
        """End what runs for instances that are not live in the store, and remove the volumes of instances
        the store does not hold at all; return the ids of what was removed.

        A STOPPED instance is not live but is stored: its processes go, its work volume stays.
        """

    def has_capacity(self, flavor: FlavorLimits) -> bool:
        """False when the flavor cannot be served at all on this runtime (shown as sold out)."""

    async def close(self) -> None: ...
