"""Three ``nbfleet serve --runtime kubernetes`` replicas on one PostgreSQL database and one (fake) cluster, under
a storm of concurrent calls spread over all of them: every request is carried out once, and afterwards the
cluster holds exactly what the store says — one pod per running instance (a real jupyter-server behind
each), a claim and a Service per instance, nothing of a deleted one, no pod started twice."""

from __future__ import annotations

import time

import httpx
import pytest

from ..kube.conftest import fake_kube, jupyters  # noqa: F401 (fixtures, used by name)
from ..kube.fake_apiserver import FakeKubeApiServer, run_after, wait_until
from ..kube.test_kubernetes_runtime import NS
from .conftest import check_converged, wait_settled
from .storm import INTENT_OF, Storm, create_many, intents_in_store, schedulers

pytestmark = pytest.mark.slow


def cluster_by_instance(fake: FakeKubeApiServer) -> dict[str, dict[str, list[dict]]]:
    """nbfleet's objects in the namespace: instance id → kind → objects."""
    found: dict[str, dict[str, list[dict]]] = {}
    for kind in ("pods", "services", "persistentvolumeclaims"):
        for item in fake.objects(kind, NS, label_selector="app.kubernetes.io/managed-by=nbfleet"):
            instance = item["metadata"]["labels"]["nbfleet.io/instance"]
            found.setdefault(instance, {}).setdefault(kind, []).append(item)
    return found


def test_replica_storm_on_the_kubernetes_runtime(pg_db, fleet_factory, fake_kube, jupyters):  # noqa: F811
    fake_kube.auto = run_after(0.05)
    started = time.monotonic()
    fleet = fleet_factory(
        pg_db.url,
        3,
        runtime="kubernetes",
        env={
            "NBFLEET_KUBE_API_URL": fake_kube.url,
            "NBFLEET_KUBE_NAMESPACE": NS,
            "NBFLEET_NOTEBOOK_ROUTING": "path",
        },
    )
    ids = create_many(fleet, 8, "kstorm")
    client = fleet.client(0)
    for notebook_id in ids:  # up first, so that the storm's stops and deletes meet running instances
        assert client.wait_status(notebook_id, "RUNNING", "CREATE_FAILED", timeout=120)["status"] == "RUNNING"
    client.close()
    # Paced: every start is a real Jupyter on this machine, and a call on an instance still in a transition
    # is only refused (6357); the pause lets transitions end between a worker's calls.
    storm = Storm(fleet, ids, calls=90, workers=6, seed=3, pause=0.4)
    storm.run()
    storm_seconds = time.monotonic() - started
    settle = wait_settled(pg_db, timeout=180)

    tally = storm.tally
    assert not tally.bad, f"{len(tally.bad)} bad answers, e.g. {tally.bad[:5]}\n{fleet.logs()}"
    result = check_converged(pg_db, max_schedules=1)
    stored = intents_in_store(pg_db)
    for (notebook_id, op), n in tally.accepted.items():
        assert stored.get((notebook_id, INTENT_OF[op]), 0) == n, (notebook_id, op, n)
    assert len(schedulers(pg_db)) >= 2, schedulers(pg_db)  # the work was spread over the replicas

    # The cluster is what the store says.
    rows = dict(pg_db.rows("SELECT id, status FROM notebooks"))
    running = {i for i, status in rows.items() if status == "RUNNING"}
    assert set(rows.values()) <= {"RUNNING", "STOPPED"}, rows
    cluster = cluster_by_instance(fake_kube)
    assert set(cluster) == set(rows), f"objects of deleted instances: {set(cluster) - set(rows)}"
    for notebook_id, status in rows.items():
        kinds = cluster[notebook_id]
        assert len(kinds.get("persistentvolumeclaims", [])) == 1 and len(kinds.get("services", [])) == 1, kinds
        pods = kinds.get("pods", [])
        if status == "RUNNING":
            assert [p["status"]["phase"] for p in pods] == ["Running"], (notebook_id, pods)
        else:
            assert pods == [], (notebook_id, status, pods)
    # One real Jupyter per running instance: none was started twice or left behind by a stop.
    wait_until(lambda: set(jupyters.processes) == {f"nb-{i}" for i in running}, timeout=30)

    # Any replica's proxy reaches any running instance.
    client = fleet.client(1)
    for notebook_id in sorted(running)[:2]:
        nb = client.ok("GET", f"/notebooks/{notebook_id}")
        reply = httpx.get(
            f"{fleet.replicas[2].endpoint}/notebooks/{notebook_id}/api/status",
            headers={"Authorization": f"token {nb['token']}"},
            timeout=10,
            trust_env=False,
        )
        assert reply.status_code == 200, reply.text
    client.close()
    print(
        f"\nkubernetes storm: {tally.calls} calls + 8 creates on 3 replicas in {storm_seconds:.1f} s, settled "
        f"{settle:.1f} s later; answers {sorted(tally.codes.items())}; {result}; {len(running)} running"
    )
