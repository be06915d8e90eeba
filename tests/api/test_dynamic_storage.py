"""Dynamic storage (spec images-flavors-tags-storage.md §4) through the API, on the simulated runtime: the
statuses, the errors of every member, the operator's allow-lists, stop/start, and what a refusal leaves."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from nbfleet.app import create_app

from ..conftest import make_settings
from ..support import Api, Creds

EFS_ID = "0a1b2c3d-0000-4000-8000-00000000abcd"


@pytest.fixture
def storage_api(tmp_path):
    """nbfleet whose operator offers one file system and one bucket to every project, another bucket to
    nobody, with a short simulated step so MOUNTING can be seen."""
    import json

    efs_dir = tmp_path / "efs"
    (efs_dir / "team").mkdir(parents=True)
    settings = make_settings(
        tmp_path,
        simulated_delay=0.05,
        storage={
            "efs": {
                EFS_ID: {"path": str(efs_dir), "projects": ["*"]},
                "nfs1.example:/exports": {"path": str(efs_dir), "projects": ["someone-else"]},
            },
            "obs": {
                "endpoint": "http://127.0.0.1:9",
                "access_key": "AK",
                "secret_key": "SECRET-never-shown",
                "buckets": {"shared-bucket": ["*"], "other-bucket": ["not-this-project"]},
            },
        },
    )
    app = create_app(settings, announce=lambda _text: None)
    with TestClient(app) as client:
        creds = json.loads((settings.data_dir / "credentials.json").read_text())
        yield Api(client, Creds(creds["ak"], creds["sk"], creds["project_id"], creds["user_id"]), app.state.services)


def wait_mount(api, nb_id, mount_id, *statuses, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        m = api.ok("GET", f"/notebooks/{nb_id}/storage/{mount_id}")
        if m["status"] in statuses:
            return m
        assert time.monotonic() < deadline, f"mount stayed {m['status']}, wanted {statuses}"
        time.sleep(0.02)


def obs(path="/data/obs/", uri="obs://shared-bucket/dir/"):
    return {"category": "OBS", "mount_path": path, "uri": uri}


def efs(path="/data/efs/", uri="0a1b2c3d.sfsturbo.internal:/team"):
    return {"category": "EFS", "mount_path": path, "uri": uri, "efs_id": EFS_ID}


def test_attach_list_show_detach(storage_api):
    api = storage_api
    nb = api.create("mounts")
    attached = api.ok("POST", f"/notebooks/{nb['id']}/storage", body=obs())
    assert attached["status"] == "MOUNTING" and attached["mount_type"] == "DYNAMIC"
    assert attached["uri"] == "obs://shared-bucket/dir/" and attached["mount_path"] == "/data/obs/"
    assert "SECRET" not in str(attached)
    mounted = wait_mount(api, nb["id"], attached["id"], "MOUNTED")
    assert mounted["failure_reason"] is None
    second = api.ok("POST", f"/notebooks/{nb['id']}/storage", body=efs())
    assert second["efs_id"] == EFS_ID and second["category"] == "EFS"
    wait_mount(api, nb["id"], second["id"], "MOUNTED")

    page = api.ok("GET", f"/notebooks/{nb['id']}/storage")
    assert (page["total"], page["size"], page["current"], page["pages"]) == (2, 2, 1, 1)
    assert [m["id"] for m in page["data"]] == [attached["id"], second["id"]]
    shown = api.ok("GET", f"/notebooks/{nb['id']}")["data_volumes"]
    assert [(v["mount_path"], v["url"], v["mount_type"], v["status"]) for v in shown] == [
        ("/data/obs/", "obs://shared-bucket/dir/", "DYNAMIC", "MOUNTED"),
        ("/data/efs/", "0a1b2c3d.sfsturbo.internal:/team", "DYNAMIC", "MOUNTED"),
    ]
    listed = api.ok("GET", "/notebooks")["data"]
    assert [len(n["data_volumes"]) for n in listed if n["id"] == nb["id"]] == [2]

    detached = api.ok("DELETE", f"/notebooks/{nb['id']}/storage/{attached['id']}")
    assert detached["status"] == "UNMOUNTING"
    deadline = time.monotonic() + 10
    while api.call("GET", f"/notebooks/{nb['id']}/storage/{attached['id']}").status_code == 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert api.error("GET", f"/notebooks/{nb['id']}/storage/{attached['id']}") == (400, "ModelArts.6404")
    assert [m["id"] for m in api.ok("GET", f"/notebooks/{nb['id']}/storage")["data"]] == [second["id"]]
    kinds = [e["type"] for e in api.ok("GET", f"/notebooks/{nb['id']}/events", {"limit": 50})["data"]]
    assert kinds.count("storage") >= 5  # mounting x2, mounted x2, unmounting, unmounted


def test_errors_of_the_spec_change_nothing(storage_api):
    api = storage_api
    nb = api.create("errors")
    path = f"/notebooks/{nb['id']}/storage"
    # 6335: every member the SDK marks required, and efs_id for EFS
    for member in ("category", "mount_path", "uri"):
        body = obs()
        del body[member]
        assert api.error("POST", path, body=body) == (400, "ModelArts.6335"), member
    assert api.error(
        "POST", path, body={"category": "EFS", "mount_path": "/data/x/", "uri": "a.sfsturbo.internal:/d"}
    ) == (400, "ModelArts.6335")
    # 6336: mount_path outside /data/, escaping it, odd, or colliding
    for bad in (
        "/data/",
        "/data",
        "/home/ma-user/work/",
        "/data/../etc/",
        "/data/a/../../etc/",
        "/data//a/",
        "/data/./a/",
        "data/a/",
        "/data/a b/",
        "/data/" + "a" * 300 + "/",
        "/datax/a/",
        "/data/a\\b/",
    ):
        assert api.error("POST", path, body=obs(path=bad)) == (400, "ModelArts.6336"), bad
    assert api.error("POST", path, body={**obs(), "category": "NAS"}) == (400, "ModelArts.6336")
    assert api.error("POST", path, body={**obs(), "mount_path": 7}) == (400, "ModelArts.6332")
    # 6358: the root of a bucket
    for root in ("obs://shared-bucket", "obs://shared-bucket/", "obs://shared-bucket//"):
        assert api.error("POST", path, body=obs(uri=root)) == (400, "ModelArts.6358"), root
    assert api.error("POST", path, body=obs(uri="obs://shared-bucket/../x/")) == (400, "ModelArts.6336")
    assert api.error("POST", path, body=obs(uri="s3://shared-bucket/x/")) == (400, "ModelArts.6336")
    # the operator's allow-lists: a bucket or file system not offered to this project
    assert api.error("POST", path, body=obs(uri="obs://other-bucket/x/")) == (400, "ModelArts.6336")
    assert api.error("POST", path, body=obs(uri="obs://unknown-bucket/x/")) == (400, "ModelArts.6336")
    assert api.error("POST", path, body={**efs(), "efs_id": "0a1b2c3d-0000-4000-8000-000000000000"}) == (
        400,
        "ModelArts.6336",
    )
    assert api.error(
        "POST",
        path,
        body={
            "category": "EFS",
            "mount_path": "/data/n/",
            "uri": "nfs1.example:/exports/x",
            "efs_id": "0a1b2c3d-0000-4000-8000-000000000000",
        },
    ) == (400, "ModelArts.6336")
    assert api.error("POST", path, body={**efs(), "efs_id": "not-a-uuid"}) == (400, "ModelArts.6336")
    assert api.error("POST", path, body=efs(uri="0a1b2c3d.sfsturbo.internal:/../etc")) == (400, "ModelArts.6336")
    # 6309 and 6404
    assert api.error("POST", "/notebooks/00000000-0000-0000-0000-000000000000/storage", body=obs()) == (
        400,
        "ModelArts.6309",
    )
    assert api.error("GET", "/notebooks/00000000-0000-0000-0000-000000000000/storage") == (400, "ModelArts.6309")
    assert api.error("GET", f"{path}/00000000-0000-0000-0000-000000000000") == (400, "ModelArts.6404")
    assert api.error("DELETE", f"{path}/00000000-0000-0000-0000-000000000000") == (400, "ModelArts.6404")
    assert api.ok("GET", path)["total"] == 0

    # collisions: the same path, one inside another, either way
    first = api.ok("POST", path, body=obs(path="/data/a/b/"))
    for clash in ("/data/a/b/", "/data/a/b", "/data/a/", "/data/a/b/c/"):
        assert api.error("POST", path, body=obs(path=clash)) == (400, "ModelArts.6336"), clash
    assert api.ok("GET", path)["total"] == 1
    # another user's notebook is not found, its mounts neither
    other = api.new_user("someone")
    assert api.error("GET", path, creds=other) == (400, "ModelArts.6309")
    assert api.error("DELETE", f"{path}/{first['id']}", creds=other) == (400, "ModelArts.6309")


def test_not_running_is_6327_and_stop_start_keeps_mounts(storage_api):
    api = storage_api
    nb = api.create("restart")
    path = f"/notebooks/{nb['id']}/storage"
    m = api.ok("POST", path, body=obs())
    wait_mount(api, nb["id"], m["id"], "MOUNTED")
    api.ok("POST", f"/notebooks/{nb['id']}/stop")
    api.wait_status(nb["id"], "STOPPED")
    assert api.ok("GET", f"{path}/{m['id']}")["status"] == "UNMOUNTED"
    assert api.error("POST", path, body=obs(path="/data/other/")) == (400, "ModelArts.6327")
    assert api.error("DELETE", f"{path}/{m['id']}") == (400, "ModelArts.6327")
    assert api.ok("GET", path)["total"] == 1
    api.ok("POST", f"/notebooks/{nb['id']}/start")
    api.wait_status(nb["id"], "RUNNING")
    assert wait_mount(api, nb["id"], m["id"], "MOUNTED")["mount_path"] == "/data/obs/"
    assert m["id"] in api.services.runtime.storage.mounted[nb["id"]]


def test_a_detach_during_a_stop_is_finished_by_the_stop(storage_api):
    api = storage_api
    nb = api.create("detach-then-stop")
    path = f"/notebooks/{nb['id']}/storage"
    m = api.ok("POST", path, body=obs())
    wait_mount(api, nb["id"], m["id"], "MOUNTED")
    api.ok("DELETE", f"{path}/{m['id']}")
    api.ok("POST", f"/notebooks/{nb['id']}/stop")
    api.wait_status(nb["id"], "STOPPED")
    assert api.error("GET", f"{path}/{m['id']}") == (400, "ModelArts.6404")


def test_a_failed_mount_says_why_and_can_be_detached(tmp_path):
    import json

    settings = make_settings(
        tmp_path,
        simulated_fail=["name=broken-*;op=mount"],
        storage={
            "obs": {"endpoint": "http://127.0.0.1:9", "access_key": "AK", "secret_key": "SK", "buckets": {"b01": ["*"]}}
        },
    )
    app = create_app(settings, announce=lambda _text: None)
    with TestClient(app) as client:
        creds = json.loads((settings.data_dir / "credentials.json").read_text())
        api = Api(client, Creds(creds["ak"], creds["sk"], creds["project_id"], creds["user_id"]), app.state.services)
        nb = api.create("broken-mounts")
        m = api.ok("POST", f"/notebooks/{nb['id']}/storage", body=obs(uri="obs://b01/x/"))
        failed = wait_mount(api, nb["id"], m["id"], "MOUNT_FAILED")
        assert "simulated failure while mounting obs://b01/x/" in failed["failure_reason"]
        assert api.ok("DELETE", f"/notebooks/{nb['id']}/storage/{m['id']}")["status"] == "UNMOUNTING"


def test_nothing_is_offered_unless_the_operator_says_so(api):
    nb = api.create("no-storage")
    assert api.error("POST", f"/notebooks/{nb['id']}/storage", body=obs()) == (400, "ModelArts.6336")
    assert api.error("POST", f"/notebooks/{nb['id']}/storage", body=efs()) == (400, "ModelArts.6336")


def test_deleting_an_instance_removes_its_mounts(storage_api):
    api = storage_api
    nb = api.create("deleted")
    m = api.ok("POST", f"/notebooks/{nb['id']}/storage", body=obs())
    wait_mount(api, nb["id"], m["id"], "MOUNTED")
    api.ok("DELETE", f"/notebooks/{nb['id']}")
    deadline = time.monotonic() + 10
    while api.call("GET", f"/notebooks/{nb['id']}").status_code == 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    from nbfleet.store.tables import dynamic_storages

    with api.services.notebooks.db.read() as conn:
        assert conn.execute(dynamic_storages.select()).first() is None
    assert nb["id"] not in api.services.runtime.storage.mounted


def test_concurrent_attaches_to_one_path_make_one_mount(storage_api):
    """Attaches racing for the same or nested paths: exactly one wins, the others get 6336 (never a 500)."""
    from concurrent.futures import ThreadPoolExecutor

    api = storage_api
    nb = api.create("racing")
    paths = ["/data/race/", "/data/race/", "/data/race/in/", "/data/race/", "/data/race/in/", "/data/race/"]

    def attach(path):
        r = api.call("POST", f"/notebooks/{nb['id']}/storage", body=obs(path=path))
        return r.status_code, r.json().get("error_code")

    with ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(attach, paths))
    assert sorted(a[0] for a in answers) == [200] + [400] * (len(paths) - 1), answers
    assert {a[1] for a in answers if a[0] == 400} == {"ModelArts.6336"}
    assert api.ok("GET", f"/notebooks/{nb['id']}/storage")["total"] == 1
