"""The simulated runtime: the same lifecycle as a real one, no processes, deterministic timing.

Each action_progress step takes ``delay`` seconds. Failure rules make chosen instances fail at a
chosen step, e.g. ``name=fail-*;step=3`` or ``flavor=modelarts.vm.cpu.8u;step=2;op=start``, and chosen
images misbehave in the pretend image engine (``SimulatedImages``): ``image=<glob of swr_path>`` with
``op=pull`` (the engine does not have it and cannot pull it), ``op=serve`` (it has it, but it runs neither
Jupyter nor SSH), ``op=commit`` (saving an instance as that image fails; ``name=<glob>;op=commit`` fails
the saves of chosen instances) or ``op=remove`` (removing its content fails).
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..clock import SystemClock
from ..domain.instances import FlavorLimits, InstanceSpec, MountSpec, Placement
from ..domain.model import STEP_DESCRIPTIONS, StepStatus
from .base import (
    Activity,
    DynamicStorage,
    EngineImage,
    ImageEngine,
    Observation,
    Reporter,
    RuntimeFailure,
    StoreLookup,
)

INSTANCE_OPS = ("create", "start", "any", "delete", "stop", "commit", "mount")
IMAGE_OPS = ("pull", "serve", "commit", "remove")


@dataclass(frozen=True)
class FailureRule:
    """Fail instances whose name (or flavor) matches ``pattern`` at ``step`` of ``op``, or the engine's
    work on images whose ``swr_path`` matches it."""

    field: str  # "name", "flavor" or "image"
    pattern: str
    step: int
    op: str  # "create", "start", "any" (create and start), "delete", "stop", "commit"; images:
    #                   "pull", "serve", "commit", "remove"

    @classmethod
    def parse(cls, text: str) -> FailureRule:
        parts = dict(item.split("=", 1) for item in text.split(";") if "=" in item)
        field = next((f for f in ("name", "flavor", "image") if f in parts), None)
        if field is None:
            raise ValueError(f"failure rule {text!r} needs name=<glob>, flavor=<glob> or image=<glob>")
        step = int(parts.get("step", "4"))
        op = parts.get("op", "pull" if field == "image" else "any")
        allowed = IMAGE_OPS if field == "image" else INSTANCE_OPS
        if op not in allowed or not 1 <= step <= 4:
            raise ValueError(f"failure rule {text!r}: op must be {'|'.join(allowed)}, step 1-4")
        return cls(field, parts[field], step, op)

    def matches(self, spec: InstanceSpec, op: str) -> bool:
        if self.field == "image":
            return False
        value = spec.name if self.field == "name" else spec.flavor.id
        op_ok = self.op == op or (self.op == "any" and op in ("create", "start"))
        return op_ok and fnmatch.fnmatchcase(value, self.pattern)

    def matches_image(self, swr_path: str, op: str) -> bool:
        return self.field == "image" and self.op == op and fnmatch.fnmatchcase(swr_path, self.pattern)


@dataclass
class ScriptedFailure:
    """A failure a test asked for (``nbfleet.testing``'s ``fail_next``): the next ``count`` times ``op`` runs
    for an instance whose name matches ``name``, it fails at ``step`` with ``reason``."""

    op: str
    reason: str
    name: str = "*"
    step: int = 4
    count: int = 1
    used: int = field(default=0)

    def __post_init__(self) -> None:
        if self.op not in INSTANCE_OPS or self.op == "any":
            raise ValueError(f"op must be one of {', '.join(o for o in INSTANCE_OPS if o != 'any')}")
        if not 1 <= self.step <= 4:
            raise ValueError("step must be 1-4")
        if self.count < 1:
            raise ValueError("count must be at least 1")

    def take(self, spec: InstanceSpec, op: str) -> bool:
        """True (and one use fewer) if this failure applies to ``op`` on ``spec`` now."""
        if self.used >= self.count or self.op != op or not fnmatch.fnmatchcase(spec.name, self.name):
            return False
        self.used += 1
        return True


def simulated_size_kb(swr_path: str) -> int:
    """A size between 1 and 2 GiB that depends on the address alone, so every replica reports the same."""
    return 1024 * 1024 + int(hashlib.sha256(swr_path.encode()).hexdigest()[:8], 16) % (1024 * 1024)


class SimulatedImages:
    """A pretend image engine (``ImageEngine``) that remembers nothing.

    What it answers is a function of the image's address and the failure rules: every image exists (as
    if any registry could be pulled from), serves NOTEBOOK and SSH, and has ``simulated_size_kb``, unless
    a rule says otherwise. So replicas sharing a store, or a process after a restart, give the same
    answers without sharing any memory; what nbfleet registered or saved is recorded in the store, which
    they do share. The one thing this cannot show is content that was removed: asked again about it, the
    engine has it (a real engine would pull it again from a registry, if one had it).
    A save takes as long as a start (four ``delay`` steps); a removal one step.
    """

    def __init__(self, runtime: SimulatedRuntime):
        self.runtime = runtime
        self.committed: list[str] = []  # for tests: what was saved and removed, by this process
        self.removed: list[str] = []

    def _rule(self, swr_path: str, op: str) -> FailureRule | None:
        return next((r for r in self.runtime.rules if r.matches_image(swr_path, op)), None)

    async def inspect(self, swr_path: str) -> EngineImage | None:
        if self._rule(swr_path, "pull") is not None:
            return None
        serves = () if self._rule(swr_path, "serve") is not None else ("NOTEBOOK", "SSH")
        return EngineImage(swr_path, size_kb=simulated_size_kb(swr_path), serves=serves)

    async def commit(self, spec: InstanceSpec, placement: Placement, swr_path: str) -> EngineImage:
        scripted = self.runtime._scripted(spec, "commit")
        ruled = self._rule(swr_path, "commit") or self.runtime._rule(spec, "commit")
        fails = scripted is not None or ruled is not None
        for half in range(2):
            await self.runtime.pause(2)
            if fails and half == 0:
                raise RuntimeFailure(scripted or f"simulated failure while saving {spec.name} as {swr_path}")
        self.committed.append(swr_path)
        return EngineImage(swr_path, size_kb=simulated_size_kb(swr_path), serves=("NOTEBOOK", "SSH"))

    async def remove(self, swr_path: str) -> None:
        if self._rule(swr_path, "remove") is not None:
            raise RuntimeFailure(f"simulated failure while removing {swr_path}")
        await self.runtime.pause(1)
        self.removed.append(swr_path)


class SimulatedStorage:
    """Pretend dynamic mounts: each attach or detach takes one ``delay`` step and succeeds, unless a rule
    ``name=<glob of instance name>;op=mount`` fails the instance's mounts. Nothing is mounted anywhere."""

    def __init__(self, runtime: SimulatedRuntime):
        self.runtime = runtime
        self.mounted: dict[str, set[str]] = {}  # for tests: instance id -> mount ids, in this process

    async def attach(self, spec: InstanceSpec, mount: MountSpec) -> None:
        await self.runtime.pause(1)
        scripted = self.runtime._scripted(spec, "mount")
        if scripted is not None or self.runtime._rule(spec, "mount") is not None:
            raise RuntimeFailure(scripted or f"simulated failure while mounting {mount.uri}")
        self.mounted.setdefault(spec.id, set()).add(mount.id)

    async def detach(self, spec: InstanceSpec, mount: MountSpec) -> None:
        await self.runtime.pause(1)
        self.mounted.get(spec.id, set()).discard(mount.id)

    async def detach_all(self, spec: InstanceSpec) -> None:
        self.mounted.pop(spec.id, None)

    async def reap(self, known_ids: set[str]) -> list[str]:
        gone = [notebook_id for notebook_id in self.mounted if notebook_id not in known_ids]
        for notebook_id in gone:
            self.mounted.pop(notebook_id)
        return gone


class SimulatedRuntime:
    """``delay`` seconds per step, on ``clock`` (a test's clock makes the steps wait for its time).

    For ``nbfleet.testing``, ``observes`` makes instances that a test declared crashed (``crash``) be found
    dead by the reconciler's liveness check (ERROR), and ``reports_activity`` answers the idle check with
    what the test declared (``set_activity``; by default idle since the start), so IDLE leases stop
    instances. Both are off for ``serve --runtime simulated``: at a million instances there is nothing to
    gain from probing rows that run nothing.
    """

    name = "simulated"
    observes = False  # nothing runs, so there is nothing that could die behind the store's back
    reports_activity = False  # no kernels, so nothing is ever idle

    def __init__(
        self,
        delay: float = 2.0,
        failures: list[str] | None = None,
        *,
        clock: SystemClock | None = None,
        observes: bool | None = None,
        reports_activity: bool | None = None,
    ):
        self.delay = delay
        self.clock = clock or SystemClock()
        if observes is not None:  # else the class's (a test's subclass may observe)
            self.observes = observes
        if reports_activity is not None:
            self.reports_activity = reports_activity
        self.rules = [FailureRule.parse(r) for r in failures or []]
        self.scripted: list[ScriptedFailure] = []
        self.crashed: dict[str, str] = {}  # instance id -> why it died (a test's ``crash``)
        self.activity_of: dict[str, Activity] = {}  # instance id -> what a test said it does
        self.started: dict[str, int] = {}  # instance id -> times started, for tests that count starts
        self.started_from: dict[str, str] = {}  # instance id -> the swr_path of its last start
        self.images: ImageEngine | None = SimulatedImages(self)
        self.storage: DynamicStorage | None = SimulatedStorage(self)

    async def pause(self, steps: int = 1) -> None:
        if self.delay:
            await self.clock.sleep(self.delay * steps)

    def isolation(self) -> dict[str, Any]:
        return {"mechanism": "none", "note": "simulated runtime: no notebook code runs"}

    def _rule(self, spec: InstanceSpec, op: str) -> FailureRule | None:
        return next((r for r in self.rules if r.matches(spec, op)), None)

    def _take_scripted(self, spec: InstanceSpec, op: str) -> ScriptedFailure | None:
        """The scripted failure of ``op`` that applies to ``spec`` now (one of its uses taken), if any."""
        for failure in self.scripted:
            if failure.take(spec, op):
                self.scripted = [f for f in self.scripted if f.used < f.count]
                return failure
        return None

    def _scripted(self, spec: InstanceSpec, op: str) -> str | None:
        failure = self._take_scripted(spec, op)
        return None if failure is None else failure.reason

    def _failure_at(self, spec: InstanceSpec, op: str) -> tuple[int, str] | None:
        """(step, reason) at which this bring-up fails, if it does."""
        scripted = self._take_scripted(spec, op)
        if scripted is not None:
            return scripted.step, scripted.reason
        rule = self._rule(spec, op)
        if rule is not None:
            return rule.step, f"simulated failure at step {rule.step} ({STEP_DESCRIPTIONS[rule.step].lower()})"
        return None

    async def start(self, spec: InstanceSpec, reporter: Reporter) -> Placement:
        failure = self._failure_at(spec, "create" if spec.first_start else "start")
        self.crashed.pop(spec.id, None)
        self.activity_of.pop(spec.id, None)
        for number, text in STEP_DESCRIPTIONS.items():
            await reporter.step(number, StepStatus.PROCESSING, text)
            await self.pause(1)
            if failure is not None and failure[0] == number:
                await reporter.step(number, StepStatus.FAILED, failure[1])
                raise RuntimeFailure(failure[1], number)
            await reporter.step(number, StepStatus.COMPLETED, text)
        self.started[spec.id] = self.started.get(spec.id, 0) + 1
        self.started_from[spec.id] = spec.image.swr_path
        return Placement(host="127.0.0.1", pid=None, details={"runtime": "simulated"})

    async def stop(self, spec: InstanceSpec, placement: Placement | None) -> None:
        if self._rule(spec, "stop") is not None:  # a standing rule fails the clean-up before a start too
            raise RuntimeFailure("simulated failure while stopping")
        if placement is None or self.crashed.pop(spec.id, None) is not None:
            return  # nothing runs (the clean-up before a start; a crashed instance): nothing to stop, no time spent
        scripted = self._scripted(spec, "stop")  # "the next stop" is one of something that runs
        if scripted is not None:
            raise RuntimeFailure(scripted)
        await self.pause(1)

    async def delete(self, spec: InstanceSpec, placement: Placement | None) -> None:
        scripted = self._scripted(spec, "delete")
        if scripted is not None or self._rule(spec, "delete") is not None:
            raise RuntimeFailure(scripted or "simulated failure while releasing resources")
        await self.pause(1)

    async def observe(self, spec: InstanceSpec, placement: Placement | None) -> Observation:
        reason = self.crashed.get(spec.id)
        return Observation(True) if reason is None else Observation(False, reason)

    async def adopt(self, spec: InstanceSpec, placement: Placement | None) -> bool:
        return spec.id not in self.crashed

    async def activity(self, spec: InstanceSpec, placement: Placement) -> Activity | None:
        if not self.reports_activity:
            return None
        # Nothing runs, so unless a test said otherwise the instance has been idle since it started.
        return self.activity_of.get(spec.id, Activity(last_activity_ms=None, busy=False, detail="simulated"))

    async def reap_orphans(self, lookup: StoreLookup) -> list[str]:
        return []

    def has_capacity(self, flavor: FlavorLimits) -> bool:
        return True

    async def close(self) -> None:
        return None
