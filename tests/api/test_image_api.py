"""Users' images in process (simulated runtime, no delays): register, show, list, delete, sync, and the
validation edges of each, with what every refusal leaves unchanged."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.runtime.simulated import FailureRule, simulated_size_kb
from nbfleet.store import image_repo

from ..conftest import make_settings
from ..support import Api, Creds

PATH = "swr.example.com/team/pytorch:2.1"


def register(api: Api, swr_path: str = PATH, *, creds: Creds | None = None, **extra) -> dict:
    return api.ok("POST", "/images", body={"swr_path": swr_path, **extra}, creds=creds)


def dedicated(api: Api, creds: Creds | None = None) -> list[dict]:
    return api.ok("GET", "/images", {"type": "DEDICATED"}, creds=creds)["data"]


def wait_until(condition, what: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what}")
        time.sleep(0.02)


@pytest.fixture
def rules_api(tmp_path):
    """An app whose pretend image engine lacks images under */missing/* and finds a GUI-less one."""
    settings = make_settings(
        tmp_path,
        simulated_fail=["image=*/missing/*;op=pull", "image=*/headless/*;op=serve", "image=*/stuck/*;op=remove"],
    )
    app = create_app(settings, announce=lambda _t: None)
    with TestClient(app) as client:
        c = json.loads((settings.data_dir / "credentials.json").read_text())
        yield Api(client, Creds(c["ak"], c["sk"], c["project_id"], c["user_id"]), app.state.services)


def test_register_takes_the_reference_apart_and_answers_an_active_image_of_the_caller(api):
    image = register(
        api,
        description="PyTorch 2.1",
        resource_category=["gpu"],
        services=["notebook"],
        service_type="train",
        arch="aarch64",
        visibility="public",
        tags=["team=ml", "gpu"],
    )
    assert (image["namespace"], image["name"], image["tag"], image["swr_path"]) == ("team", "pytorch", "2.1", PATH)
    assert (image["type"], image["status"], image["origin"], image["visibility"]) == (
        "DEDICATED",
        "ACTIVE",
        "CUSTOMIZE",
        "PUBLIC",
    )
    assert image["arch"] == "aarch64" and image["service_type"] == "TRAIN"
    assert image["resource_categories"] == image["support_res_categories"] == ["GPU"]
    assert image["dev_services"] == ["NOTEBOOK"]
    assert image["size"] == simulated_size_kb(PATH)  # what the engine said
    assert image["tags"] == [{"key": "team", "value": "ml"}, {"key": "gpu", "value": ""}]
    assert image["description"] == "PyTorch 2.1" and image["workspace_id"] == "0"
    assert api.ok("GET", f"/images/{image['id']}") == image
    assert [i["id"] for i in dedicated(api)] == [image["id"]]


def test_register_defaults(api):
    image = register(api, "localhost:5000/team/plain:latest")
    assert (image["namespace"], image["name"], image["tag"]) == ("team", "plain", "latest")
    assert (image["arch"], image["origin"], image["visibility"], image["service_type"]) == (
        "x86_64",
        "CUSTOMIZE",
        "PRIVATE",
        "UNKNOWN",
    )
    assert image["resource_categories"] == ["CPU", "GPU"] and image["dev_services"] == ["NOTEBOOK", "SSH"]
    assert register(api, "team/noregistry:1")["swr_path"] == "team/noregistry:1"


@pytest.mark.parametrize(
    "body,code",
    [
        ([], "ModelArts.6400"),
        ({}, "ModelArts.6335"),
        ({"swr_path": 7}, "ModelArts.6332"),
        ({"swr_path": "a/b:1"}, "ModelArts.6336"),  # shorter than 16
        ({"swr_path": "swr.example.com/team/pytorch"}, "ModelArts.6336"),  # no tag
        ({"swr_path": "swr.example.com/team/pytorch@sha256:" + "0" * 64}, "ModelArts.6336"),
        ({"swr_path": "swr.example.com/a/team/pytorch:1"}, "ModelArts.6336"),  # too many parts
        ({"swr_path": "swr.example.com/team/PyTorch:1"}, "ModelArts.6336"),  # upper-case name
        ({"swr_path": "swr.example.com/9team/pytorch:1"}, "ModelArts.6336"),  # namespace starts with a digit
        ({"swr_path": "swr.example.com/team/pytorch:" + "t" * 65}, "ModelArts.6336"),
        ({"swr_path": "bad_host!/team/pytorch:1"}, "ModelArts.6336"),
        ({"swr_path": PATH, "arch": "sparc"}, "ModelArts.6336"),
        ({"swr_path": PATH, "services": ["JUPYTER"]}, "ModelArts.6336"),
        ({"swr_path": PATH, "services": "NOTEBOOK"}, "ModelArts.6332"),
        ({"swr_path": PATH, "resource_category": []}, "ModelArts.6336"),
        ({"swr_path": PATH, "visibility": "everyone"}, "ModelArts.6336"),
        ({"swr_path": PATH, "origin": "MAGIC"}, "ModelArts.6336"),
        ({"swr_path": PATH, "service_type": "GAMES"}, "ModelArts.6336"),
        ({"swr_path": PATH, "flavor_type": "TPU"}, "ModelArts.6336"),
        ({"swr_path": PATH, "description": "d" * 513}, "ModelArts.6336"),
        ({"swr_path": PATH, "read_me": "r" * 3001}, "ModelArts.6336"),
        ({"swr_path": PATH, "tags": [f"k{i}" for i in range(21)]}, "ModelArts.6336"),
        ({"swr_path": PATH, "tags": ["a=1", "a=2"]}, "ModelArts.6336"),
        ({"swr_path": PATH, "tags": [{"value": "x"}]}, "ModelArts.6335"),
        ({"swr_path": PATH, "tags": [3]}, "ModelArts.6332"),
        ({"swr_path": PATH, "swr_instance_id": "enterprise-1"}, "ModelArts.6336"),
        ({"swr_path": PATH, "workspace_id": "not a workspace"}, "ModelArts.6336"),
        ({"swr_path": PATH, "workspace_id": "0" * 32}, "ModelArts.0102"),
    ],
)
def test_register_refusals_change_nothing(api, body, code):
    response = api.call("POST", "/images", body=body)
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == code, response.json()
    assert dedicated(api) == []
    assert api.ok("GET", "/images/group", {"type": "DEDICATED"})["total"] == 0


def test_register_twice_is_6737_for_the_caller_only(api):
    register(api)
    assert api.error("POST", "/images", body={"swr_path": PATH}) == (400, "ModelArts.6737")
    # the same namespace/name:tag from another registry is the same catalogue entry for its owner
    assert api.error("POST", "/images", body={"swr_path": "other.example.com/team/pytorch:2.1"}) == (
        400,
        "ModelArts.6737",
    )
    bob = api.new_user("bob-reg")
    assert register(api, creds=bob)["swr_path"] == PATH
    assert len(dedicated(api)) == 1 and len(dedicated(api, bob)) == 1


def test_register_asks_the_engine(rules_api):
    api = rules_api
    status, code = api.error("POST", "/images", body={"swr_path": "swr.example.com/missing/app:1"})
    assert (status, code) == (400, "ModelArts.6797")
    response = api.call("POST", "/images", body={"swr_path": "swr.example.com/headless/app:1"})
    assert response.json()["error_code"] == "ModelArts.6336" and "neither" in response.json()["error_msg"]
    # only SSH asked for, and the engine's image serves neither: still refused
    assert api.error("POST", "/images", body={"swr_path": "swr.example.com/headless/app:1", "services": ["SSH"]}) == (
        400,
        "ModelArts.6336",
    )
    assert dedicated(api) == []


def test_private_images_are_their_owners_public_ones_the_projects(api):
    bob = api.new_user("bob-vis")
    private = register(api, "swr.example.com/bob/private:1", creds=bob)
    public = register(api, "swr.example.com/bob/public:1", creds=bob, visibility="PUBLIC")
    assert api.error("GET", f"/images/{private['id']}") == (400, "ModelArts.6404")
    assert [i["id"] for i in dedicated(api)] == [public["id"]]
    nb = api.create("from-public", image_id=public["id"])
    assert nb["status"] == "RUNNING" and nb["image"]["id"] == public["id"]
    assert api.error("DELETE", f"/images/{public['id']}") == (403, "ModelArts.0108")
    assert api.error("POST", f"/images/{public['id']}/sync") == (403, "ModelArts.0108")
    assert api.error("DELETE", f"/images/{private['id']}") == (400, "ModelArts.6404")
    assert api.ok("GET", f"/images/{public['id']}", creds=bob)["status"] == "ACTIVE"


def test_delete_answers_deleted_and_the_image_is_gone(api):
    image = register(api)
    deleted = api.ok("DELETE", f"/images/{image['id']}")
    assert deleted["id"] == image["id"] and deleted["status"] == "DELETED"
    assert api.error("GET", f"/images/{image['id']}") == (400, "ModelArts.6404")
    assert api.error("DELETE", f"/images/{image['id']}") == (400, "ModelArts.6404")
    assert dedicated(api) == []
    listed = api.ok("GET", "/images")["data"]
    assert image["id"] not in {i["id"] for i in listed} and all(i["status"] != "DELETED" for i in listed)
    assert register(api)["status"] == "ACTIVE"  # the address is free again


def test_nbfleets_own_registry_cannot_be_registered(api):
    """Saved images live there and belong to whoever saved them: registering one would hand its owner's
    files to the caller."""
    nb = api.create("owner")
    saved = api.ok(
        "POST", f"/notebooks/{nb['id']}/create-image", body={"name": "private", "namespace": "team", "tag": "v1"}
    )
    for path in (saved["swr_path"], "registry.nbfleet.local/nbfleet/notebook-python3.11:1.0"):
        assert api.error("POST", "/images", body={"swr_path": path}) == (400, "ModelArts.6336")


def test_delete_refusals(api):
    builtin = api.image_id()
    assert api.error("DELETE", f"/images/{builtin}") == (403, "ModelArts.0108")
    assert api.error("DELETE", f"/images/{uuid.uuid4()}") == (400, "ModelArts.6404")
    image = register(api)
    assert api.error("DELETE", f"/images/{image['id']}", body={"is_force": "yes"}) == (400, "ModelArts.6332")
    assert api.error("DELETE", f"/images/{image['id']}", {"force": "maybe"}) == (400, "ModelArts.0104")
    assert api.error("DELETE", f"/images/{image['id']}", body=[]) == (400, "ModelArts.6400")
    assert api.ok("GET", f"/images/{image['id']}")["status"] == "ACTIVE"
    assert api.ok("GET", f"/images/{builtin}")["status"] == "ACTIVE"


def test_instances_keep_a_deleted_image_and_new_creates_get_6797(api):
    image = register(api)
    nb = api.create("keeps-it", image_id=image["id"])
    api.ok("DELETE", f"/images/{image['id']}")
    assert api.ok("GET", f"/notebooks/{nb['id']}")["status"] == "RUNNING"
    body = {
        "name": "too-late",
        "image_id": image["id"],
        "flavor": "modelarts.vm.cpu.2u",
        "volume": {"category": "EVS", "ownership": "MANAGED"},
    }
    assert api.error("POST", "/notebooks", body=body) == (400, "ModelArts.6797")
    api.ok("POST", f"/notebooks/{nb['id']}/stop")
    api.wait_status(nb["id"], "STOPPED")
    api.ok("POST", f"/notebooks/{nb['id']}/start")
    assert api.wait_status(nb["id"], "RUNNING")["image"]["id"] == image["id"]
    assert api.services.runtime.started_from[nb["id"]] == PATH


def _purge_flag(api, image_id: str) -> bool:
    with api.services.images.db.read() as conn:
        return bool(image_repo.get(conn, image_id)["purge"])


def test_force_removes_the_content_once_nothing_uses_it(api):
    engine = api.services.runtime.images
    used = register(api, "a.example.com/team/used:1")  # sorts first: looked at first in a round
    nb = api.create("uses-it", image_id=used["id"])
    kept = register(api, "b.example.com/team/kept:1")
    unused = register(api, "z.example.com/team/unused:1")
    api.ok("DELETE", f"/images/{used['id']}", body={"is_force": True})
    api.ok("DELETE", f"/images/{kept['id']}")  # not forced: the content stays
    api.ok("DELETE", f"/images/{unused['id']}", {"force": "true"})
    wait_until(lambda: not _purge_flag(api, unused["id"]), "removed")
    # the instance still uses the first one: its content waits, flagged
    assert engine.removed == ["z.example.com/team/unused:1"]
    assert _purge_flag(api, used["id"]) and not _purge_flag(api, kept["id"])
    api.ok("DELETE", f"/notebooks/{nb['id']}")
    wait_until(lambda: not _purge_flag(api, used["id"]), "removed once unused")
    assert "a.example.com/team/used:1" in engine.removed
    assert "b.example.com/team/kept:1" not in engine.removed


def test_force_never_removes_what_another_image_still_refers_to(api):
    engine = api.services.runtime.images
    bob = api.new_user("bob-shared")
    mine = register(api, "shared.example.com/team/app:1")
    register(api, "shared.example.com/team/app:1", creds=bob)
    other = register(api, "zz.example.com/team/other:1")
    api.ok("DELETE", f"/images/{mine['id']}", body={"is_force": True})
    api.ok("DELETE", f"/images/{other['id']}", body={"is_force": True})
    wait_until(lambda: not _purge_flag(api, other["id"]), "removed")
    assert "shared.example.com/team/app:1" not in engine.removed and _purge_flag(api, mine["id"])


def test_registering_the_address_again_calls_a_pending_removal_off(api):
    engine = api.services.runtime.images
    first = register(api, "again.example.com/team/app:1")
    nb = api.create("holds-it", image_id=first["id"])
    api.ok("DELETE", f"/images/{first['id']}", body={"is_force": True})
    assert _purge_flag(api, first["id"])  # waits: the instance uses it
    second = register(api, "again.example.com/team/app:1")
    assert not _purge_flag(api, first["id"])  # wanted again: not to be removed
    api.ok("DELETE", f"/notebooks/{nb['id']}")
    api.ok("DELETE", f"/images/{second['id']}")  # not forced
    other = register(api, "zz.example.com/team/other:1")
    api.ok("DELETE", f"/images/{other['id']}", body={"is_force": True})
    wait_until(lambda: not _purge_flag(api, other["id"]), "removed")
    assert "again.example.com/team/app:1" not in engine.removed


def test_a_failed_removal_is_tried_again_and_logged_not_lost(rules_api):
    api = rules_api
    engine = api.services.runtime.images
    stuck = register(api, "swr.example.com/stuck/app:1")
    later = register(api, "zz.example.com/team/later:1")
    api.ok("DELETE", f"/images/{stuck['id']}", body={"is_force": True})
    api.ok("DELETE", f"/images/{later['id']}", body={"is_force": True})
    wait_until(lambda: not _purge_flag(api, later["id"]), "removed")
    assert _purge_flag(api, stuck["id"])  # still to do
    api.services.runtime.rules.clear()  # the engine recovers
    wait_until(lambda: not _purge_flag(api, stuck["id"]), "removed at a later round")
    assert engine.removed == ["zz.example.com/team/later:1", "swr.example.com/stuck/app:1"]


def test_sync_reads_the_engine_again(api):
    runtime = api.services.runtime
    image = register(api, "swr.example.com/team/synced:1")
    synced = api.ok("POST", f"/images/{image['id']}/sync")
    assert synced["status"] == "ACTIVE" and synced["size"] == simulated_size_kb("swr.example.com/team/synced:1")
    runtime.rules.append(FailureRule.parse("image=*/synced:*;op=pull"))  # the engine loses it
    lost = api.ok("POST", f"/images/{image['id']}/sync")
    assert lost["status"] == "ERROR" and "not in the engine" in lost["status_message"]
    assert api.ok("GET", f"/images/{image['id']}")["status"] == "ERROR"
    body = {
        "name": "from-lost",
        "image_id": image["id"],
        "flavor": "modelarts.vm.cpu.2u",
        "volume": {"category": "EVS", "ownership": "MANAGED"},
    }
    assert api.error("POST", "/notebooks", body=body) == (400, "ModelArts.6797")
    runtime.rules.clear()
    back = api.ok("POST", f"/images/{image['id']}/sync")
    assert back["status"] == "ACTIVE" and back["status_message"] == ""
    assert back["update_at"] >= lost["update_at"]


def test_sync_refusals(api):
    assert api.error("POST", f"/images/{api.image_id()}/sync") == (403, "ModelArts.0108")
    assert api.error("POST", f"/images/{uuid.uuid4()}/sync") == (400, "ModelArts.6404")
    image = register(api)
    api.ok("DELETE", f"/images/{image['id']}")
    assert api.error("POST", f"/images/{image['id']}/sync") == (400, "ModelArts.6404")
