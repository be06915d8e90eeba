"""Saving a running notebook as an image, end to end through the official SDK against a server process
(simulated runtime): the statuses on the way, a failing save, and ``kill -9`` of the server mid-save."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from huaweicloudsdkmodelarts.v1 import (
    CreateImageRequest,
    ImageCreateReq,
    ListImageRequest,
    ShowImageRequest,
    ShowNotebookRequest,
)

from ..procs import ServeProcess, SignedClient
from .conftest import Server, User, create_notebook, expect_error, next_signing_second, stop_and_wait, wait_status

# Each simulated step takes 0.5 s: a create takes 2 s, and so does a save (four steps), long enough to see
# SNAPSHOTTING and to kill the server in the middle of a save.
SLOW = {"NBFLEET_SIMULATED_DELAY": "0.5", "NBFLEET_SIMULATED_FAIL": json.dumps(["name=nosave-*;op=commit"])}
# A killed server's claims are not released by its successor on PostgreSQL but run out: keep them short.
CRASH = {**SLOW, "NBFLEET_CLAIM_SECONDS": "3"}
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("sdk-saves") / "data", env=SLOW)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def erin(slow_server) -> User:
    user = slow_server.create_user("erin")
    slow_server.cli("set-quota", "--user", user.user_id, "--quota", "-1", as_json=False)
    return user


def builtin(client, name: str = "notebook-python3.11") -> str:
    return next(i.id for i in client.list_image(ListImageRequest(type="BUILD_IN")).data if i.name == name)


def save(client, notebook_id: str, name: str, tag: str | None = "v1"):
    return client.create_image(
        CreateImageRequest(
            id=notebook_id, body=ImageCreateReq(name=name, namespace="team", tag=tag, description="saved by a test")
        )
    )


def wait_image(client, image_id: str, *statuses: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        image = client.show_image(ShowImageRequest(id=image_id))
        if image.status in statuses:
            return image
        if time.monotonic() > deadline:
            raise AssertionError(f"image {image_id} stayed {image.status}, wanted {statuses}")
        time.sleep(0.05)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def test_save_a_running_notebook_then_run_the_image(erin):
    c = erin.client
    nb = create_notebook(c, builtin(c), unique("src-"))
    assert nb.status == "RUNNING"
    name = unique("saved-")
    image = save(c, nb.id, name)
    assert (image.status, image.type, image.origin, image.visibility) == ("INIT", "DEDICATED", "IMAGE_SAVE", "PRIVATE")
    assert image.swr_path == f"registry.nbfleet.local/team/{name}:v1"
    assert image.resource_categories == nb.image.resource_categories and image.arch == "x86_64"
    # the save takes four steps of 0.5 s: the notebook is busy meanwhile, the image on its way
    assert c.show_notebook(ShowNotebookRequest(id=nb.id)).status == "SNAPSHOTTING"
    assert c.show_image(ShowImageRequest(id=image.id)).status in ("INIT", "CREATING")
    expect_error(lambda: save(c, nb.id, unique("again-")), 400, "ModelArts.6357")
    active = wait_image(c, image.id, "ACTIVE", "CREATE_FAILED")
    assert active.status == "ACTIVE" and type(active.size) is int and active.size > 0
    assert wait_status(c, nb.id, "RUNNING").status == "RUNNING"
    # a notebook from the saved image
    second = create_notebook(c, image.id, unique("from-saved-"))
    assert second.status == "RUNNING" and second.image.id == image.id and second.image.swr_path == image.swr_path


def test_save_errors(erin):
    c = erin.client
    expect_error(lambda: save(c, str(uuid.uuid4()), "nothing"), 400, "ModelArts.6309")
    nb = create_notebook(c, builtin(c), unique("errs-"))
    expect_error(lambda: save(c, nb.id, "Upper"), 400, "ModelArts.6336")
    expect_error(
        lambda: c.create_image(CreateImageRequest(id=nb.id, body=ImageCreateReq(name="ok", namespace="9bad"))),
        400,
        "ModelArts.6336",
    )
    name = unique("dup-")
    wait_image(c, save(c, nb.id, name).id, "ACTIVE")
    wait_status(c, nb.id, "RUNNING")
    next_signing_second()  # the same signed call twice in one second would be a replay (401)
    expect_error(lambda: save(c, nb.id, name), 400, "ModelArts.6737")
    stop_and_wait(c, nb.id)
    expect_error(lambda: save(c, nb.id, unique("stopped-")), 400, "ModelArts.6327")


def test_a_failing_save_fails_the_image_and_the_notebook_runs_on(erin):
    c = erin.client
    nb = create_notebook(c, builtin(c), unique("nosave-"))
    image = save(c, nb.id, unique("failing-"))
    failed = wait_image(c, image.id, "CREATE_FAILED", "ACTIVE")
    assert failed.status == "CREATE_FAILED" and "simulated failure while saving" in failed.status_message
    running = wait_status(c, nb.id, "RUNNING")
    assert running.status == "RUNNING" and not running.fail_reason
    expect_error(lambda: create_notebook(c, image.id, unique("from-failed-"), wait=False), 400, "ModelArts.6797")


def test_kill_minus_nine_mid_save_leaves_nothing_stuck(tmp_path):
    first = ServeProcess(tmp_path / "data", env=CRASH).start()
    admin = User(
        first.creds["user_id"], first.creds["project_id"], first.creds["ak"], first.creds["sk"], first.endpoint
    )
    c = admin.client
    nb = create_notebook(c, builtin(c), "crash-save")
    image = save(c, nb.id, "crashed")
    events = SignedClient(first.endpoint, first.admin_creds())  # nbfleet's events: not in the SDK

    def saves_begun() -> int:
        page = events.ok("GET", f"/notebooks/{nb.id}/events", {"limit": 50})["data"]
        return sum(e["message"].startswith("Saving as image") for e in page)

    deadline = time.monotonic() + TIMEOUT
    while not saves_begun():  # the reconciler is at the engine's commit now (it takes 2 s)
        assert time.monotonic() < deadline, "the save never began"
        time.sleep(0.05)
    assert c.show_image(ShowImageRequest(id=image.id)).status == "CREATING"
    first.kill()
    second = ServeProcess(first.data_dir, env=CRASH, port=first.port).start()
    try:
        done = wait_image(c, image.id, "ACTIVE", "CREATE_FAILED", timeout=60)
        assert done.status == "ACTIVE", done.status_message  # the save was done again, to the same address
        assert wait_status(c, nb.id, "RUNNING", timeout=60).status == "RUNNING"
        assert saves_begun() == 2
        mine = c.list_image(ListImageRequest(type="DEDICATED")).data
        assert [i.id for i in mine] == [image.id]
        assert create_notebook(c, image.id, "after-crash").status == "RUNNING"
    finally:
        events.close()
        second.terminate()
