"""Several ``nbfleet serve`` replicas on one PostgreSQL database: a storm of concurrent calls spread over
all of them, and a replica killed in the middle of it."""

from __future__ import annotations

import threading
import time

from .conftest import check_converged, check_counts, wait_settled
from .storm import INTENT_OF, Storm, create_many, intents_in_store, schedulers


def test_replica_storm(pg_db, fleet_factory):
    started = time.monotonic()
    fleet = fleet_factory(pg_db.url, 3)
    ids = create_many(fleet, 50, "storm")
    storm = Storm(fleet, ids, calls=450, workers=16, seed=1)
    storm.run()
    storm_seconds = time.monotonic() - started
    settle = wait_settled(pg_db, timeout=30)

    tally = storm.tally
    assert not tally.bad, f"{len(tally.bad)} bad answers, e.g. {tally.bad[:5]}\n{fleet.logs()}"
    assert tally.calls == 450
    result = check_converged(pg_db, max_schedules=1)
    # Every accepted call left exactly one intent event, and nothing else did.
    stored = intents_in_store(pg_db)
    for (notebook_id, op), n in tally.accepted.items():
        assert stored.get((notebook_id, INTENT_OF[op]), 0) == n, (notebook_id, op, n)
    assert sum(n for (_, kind), n in stored.items() if kind in INTENT_OF.values()) == 50 + sum(tally.accepted.values())
    client = fleet.client(0)
    check_counts(pg_db, client)
    client.close()
    assert len(schedulers(pg_db)) == 3, schedulers(pg_db)  # every replica's reconciler did work
    print(
        f"\nstorm: {tally.calls} calls + 50 creates on 3 replicas in {storm_seconds:.1f} s, settled "
        f"{settle:.1f} s later; answers {sorted(tally.codes.items())}; {result}"
    )


def test_replica_death_mid_storm(pg_db, fleet_factory):
    claim_seconds = 3.0
    # Slow bring-ups (4 x 0.4 s), so the victim is in the middle of its work when it dies; enough start
    # slots that finishing its work measures the takeover, not a queue behind the storm's own starts.
    fleet = fleet_factory(
        pg_db.url,
        3,
        env={
            "NBFLEET_SIMULATED_DELAY": "0.4",
            "NBFLEET_MAX_CONCURRENT_STARTS": "64",
            "NBFLEET_CLAIM_SECONDS": str(claim_seconds),
        },
    )
    victim = 2
    victim_id = fleet.replica_id(victim)
    ids = create_many(fleet, 30, "death")
    # Paced, so the storm lasts through the kill and the takeover (about 6 s).
    storm = Storm(fleet, ids, calls=300, workers=12, seed=2, pause=0.2)
    storm_thread = threading.Thread(target=storm.run)
    storm_thread.start()
    # Kill the victim while the storm runs and it holds claims on work in progress: past the creates,
    # among the storm's own starts, stops and deletes.
    time.sleep(2.0)
    deadline = time.monotonic() + 20
    held: list[tuple] = []
    while time.monotonic() < deadline:
        held = pg_db.rows("SELECT id, status FROM notebooks WHERE claim_owner = :owner", owner=victim_id)
        if len(held) >= 2:
            break
        time.sleep(0.02)
    assert held, f"the victim never claimed anything\n{fleet.logs()}"
    storm.dead.add(victim)
    fleet.replicas[victim].kill()
    killed_at = time.monotonic()
    held = pg_db.rows("SELECT id, status FROM notebooks WHERE claim_owner = :owner", owner=victim_id)

    # How long until the survivors took over each row the victim held, and until its work was done.
    taken: dict[str, float] = {}
    done: dict[str, float] = {}
    held_ids = [row[0] for row in held]
    deadline = killed_at + claim_seconds + 15
    while len(done) < len(held_ids) and time.monotonic() < deadline:
        now = time.monotonic() - killed_at
        rows = {
            r[0]: r
            for r in pg_db.rows("SELECT id, status, claim_owner FROM notebooks WHERE id = ANY(:ids)", ids=held_ids)
        }
        for notebook_id in held_ids:
            _, status, owner = rows.get(notebook_id, (notebook_id, "GONE", None))
            if owner not in (None, victim_id):
                taken.setdefault(notebook_id, now)
            if status not in ("INIT", "CREATING", "STARTING", "STOPPING", "DELETING"):
                done.setdefault(notebook_id, now)
        time.sleep(0.05)
    storm_thread.join()
    settle = wait_settled(pg_db, timeout=claim_seconds + 20)

    assert len(done) == len(held_ids), f"work of the dead replica not finished: {set(held_ids) - set(done)}"
    for notebook_id in held_ids:  # a row claimed and finished between two looks counts as taken when done
        taken[notebook_id] = min(taken.get(notebook_id, done[notebook_id]), done[notebook_id])
    # Taken over by the time the claim ran out. (No lower bound: on a loaded machine the victim's last
    # heartbeat may have been late, so a claim can legitimately lapse right after the kill; that no work
    # was done twice is what the storm's one-outcome-per-request check proves.)
    assert max(taken.values()) <= claim_seconds + 1, taken
    # ... and finished within a bring-up (1.6 s here) after that.
    assert max(done.values()) <= claim_seconds + 4, done
    tally = storm.tally
    assert not tally.bad, f"{len(tally.bad)} bad answers, e.g. {tally.bad[:5]}\n{fleet.logs()}"
    result = check_converged(pg_db, max_schedules=2)
    # Calls cut off by the kill may or may not have been accepted; every answered one is in the store once.
    stored = intents_in_store(pg_db)
    for (notebook_id, op), n in tally.accepted.items():
        assert n <= stored.get((notebook_id, INTENT_OF[op]), 0) <= n + storm.lost_to_dead, (notebook_id, op, n)
    survivor = fleet.client(0)
    check_counts(pg_db, survivor)
    survivor.close()
    spans = sorted(taken.values()) or [float("nan")]
    print(
        f"\ndeath: victim held {len(held_ids)} claims ({sorted({s for _, s in held})}); survivors took them "
        f"over {spans[0]:.2f}-{spans[-1]:.2f} s after the kill and finished by {max(done.values()):.2f} s "
        f"(claim {claim_seconds:g} s); settled {settle:.1f} s later; storm answers {sorted(tally.codes.items())}, "
        f"{storm.lost_to_dead} cut off by the kill; {result}"
    )
