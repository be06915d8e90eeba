"""The kubernetes runtime end to end against the fake API server (``fake_apiserver.py``): its "kubelet" runs the
pods, and behind every running pod a REAL jupyter-server, started with the command, token and base_url the
runtime put into the pod, answers at the address the pod's Service says."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid

import httpx
import pytest

from nbfleet.domain.instances import FlavorLimits, ImageRef, InstanceSpec, Placement
from nbfleet.domain.model import StepStatus
from nbfleet.runtime import kubernetes as kube
from nbfleet.runtime.base import RuntimeFailure
from nbfleet.runtime.kubernetes import KubernetesRuntime

from ..support import store_lookup
from .fake_apiserver import FakeKubeApiServer, fail_image_pull_after, run_after, unschedulable_after, wait_until

pytestmark = pytest.mark.slow

NS = "nbfleet-test"
PROJECT = "5d1f3c0e9a8b4c7d8e9f0a1b2c3d4e5f"
OWNER = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
FLAVOR = FlavorLimits("modelarts.vm.cpu.2u", 2, 8192)


class Reporter:
    def __init__(self) -> None:
        self.steps: list[tuple[int, StepStatus, str | None]] = []
        self.events: list[tuple[str, str]] = []

    async def step(self, number: int, status: StepStatus, description: str | None = None) -> None:
        self.steps.append((number, status, description))

    async def event(self, kind: str, message: str) -> None:
        self.events.append((kind, message))

    def completed(self) -> list[int]:
        return [n for n, status, _ in self.steps if status == StepStatus.COMPLETED]


def make_spec(token: str | None = None) -> InstanceSpec:
    return InstanceSpec(
        id=str(uuid.uuid4()),
        name="nb",
        token=token or secrets.token_hex(16),
        flavor=FLAVOR,
        image=ImageRef("notebook-python3.11", "registry.example/nbfleet/notebook-python3.11:1.0"),
        owner_id=OWNER,
        project_id=PROJECT,
        volume_gb=10,
    )


@pytest.fixture
async def runtime(fake_kube: FakeKubeApiServer):
    rt = KubernetesRuntime(fake_kube.api_client(), namespace=NS, ready_timeout=60, stop_grace=1)
    yield rt
    await rt.close()


def objects(fake: FakeKubeApiServer, plural: str, instance_id: str) -> list[dict]:
    return fake.objects(plural, NS, label_selector=f"nbfleet.io/instance={instance_id}")


async def status(placement: Placement, spec: InstanceSpec, base_url: str = "/") -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await client.get(
            f"http://{placement.host}:{placement.port}{base_url}api/status",
            headers={"Authorization": f"token {spec.token}"},
        )


async def test_start_stop_start_delete(fake_kube, jupyters, runtime):
    fake_kube.auto = run_after(0.05)
    spec = make_spec()
    reporter = Reporter()
    placement = await runtime.start(spec, reporter)

    # Where the runtime says, the real Jupyter answers the instance's token (and only it).
    service = fake_kube.get("services", NS, f"nb-{spec.id}")
    assert (placement.host, placement.port) == (service["spec"]["clusterIP"], service["spec"]["ports"][0]["port"])
    assert (await status(placement, spec)).status_code == 200
    async with httpx.AsyncClient(trust_env=False) as client:
        denied = await client.get(f"http://{placement.host}:{placement.port}/api/status")
    assert denied.status_code == 403
    pod = fake_kube.get("pods", NS, f"nb-{spec.id}")
    assert placement.details == {
        "namespace": NS,
        "pod": f"nb-{spec.id}",
        "service": f"nb-{spec.id}",
        "uid": pod["metadata"]["uid"],
    }
    assert reporter.completed() == [1, 2, 3, 4]
    assert not [s for s in reporter.steps if s[1] == StepStatus.FAILED]
    # Jupyter was started with the token and base_url the runtime put into the pod.
    command = jupyters.commands[f"nb-{spec.id}"]
    assert "--ServerApp.base_url=/" in command
    # The readiness wait watched the pod (by name, from a resourceVersion), it did not poll it.
    watches = [path for method, path in fake_kube.requests if "watch=true" in path.lower()]
    assert any(f"metadata.name%3Dnb-{spec.id}" in path or f"metadata.name=nb-{spec.id}" in path for path in watches)

    claim = fake_kube.get("persistentvolumeclaims", NS, f"nb-{spec.id}-work")
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    for kind in ("pods", "services"):
        (obj,) = objects(fake_kube, kind, spec.id)
        assert obj["metadata"]["ownerReferences"][0]["uid"] == claim["metadata"]["uid"]
        assert obj["metadata"]["labels"]["nbfleet.io/project"] == PROJECT
        assert obj["metadata"]["labels"]["nbfleet.io/owner"] == OWNER
    assert pod["spec"]["restartPolicy"] == "Never"

    assert (await runtime.observe(spec, placement)).alive
    activity = await runtime.activity(spec, placement)
    assert activity is not None and activity.busy is False and activity.last_activity_ms

    # Stop: the pod goes, the claim (and the Service) stay.
    await runtime.stop(spec, placement)
    assert objects(fake_kube, "pods", spec.id) == []
    assert objects(fake_kube, "persistentvolumeclaims", spec.id)[0]["metadata"]["uid"] == claim["metadata"]["uid"]
    assert len(objects(fake_kube, "services", spec.id)) == 1
    observed = await runtime.observe(spec, placement)
    assert not observed.alive and "gone" in (observed.reason or "")
    await runtime.stop(spec, placement)  # idempotent

    # Start again: a new pod, the same volume.
    again = await runtime.start(spec, Reporter())
    assert (await status(again, spec)).status_code == 200
    assert fake_kube.get("pods", NS, f"nb-{spec.id}")["metadata"]["uid"] != pod["metadata"]["uid"]
    assert (
        fake_kube.get("persistentvolumeclaims", NS, f"nb-{spec.id}-work")["metadata"]["uid"]
        == (claim["metadata"]["uid"])
    )

    await runtime.delete(spec, again)
    for kind in ("pods", "services", "persistentvolumeclaims"):
        assert objects(fake_kube, kind, spec.id) == []
    await runtime.delete(spec, again)  # idempotent
    await asyncio.to_thread(wait_until, lambda: not jupyters.processes, 10)


async def test_a_start_after_a_crash_replaces_the_pod_left_behind(fake_kube, jupyters, runtime):
    fake_kube.auto = run_after(0.05)
    spec = make_spec()
    first = await runtime.start(spec, Reporter())
    old = fake_kube.get("pods", NS, f"nb-{spec.id}")["metadata"]["uid"]
    second = await runtime.start(spec, Reporter())  # as the reconciler redoes a start after a crash
    assert fake_kube.get("pods", NS, f"nb-{spec.id}")["metadata"]["uid"] != old
    assert (await status(second, spec)).status_code == 200
    assert first.details["uid"] != second.details["uid"]
    await runtime.delete(spec, second)


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull"])
async def test_an_image_that_cannot_be_pulled_fails_the_start(fake_kube, runtime, reason):
    fake_kube.auto = fail_image_pull_after(0.05, reason)
    spec = make_spec()
    reporter = Reporter()
    with pytest.raises(RuntimeFailure) as failure:
        await runtime.start(spec, reporter)
    assert failure.value.reason.startswith(f"{reason}: ")
    assert "registry.example/nbfleet/notebook-python3.11:1.0" in failure.value.reason
    assert failure.value.step == 2
    assert (2, StepStatus.FAILED, failure.value.reason) in reporter.steps
    assert reporter.completed() == [1]
    # The kubelet's warnings are told; nothing is left running; the volume stays.
    assert any(kind == "kubernetes" and "Failed to pull image" in text for kind, text in reporter.events)
    assert objects(fake_kube, "pods", spec.id) == []
    assert len(objects(fake_kube, "persistentvolumeclaims", spec.id)) == 1


async def test_an_unschedulable_pod_fails_the_start(fake_kube, runtime):
    fake_kube.auto = unschedulable_after(0.05, "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    spec = make_spec()
    reporter = Reporter()
    with pytest.raises(RuntimeFailure) as failure:
        await runtime.start(spec, reporter)
    assert failure.value.reason == "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    assert failure.value.step == 1
    assert reporter.completed() == []
    assert any(kind == "kubernetes" and text.startswith("FailedScheduling") for kind, text in reporter.events)
    assert objects(fake_kube, "pods", spec.id) == []


async def test_oom_killed_while_starting_fails_the_start(fake_kube, runtime):
    def run_then_oom(fake: FakeKubeApiServer, pod: dict) -> None:  # no Jupyter answers: it dies first
        name = pod["metadata"]["name"]
        if fake.sleep(0.05):
            fake.run(NS, name)
        if fake.sleep(0.3):
            fake.oom_kill(NS, name)

    fake_kube.auto = run_then_oom
    spec = make_spec()
    reporter = Reporter()
    with pytest.raises(RuntimeFailure) as failure:
        await runtime.start(spec, reporter)
    assert failure.value.reason.startswith("OOMKilled")
    assert "8192 MiB" in failure.value.reason
    assert failure.value.step == 4
    assert reporter.completed() == [1, 2, 3]
    assert objects(fake_kube, "pods", spec.id) == []


async def test_oom_killed_after_running_is_observed(fake_kube, jupyters, runtime):
    fake_kube.auto = run_after(0.05)
    spec = make_spec()
    placement = await runtime.start(spec, Reporter())
    assert (await runtime.observe(spec, placement)).alive
    fake_kube.oom_kill(NS, f"nb-{spec.id}")
    # observe reads the watched pod cache, which hears of the end within moments (the reconciler observes
    # every NBFLEET_OBSERVE_INTERVAL seconds).
    deadline = time.monotonic() + 10
    while (observed := await runtime.observe(spec, placement)).alive and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not observed.alive
    assert (observed.reason or "").startswith("OOMKilled")
    await runtime.stop(spec, placement)  # what the reconciler does with a lost instance
    assert objects(fake_kube, "pods", spec.id) == []


async def test_the_time_limit_of_a_start(fake_kube):
    """A pod that never runs fails the start after ready_timeout, with what the cluster said about it."""
    rt = KubernetesRuntime(fake_kube.api_client(), namespace=NS, ready_timeout=1.0, stop_grace=1)
    try:
        spec = make_spec()
        with pytest.raises(RuntimeFailure) as failure:
            await rt.start(spec, Reporter())
        assert failure.value.step == 1
        assert "not scheduled within 1 s (Pending)" in failure.value.reason
        assert objects(fake_kube, "pods", spec.id) == []
    finally:
        await rt.close()


async def test_adopt_after_a_restart_and_reap_orphans(fake_kube, jupyters, runtime):
    fake_kube.auto = run_after(0.05)
    kept, orphan = make_spec(), make_spec()
    placement = await runtime.start(kept, Reporter())
    orphan_placement = await runtime.start(orphan, Reporter())
    await runtime.stop(orphan, orphan_placement)
    orphan_placement = await runtime.start(orphan, Reporter())

    # nbfleet restarts: a new runtime finds what runs.
    restarted = KubernetesRuntime(fake_kube.api_client(), namespace=NS, ready_timeout=60, stop_grace=1)
    try:
        # The store says the orphan is STOPPED (it was stopped while nbfleet was down): its pod goes, its
        # volume and Service stay, since a stopped instance keeps them.
        assert await restarted.reap_orphans(store_lookup(live=[kept.id], stopped=[orphan.id])) == [orphan.id]
        assert objects(fake_kube, "pods", orphan.id) == []
        assert len(objects(fake_kube, "persistentvolumeclaims", orphan.id)) == 1
        assert len(objects(fake_kube, "services", orphan.id)) == 1
        assert len(objects(fake_kube, "pods", kept.id)) == 1
        assert await restarted.reap_orphans(store_lookup(live=[kept.id], stopped=[orphan.id])) == []
        # Then the store no longer holds it at all (deleted while nbfleet was down): everything of it goes.
        assert await restarted.reap_orphans(store_lookup(live=[kept.id])) == [orphan.id]
        for kind in ("persistentvolumeclaims", "services"):
            wait_until(lambda kind=kind: objects(fake_kube, kind, orphan.id) == [], timeout=10)
        assert len(objects(fake_kube, "persistentvolumeclaims", kept.id)) == 1

        assert await restarted.adopt(kept, placement)
        assert not await restarted.adopt(make_spec(), placement)  # no such pod
        assert not await restarted.adopt(InstanceSpec(**{**kept.__dict__, "token": "wrong"}), placement)
        assert not await restarted.adopt(kept, Placement(host="10.0.0.1", port=8888))  # not where it is
        assert not await restarted.adopt(kept, None)
        assert not await restarted.adopt(orphan, orphan_placement)  # reaped

        # The background pod cache: once synced, an observation of a live pod costs no request.
        # (waited for in a thread: the cache is filled on this event loop)
        await asyncio.to_thread(wait_until, lambda: restarted._cache_synced and f"nb-{kept.id}" in restarted._cache, 10)
        before = len(fake_kube.requests)
        assert (await restarted.observe(kept, placement)).alive
        assert len(fake_kube.requests) == before
    finally:
        await restarted.close()
    await runtime.delete(kept, placement)
    await runtime.delete(orphan, orphan_placement)


async def test_a_watch_relists_after_410_gone(fake_kube):
    """A watch resumed from a resourceVersion the server has forgotten (410 Gone) lists anew, then watches on
    from the list's resourceVersion."""
    rt = KubernetesRuntime(fake_kube.api_client(), namespace=NS, ready_timeout=30, stop_grace=1, watch_pods=False)
    spec = make_spec()
    claim = fake_kube.create("persistentvolumeclaims", NS, rt.objects.claim(spec))
    fake_kube.create("pods", NS, rt.objects.pod(spec, claim))
    fake_kube.run(NS, f"nb-{spec.id}")
    too_old = str(fake_kube.resource_version - 1)
    fake_kube.compact()
    seen: dict[str, dict | None] = {}
    listings: list[set[str]] = []
    watch = kube._Watch(
        rt,
        {"label_selector": "app.kubernetes.io/managed-by=nbfleet"},
        seen.__setitem__,
        on_list=listings.append,
        resource_version=too_old,
    )
    watch.start()
    try:
        await asyncio.to_thread(wait_until, lambda: listings, 10)
        assert listings[0] == {f"nb-{spec.id}"}
        assert kube.pod_state(seen[f"nb-{spec.id}"]).alive
        fake_kube.oom_kill(NS, f"nb-{spec.id}")
        await asyncio.to_thread(
            wait_until, lambda: (kube.pod_state(seen.get(f"nb-{spec.id}")).failure or "").startswith("OOMKilled"), 10
        )
        fake_kube.delete("pods", NS, f"nb-{spec.id}")
        await asyncio.to_thread(wait_until, lambda: seen.get(f"nb-{spec.id}", {}) is None, 10)
        assert len(listings) == 1  # one relist, then the watch followed
    finally:
        watch.stop()
        await rt.close()


async def test_stop_waits_for_a_graceful_termination(fake_kube, jupyters):
    fake_kube.pod_termination_seconds = 0.5
    fake_kube.auto = run_after(0.05)
    rt = KubernetesRuntime(fake_kube.api_client(), namespace=NS, ready_timeout=60, stop_grace=5)
    try:
        spec = make_spec()
        placement = await rt.start(spec, Reporter())
        started = time.monotonic()
        await rt.stop(spec, placement)
        assert objects(fake_kube, "pods", spec.id) == []  # gone, not Terminating, when stop returns
        assert time.monotonic() - started >= 0.4
        again = await rt.start(spec, Reporter())  # the name is free again
        assert (await status(again, spec)).status_code == 200
        await rt.delete(spec, again)
    finally:
        await rt.close()
