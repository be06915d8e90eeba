"""The database goes away for a few seconds under load: clean JSON 503s meanwhile, then service resumes by
itself on every replica, and the work that was in flight converges. Runs on a throwaway cluster of its
own, since the test stops the server."""

from __future__ import annotations

import random
import threading
import time

import httpx

from .conftest import ScratchDatabase, Tally, check_converged, check_counts, wait_settled
from .test_replicas import create_many

OUTAGE_SECONDS = 5.0


def test_database_outage_gives_clean_errors_and_service_resumes(throwaway_cluster, fleet_factory):
    db = ScratchDatabase(port=throwaway_cluster.port)
    # 0.3 s steps: bring-ups and stops are still running when the database goes.
    fleet = fleet_factory(db.url, 2, env={"NBFLEET_SIMULATED_DELAY": "0.3"})
    ids = create_many(fleet, 8, "outage")
    clients = [fleet.client(i) for i in range(2)]
    for notebook_id in ids:
        clients[0].wait_status(notebook_id, "RUNNING", timeout=30)

    tally = Tally(allow=("503 ModelArts.6102",))
    stop_load = threading.Event()
    timeline: list[tuple[float, str]] = []  # (seconds since the outage began, answer)
    outage_began = [float("inf")]

    def load(n: int) -> None:
        rnd = random.Random(n)
        mine = [fleet.client(i) for i in range(2)]
        try:
            while not stop_load.is_set():
                replica = rnd.randrange(2)
                notebook_id = rnd.choice(ids)
                op = rnd.choice(["get", "list", "list", "start", "stop"])
                try:
                    if op == "get":
                        response = mine[replica].call("GET", f"/notebooks/{notebook_id}")
                    elif op == "list":
                        response = mine[replica].call("GET", "/notebooks", {"limit": 10})
                    else:
                        response = mine[replica].call("POST", f"/notebooks/{notebook_id}/{op}")
                except httpx.TransportError as exc:
                    tally.note(f"{op} via {replica}", error=exc)
                    continue
                tally.note(f"{op} via {replica}", response)
                with tally.lock:
                    code = response.json().get("error_code", "") if response.status_code >= 400 else ""
                    timeline.append((time.monotonic() - outage_began[0], f"{response.status_code} {code}".strip()))
                time.sleep(0.03)
        finally:
            for client in mine:
                client.close()

    workers = [threading.Thread(target=load, args=(n,)) for n in range(3)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    # Work in flight when the database goes: stops of some instances, fresh creates.
    for i, notebook_id in enumerate(ids[:3]):
        clients[i % 2].call("POST", f"/notebooks/{notebook_id}/stop")
    in_flight = create_many(fleet, 3, "outage-new")
    outage_began[0] = time.monotonic()
    throwaway_cluster.stop()
    time.sleep(OUTAGE_SECONDS)
    throwaway_cluster.start()
    back_at = time.monotonic() - outage_began[0]

    # Every replica serves again by itself, without a restart.
    recovered = {}
    deadline = time.monotonic() + 20
    while len(recovered) < 2 and time.monotonic() < deadline:
        for i, client in enumerate(clients):
            if i not in recovered and client.call("GET", "/notebooks", {"limit": 1}).status_code == 200:
                recovered[i] = time.monotonic() - outage_began[0] - back_at
        time.sleep(0.05)
    time.sleep(0.5)
    stop_load.set()
    for worker in workers:
        worker.join(30)
    assert len(recovered) == 2, f"replicas still failing after the database returned\n{fleet.logs()}"
    assert all(r.proc.poll() is None for r in fleet.replicas), fleet.logs()

    settle = wait_settled(db, timeout=20)
    try:
        assert not tally.bad, f"{len(tally.bad)} unclean answers, e.g. {tally.bad[:5]}"
        during = [answer for at, answer in timeline if 0.2 < at < OUTAGE_SECONDS - 0.2]
        assert during and set(during) <= {"503 ModelArts.6102"}, sorted(set(during))
        assert tally.codes.get("503 ModelArts.6102", 0) > 0
        assert not any(code.startswith("500") for code in tally.codes), tally.codes
        result = check_converged(db, max_schedules=3)
        for notebook_id in in_flight:
            assert clients[0].ok("GET", f"/notebooks/{notebook_id}")["status"] == "RUNNING"
        check_counts(db, clients[1])
        logs = fleet.logs()
        assert "Traceback" not in logs, logs
    finally:
        for client in clients:
            client.close()
        fleet.stop()
        db.drop()
    print(
        f"\noutage: {OUTAGE_SECONDS:g} s without PostgreSQL under load on 2 replicas; answers "
        f"{sorted(tally.codes.items())}; replicas answered 200 again {sorted(recovered.values())} s after "
        f"the server was back; settled {settle:.1f} s later; {result}"
    )
