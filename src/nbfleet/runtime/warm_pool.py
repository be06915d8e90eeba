"""The local runtime's warm pool: sandboxes started ahead of demand, Jupyter already answering in them.

Why: almost all of a create is jupyter-server importing itself and starting (~1.5 s); a create that finds a
ready sandbox for its image and flavor takes it over in milliseconds.

How a member becomes an instance: a member is started *as* a future instance. Its id (a fresh uuid, like
every instance id) and its Jupyter token are chosen before it starts, so its directory, host uid, limit
groups, process markers, hostname and base URL already are the instance's, and nothing has to be handed
over or re-bound in a running sandbox. A create for a pooled (image, flavor) takes a member's id and token
for its new row (``take``, in the API's transaction); the reconciler's start then claims the member's
record ``<data dir>/warm/<id>.json`` (an exclusive rename, so of several processes sharing the data dir
exactly one claims it), checks that the server answers the instance's token, and reports it running. A
member that is gone or does not answer is ended, and the start goes the usual way.

What a member is not: a sandbox that ran anyone's code. Until a create takes it, its token is known to this
process alone and its volume is empty; it is never given to a second instance.

Only creates are served from the pool: a stopped instance's volume and host uid are its own, and a running
sandbox cannot take them on (docs/benchmarks.md says what would). Members cost memory: ``describe`` reports
the RSS of each, and the pool's size is a setting (``warm_pool``; empty: no pool).

Members belong to the process that started them (its pid and start time are in each record): a process
leaves other live processes' members alone, and at its start ends those of owners that are gone, unless
a create already took them (then the reconciler's start claims or replaces them like any other).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psutil

from ..domain.instances import InstanceSpec, MountSpec, Placement
from ..domain.model import StepStatus
from .base import DynamicStorage, StoreLookup

if TYPE_CHECKING:
    from .local import LocalRuntime

log = logging.getLogger(__name__)

RETRY_MIN_S = 2.0
RETRY_MAX_S = 120.0
HEALTH_EVERY_S = 30.0

# (image swr_path, flavor id): what a create asks for, and what a member was started for.
PoolKey = tuple[str, str]
# (image swr_path, flavor id, instance id, token) -> the spec a member is started with.
SpecFor = Callable[[str, str, str, str], InstanceSpec]


def parse_targets(entries: list[str], image_paths: dict[str, str]) -> dict[PoolKey, int]:
    """``IMAGE@FLAVOR=N`` entries (IMAGE a catalogue image's name or swr_path) as {(swr_path, flavor): N}.

    ValueError says which entry is wrong; flavors are checked by the caller, which knows the catalogue."""
    targets: dict[PoolKey, int] = {}
    for entry in entries:
        text = entry.strip()
        if not text:
            continue
        pair, sep, count = text.rpartition("=")
        image, at, flavor = pair.rpartition("@")  # the last @: an image path may carry an @digest
        if not sep or not at or not image or not flavor or not count.strip().isdigit():
            raise ValueError(f"warm_pool entry {entry!r} must look like IMAGE@FLAVOR=N")
        swr_path = image_paths.get(image) or (image if image in image_paths.values() else None)
        if swr_path is None:
            raise ValueError(f"warm_pool entry {entry!r}: no image {image!r} in the catalogue")
        if (swr_path, flavor) in targets:
            raise ValueError(f"warm_pool names {image}@{flavor} twice")
        targets[(swr_path, flavor)] = int(count)
    return {key: count for key, count in targets.items() if count > 0}


def fit_of(spec: InstanceSpec) -> dict[str, Any]:
    """What a member must share with the instance that takes it over, beyond the pool's key: the limits it
    was started under and the image environment it runs (the catalogues may change while it waits)."""
    flavor = spec.flavor
    document = {
        "limits": [flavor.vcpus, flavor.memory_mb, flavor.gpus],
        "environment": spec.image.environment,
        "jupyter": spec.image.serves_jupyter,
    }
    return dict(orjson.loads(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)))  # as a record reads back


class _Quiet:
    """A member's progress goes nowhere: nobody waits for it."""

    async def step(self, number: int, status: StepStatus, description: str | None = None) -> None:
        return None

    async def event(self, kind: str, message: str) -> None:
        return None


# --- the records on disk ------------------------------------------------------------------------------


def _owner_started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


@dataclass(frozen=True)
class WarmRecord:
    """What ``<data dir>/warm/<id>.json`` says of a ready member."""

    instance_id: str
    key: PoolKey
    placement: Placement
    fit: dict[str, Any]
    owner_pid: int
    owner_started: float | None

    def owner_alive(self) -> bool:
        """Whether the process that started the member still runs. At a process's start no record can be its
        own yet: one naming its pid was left by an earlier process that had the same pid (PID 1 of a
        container restarted), and is stale."""
        if self.owner_pid == os.getpid() and not _STARTED_ANY[0]:
            return False
        started = _owner_started(self.owner_pid)
        return started is not None and (self.owner_started is None or abs(started - self.owner_started) < 1.0)


_STARTED_ANY = [False]  # whether this process has recorded a member of its own yet


class WarmRecords:
    """The members' records, shared by every process of one data dir."""

    def __init__(self, data_dir: Path):
        self.dir = Path(data_dir) / "warm"

    def _path(self, instance_id: str) -> Path:
        return self.dir / f"{instance_id}.json"

    def write(self, instance_id: str, key: PoolKey, placement: Placement, fit: dict[str, Any]) -> None:
        """Record the member as this process's (an existing record of it is replaced whole)."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        me = os.getpid()
        _STARTED_ANY[0] = True
        document = {
            "id": instance_id,
            "key": list(key),
            "placement": placement.to_json(),
            "fit": fit,
            "owner_pid": me,
            "owner_started": _owner_started(me),
        }
        staged = self.dir / f".{instance_id}.staged.{me}"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps(document))
        os.replace(staged, self._path(instance_id))  # whole or not at all: a claim never reads half a record

    @staticmethod
    def _read(path: Path) -> WarmRecord | None:
        try:
            data = orjson.loads(path.read_bytes())
            placement = Placement.from_json(data["placement"])
            assert placement is not None
            return WarmRecord(
                data["id"],
                (data["key"][0], data["key"][1]),
                placement,
                dict(data.get("fit") or {}),
                int(data["owner_pid"]),
                data["owner_started"],
            )
        except (OSError, ValueError, KeyError, IndexError, TypeError, AssertionError):
            return None

    def claim(self, instance_id: str) -> WarmRecord | None:
        """Take the member's record, if there is one and nobody took it first (rename is atomic)."""
        claimed = self.dir / f".{instance_id}.claimed.{os.getpid()}.{threading.get_ident()}"
        try:
            os.rename(self._path(instance_id), claimed)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return self._read(claimed)
        finally:
            claimed.unlink(missing_ok=True)

    def adopt(self, instance_id: str) -> WarmRecord | None:
        """Make the member's record this process's, to remove the member: of several processes asking at
        once exactly one gets it (an atomic rename); the record stays on disk, now naming this process, until
        the member is gone, so that a crash midway leaves it to the next process."""
        taken = self.dir / f".{instance_id}.adopted.{os.getpid()}.{threading.get_ident()}"
        try:
            os.rename(self._path(instance_id), taken)
        except (FileNotFoundError, NotADirectoryError):
            return None
        record = self._read(taken) or WarmRecord(instance_id, ("", ""), Placement(), {}, 0, None)
        self.write(instance_id, record.key, record.placement, record.fit)
        taken.unlink(missing_ok=True)
        return record

    def holds(self, instance_id: str) -> bool:
        return self._path(instance_id).exists()

    def remove(self, instance_id: str) -> None:
        self._path(instance_id).unlink(missing_ok=True)

    def tidy(self) -> None:
        """Put right what processes that died left between two steps: a record being adopted (renamed
        away, not yet written back) goes back under its name, so that it is found and removed like any
        stale record; half-written and half-claimed copies go. Files of live processes stay."""
        try:
            names = [p.name for p in self.dir.iterdir() if p.name.startswith(".")]
        except FileNotFoundError:
            return
        for name in names:
            parts = name[1:].split(".")
            if len(parts) < 3 or not parts[2].isdigit() or _owner_started(int(parts[2])) is not None:
                continue  # not ours to judge, or its process still runs
            instance_id, step, path = parts[0], parts[1], self.dir / name
            if step == "adopted" and not self._path(instance_id).exists():
                os.replace(path, self._path(instance_id))
            else:
                path.unlink(missing_ok=True)

    def all(self) -> list[WarmRecord]:
        try:
            paths = [p for p in self.dir.iterdir() if p.suffix == ".json" and not p.name.startswith(".")]
        except FileNotFoundError:
            return []
        return [record for record in map(self._read, paths) if record is not None]

    def kept_by_live_owners(self) -> set[str]:
        """Ids of members whose owning process still runs: nobody else may end them."""
        return {record.instance_id for record in self.all() if record.owner_alive()}


# --- the pool -------------------------------------------------------------------------------------------


@dataclass
class _Member:
    spec: InstanceSpec
    placement: Placement
    started_at: float = field(default_factory=time.monotonic)


class WarmPool:
    """Keeps ``targets[key]`` ready members per (image, flavor), refilled as creates take them."""

    def __init__(self, runtime: LocalRuntime, targets: dict[PoolKey, int], spec_for: SpecFor):
        self.runtime = runtime
        self.targets = dict(targets)
        self.spec_for = spec_for
        self.records = runtime.warm_records
        self._ready: dict[PoolKey, deque[_Member]] = {key: deque() for key in self.targets}
        self._lock = threading.Lock()  # take() runs on API threads, the rest on the event loop
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._retry_at: dict[PoolKey, float] = {}
        self._failures: dict[PoolKey, int] = {}
        self._lookup: StoreLookup | None = None
        self.taken = 0

    # --- what the API's create calls (any thread) ---------------------------------------------------
    def take(self, swr_path: str, flavor_id: str) -> tuple[str, str] | None:
        """A ready member's (instance id, token) for a new instance of this image and flavor, or None."""
        key = (swr_path, flavor_id)
        with self._lock:
            members = self._ready.get(key)
            member = members.popleft() if members else None
            if member is not None:
                self.taken += 1
        if member is None:
            return None
        self._poke()
        return member.spec.id, member.spec.token

    def give_back(self, instance_id: str, token: str) -> None:
        """The create that took this member failed: end the member, unless its row was stored after all (a
        commit whose answer was lost), which the reconciler's start then claims (any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._give_back(instance_id), loop)

    def _poke(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    # --- life of the pool ------------------------------------------------------------------------------
    async def start(self, lookup: StoreLookup) -> None:
        """End what dead owners left (members no create took), then fill the pool in the background."""
        self._loop = asyncio.get_running_loop()
        self._lookup = lookup
        await self._reap(lookup)
        self._task = asyncio.create_task(self._run(), name="nbfleet-warm-pool")

    async def close(self) -> None:
        """End every member no create took (they would be orphans of this process)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with self._lock:
            members = [m for queue in self._ready.values() for m in queue]
            for queue in self._ready.values():
                queue.clear()
        await asyncio.gather(*(self._discard(m.spec, m.placement) for m in members))

    def describe(self) -> dict[str, Any]:
        """For ``GET /health``: per (image, flavor) the target, the ready members and each one's RSS."""
        with self._lock:
            ready = {key: list(queue) for key, queue in self._ready.items()}
        pools = []
        for (swr_path, flavor), target in sorted(self.targets.items()):
            members = ready.get((swr_path, flavor), [])
            pools.append(
                {
                    "image": swr_path,
                    "flavor": flavor,
                    "target": target,
                    "ready": len(members),
                    "rss_mib": [_tree_rss_mib(m.placement.pid) for m in members],
                }
            )
        return {"pools": pools, "taken": self.taken}

    async def _reap(self, lookup: StoreLookup) -> None:
        self.records.tidy()
        stale = [record for record in self.records.all() if not record.owner_alive()]
        if not stale:
            return
        stored = (await lookup({record.instance_id for record in stale})).stored
        for record in stale:
            if record.instance_id in stored:
                continue  # a create took it: the reconciler's start claims or replaces it
            adopted = self.records.adopt(record.instance_id)
            if adopted is None:
                continue  # another process of this data dir is removing it
            log.info("warm pool: ending member %s left by a process that is gone", record.instance_id)
            await self._discard(self._spec_of(adopted), adopted.placement)

    def _spec_of(self, record: WarmRecord) -> InstanceSpec:
        return self.spec_for(record.key[0], record.key[1], record.instance_id, "")

    async def _run(self) -> None:
        last_health = time.monotonic()
        while True:
            self._wake.clear()
            try:
                if time.monotonic() - last_health > HEALTH_EVERY_S:
                    await self._drop_dead()
                    last_health = time.monotonic()
                key = self._next_to_fill()
                if key is not None:
                    await self._fill_one(key)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("warm pool: refill failed")
            wait = min([HEALTH_EVERY_S, *(max(0.0, at - time.monotonic()) for at in self._retry_at.values())])
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.05))
            except TimeoutError:
                pass

    def _next_to_fill(self) -> PoolKey | None:
        now = time.monotonic()
        with self._lock:
            short = [
                (len(self._ready[key]) / target, key)
                for key, target in self.targets.items()
                if len(self._ready[key]) < target and self._retry_at.get(key, 0.0) <= now
            ]
        return min(short)[1] if short else None  # the emptiest first: one at a time, each start is CPU-heavy

    async def _fill_one(self, key: PoolKey) -> None:
        spec = self.spec_for(key[0], key[1], str(uuid.uuid4()), str(uuid.uuid4()))
        fit = fit_of(spec)
        started = time.monotonic()
        try:
            # Recorded before it starts (nowhere yet): if this process dies meanwhile, the next one finds
            # the member by its record and removes what was made of it.
            self.records.write(spec.id, key, Placement(), fit)
            placement = await self.runtime.start(spec, _Quiet())
            self.records.write(spec.id, key, placement, fit)
        except asyncio.CancelledError:
            await asyncio.shield(self._discard(spec, None))
            raise
        except Exception as exc:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(RETRY_MAX_S, RETRY_MIN_S * 2 ** (failures - 1))
            self._retry_at[key] = time.monotonic() + delay
            log.warning("warm pool: a member for %s on %s failed to start (%s); next try in %.0f s", *key, exc, delay)
            await asyncio.shield(self._discard(spec, None))
            return
        self._failures.pop(key, None)
        self._retry_at.pop(key, None)
        with self._lock:
            self._ready[key].append(_Member(spec, placement))
        log.info("warm pool: member %s ready for %s on %s in %.2f s", spec.id, *key, time.monotonic() - started)

    async def _drop_dead(self) -> None:
        with self._lock:
            members = [(key, m) for key, queue in self._ready.items() for m in queue]
        for key, member in members:
            if (await self.runtime.observe(member.spec, member.placement)).alive:
                continue
            with self._lock:
                try:
                    self._ready[key].remove(member)
                except ValueError:
                    continue  # taken meanwhile: the claim finds it dead and starts anew
            log.warning("warm pool: member %s died while waiting; replacing it", member.spec.id)
            await asyncio.shield(self._discard(member.spec, member.placement))

    async def _give_back(self, instance_id: str) -> None:
        if self._lookup is not None and instance_id in (await self._lookup({instance_id})).stored:
            log.warning("warm pool: member %s was given back, but its instance was stored; it stays", instance_id)
            return
        record = self.records.adopt(instance_id)
        if record is not None:
            await asyncio.shield(self._discard(self._spec_of(record), record.placement))

    async def _discard(self, spec: InstanceSpec, placement: Placement | None) -> None:
        """End a member and remove all of it. Its record goes last: if removing fails, or this process dies
        midway, the record still names what to remove, and the next process does."""
        storage = self.runtime.storage
        if storage is not None:
            try:
                await storage.detach_all(spec)
            except Exception:
                log.exception("warm pool: could not unmount the /data of member %s", spec.id)
        try:
            await self.runtime.delete(spec, placement)
        except Exception:
            log.exception("warm pool: could not remove member %s; nbfleet's next start tries again", spec.id)
            return
        self.records.remove(spec.id)


def _tree_rss_mib(pid: int | None) -> float | None:
    """Resident memory of the member's process tree (sandbox and Jupyter), MiB."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return round(total / 2**20, 1)


class KeepingMembersMounted:
    """The local runtime's dynamic storage, whose start-up sweep also spares the /data of warm members that
    live processes of this data dir hold (they have no row yet, and a create may take one any moment)."""

    def __init__(self, storage: DynamicStorage, records: WarmRecords):
        self._storage = storage
        self._records = records

    async def attach(self, spec: InstanceSpec, mount: MountSpec) -> None:
        await self._storage.attach(spec, mount)

    async def detach(self, spec: InstanceSpec, mount: MountSpec) -> None:
        await self._storage.detach(spec, mount)

    async def detach_all(self, spec: InstanceSpec) -> None:
        await self._storage.detach_all(spec)

    async def reap(self, known_ids: set[str]) -> list[str]:
        return await self._storage.reap(known_ids | self._records.kept_by_live_owners())
