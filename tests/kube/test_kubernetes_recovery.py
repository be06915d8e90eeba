"""A real ``nbfleet serve --runtime kubernetes`` process against the fake API server, killed with SIGKILL and
started again: what it finds in the cluster and in its store, it finishes, adopts, reports or removes; and the
reasons the cluster gives for a failure reach the instance's ``fail_reason`` through the API."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy import create_engine, text

from ..procs import ServeProcess, ServerRestarts, SignedClient
from .fake_apiserver import FakeKubeApiServer, fail_image_pull_after, run_after, unschedulable_after, wait_until
from .test_kubernetes_runtime import NS, objects

pytestmark = pytest.mark.slow

KINDS = ("pods", "services", "persistentvolumeclaims")


@pytest.fixture
def kube_server(fake_kube: FakeKubeApiServer, jupyters, tmp_path) -> Iterator[Callable[[], ServeProcess]]:
    """Start (and restart: same data dir, store and port) ``nbfleet serve`` on the fake cluster."""
    restarts = ServerRestarts(
        tmp_path / "data",
        "kubernetes",
        {
            "NBFLEET_KUBE_API_URL": fake_kube.url,
            "NBFLEET_KUBE_NAMESPACE": NS,
            "NBFLEET_NOTEBOOK_ROUTING": "path",  # the test reaches Jupyter through 127.0.0.1
            "NBFLEET_CLAIM_SECONDS": "3",
            "NBFLEET_OBSERVE_INTERVAL": "0.3",
        },
    )
    yield restarts.start
    restarts.kill_all()


def client_of(server: ServeProcess) -> SignedClient:
    return SignedClient(server.endpoint, server.admin_creds())


def counts(fake: FakeKubeApiServer, notebook_id: str) -> dict[str, int]:
    return {kind: len(objects(fake, kind, notebook_id)) for kind in KINDS}


def jupyter_status(server: ServeProcess, nb: dict) -> int:
    return httpx.get(
        f"{server.endpoint}/notebooks/{nb['id']}/api/status",
        headers={"Authorization": f"token {nb['token']}"},
        timeout=10,
        trust_env=False,
    ).status_code


def test_kill_minus_nine_mid_create_is_finished_after_restart_without_orphans(fake_kube, kube_server):
    """Killed while its pod waits to be scheduled: the next nbfleet redoes the bring-up (the pod left behind is
    replaced, never doubled), follows the new pod with its watch to RUNNING, and the proxy reaches Jupyter."""
    fake_kube.auto = None  # no kubelet yet: the pod stays Pending
    first = kube_server()
    api = client_of(first)
    nb = api.create("crash-mid-create")
    wait_until(lambda: objects(fake_kube, "pods", nb["id"]), timeout=30)
    stranded = objects(fake_kube, "pods", nb["id"])[0]["metadata"]["uid"]
    assert api.ok("GET", f"/notebooks/{nb['id']}")["status"] == "CREATING"
    first.kill()
    api.close()

    fake_kube.auto = run_after(0.05)  # the cluster schedules again
    second = kube_server()
    api = client_of(second)
    done = api.wait_status(nb["id"], "RUNNING", "CREATE_FAILED", timeout=120)
    assert done["status"] == "RUNNING", done
    assert jupyter_status(second, done) == 200
    assert counts(fake_kube, nb["id"]) == {"pods": 1, "services": 1, "persistentvolumeclaims": 1}
    [pod] = objects(fake_kube, "pods", nb["id"])
    assert pod["metadata"]["uid"] != stranded and pod["status"]["phase"] == "Running"
    assert fake_kube.open_watches >= 1  # the new process watches nbfleet's pods (its liveness cache)

    api.call("DELETE", f"/notebooks/{nb['id']}")
    for kind in KINDS:
        wait_until(lambda kind=kind: objects(fake_kube, kind, nb["id"]) == [], timeout=30)
    api.close()


def test_a_restart_adopts_reports_and_sweeps_what_changed_while_nbfleet_was_down(fake_kube, kube_server):
    """Four instances when nbfleet dies: one runs on (adopted: same pod, no second Jupyter), one's pod is
    OOM-killed meanwhile (ERROR with the reason), one is STOPPED (keeps its volume and Service), and one
    disappears from the store (as after a restore from an older backup: everything of it is removed)."""
    fake_kube.auto = run_after(0.05)
    first = kube_server()
    api = client_of(first)
    ids = {name: api.create(name)["id"] for name in ("runs-on", "killed", "stopped", "forgotten")}
    for notebook_id in ids.values():
        assert api.wait_status(notebook_id, "RUNNING", "CREATE_FAILED", timeout=120)["status"] == "RUNNING"
    api.ok("POST", f"/notebooks/{ids['stopped']}/stop")
    api.wait_status(ids["stopped"], "STOPPED", timeout=60)
    kept_pod = objects(fake_kube, "pods", ids["runs-on"])[0]["metadata"]["uid"]
    first.kill()
    api.close()

    fake_kube.oom_kill(NS, f"nb-{ids['killed']}")
    database = create_engine(first.database_url or f"sqlite:///{first.data_dir / 'nbfleet.db'}")
    with database.begin() as conn:
        conn.execute(text("DELETE FROM notebooks WHERE id = :id"), {"id": ids["forgotten"]})
    database.dispose()

    second = kube_server()
    api = client_of(second)
    for kind in KINDS:
        wait_until(lambda kind=kind: objects(fake_kube, kind, ids["forgotten"]) == [], timeout=30)
    lost = api.wait_status(ids["killed"], "ERROR", timeout=30)
    assert lost["fail_reason"].startswith("OOMKilled"), lost["fail_reason"]

    adopted = api.ok("GET", f"/notebooks/{ids['runs-on']}")
    assert adopted["status"] == "RUNNING" and jupyter_status(second, adopted) == 200
    assert [p["metadata"]["uid"] for p in objects(fake_kube, "pods", ids["runs-on"])] == [kept_pod]
    assert counts(fake_kube, ids["stopped"]) == {"pods": 0, "services": 1, "persistentvolumeclaims": 1}

    # The stopped one starts again on the volume it kept.
    claim = objects(fake_kube, "persistentvolumeclaims", ids["stopped"])[0]["metadata"]["uid"]
    api.ok("POST", f"/notebooks/{ids['stopped']}/start")
    started = api.wait_status(ids["stopped"], "RUNNING", "START_FAILED", timeout=120)
    assert started["status"] == "RUNNING", started
    assert objects(fake_kube, "persistentvolumeclaims", ids["stopped"])[0]["metadata"]["uid"] == claim
    api.close()


def test_an_image_that_cannot_be_pulled_fails_the_create_with_the_clusters_reason(fake_kube, kube_server):
    fake_kube.auto = fail_image_pull_after(0.05)
    api = client_of(kube_server())
    nb = api.create("no-such-image")
    failed = api.wait_status(nb["id"], "CREATE_FAILED", "RUNNING", timeout=60)
    assert failed["status"] == "CREATE_FAILED"
    assert failed["fail_reason"].startswith("ImagePullBackOff"), failed["fail_reason"]
    wait_until(lambda: objects(fake_kube, "pods", nb["id"]) == [], timeout=30)  # the failed pod is removed
    api.call("DELETE", f"/notebooks/{nb['id']}")
    for kind in KINDS:
        wait_until(lambda kind=kind: objects(fake_kube, kind, nb["id"]) == [], timeout=30)
    api.close()


def test_the_clusters_reasons_for_a_failed_start_and_a_lost_pod_reach_fail_reason(fake_kube, kube_server):
    """What the cluster says is what the API shows as ``fail_reason``; the pod's warning events are among the
    instance's events; a later successful start clears the reason."""
    fake_kube.auto = run_after(0.05)
    api = client_of(kube_server())
    nb = api.create("reasons")
    assert api.wait_status(nb["id"], "RUNNING", "CREATE_FAILED", timeout=120)["status"] == "RUNNING"
    api.ok("POST", f"/notebooks/{nb['id']}/stop")
    api.wait_status(nb["id"], "STOPPED", timeout=60)

    fake_kube.auto = unschedulable_after(0.05, "0/3 nodes are available: 3 Insufficient cpu.")
    api.ok("POST", f"/notebooks/{nb['id']}/start")
    refused = api.wait_status(nb["id"], "START_FAILED", "RUNNING", timeout=60)
    assert refused["status"] == "START_FAILED"
    assert refused["fail_reason"] == "Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.", refused
    events = api.ok("GET", f"/notebooks/{nb['id']}/events", {"limit": 50})
    assert "FailedScheduling: 0/3 nodes are available" in json.dumps(events), events
    assert counts(fake_kube, nb["id"]) == {"pods": 0, "services": 1, "persistentvolumeclaims": 1}

    fake_kube.auto = run_after(0.05)
    api.ok("POST", f"/notebooks/{nb['id']}/start")
    running = api.wait_status(nb["id"], "RUNNING", "START_FAILED", timeout=120)
    assert running["status"] == "RUNNING" and running["fail_reason"] is None, running
    fake_kube.evict(NS, f"nb-{nb['id']}", "The node was low on resource: memory.")
    evicted = api.wait_status(nb["id"], "ERROR", timeout=30)
    assert evicted["fail_reason"].startswith("Evicted"), evicted["fail_reason"]
    api.close()
