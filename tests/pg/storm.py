"""A storm of concurrent calls spread over the replicas of a fleet, and what it left in the store."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from .conftest import Fleet, Tally, event_history

OPS = {"start": 30, "stop": 30, "get": 8, "list": 14, "delete": 6, "create": 12}
INTENT_OF = {"create": "created", "start": "starting", "stop": "stopping", "delete": "deleting"}


class Storm:
    """``workers`` threads, ``calls`` calls in all, each on a random live replica and a random instance;
    each worker waits ``pause`` seconds between its calls."""

    def __init__(self, fleet: Fleet, ids: list[str], *, calls: int, workers: int, seed: int, pause: float = 0.0):
        self.pause = pause
        self.fleet = fleet
        self.ids = list(ids)
        self.calls = calls
        self.workers = workers
        self.seed = seed
        self.tally = Tally()
        self.dead: set[int] = set()  # replicas killed on purpose: their transport errors are expected
        self.lost_to_dead = 0  # calls whose answer died with a replica (accepted or not: unknown)
        self.lock = threading.Lock()
        self.budget = calls

    def _take(self) -> bool:
        with self.lock:
            if self.budget <= 0:
                return False
            self.budget -= 1
            return True

    def worker(self, n: int) -> None:
        rnd = random.Random(self.seed * 1000 + n)
        clients = {i: self.fleet.client(i) for i in range(len(self.fleet.replicas))}
        image_id = clients[0].image_id()
        try:
            while self._take():
                live = [i for i in clients if i not in self.dead]
                replica = rnd.choice(live)
                client = clients[replica]
                op = rnd.choices(list(OPS), weights=list(OPS.values()))[0]
                with self.lock:
                    notebook_id = rnd.choice(self.ids)
                label = f"{op} {notebook_id} via replica {replica}"
                try:
                    if op == "create":
                        response = client.call(
                            "POST",
                            "/notebooks",
                            body={
                                "name": f"storm-{n}-{rnd.randrange(10**6)}",
                                "image_id": image_id,
                                "flavor": "modelarts.vm.cpu.2u",
                                "volume": {"category": "EVS", "ownership": "MANAGED"},
                            },
                        )
                        if response.status_code == 200:
                            notebook_id = response.json()["id"]
                            with self.lock:
                                self.ids.append(notebook_id)
                    elif op == "list":
                        response = client.call(
                            "GET", "/notebooks", {"limit": rnd.choice([10, 50]), "sort_key": "name", "sort_dir": "ASC"}
                        )
                    elif op == "get":
                        response = client.call("GET", f"/notebooks/{notebook_id}")
                    elif op == "delete":
                        response = client.call("DELETE", f"/notebooks/{notebook_id}")
                    else:
                        response = client.call("POST", f"/notebooks/{notebook_id}/{op}")
                except httpx.TransportError as exc:
                    if replica in self.dead:
                        with self.lock:
                            self.lost_to_dead += 1
                        continue
                    self.tally.note(label, error=exc)
                    continue
                self.tally.note(label, response, notebook_id=notebook_id, op=op if op in INTENT_OF else None)
                time.sleep(self.pause)
        finally:
            for client in clients.values():
                client.close()

    def run(self) -> None:
        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(self.worker, range(self.workers)))


def create_many(fleet: Fleet, count: int, prefix: str) -> list[str]:
    """``count`` instances created concurrently, round-robin over the replicas."""

    def make(i: int) -> str:
        client = fleet.client(i % len(fleet.replicas))
        try:
            return client.create(f"{prefix}-{i:03d}")["id"]
        finally:
            client.close()

    with ThreadPoolExecutor(10) as pool:
        return list(pool.map(make, range(count)))


def intents_in_store(db) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for notebook_id, events in event_history(db).items():
        for kind, _ in events:
            counts[(notebook_id, kind)] = counts.get((notebook_id, kind), 0) + 1
    return counts


def schedulers(db) -> set[str]:
    """Short ids of the replicas that brought instances up (from the ``scheduled`` events)."""
    return {
        message.rsplit("replica ", 1)[-1].rstrip(")")
        for (message,) in db.rows("SELECT message FROM events WHERE kind = 'scheduled'")
    }
