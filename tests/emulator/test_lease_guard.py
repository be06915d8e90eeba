"""The sample user project (lease_guard.py), tested as its authors would: nbfleet.testing's fixtures, the
official SDK, and the emulated clock instead of sleeping."""

from __future__ import annotations

from datetime import timedelta

import pytest
from huaweicloudsdkmodelarts.v1 import (
    CreateNotebookRequest,
    CreateNotebookTagsRequest,
    CreateTmsTagsRequest,
    ListImageRequest,
    NotebookCreateRequest,
    ShowNotebookRequest,
    StartNotebookRequest,
    TmsTag,
    VolumeMountRequest,
)

from .lease_guard import guard

HOUR = 3_600_000


def create(client, name: str):
    image = client.list_image(ListImageRequest(name="notebook-python3.11")).data[0]
    body = NotebookCreateRequest(
        name=name,
        flavor="modelarts.vm.cpu.2u",
        image_id=image.id,
        volume=VolumeMountRequest(category="EVS", ownership="MANAGED"),
    )
    return client.create_notebook(CreateNotebookRequest(body=body))


def status(client, notebook_id: str) -> str:
    return client.show_notebook(ShowNotebookRequest(id=notebook_id)).status


def tag(client, notebook_id: str, key: str, value: str) -> None:
    client.create_notebook_tags(
        CreateNotebookTagsRequest(
            resource_id=notebook_id, body=CreateTmsTagsRequest(tags=[TmsTag(key=key, value=value)])
        )
    )


def test_stops_what_ends_soon_and_renews_what_is_kept(nbfleet_server, modelarts_client):
    c = modelarts_client
    kept, plain = create(c, "kept"), create(c, "plain")
    tag(c, kept.id, "keep", "true")
    nbfleet_server.clock.run_pending()  # both RUNNING, one-hour leases
    assert (status(c, kept.id), status(c, plain.id)) == ("RUNNING", "RUNNING")

    early = guard(c, now=nbfleet_server.clock.now)  # an hour left: nothing to stop yet
    assert (early.stopped, early.renewed) == ([], [kept.id])

    nbfleet_server.clock.advance(minutes=55)
    report = guard(c, now=nbfleet_server.clock.now)
    assert (report.stopped, report.renewed) == ([plain.id], [kept.id])
    nbfleet_server.clock.run_pending()
    assert (status(c, kept.id), status(c, plain.id)) == ("RUNNING", "STOPPED")


def test_a_lease_that_runs_out_stops_the_notebook_without_the_guard(nbfleet_server, modelarts_client):
    c = modelarts_client
    nb = create(c, "forgotten")
    nbfleet_server.clock.run_pending()
    nbfleet_server.clock.advance(hours=2)  # the server's own lease expiry, an hour in
    shown = c.show_notebook(ShowNotebookRequest(id=nb.id))
    assert shown.status == "STOPPED"
    assert guard(c, now=nbfleet_server.clock.now).stopped == []  # nothing RUNNING is left to guard


def test_the_guard_renewal_outlives_the_original_lease(nbfleet_server, modelarts_client):
    c = modelarts_client
    nb = create(c, "kept")
    tag(c, nb.id, "keep", "true")
    nbfleet_server.clock.run_pending()
    for _ in range(4):  # a guard every 50 minutes keeps it alive
        guard(c, now=nbfleet_server.clock.now)
        nbfleet_server.clock.advance(minutes=50)
    assert status(c, nb.id) == "RUNNING"
    nbfleet_server.clock.advance(hours=2, minutes=1)  # no guard: the last renewal runs out
    assert status(c, nb.id) == "STOPPED"


def test_a_notebook_that_failed_to_start_is_left_to_its_owner(nbfleet_server, modelarts_client):
    c = modelarts_client
    nb = create(c, "flaky")
    nbfleet_server.clock.run_pending()
    nbfleet_server.clock.advance(hours=2)  # lease over: STOPPED
    nbfleet_server.fail_next("start", reason="no capacity in the pool")
    c.start_notebook(StartNotebookRequest(id=nb.id))
    nbfleet_server.clock.run_pending()
    shown = c.show_notebook(ShowNotebookRequest(id=nb.id))
    assert shown.status == "START_FAILED"
    assert shown.action_progress[-1].description == "no capacity in the pool"
    assert guard(c, now=nbfleet_server.clock.now).stopped == []


@pytest.mark.nbfleet(frozen=True)
def test_a_notebook_still_starting_is_not_touched(nbfleet_server, modelarts_client):
    c = modelarts_client
    nb = create(c, "slow")
    nbfleet_server.clock.advance(seconds=3)  # frozen: one of four steps done, still CREATING
    assert status(c, nb.id) == "CREATING"
    assert guard(c, window=timedelta(hours=5), now=nbfleet_server.clock.now).stopped == []
