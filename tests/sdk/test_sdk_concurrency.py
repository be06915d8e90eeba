"""Compare-and-set transitions seen by concurrent SDK users."""

from __future__ import annotations

import threading

from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkmodelarts.v1 import StartNotebookRequest

from .conftest import DEFAULT_IMAGE, create_notebook, next_signing_second, stop_and_wait, wait_status

ROUNDS = 4


def _race(clients, notebook_id):
    barrier = threading.Barrier(len(clients), timeout=10)
    results: list = [None] * len(clients)

    def worker(i, client):
        barrier.wait()
        try:
            results[i] = client.start_notebook(StartNotebookRequest(id=notebook_id))
        except ClientRequestException as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a start call hung"
    return results


def test_two_concurrent_starts_exactly_one_wins(alice, admin, image_ids):
    # Two independent SDK clients (own connection pools), the owner and an admin of the project. Two
    # clients of one key would send one signed request twice within a second: a replay, refused before
    # the transition is even tried (test_replay.py), which is not the race this test is about.
    nb = create_notebook(alice.client, image_ids[DEFAULT_IMAGE], "race")
    for round_no in range(ROUNDS):
        next_signing_second()  # each round repeats the calls of the one before
        stop_and_wait(alice.client, nb.id)
        results = _race([alice.client, admin.client], nb.id)
        wins = [r for r in results if not isinstance(r, ClientRequestException)]
        losses = [r for r in results if isinstance(r, ClientRequestException)]
        assert len(wins) == 1 and len(losses) == 1, (round_no, results)
        assert wins[0].status == "STARTING" and wins[0].id == nb.id
        loss = losses[0]
        assert loss.status_code == 400 and loss.error_code in ("ModelArts.6306", "ModelArts.6357"), (
            loss.error_code,
            loss.error_msg,
        )
        assert loss.request_id
        wait_status(alice.client, nb.id, "RUNNING")
