"""The warm pool's records and the guards around them, without starting sandboxes (tests/runtime has those).

Each test here is a failure a review found: a record that stopped guarding a member, a host uid freed twice,
a member's /data swept by another process, a member taken over by an instance whose limits differ.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from nbfleet.domain.instances import FlavorLimits, ImageRef, InstanceSpec, Placement
from nbfleet.runtime import warm_pool
from nbfleet.runtime.base import Observation
from nbfleet.runtime.host_uids import HostUids
from nbfleet.runtime.local import LocalRuntime
from nbfleet.runtime.sandbox import Unsandboxed
from nbfleet.runtime.warm_pool import KeepingMembersMounted, WarmRecords, fit_of

KEY = ("swr/nb/py311:1.0", "modelarts.vm.cpu.2u")


def spec(instance_id: str = "0b7c6a2e-0000-4000-8000-000000000001", memory_mb: int = 8192) -> InstanceSpec:
    return InstanceSpec(
        id=instance_id,
        name="",
        token="t",
        flavor=FlavorLimits(KEY[1], 2, memory_mb),
        image=ImageRef("notebook-python3.11", KEY[0], {"python": "3.11", "packages": ["jupyter-server"]}),
        owner_id="",
        project_id="",
        first_start=True,
    )


def test_a_record_is_claimed_once_and_adopted_by_one_process_only(tmp_path):
    records = WarmRecords(tmp_path)
    records.write("m1", KEY, Placement(pid=123), fit_of(spec()))
    adopted = records.adopt("m1")
    assert adopted is not None and adopted.placement.pid == 123
    assert records.holds("m1")  # still recorded (now this process's) until the member is gone
    assert records.all()[0].owner_pid == os.getpid()
    assert records.claim("m1") is not None and records.claim("m1") is None
    assert records.adopt("m1") is None and not records.holds("m1")


def test_records_of_an_earlier_process_with_this_pid_are_stale(tmp_path, monkeypatch):
    records = WarmRecords(tmp_path)
    records.write("m1", KEY, Placement(), {})
    monkeypatch.setattr(warm_pool, "_STARTED_ANY", [False])  # as at the start of a process
    assert records.kept_by_live_owners() == set()
    monkeypatch.setattr(warm_pool, "_STARTED_ANY", [True])  # once it recorded members of its own
    assert records.kept_by_live_owners() == {"m1"}


def test_a_host_uid_is_released_only_by_the_instance_holding_it(tmp_path):
    uids = HostUids(tmp_path, (1_500_000_000, 1_500_000_003))
    first = tmp_path / "instances" / "a"
    first.mkdir(parents=True)
    uid = uids.of(first)
    uids.release(uid, "a")  # a gone
    second = tmp_path / "instances" / "b"
    second.mkdir(parents=True)
    while uids.of(second) != uid:  # b is given the same uid (the range has four)
        (second / "uid").unlink()
    uids.release(uid, "a")  # a cleaned up twice: b keeps its reservation
    assert (tmp_path / "sandbox-uids" / str(uid)).read_text() == "b"


class RecordingStorage:
    def __init__(self):
        self.known: set[str] | None = None

    async def reap(self, known_ids: set[str]) -> list[str]:
        self.known = set(known_ids)
        return []


def test_the_storage_sweep_spares_live_members(tmp_path, monkeypatch):
    monkeypatch.setattr(warm_pool, "_STARTED_ANY", [True])
    records = WarmRecords(tmp_path)
    records.write("member", KEY, Placement(), {})
    storage = RecordingStorage()
    asyncio.run(KeepingMembersMounted(storage, records).reap({"instance"}))  # type: ignore[arg-type]
    assert storage.known == {"instance", "member"}


def test_a_member_started_under_other_limits_is_not_taken_over(tmp_path):
    runtime = LocalRuntime(Path(tmp_path), isolation=Unsandboxed(Path(tmp_path)))
    member = spec()
    runtime.warm_records.write(member.id, KEY, Placement(pid=os.getpid(), socket="/nonexistent"), fit_of(member))
    record = runtime.warm_records.claim(member.id)
    assert record is not None

    async def alive(*_):  # as if its server ran and answered: only the fit decides here
        return Observation(True)

    async def answers(*_):
        return True

    runtime.observe = alive  # type: ignore[method-assign]
    runtime.jupyter.answers = answers  # type: ignore[method-assign]
    assert asyncio.run(runtime._warm_usable(member, record)) is True
    smaller = replace(member, flavor=FlavorLimits(KEY[1], 2, 4096))
    assert asyncio.run(runtime._warm_usable(smaller, record)) is False
    other_image = replace(member, image=replace(member.image, environment={"python": "3.12"}))
    assert asyncio.run(runtime._warm_usable(other_image, record)) is False


@pytest.mark.parametrize("pair", ["a@b@c=1"])
def test_an_entry_splits_at_its_last_at_sign(pair):
    assert warm_pool.parse_targets([pair], {"x": "a@b"}) == {("a@b", "c"): 1}


def test_what_dead_processes_left_between_two_steps_is_put_right(tmp_path):
    records = WarmRecords(tmp_path)
    records.write("m1", KEY, Placement(pid=7), {})
    dead = subprocess.Popen(["true"])
    dead.wait()
    adopted = records.dir / f".m1.adopted.{dead.pid}.1"
    os.rename(records.dir / "m1.json", adopted)  # died after taking the record, before writing it back
    (records.dir / f".m2.staged.{dead.pid}").write_text("{")  # died while writing a record
    (records.dir / f".m3.claimed.{dead.pid}.1").write_text("{}")  # died while claiming
    mine = records.dir / f".m4.claimed.{os.getpid()}.1"
    mine.write_text("{}")  # a live process's step in progress
    records.tidy()
    assert records.holds("m1") and records.all()[0].placement.pid == 7  # found again, as a stale record is
    assert sorted(p.name for p in records.dir.iterdir()) == [mine.name, "m1.json"]
