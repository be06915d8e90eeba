"""The simulated runtime's pretend image engine: its failure rules and what it answers."""

from __future__ import annotations

import asyncio

import pytest

from nbfleet.runtime.base import FlavorLimits, ImageRef, InstanceSpec, Placement, RuntimeFailure
from nbfleet.runtime.simulated import FailureRule, SimulatedRuntime, simulated_size_kb


def test_image_failure_rules():
    rule = FailureRule.parse("image=*/missing/*")
    assert (rule.field, rule.op) == ("image", "pull")
    assert rule.matches_image("swr.example.com/missing/app:1", "pull")
    assert not rule.matches_image("swr.example.com/missing/app:1", "remove")
    commit = FailureRule.parse("name=nosave-*;op=commit")
    assert commit.field == "name" and commit.op == "commit"
    for bad in ("image=*;op=create", "name=x;op=pull", "name=x;op=remove"):
        with pytest.raises(ValueError):
            FailureRule.parse(bad)
    assert simulated_size_kb("a/b:c") == simulated_size_kb("a/b:c") != simulated_size_kb("a/b:d")


def _spec(name: str) -> InstanceSpec:
    return InstanceSpec(
        id="i-1",
        name=name,
        token="t",
        flavor=FlavorLimits("f", 1, 1024),
        image=ImageRef("img", "registry.nbfleet.local/nbfleet/img:1"),
        owner_id="u",
        project_id="p",
    )


def test_the_engine_answers_from_the_address_and_the_rules_alone():
    rules = [
        "image=*/missing/*;op=pull",
        "image=*/headless/*;op=serve",
        "name=nosave-*;op=commit",
        "image=*/stuck/*;op=remove",
    ]
    first, second = SimulatedRuntime(delay=0, failures=rules), SimulatedRuntime(delay=0, failures=rules)

    async def scenario(runtime):
        engine = runtime.images
        found = await engine.inspect("swr.example.com/team/app:1")
        assert await engine.inspect("swr.example.com/missing/app:1") is None
        headless = await engine.inspect("swr.example.com/headless/app:1")
        saved = await engine.commit(_spec("keeper"), Placement(), "registry.nbfleet.local/team/kept:1")
        with pytest.raises(RuntimeFailure):
            await engine.commit(_spec("nosave-1"), Placement(), "registry.nbfleet.local/team/lost:1")
        with pytest.raises(RuntimeFailure):
            await engine.remove("swr.example.com/stuck/app:1")
        await engine.remove("registry.nbfleet.local/team/kept:1")
        return found, headless, saved, engine.committed, engine.removed

    found, headless, saved, committed, removed = asyncio.run(scenario(first))
    assert found.serves == ("NOTEBOOK", "SSH") and found.size_kb == simulated_size_kb(found.swr_path)
    assert headless.serves == ()
    assert saved.size_kb == simulated_size_kb("registry.nbfleet.local/team/kept:1")
    assert committed == ["registry.nbfleet.local/team/kept:1"] and removed == committed
    # another process (a replica, a restart) answers the same without sharing anything
    assert asyncio.run(scenario(second))[:3] == (found, headless, saved)
