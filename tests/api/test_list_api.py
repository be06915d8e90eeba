"""Example-based tests of the notebook list (seed "Querying Notebook Instances", notebooks.md §1.2-§1.3,
README §8 and §9 A1-A7, A19)."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.store import notebook_list

from ..conftest import make_settings
from ..support import Api, Creds

ENVELOPE = {"current", "data", "pages", "size", "total"}


@pytest.fixture
def settings(tmp_path):
    # instances whose name starts with "undeletable" fail to release their resources (-> DELETE_FAILED)
    return make_settings(tmp_path, simulated_fail=["name=undeletable*;op=delete"])


def names(page: dict) -> list[str]:
    return [item["name"] for item in page["data"]]


def empty(size: int = 10) -> dict:
    return {"current": 0, "data": [], "pages": 0, "size": size, "total": 0}


# --- the seed's envelope ---------------------------------------------------------------------------------


def test_empty_list_envelope(api):
    assert api.ok("GET", "/notebooks") == empty()
    assert api.ok("GET", "/notebooks/all") == empty()


def test_seed_envelope_with_no_query(api):
    older = api.create("notebooks_test", description="api-test")
    newer = api.create("notebook_5ee4bf0e", description="api-test")
    page = api.ok("GET", "/notebooks")
    assert set(page) == ENVELOPE
    assert (page["current"], page["pages"], page["size"], page["total"]) == (0, 1, 10, 2)
    assert all(isinstance(page[k], int) and not isinstance(page[k], bool) for k in ENVELOPE - {"data"})
    # default order: create_at DESC (the seed lists the later instance first), then id DESC
    expected = sorted([older, newer], key=lambda nb: (nb["create_at"], nb["id"]), reverse=True)
    assert [item["id"] for item in page["data"]] == [nb["id"] for nb in expected]
    for item in page["data"]:
        # every member the seed example shows, with its JSON type
        assert item["description"] == "api-test" and item["feature"] == "NOTEBOOK"
        assert item["flavor"] == "modelarts.vm.cpu.2u" and item["workspace_id"] == "0"
        assert item["status"] == "RUNNING" and isinstance(item["token"], str)
        assert {"id", "name", "swr_path", "type"} <= set(item["image"])
        assert {"create_at", "duration", "enable", "update_at"} <= set(item["lease"])
        assert isinstance(item["lease"]["create_at"], int) and isinstance(item["lease"]["enable"], bool)
        assert item["volume"]["category"] == "EVS" and item["volume"]["ownership"] == "MANAGED"
        assert item["volume"]["mount_path"] == "/home/ma-user/work/" and isinstance(item["volume"]["capacity"], int)
    # a list item is the same NotebookResp that GET shows
    for item in page["data"]:
        assert item == api.ok("GET", f"/notebooks/{item['id']}")


def test_raw_response_is_plain_json_with_the_five_members(api):
    api.create("raw")
    response = api.call("GET", "/notebooks")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert set(json.loads(response.content)) == ENVELOPE


# --- feature (A7) ----------------------------------------------------------------------------------------


def test_default_feature_notebook_hides_codelab_instances(api):
    codelab = api.create("codelab", feature="DEFAULT", flavor="modelarts.vm.cpu.free")
    billed = api.create("billed")
    for path in ("/notebooks", "/notebooks/all"):
        assert [i["id"] for i in api.ok("GET", path)["data"]] == [billed["id"]]
        assert [i["id"] for i in api.ok("GET", path, {"feature": "NOTEBOOK"})["data"]] == [billed["id"]]
        for spelling in ("DEFAULT", "default", "Default"):
            page = api.ok("GET", path, {"feature": spelling})
            assert [i["id"] for i in page["data"]] == [codelab["id"]] and page["total"] == 1
            assert page["data"][0]["feature"] == "DEFAULT"
    assert api.error("GET", "/notebooks", {"feature": "FREE"}) == (400, "ModelArts.0104")


# --- status (A6) -----------------------------------------------------------------------------------------


def test_status_deleted_is_always_an_empty_page(api):
    nb = api.create("soon_gone")
    api.create("stays")
    assert api.ok("GET", "/notebooks", {"status": "DELETED"}) == empty()
    api.ok("DELETE", f"/notebooks/{nb['id']}")
    for _ in range(500):
        if api.call("GET", f"/notebooks/{nb['id']}").status_code != 200:
            break
    assert api.error("GET", f"/notebooks/{nb['id']}") == (400, "ModelArts.6309")
    assert api.ok("GET", "/notebooks", {"status": "DELETED"}) == empty()
    assert api.ok("GET", "/notebooks/all", {"status": "deleted", "limit": 50}) == empty(50)
    assert names(api.ok("GET", "/notebooks")) == ["stays"]


def test_status_filter_is_exact_and_case_insensitive(api):
    running = api.create("running_one")
    stopped = api.create("stopped_one")
    api.ok("POST", f"/notebooks/{stopped['id']}/stop")
    api.wait_status(stopped["id"], "STOPPED")
    assert [i["id"] for i in api.ok("GET", "/notebooks", {"status": "RUNNING"})["data"]] == [running["id"]]
    assert [i["id"] for i in api.ok("GET", "/notebooks", {"status": "stopped"})["data"]] == [stopped["id"]]
    assert api.ok("GET", "/notebooks", {"status": "STOPPING"}) == empty()
    assert api.error("GET", "/notebooks", {"status": "STOP"}) == (400, "ModelArts.0104")


def test_delete_failed_instances_stay_listed(api):
    nb = api.create("undeletable_nb")
    api.ok("DELETE", f"/notebooks/{nb['id']}")
    api.wait_status(nb["id"], "DELETE_FAILED")
    assert names(api.ok("GET", "/notebooks")) == ["undeletable_nb"]
    assert api.ok("GET", "/notebooks", {"status": "DELETE_FAILED"})["total"] == 1


@pytest.fixture
def slow_api(tmp_path):
    """Like ``api`` but every runtime step takes 0.25 s, so that transitional states can be listed."""
    settings = make_settings(tmp_path, simulated_delay=0.25)
    app = create_app(settings, announce=lambda _text: None)
    with TestClient(app) as client:
        creds = json.loads((settings.data_dir / "credentials.json").read_text())
        yield Api(client, Creds(creds["ak"], creds["sk"], creds["project_id"], creds["user_id"]), app.state.services)


def test_creating_and_deleting_instances_are_listed(slow_api):
    api = slow_api
    nb = api.create("in_flight", wait=False)
    page = api.ok("GET", "/notebooks", {"status": "CREATING"})
    assert [i["id"] for i in page["data"]] == [nb["id"]]
    api.wait_status(nb["id"], "RUNNING")
    assert api.ok("DELETE", f"/notebooks/{nb['id']}")["status"] == "DELETING"
    page = api.ok("GET", "/notebooks")
    assert [(i["id"], i["status"]) for i in page["data"]] == [(nb["id"], "DELETING")]
    assert api.ok("GET", "/notebooks", {"status": "DELETING"})["total"] == 1


# --- fuzzy filters treat LIKE wildcards literally ---------------------------------------------------------


def test_fuzzy_name_treats_underscore_literally(api):
    for name in ("a_b", "aXb", "a-b", "ab", "A_B_c"):
        api.create(name)
    assert sorted(names(api.ok("GET", "/notebooks", {"name": "a_b"}))) == ["A_B_c", "a_b"]
    assert sorted(names(api.ok("GET", "/notebooks", {"name": "_"}))) == ["A_B_c", "a_b"]
    assert sorted(names(api.ok("GET", "/notebooks", {"name": "A_B"}))) == ["A_B_c", "a_b"]
    assert sorted(names(api.ok("GET", "/notebooks", {"name": "a-"}))) == ["a-b"]
    assert sorted(names(api.ok("GET", "/notebooks", {"name": "XB"}))) == ["aXb"]
    assert api.ok("GET", "/notebooks", {"name": "a__b"})["total"] == 0


def test_fuzzy_name_refuses_percent_and_other_like_syntax(api):
    api.create("a_b")
    for pattern in ("%", "a%b", "a*", "a?b", "[ab]"):
        assert api.error("GET", "/notebooks", {"name": pattern}) == (400, "ModelArts.0104"), pattern


def test_fuzzy_description_treats_percent_underscore_and_backslash_literally(api):
    for name, description in (
        ("pct", "100% sure"),
        ("num", "1000 sure"),
        ("und", "50_50"),
        ("x50", "50x50"),
        ("bsl", "C:\\temp"),
        ("plain", "Ctemp"),
    ):
        api.create(name, description=description)
    assert names(api.ok("GET", "/notebooks", {"description": "0%"})) == ["pct"]
    assert names(api.ok("GET", "/notebooks", {"description": "%"})) == ["pct"]
    assert names(api.ok("GET", "/notebooks", {"description": "0_5"})) == ["und"]
    assert names(api.ok("GET", "/notebooks", {"description": "_"})) == ["und"]
    assert names(api.ok("GET", "/notebooks", {"description": "\\"})) == ["bsl"]
    assert names(api.ok("GET", "/notebooks", {"description": ":\\T"})) == ["bsl"]
    assert sorted(names(api.ok("GET", "/notebooks", {"description": "SURE"}))) == ["num", "pct"]


def test_fuzzy_filters_are_case_insensitive_beyond_ascii(api):
    api.create("École_nb")
    api.create("ecole_nb")
    api.create("Ünïcode", description="Élan vital")
    assert names(api.ok("GET", "/notebooks", {"name": "éCOLE"})) == ["École_nb"]
    assert names(api.ok("GET", "/notebooks", {"name": "üNÏ"})) == ["Ünïcode"]
    assert names(api.ok("GET", "/notebooks", {"description": "élan"})) == ["Ünïcode"]


@pytest.mark.parametrize("lookup_cost", [0, 10**9], ids=["rarest-trigrams-then-like", "like-over-the-scope"])
def test_a_fuzzy_term_matches_exactly_whichever_way_it_is_looked_up(api, monkeypatch, lookup_cost):
    """SQLite asks the trigram index for a term's rarest trigrams and rechecks with LIKE, or reads the scope
    with LIKE when that is cheaper; either way only rows containing the whole term match."""
    monkeypatch.setattr(notebook_list, "LOOKUP_COST_IN_SCANNED_ROWS", lookup_cost)
    monkeypatch.setattr(notebook_list, "_doc_freq", {})
    matching = ["Tango-ECHO-3", "tango-echo-1", "x-tango-echo"]
    # Every trigram of "tango-echo", in another order: an index of trigrams alone would say "maybe".
    for name in [*matching, "go-ech_tango-e_echo", "echo-tango", "tango"]:
        api.create(name, description=f"about {name}")
    page = api.ok("GET", "/notebooks", {"name": "Tango-Echo"})
    assert sorted(names(page)) == matching and page["total"] == 3
    assert sorted(names(api.ok("GET", "/notebooks", {"description": "T X-TANGO-e"}))) == ["x-tango-echo"]
    assert api.ok("GET", "/notebooks", {"name": "tango-echo-1", "description": "echo-1"})["total"] == 1
    # Case folded beyond ASCII either way: an ASCII term finds a name whose letters only fold to it.
    api.create("\u212aelvin-scale")  # KELVIN SIGN, whose lower case is "k"
    api.create("ÉCOLE-tango")
    assert names(api.ok("GET", "/notebooks", {"name": "kelvin-sc"})) == ["\u212aelvin-scale"]
    assert names(api.ok("GET", "/notebooks", {"name": "école-TAN"})) == ["ÉCOLE-tango"]
    # ... and a term beyond ASCII whose letters fold to ASCII finds ASCII names (short: LIKE alone).
    api.create("k8s-lab")
    assert sorted(names(api.ok("GET", "/notebooks", {"name": "\u212a8"}))) == ["k8s-lab"]


def test_the_index_path_pages_and_counts_in_one_pass_exactly(api, monkeypatch):
    """Rare terms: one statement gives the page and the total (a window count before OFFSET/LIMIT); every
    page, in both directions, and an offset past the end give what the plain COUNT and order say."""
    monkeypatch.setattr(notebook_list, "LOOKUP_COST_IN_SCANNED_ROWS", 0)  # always the index path
    monkeypatch.setattr(notebook_list, "_doc_freq", {})
    matching = sorted(f"quartz-{i:02d}" for i in range(7))
    for name in [*matching, "quart", "zztrauq", "other"]:
        api.create(name, wait=False)
    ran = []
    real_page = notebook_list.page

    def spy(conn, q):
        ran.append(notebook_list.statements(q, conn)[4] is not None)
        return real_page(conn, q)

    monkeypatch.setattr(notebook_list, "page", spy)
    for sort_dir, expected in (("ASC", matching), ("DESC", matching[::-1])):
        seen = []
        for offset in range(0, 9, 3):
            page = api.ok(
                "GET",
                "/notebooks",
                {"name": "QUARTZ", "sort_key": "name", "sort_dir": sort_dir, "offset": offset, "limit": 3},
            )
            assert page["total"] == 7
            seen += names(page)
        assert seen == expected
    beyond = api.ok("GET", "/notebooks", {"name": "quartz", "offset": 50})
    assert (beyond["total"], beyond["data"]) == (7, [])
    nothing = api.ok("GET", "/notebooks", {"name": "quartzite"})
    assert (nothing["total"], nothing["data"]) == (0, [])
    if api.services.notebooks.db.is_sqlite:  # PostgreSQL matches with pg_trgm and counts apart
        assert ran and all(ran)  # the one-pass statement was the one used


def test_fuzzy_flavor_and_username(api):
    api.create("small")
    api.create("big", flavor="modelarts.vm.cpu.8u")
    assert names(api.ok("GET", "/notebooks", {"flavor": "8U"})) == ["big"]
    assert sorted(names(api.ok("GET", "/notebooks", {"flavor": "vm.CPU"}))) == ["big", "small"]
    assert api.ok("GET", "/notebooks", {"flavor": "gpu"})["total"] == 0
    assert api.ok("GET", "/notebooks/all", {"username": "DMI"})["total"] == 2
    assert api.ok("GET", "/notebooks/all", {"username": "nobody"})["total"] == 0


@pytest.mark.parametrize("owners_listed", [True, False], ids=["via-matching-users", "via-instance-column"])
def test_username_matches_owners_names_in_any_case(api, monkeypatch, owners_listed):
    """Few matching users: their instances through the owner index and counters; many: the instances' own
    user name column. Both give the same rows and totals."""
    from nbfleet.store import notebook_list

    if not owners_listed:
        monkeypatch.setattr(notebook_list, "OWNERS_BY_NAME_MAX", 0)
    zoe, zoltan = api.new_user("Zoe-lab"), api.new_user("zoltan_ops")
    for creds, count in ((zoe, 3), (zoltan, 2)):
        for i in range(count):
            api.create(f"nb-{i}", creds=creds)
    api.create("admins-own")

    def owners(query: dict) -> tuple[int, list[str]]:
        page = api.ok("GET", "/notebooks/all", {"limit": 2, **query})
        return page["total"], sorted({item["user"]["name"] for item in page["data"]})

    assert owners({"username": "zOE"}) == (3, ["Zoe-lab"])
    assert owners({"username": "zo"}) == (5, ["zoltan_ops"])  # newest first: zoltan's came last
    assert owners({"username": "o", "sort_dir": "ASC"}) == (5, ["Zoe-lab"])
    assert owners({"username": "n_o"}) == (2, ["zoltan_ops"])  # '_' is literal, not LIKE's wildcard
    assert owners({"username": "n.o"}) == (0, [])
    assert owners({"username": "zoltan", "owner": zoe.user_id}) == (0, [])
    assert owners({"username": "ltan", "owner": zoltan.user_id, "offset": 1}) == (2, ["zoltan_ops"])
    assert owners({"username": "dmin"}) == (1, ["admin"])
    assert owners({"username": "lab", "name": "nb-2"}) == (1, ["Zoe-lab"])
    # a user's own list keeps to the caller, whatever the name matches
    mine = api.ok("GET", "/notebooks", {"username": "o"}, creds=zoltan)
    assert mine["total"] == 2 and {item["user_id"] for item in mine["data"]} == {zoltan.user_id}


def test_status_and_billing_together_count_only_rows_matching_both(api):
    """The total comes from counter rows: with status and billing both given it must honour both."""
    from sqlalchemy import update

    from nbfleet.store.tables import notebooks

    frozen = api.create("frozen-one")
    api.create("running-one")
    with api.services.notebooks.db.write() as conn:  # FROZEN is set by operators, not by the API
        conn.execute(update(notebooks).where(notebooks.c.id == frozen["id"]).values(status="FROZEN"))
    assert api.ok("GET", "/notebooks/all", {"status": "FROZEN", "billing": "COMPUTE"}) == empty()
    assert api.ok("GET", "/notebooks/all", {"status": "FROZEN", "billing": "STORAGE"})["total"] == 1
    assert names(api.ok("GET", "/notebooks/all", {"status": "RUNNING", "billing": "COMPUTE"})) == ["running-one"]


# --- routing and parameter spellings ---------------------------------------------------------------------


def test_trailing_slash_on_the_list_paths(api):
    api.create("slashed")
    plain = api.ok("GET", "/notebooks")
    assert api.ok("GET", "/notebooks/") == plain
    assert api.ok("GET", "/notebooks/all/") == api.ok("GET", "/notebooks/all")
    assert api.ok("GET", "/notebooks/", {"limit": 1, "name": "slash"})["total"] == 1
    assert names(plain) == ["slashed"]


def test_workspace_id_and_workspaceId(api):
    workspace = api.services.identity.create_workspace(api.creds.project_id, "team-ws")
    in_ws = api.create("in_workspace", workspace_id=workspace)
    default = api.create("in_default")
    assert [i["id"] for i in api.ok("GET", "/notebooks")["data"]] == [default["id"]]
    for spelling in ("workspaceId", "workspace_id"):
        page = api.ok("GET", "/notebooks", {spelling: workspace})
        assert [i["id"] for i in page["data"]] == [in_ws["id"]]
        assert page["data"][0]["workspace_id"] == workspace
        assert [i["id"] for i in api.ok("GET", "/notebooks", {spelling: "0"})["data"]] == [default["id"]]
        assert [i["id"] for i in api.ok("GET", "/notebooks/all", {spelling: workspace})["data"]] == [in_ws["id"]]
        assert api.error("GET", "/notebooks", {spelling: "not-a-workspace"}) == (400, "ModelArts.0104")
    # both given: workspace_id wins
    both = api.ok("GET", "/notebooks", {"workspace_id": "0", "workspaceId": workspace})
    assert [i["id"] for i in both["data"]] == [default["id"]]
    both = api.ok("GET", "/notebooks", {"workspace_id": workspace, "workspaceId": "0"})
    assert [i["id"] for i in both["data"]] == [in_ws["id"]]


# --- paging and sorting over HTTP --------------------------------------------------------------------------


def test_offset_is_a_record_offset_and_current_is_offset_over_size(api):
    for n in range(5):
        api.create(f"nb{n}")
    page = api.ok("GET", "/notebooks", {"limit": 2, "offset": 2, "sort_key": "name", "sort_dir": "ASC"})
    assert names(page) == ["nb2", "nb3"]
    assert (page["current"], page["pages"], page["size"], page["total"]) == (1, 3, 2, 5)
    page = api.ok("GET", "/notebooks", {"limit": 2, "offset": 3, "sort_key": "name", "sort_dir": "asc"})
    assert names(page) == ["nb3", "nb4"] and page["current"] == 1
    page = api.ok("GET", "/notebooks", {"limit": 2, "offset": 4, "sort_key": "name", "sort_dir": "ASC"})
    assert names(page) == ["nb4"] and (page["current"], page["pages"]) == (2, 3)
    page = api.ok("GET", "/notebooks", {"limit": 2, "offset": 9})
    assert page["data"] == [] and (page["current"], page["pages"], page["total"]) == (4, 3, 5)
    page = api.ok("GET", "/notebooks", {"limit": 50, "sort_key": "name", "sort_dir": "DESC"})
    assert names(page) == ["nb4", "nb3", "nb2", "nb1", "nb0"] and page["size"] == 50


def test_sort_aliases_and_multiple_keys(api):
    for name in ("b", "a", "c"):
        api.create(name)
    by_create = api.ok("GET", "/notebooks", {"sort_key": "createTime", "sort_dir": "ASC"})
    items = by_create["data"]
    assert [(i["create_at"], i["id"]) for i in items] == sorted((i["create_at"], i["id"]) for i in items)
    api.ok("PUT", f"/notebooks/{items[0]['id']}", body={"description": "touched"})
    newest_update = api.ok("GET", "/notebooks", {"sort_key": "updateTime", "sort_dir": "DESC"})["data"][0]
    assert newest_update["id"] == items[0]["id"]
    assert names(api.ok("GET", "/notebooks", {"sort_key": "status,name", "sort_dir": "ASC"})) == ["a", "b", "c"]
    by_three = api.ok("GET", "/notebooks", {"sort_key": "feature,flavor,name", "sort_dir": "DESC"})
    assert names(by_three) == ["c", "b", "a"]


def test_list_parameter_errors_over_http(api):
    for query, code in (
        ({"limit": 0}, "ModelArts.0104"),
        ({"limit": 51}, "ModelArts.0104"),
        ({"limit": "ten"}, "ModelArts.0104"),
        ({"offset": -1}, "ModelArts.0104"),
        ({"sort_dir": "up"}, "ModelArts.0104"),
        ({"sort_key": "user_id"}, "ModelArts.6303"),
        ({"sort_key": "name," * 30}, "ModelArts.0104"),
        ({"id": "nope"}, "ModelArts.0104"),
        ({"tags": ",a|b"}, "ModelArts.0104"),
        ({"billing": "FREE"}, "ModelArts.0104"),
        ({"ip": "300.1.1.1"}, "ModelArts.0104"),
        ({"owner": "ABC"}, "ModelArts.0104"),
        ([("limit", "10"), ("limit", "20")], "ModelArts.0104"),
        ([("name", "a"), ("name", "b")], "ModelArts.0104"),
    ):
        for path in ("/notebooks", "/notebooks/all"):
            assert api.error("GET", path, query) == (400, code), (path, query)
