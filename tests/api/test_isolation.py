"""Tenant isolation (README §3.3, §9 A5): what one user, an admin, and a user of another project can
see and change through every notebook endpoint.

Another user's notebook is *invisible* to a non-admin: 400 ModelArts.6309 exactly like an unknown id,
never 403. A request for a project the caller is not a member of is 403 ModelArts.0210.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from ..support import Api, Creds

NOT_FOUND = (400, "ModelArts.6309")
WRONG_PROJECT = (403, "ModelArts.0210")


@dataclass
class Tenants:
    admin: Creds  # admin of project A (the bootstrap admin)
    u1: Creds  # non-admin, project A
    u2: Creds  # non-admin, project A
    b: Creds  # non-admin, project B
    project_b: str
    nb_admin: dict
    nb1: dict
    nb2: dict
    nb_b: dict


def tenants(api: Api) -> Tenants:
    project_b = api.services.identity.create_project("project-b")
    u1 = api.new_user("user-one")
    u2 = api.new_user("user-two")
    b = api.new_user("user-b", project_id=project_b)
    nb_admin = api.create("admins_nb", wait=False)
    nb1 = api.create("one_nb", creds=u1, wait=False)
    nb2 = api.create("two_nb", creds=u2, wait=False)
    nb_b = api.create("b_nb", creds=b, wait=False)
    for nb, creds in ((nb_admin, api.creds), (nb1, u1), (nb2, u2), (nb_b, b)):
        api.wait_status(nb["id"], "RUNNING", creds=creds)
    return Tenants(api.creds, u1, u2, b, project_b, nb_admin, nb1, nb2, nb_b)


@pytest.fixture
def t(api) -> Tenants:
    return tenants(api)


def every_notebook_call(notebook_id: str) -> list[tuple[str, str, dict | None, dict | None]]:
    """(method, path, query, body) of every endpoint that names one notebook."""
    return [
        ("GET", f"/notebooks/{notebook_id}", None, None),
        ("PUT", f"/notebooks/{notebook_id}", None, {"name": "hijacked", "description": "mine now"}),
        ("PUT", f"/notebooks/{notebook_id}", None, {}),
        ("POST", f"/notebooks/{notebook_id}/stop", None, None),
        ("POST", f"/notebooks/{notebook_id}/start", None, None),
        ("GET", f"/notebooks/{notebook_id}/lease", None, None),
        ("PATCH", f"/notebooks/{notebook_id}/lease", {"duration": 7_200_000}, None),
        ("PATCH", f"/notebooks/{notebook_id}/lease", None, {"duration": 7_200_000, "type": "TIMING"}),
        ("GET", f"/notebooks/{notebook_id}/events", None, None),
        ("GET", f"/notebooks/{notebook_id}/flavors", None, None),
        ("DELETE", f"/notebooks/{notebook_id}", None, None),
    ]


def ids(page: dict) -> set[str]:
    return {item["id"] for item in page["data"]}


def assert_untouched(api: Api, nb: dict, owner: Creds) -> None:
    now = api.ok("GET", f"/notebooks/{nb['id']}", creds=owner)
    assert now["status"] == "RUNNING"
    assert now["name"] == nb["name"] and now["description"] == nb["description"]
    assert now["lease"]["duration"] == nb["lease"]["duration"]
    assert now["token"] == api.ok("GET", f"/notebooks/{nb['id']}", creds=owner)["token"]


# --- another user of the same project ------------------------------------------------------------------


def test_non_admin_gets_6309_for_another_users_notebook_on_every_endpoint(api, t):
    running = api.ok("GET", f"/notebooks/{t.nb1['id']}", creds=t.u1)
    for method, path, query, body in every_notebook_call(t.nb1["id"]):
        assert api.error(method, path, query, body, creds=t.u2) == NOT_FOUND, (method, path)
    assert_untouched(api, running, t.u1)
    events = api.ok("GET", f"/notebooks/{t.nb1['id']}/events", {"limit": 50}, creds=t.u1)["data"]
    assert not any(e["type"] in ("updated", "stopping", "deleting", "lease_renewed") for e in events)


def test_another_users_notebook_is_indistinguishable_from_an_unknown_one(api, t):
    unknown = str(uuid.uuid4())
    for (method, path, query, body), (_, unknown_path, _, _) in zip(
        every_notebook_call(t.nb1["id"]), every_notebook_call(unknown), strict=True
    ):
        theirs = api.call(method, path, query, body, creds=t.u2)
        nothing = api.call(method, unknown_path, query, body, creds=t.u2)
        assert theirs.status_code == nothing.status_code == 400
        assert theirs.json()["error_code"] == nothing.json()["error_code"] == "ModelArts.6309"
        assert theirs.json()["error_msg"] == nothing.json()["error_msg"]


def test_non_admin_cannot_touch_the_admins_notebook(api, t):
    for method, path, query, body in every_notebook_call(t.nb_admin["id"]):
        assert api.error(method, path, query, body, creds=t.u1) == NOT_FOUND, (method, path)
    assert_untouched(api, api.ok("GET", f"/notebooks/{t.nb_admin['id']}"), t.admin)


def test_non_admin_lists_show_only_own_instances_on_both_routes(api, t):
    for creds, own in ((t.u1, t.nb1), (t.u2, t.nb2)):
        for path in ("/notebooks", "/notebooks/all"):
            page = api.ok("GET", path, creds=creds)
            assert ids(page) == {own["id"]} and page["total"] == 1, path


@pytest.mark.parametrize("path", ["/notebooks", "/notebooks/all"])
def test_owner_filter_is_ignored_for_non_admins(api, t, path):
    for owner in (t.u2.user_id, t.admin.user_id, t.b.user_id, t.u1.user_id):
        page = api.ok("GET", path, {"owner": owner}, creds=t.u1)
        assert ids(page) == {t.nb1["id"]} and page["total"] == 1, owner


def test_non_admin_filters_never_reach_other_users_rows(api, t):
    for query in (
        {"name": "two"},
        {"name": "_nb"},
        {"id": t.nb2["id"]},
        {"username": "user-two"},
        {"username": "user"},
        {"status": "RUNNING"},
        {"billing": "ALL"},
        {"sort_key": "name"},
    ):
        page = api.ok("GET", "/notebooks/all", query, creds=t.u1)
        assert ids(page) <= {t.nb1["id"]}, query
        assert page["total"] == len(page["data"])


def test_a_user_in_two_projects_sees_each_projects_notebooks_only_there(api, t):
    api.services.identity.add_member(t.u1.user_id, t.project_b)
    u1_in_b = Creds(t.u1.ak, t.u1.sk, t.project_b, t.u1.user_id)
    nb_u1_b = api.create("one_in_b", creds=u1_in_b)
    assert ids(api.ok("GET", "/notebooks", creds=u1_in_b)) == {nb_u1_b["id"]}
    assert ids(api.ok("GET", "/notebooks", creds=t.u1)) == {t.nb1["id"]}
    assert api.error("GET", f"/notebooks/{nb_u1_b['id']}", creds=t.u1) == NOT_FOUND
    assert api.error("GET", f"/notebooks/{t.nb1['id']}", creds=u1_in_b) == NOT_FOUND
    assert api.error("POST", f"/notebooks/{nb_u1_b['id']}/stop", creds=t.u1) == NOT_FOUND


# --- the admin -----------------------------------------------------------------------------------------


def test_admin_notebooks_shows_own_and_all_shows_everyone_in_the_project(api, t):
    assert ids(api.ok("GET", "/notebooks")) == {t.nb_admin["id"]}
    everyone = api.ok("GET", "/notebooks/all")
    assert ids(everyone) == {t.nb_admin["id"], t.nb1["id"], t.nb2["id"]}
    assert everyone["total"] == 3
    assert t.nb_b["id"] not in ids(everyone)


def test_admin_owner_filter_on_both_routes(api, t):
    for path in ("/notebooks", "/notebooks/all"):
        assert ids(api.ok("GET", path, {"owner": t.u1.user_id})) == {t.nb1["id"]}
        assert ids(api.ok("GET", path, {"owner": t.u2.user_id})) == {t.nb2["id"]}
        assert ids(api.ok("GET", path, {"owner": t.admin.user_id})) == {t.nb_admin["id"]}
        # a user of another project owns nothing here
        assert api.ok("GET", path, {"owner": t.b.user_id})["total"] == 0
    assert ids(api.ok("GET", "/notebooks/all", {"username": "user-"})) == {t.nb1["id"], t.nb2["id"]}


def test_token_is_shown_to_the_owner_only(api, t):
    owner_view = api.ok("GET", f"/notebooks/{t.nb1['id']}", creds=t.u1)
    admin_view = api.ok("GET", f"/notebooks/{t.nb1['id']}")
    assert isinstance(owner_view["token"], str) and owner_view["token"]
    assert admin_view["token"] is None
    assert api.ok("GET", f"/notebooks/{t.nb_admin['id']}")["token"]
    for item in api.ok("GET", "/notebooks/all")["data"]:
        assert (item["token"] is not None) == (item["user_id"] == t.admin.user_id), item["name"]
    for item in api.ok("GET", "/notebooks/all", creds=t.u1)["data"]:
        assert item["token"] == owner_view["token"]
    # nor do the admin's mutating calls reveal it
    assert api.ok("PUT", f"/notebooks/{t.nb1['id']}", body={"description": "by admin"})["token"] is None
    assert api.ok("POST", f"/notebooks/{t.nb1['id']}/stop")["token"] is None
    api.wait_status(t.nb1["id"], "STOPPED", creds=t.u1)
    started = api.ok("POST", f"/notebooks/{t.nb1['id']}/start")
    assert started["token"] is None
    rotated = api.ok("GET", f"/notebooks/{t.nb1['id']}", creds=t.u1)["token"]
    assert rotated and rotated != owner_view["token"]


def test_admin_may_act_on_every_notebook_of_the_project(api, t):
    assert api.ok("GET", f"/notebooks/{t.nb2['id']}/lease")["enable"] is True
    assert api.ok("GET", f"/notebooks/{t.nb2['id']}/events")["total"] >= 1
    assert api.ok("PUT", f"/notebooks/{t.nb2['id']}", body={"name": "renamed_by_admin"})["name"] == "renamed_by_admin"
    assert api.ok("GET", f"/notebooks/{t.nb2['id']}", creds=t.u2)["name"] == "renamed_by_admin"
    assert api.ok("DELETE", f"/notebooks/{t.nb2['id']}")["status"] == "DELETING"


def test_admin_cannot_see_or_touch_another_projects_notebook(api, t):
    for method, path, query, body in every_notebook_call(t.nb_b["id"]):
        assert api.error(method, path, query, body) == NOT_FOUND, (method, path)
    assert_untouched(api, api.ok("GET", f"/notebooks/{t.nb_b['id']}", creds=t.b), t.b)
    assert t.nb_b["id"] not in ids(api.ok("GET", "/notebooks/all", {"limit": 50}))
    assert api.ok("GET", "/notebooks/all", {"id": t.nb_b["id"]})["total"] == 0


# --- another project -----------------------------------------------------------------------------------


def test_user_of_project_b_calling_project_a_is_403_0210_everywhere(api, t):
    project_a = t.admin.project_id
    # the same key, with project A in the path only, and with project A in path and X-Project-Id
    b_claiming_a = Creds(t.b.ak, t.b.sk, project_a, t.b.user_id)
    calls = [
        ("GET", "/notebooks", None, None),
        ("GET", "/notebooks/all", None, None),
        (
            "POST",
            "/notebooks",
            None,
            {
                "name": "x",
                "image_id": api.image_id(),
                "flavor": "modelarts.vm.cpu.2u",
                "volume": {"category": "EVS", "ownership": "MANAGED"},
            },
        ),
    ]
    calls += every_notebook_call(t.nb1["id"]) + every_notebook_call(t.nb_b["id"])
    for method, path, query, body in calls:
        assert api.error(method, path, query, body, creds=t.b, project_id=project_a) == WRONG_PROJECT, (method, path)
        assert api.error(method, path, query, body, creds=b_claiming_a) == WRONG_PROJECT, (method, path)
    assert_untouched(api, api.ok("GET", f"/notebooks/{t.nb1['id']}", creds=t.u1), t.u1)
    assert api.ok("GET", "/notebooks/all")["total"] == 3


def test_project_a_users_calling_project_b_are_403_0210(api, t):
    for creds in (t.admin, t.u1):
        assert api.error("GET", "/notebooks", creds=creds, project_id=t.project_b) == WRONG_PROJECT
        assert api.error("GET", "/notebooks/all", creds=creds, project_id=t.project_b) == WRONG_PROJECT
        assert api.error("GET", f"/notebooks/{t.nb_b['id']}", creds=creds, project_id=t.project_b) == WRONG_PROJECT


def test_project_b_lists_hold_only_project_b(api, t):
    for path in ("/notebooks", "/notebooks/all"):
        page = api.ok("GET", path, creds=t.b)
        assert ids(page) == {t.nb_b["id"]} and page["total"] == 1
        assert api.ok("GET", path, {"owner": t.u1.user_id}, creds=t.b)["total"] == 1  # ignored: not an admin
    for method, path, query, body in every_notebook_call(t.nb1["id"]):
        assert api.error(method, path, query, body, creds=t.b) == NOT_FOUND, (method, path)
