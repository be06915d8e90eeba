"""Saving a notebook as an image, in process: validation, the statuses on the way, failures, and a
runtime whose images are not engine images (local)."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.runtime.local import LocalRuntime
from nbfleet.runtime.sandbox import Unsandboxed
from nbfleet.runtime.simulated import simulated_size_kb

from ..conftest import make_settings
from ..support import Api, Creds
from .test_image_api import dedicated


def start_app(tmp_path, **settings):
    s = make_settings(tmp_path, **settings)
    app = create_app(s, announce=lambda _t: None)
    client = TestClient(app)
    client.__enter__()
    c = json.loads((s.data_dir / "credentials.json").read_text())
    return client, Api(client, Creds(c["ak"], c["sk"], c["project_id"], c["user_id"]), app.state.services)


@pytest.fixture
def failing(tmp_path):
    client, api = start_app(tmp_path, simulated_fail=["name=cannot-save*;op=commit"])
    yield api
    client.__exit__(None, None, None)


@pytest.fixture
def slow(tmp_path):
    """A save takes four steps of 0.3 s: long enough to find the notebook SNAPSHOTTING."""
    client, api = start_app(tmp_path, simulated_delay=0.3)
    yield api
    client.__exit__(None, None, None)


def save(api: Api, notebook_id: str, **body) -> dict:
    return api.ok("POST", f"/notebooks/{notebook_id}/create-image", body={"name": "saved", "namespace": "team", **body})


def wait_image(api: Api, image_id: str, *statuses: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        image = api.ok("GET", f"/images/{image_id}")
        if image["status"] in statuses:
            return image
        if time.monotonic() > deadline:
            raise AssertionError(f"image {image_id} stayed {image['status']}, wanted {statuses}")
        time.sleep(0.02)


def events(api: Api, notebook_id: str) -> list[dict]:
    return api.ok("GET", f"/notebooks/{notebook_id}/events", {"limit": 50, "sort_dir": "ASC"})["data"]


def test_save_then_run_the_saved_image(api):
    nb = api.create("to-save", image_id=api.image_id("notebook-scipy"))
    image = save(api, nb["id"], tag="v1", description="with my packages")
    assert image["status"] == "INIT"
    assert (image["namespace"], image["name"], image["tag"]) == ("team", "saved", "v1")
    assert image["swr_path"] == "registry.nbfleet.local/team/saved:v1"
    assert (image["type"], image["origin"], image["visibility"]) == ("DEDICATED", "IMAGE_SAVE", "PRIVATE")
    source = api.ok("GET", f"/images/{api.image_id('notebook-scipy')}")
    for inherited in ("arch", "resource_categories", "dev_services", "service_type"):
        assert image[inherited] == source[inherited], inherited
    active = wait_image(api, image["id"], "ACTIVE", "CREATE_FAILED")
    assert active["status"] == "ACTIVE" and active["size"] == simulated_size_kb(image["swr_path"])
    assert active["description"] == "with my packages" and active["status_message"] == ""
    assert api.wait_status(nb["id"], "RUNNING")["status"] == "RUNNING"
    kinds = [e["type"] for e in events(api, nb["id"])]
    assert kinds.index("snapshotting") < kinds.index("image_saved")
    assert api.services.runtime.images.committed == [image["swr_path"]]
    # a notebook created from it runs that image
    second = api.create("from-saved", image_id=image["id"])
    assert second["status"] == "RUNNING" and second["image"]["id"] == image["id"]
    assert api.services.runtime.started_from[second["id"]] == image["swr_path"]


def test_the_tag_defaults_to_the_utc_time(api):
    nb = api.create("default-tag")
    image = save(api, nb["id"])
    assert re.fullmatch(r"20\d{12}", image["tag"]), image["tag"]
    wait_image(api, image["id"], "ACTIVE")


@pytest.mark.parametrize(
    "body,code",
    [
        ([], "ModelArts.6400"),
        ({"namespace": "team"}, "ModelArts.6335"),
        ({"name": "saved"}, "ModelArts.6335"),
        ({"name": 1, "namespace": "team"}, "ModelArts.6332"),
        ({"name": "Saved", "namespace": "team"}, "ModelArts.6336"),
        ({"name": "-saved", "namespace": "team"}, "ModelArts.6336"),
        ({"name": "saved-", "namespace": "team"}, "ModelArts.6336"),
        ({"name": "s" * 129, "namespace": "team"}, "ModelArts.6336"),
        ({"name": "saved", "namespace": "Team"}, "ModelArts.6336"),
        ({"name": "saved", "namespace": "9team"}, "ModelArts.6336"),
        ({"name": "saved", "namespace": "t" * 65}, "ModelArts.6336"),
        ({"name": "saved", "namespace": "team", "tag": "v 1"}, "ModelArts.6336"),
        ({"name": "saved", "namespace": "team", "tag": "t" * 65}, "ModelArts.6336"),
        ({"name": "saved", "namespace": "team", "description": "d" * 513}, "ModelArts.6336"),
        ({"name": "saved", "namespace": "team", "swr_instance_domain": "x.example.com"}, "ModelArts.6336"),
        ({"name": "saved", "namespace": "team", "workspace_id": "0" * 32}, "ModelArts.0102"),
    ],
)
def test_save_refusals_change_nothing(api, body, code):
    nb = api.create("refused")
    response = api.call("POST", f"/notebooks/{nb['id']}/create-image", body=body)
    assert (response.status_code, response.json()["error_code"]) == (400, code), response.text
    assert api.ok("GET", f"/notebooks/{nb['id']}")["status"] == "RUNNING"
    assert dedicated(api) == []


def test_save_needs_a_running_notebook_of_ones_own(api):
    body = {"name": "saved", "namespace": "team"}
    assert api.error("POST", f"/notebooks/{uuid.uuid4()}/create-image", body=body) == (400, "ModelArts.6309")
    bob = api.new_user("bob-save")
    bobs = api.create("bobs", creds=bob)
    alice = api.new_user("alice-save")
    assert api.error("POST", f"/notebooks/{bobs['id']}/create-image", body=body, creds=alice) == (400, "ModelArts.6309")
    stopped = api.create("stopped")
    api.ok("POST", f"/notebooks/{stopped['id']}/stop")
    api.wait_status(stopped["id"], "STOPPED")
    assert api.error("POST", f"/notebooks/{stopped['id']}/create-image", body=body) == (400, "ModelArts.6327")
    assert api.ok("GET", f"/notebooks/{stopped['id']}")["status"] == "STOPPED"
    assert dedicated(api) == [] and dedicated(api, bob) == []


def test_an_address_already_taken_is_6737(api):
    nb = api.create("dup")
    first = save(api, nb["id"], tag="v1")
    wait_image(api, first["id"], "ACTIVE")
    api.wait_status(nb["id"], "RUNNING")
    assert api.error(
        "POST", f"/notebooks/{nb['id']}/create-image", body={"name": "saved", "namespace": "team", "tag": "v1"}
    ) == (400, "ModelArts.6737")
    # another user saving to the same address would overwrite the content: refused as well
    bob = api.new_user("bob-dup")
    bobs = api.create("bobs", creds=bob)
    assert api.error(
        "POST",
        f"/notebooks/{bobs['id']}/create-image",
        creds=bob,
        body={"name": "saved", "namespace": "team", "tag": "v1"},
    ) == (400, "ModelArts.6737")
    # a registered image of the caller with that namespace/name:tag too
    api.ok("POST", "/images", body={"swr_path": "swr.example.com/team/registered:v1"})
    assert api.error(
        "POST", f"/notebooks/{nb['id']}/create-image", body={"name": "registered", "namespace": "team", "tag": "v1"}
    ) == (400, "ModelArts.6737")
    assert api.ok("GET", f"/notebooks/{nb['id']}")["status"] == "RUNNING"
    assert api.ok("GET", f"/notebooks/{bobs['id']}", creds=bob)["status"] == "RUNNING"
    # deleted (without force), the address is free again
    api.ok("DELETE", f"/images/{first['id']}")
    wait_image(api, save(api, nb["id"], tag="v1")["id"], "ACTIVE")


def test_an_address_an_instance_still_runs_from_cannot_be_saved_over(api):
    """A plain delete keeps the content for the instances created from the image: a save by anyone to that
    address would make those instances run the saver's files, so the address stays taken."""
    nb = api.create("origin")
    saved = save(api, nb["id"], tag="v1")
    wait_image(api, saved["id"], "ACTIVE")
    api.wait_status(nb["id"], "RUNNING")
    from_saved = api.create("from-saved", image_id=saved["id"])
    assert from_saved["status"] == "RUNNING"
    api.ok("DELETE", f"/images/{saved['id']}")
    mallory = api.new_user("mallory-saves")
    hers = api.create("hers", creds=mallory)
    body = {"name": "saved", "namespace": "team", "tag": "v1"}
    assert api.error("POST", f"/notebooks/{hers['id']}/create-image", creds=mallory, body=body) == (
        400,
        "ModelArts.6737",
    )
    assert api.error("POST", f"/notebooks/{nb['id']}/create-image", body=body) == (400, "ModelArts.6737")
    # Once nothing runs from it any more, the address is free.
    api.ok("DELETE", f"/notebooks/{from_saved['id']}")
    deadline = time.monotonic() + 20
    while api.call("GET", f"/notebooks/{from_saved['id']}").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    again = api.ok("POST", f"/notebooks/{hers['id']}/create-image", creds=mallory, body=body)
    deadline = time.monotonic() + 20
    while api.ok("GET", f"/images/{again['id']}", creds=mallory)["status"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_while_snapshotting_the_notebook_and_the_image_are_busy(slow):
    api = slow
    nb = api.create("busy")
    image = save(api, nb["id"], tag="v1")
    assert api.ok("GET", f"/notebooks/{nb['id']}")["status"] == "SNAPSHOTTING"
    body = {"name": "saved", "namespace": "team", "tag": "v2"}
    assert api.error("POST", f"/notebooks/{nb['id']}/create-image", body=body) == (400, "ModelArts.6357")
    assert api.error("POST", f"/notebooks/{nb['id']}/stop") == (400, "ModelArts.6357")
    assert api.error("DELETE", f"/notebooks/{nb['id']}") == (400, "ModelArts.6357")
    assert api.error("DELETE", f"/images/{image['id']}") == (400, "ModelArts.6357")
    group = next(g for g in api.ok("GET", "/images/group", {"type": "DEDICATED"})["data"] if g["name"] == "saved")
    assert api.error("DELETE", f"/images/group/{group['id']}") == (400, "ModelArts.6357")
    assert api.ok("POST", f"/images/{image['id']}/sync")["status"] in ("INIT", "CREATING")
    assert wait_image(api, image["id"], "ACTIVE")["status"] == "ACTIVE"
    assert api.wait_status(nb["id"], "RUNNING")["status"] == "RUNNING"
    assert api.ok("DELETE", f"/images/group/{group['id']}") == {}


def test_a_failed_save_fails_the_image_and_the_notebook_runs_on(failing):
    api = failing
    nb = api.create("cannot-save-1")
    image = save(api, nb["id"], tag="v1")
    failed = wait_image(api, image["id"], "CREATE_FAILED", "ACTIVE")
    assert failed["status"] == "CREATE_FAILED" and "simulated failure while saving" in failed["status_message"]
    running = api.wait_status(nb["id"], "RUNNING")
    assert running["fail_reason"] in (None, "")
    kinds = [e["type"] for e in events(api, nb["id"])]
    assert "image_save_failed" in kinds and "image_saved" not in kinds
    body = {
        "name": "from-failed",
        "image_id": image["id"],
        "flavor": "modelarts.vm.cpu.2u",
        "volume": {"category": "EVS", "ownership": "MANAGED"},
    }
    assert api.error("POST", "/notebooks", body=body) == (400, "ModelArts.6797")
    # the failed image can be deleted, and the notebook saved again
    assert api.ok("DELETE", f"/images/{image['id']}")["status"] == "DELETED"
    assert api.ok("POST", f"/notebooks/{nb['id']}/stop")["status"] == "STOPPING"


def test_a_save_that_keeps_failing_unexpectedly_ends_failed(api, monkeypatch):
    """A bug in the engine (not a RuntimeFailure) is retried with pauses, then the image fails."""
    monkeypatch.setattr(api.services.reconciler._retries, "limit", 2)

    async def broken(spec, placement, swr_path):
        raise OSError("the engine's socket went away")

    monkeypatch.setattr(api.services.runtime.images, "commit", broken)
    nb = api.create("unlucky")
    image = save(api, nb["id"], tag="v1")
    failed = wait_image(api, image["id"], "CREATE_FAILED", timeout=60)
    assert "internal error" in failed["status_message"]
    assert api.wait_status(nb["id"], "RUNNING")["status"] == "RUNNING"


def test_the_local_runtime_refuses_and_changes_nothing(tmp_path):
    """The local runtime's images are environments (``Runtime.images is None``); no Jupyter starts here."""
    settings = make_settings(tmp_path, runtime="local")
    data = settings.data_dir.resolve()
    runtime = LocalRuntime(data, isolation=Unsandboxed(data))
    assert runtime.images is None
    app = create_app(settings, runtime=runtime, announce=lambda _t: None)
    with TestClient(app) as client:
        c = json.loads((settings.data_dir / "credentials.json").read_text())
        api = Api(client, Creds(c["ak"], c["sk"], c["project_id"], c["user_id"]), app.state.services)
        response = api.call("POST", "/images", body={"swr_path": "swr.example.com/team/app:1"})
        assert (response.status_code, response.json()["error_code"]) == (400, "ModelArts.6361")
        assert "not supported on the local runtime" in response.json()["error_msg"]
        response = api.call(
            "POST", f"/notebooks/{uuid.uuid4()}/create-image", body={"name": "saved", "namespace": "team"}
        )
        assert (response.status_code, response.json()["error_code"]) == (400, "ModelArts.6361")
        assert dedicated(api) == []
        assert api.ok("GET", "/images/group", {"type": "DEDICATED"})["total"] == 0
        # reading works as anywhere; a built-in is still nobody's to sync
        assert api.ok("GET", "/images/group", {"type": "BUILD_IN"})["total"] >= 4
        assert api.error("POST", f"/images/{api.image_id()}/sync") == (403, "ModelArts.0108")
