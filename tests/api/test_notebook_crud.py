"""Create, show, update, delete and the lifecycle calls, in-process with the simulated runtime."""

from __future__ import annotations

import uuid

SDK_INT = ("create_at", "update_at")


def test_create_answers_creating_then_runs(api):
    nb = api.create("first", wait=False)
    assert nb["status"] == "CREATING"
    assert [s["status"] for s in nb["action_progress"]] == ["WAITING"] * 4
    assert nb["lease"] == {
        "create_at": nb["create_at"],
        "duration": 3_600_000,
        "enable": True,
        "type": "TIMING",
        "update_at": nb["create_at"],
    }
    running = api.wait_status(nb["id"], "RUNNING")
    assert [s["status"] for s in running["action_progress"]] == ["COMPLETED"] * 4
    assert running["billing_items"] == ["COMPUTE", "STORAGE"]
    # Every instance on an origin of its own, on nbfleet's scheme and port; the endpoint names its root.
    assert running["url"] == f"http://{nb['id']}.nb.localhost:8080/lab"
    assert running["endpoints"][0]["uri"] == f"http://{nb['id']}.nb.localhost:8080/"


def test_every_notebook_resp_member_has_its_json_type(api):
    nb = api.create("typed")
    expected = {
        "id": str,
        "name": str,
        "description": str,
        "status": str,
        "feature": str,
        "flavor": str,
        "image": dict,
        "lease": dict,
        "volume": dict,
        "data_volumes": list,
        "endpoints": list,
        "action_progress": list,
        "token": str,
        "url": str,
        "workspace_id": str,
        "billing_items": list,
        "user": dict,
        "user_id": str,
        "is_need_credentials": bool,
        "tags": list,
        "create_at": int,
        "update_at": int,
    }
    for member, kind in expected.items():
        assert isinstance(nb[member], kind), member
    for member in ("custom_spec", "pool", "fail_reason", "affinity", "run_user", "ip", "user_vpc", "jupyter_version"):
        assert member in nb
    assert isinstance(nb["lease"]["enable"], bool) and isinstance(nb["lease"]["duration"], int)
    assert isinstance(nb["volume"]["capacity"], int) and nb["volume"]["mount_path"] == "/home/ma-user/work/"
    assert nb["image"]["arch"] == "x86_64" and nb["image"]["status"] == "ACTIVE"
    assert nb["user"]["domain"]["id"] and nb["user"]["name"] == "admin"
    step = api.ok("POST", f"/notebooks/{nb['id']}/stop")["action_progress"]
    assert step == []


def test_show_unknown_and_malformed_ids_are_6309(api):
    assert api.error("GET", f"/notebooks/{uuid.uuid4()}") == (400, "ModelArts.6309")
    assert api.error("GET", "/notebooks/not-a-uuid") == (400, "ModelArts.6309")
    assert api.error("DELETE", f"/notebooks/{uuid.uuid4()}") == (400, "ModelArts.6309")


def test_update_name_description_and_empty_body(api):
    nb = api.create("before")
    unchanged = api.ok("PUT", f"/notebooks/{nb['id']}", body={})
    assert unchanged["name"] == "before" and unchanged["update_at"] == nb["update_at"]
    updated = api.ok("PUT", f"/notebooks/{nb['id']}", body={"name": "after", "description": "new words"})
    assert updated["name"] == "after" and updated["description"] == "new words"
    assert updated["update_at"] >= nb["update_at"]


def test_update_flavor_only_when_stopped(api):
    nb = api.create("flav")
    assert api.error("PUT", f"/notebooks/{nb['id']}", body={"flavor": "modelarts.vm.cpu.4u"}) == (400, "ModelArts.6347")
    api.ok("POST", f"/notebooks/{nb['id']}/stop")
    api.wait_status(nb["id"], "STOPPED")
    assert api.error("PUT", f"/notebooks/{nb['id']}", body={"flavor": "nope.flavor"}) == (400, "ModelArts.6323")
    assert api.error("PUT", f"/notebooks/{nb['id']}", body={"flavor": "modelarts.vm.cpu.free"}) == (
        400,
        "ModelArts.6792",
    )
    changed = api.ok("PUT", f"/notebooks/{nb['id']}", body={"flavor": "modelarts.vm.cpu.4u"})
    assert changed["flavor"] == "modelarts.vm.cpu.4u"
    switchable = api.ok("GET", f"/notebooks/{nb['id']}/flavors")
    assert "modelarts.vm.cpu.4u" not in {f["id"] for f in switchable["data"]}
    assert switchable["data"] == switchable["flavors"]


def test_storage_resize_only_running_and_only_grows(api):
    nb = api.create("disk", volume={"category": "EVS", "ownership": "MANAGED", "capacity": 10})
    assert api.error("PUT", f"/notebooks/{nb['id']}", body={"storage_new_size": 8}) == (400, "ModelArts.6331")
    grown = api.ok("PUT", f"/notebooks/{nb['id']}", body={"storage_new_size": 20})
    assert grown["volume"]["capacity"] == 20
    api.ok("POST", f"/notebooks/{nb['id']}/stop")
    api.wait_status(nb["id"], "STOPPED")
    assert api.error("PUT", f"/notebooks/{nb['id']}", body={"storage_new_size": 30}) == (400, "ModelArts.6327")


def test_stop_start_delete_cycle_and_wrong_state_errors(api):
    nb = api.create("cycle")
    assert api.error("POST", f"/notebooks/{nb['id']}/start") == (400, "ModelArts.6305")
    stopping = api.ok("POST", f"/notebooks/{nb['id']}/stop")
    assert stopping["status"] == "STOPPING"
    stopped = api.wait_status(nb["id"], "STOPPED")
    assert stopped["billing_items"] == ["STORAGE"]
    assert nb["ip"] == "127.0.0.1" and stopped["ip"] is None  # a stopped instance has no address
    assert api.error("POST", f"/notebooks/{nb['id']}/stop") == (400, "ModelArts.6357")
    assert api.error("PATCH", f"/notebooks/{nb['id']}/lease") == (400, "ModelArts.6327")
    starting = api.ok("POST", f"/notebooks/{nb['id']}/start")
    assert starting["status"] == "STARTING" and starting["token"] != nb["token"]
    api.wait_status(nb["id"], "RUNNING")
    deleting = api.ok("DELETE", f"/notebooks/{nb['id']}")
    assert deleting["status"] == "DELETING"
    for _ in range(500):
        response = api.call("GET", f"/notebooks/{nb['id']}")
        if response.status_code == 400:
            break
    assert response.json()["error_code"] == "ModelArts.6309"


def test_body_with_empty_object_is_accepted_on_start_stop(api):
    nb = api.create("emptybody")
    assert api.ok("POST", f"/notebooks/{nb['id']}/stop", body={})["status"] == "STOPPING"


def test_events_record_the_lifecycle(api):
    nb = api.create("evented")
    api.ok("POST", f"/notebooks/{nb['id']}/stop")
    api.wait_status(nb["id"], "STOPPED")
    page = api.ok("GET", f"/notebooks/{nb['id']}/events", {"sort_dir": "ASC", "limit": 50})
    kinds = [e["type"] for e in page["data"]]
    assert kinds[0] == "created" and "ready" in kinds and kinds[-1] == "stopped"
    assert page["total"] == len(kinds)
    assert all(isinstance(e["create_at"], int) for e in page["data"])
