"""The simulated runtime: the same lifecycle as a real one, no processes, deterministic timing.

Each action_progress step takes ``delay`` seconds. Failure rules make chosen instances fail at a
chosen step, e.g. ``name=fail-*;step=3`` or ``flavor=modelarts.vm.cpu.8u;step=2;op=start``.
"""
from __future__ import annotations

import asyncio
import fnmatch
from dataclasses import dataclass

from ..domain.model import STEP_DESCRIPTIONS, StepStatus
from .base import Activity, FlavorLimits, InstanceSpec, Observation, Placement, Reporter, RuntimeFailure


@dataclass(frozen=True)
class FailureRule:
    """Fail instances whose name (or flavor) matches ``pattern`` at ``step`` of ``op``."""

    field: str        # "name" or "flavor"
    pattern: str
    step: int
    op: str           # "create", "start", "any" (create and start), "delete", "stop"

    @classmethod
    def parse(cls, text: str) -> "FailureRule":
        parts = dict(item.split("=", 1) for item in text.split(";") if "=" in item)
        field = "name" if "name" in parts else "flavor" if "flavor" in parts else None
        if field is None:
            raise ValueError(f"failure rule {text!r} needs name=<glob> or flavor=<glob>")
        step = int(parts.get("step", "4"))
        op = parts.get("op", "any")
        if op not in ("create", "start", "any", "delete", "stop") or not 1 <= step <= 4:
            raise ValueError(f"failure rule {text!r}: op must be create|start|any|delete|stop, step 1-4")
        return cls(field, parts[field], step, op)

    def matches(self, spec: InstanceSpec, op: str) -> bool:
        value = spec.name if self.field == "name" else spec.flavor.id
        op_ok = self.op == op or (self.op == "any" and op in ("create", "start"))
        return op_ok and fnmatch.fnmatchcase(value, self.pattern)


class SimulatedRuntime:
    name = "simulated"
    observes = False  # nothing runs, so there is nothing that could die behind the store's back

    def __init__(self, delay: float = 2.0, failures: list[str] | None = None):
        self.delay = delay
        self.rules = [FailureRule.parse(r) for r in failures or []]
        self.started: dict[str, int] = {}   # instance id -> times started, for tests that count starts

    def isolation(self) -> dict:
        return {"mechanism": "none", "note": "simulated runtime: no notebook code runs"}

    def _rule(self, spec: InstanceSpec, op: str) -> FailureRule | None:
        return next((r for r in self.rules if r.matches(spec, op)), None)

    async def start(self, spec: InstanceSpec, reporter: Reporter) -> Placement:
        rule = self._rule(spec, "create" if spec.first_start else "start")
        for number, text in STEP_DESCRIPTIONS.items():
            await reporter.step(number, StepStatus.PROCESSING, text)
            if self.delay:
                await asyncio.sleep(self.delay)
            if rule is not None and rule.step == number:
                reason = f"simulated failure at step {number} ({text.lower()})"
                await reporter.step(number, StepStatus.FAILED, reason)
                raise RuntimeFailure(reason, number)
            await reporter.step(number, StepStatus.COMPLETED, text)
        self.started[spec.id] = self.started.get(spec.id, 0) + 1
        return Placement(host="127.0.0.1", pid=None, details={"runtime": "simulated"})

    async def stop(self, spec: InstanceSpec, placement: Placement | None) -> None:
        if self._rule(spec, "stop") is not None:
            raise RuntimeFailure("simulated failure while stopping")
        if self.delay:
            await asyncio.sleep(self.delay)

    async def delete(self, spec: InstanceSpec, placement: Placement | None) -> None:
        if self._rule(spec, "delete") is not None:
            raise RuntimeFailure("simulated failure while releasing resources")
        if self.delay:
            await asyncio.sleep(self.delay)

    async def observe(self, spec: InstanceSpec, placement: Placement | None) -> Observation:
        return Observation(True)

    async def adopt(self, spec: InstanceSpec, placement: Placement | None) -> bool:
        return True

    async def activity(self, spec: InstanceSpec, placement: Placement) -> Activity | None:
        return None

    async def reap_orphans(self, known_ids: set[str]) -> list[str]:
        return []

    def has_capacity(self, flavor: FlavorLimits) -> bool:
        return True

    async def close(self) -> None:
        return None
