"""Property tests of the notebook list (``GET /notebooks`` and ``/notebooks/all``) against a plain Python
reference implementation of notebooks.md §1.2-§1.3 and README §8/§9 (A1, A2, A4, A5, A6, A7, A19).

1. A fixed population (a few notebooks made through the API, a few hundred rows inserted through the
   store with realistic values and tags, two projects, a workspace) and ~200 random queries: filters,
   1-3 sort keys, directions, offsets and limits, by admins and non-admins, on both routes.
2. A mutating population: a state machine that creates, stops, starts, deletes and renames notebooks
   through the API (simulated runtime, zero delay) and between those checks random queries against the
   reference computed from a fresh read of the store.

The reference knows nothing of the implementation's SQL: scope (A5) -> exact filters -> case-insensitive
substring filters -> sort by the keys with ``id`` as tie-breaker in the same direction -> offset/limit.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from sqlalchemy import delete, select
from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.domain.model import HOLDS_COMPUTE
from nbfleet.store import notebook_repo
from nbfleet.store.tables import notebook_tags, notebooks

from ..conftest import make_settings
from ..support import Api, Creds

# --- the reference ------------------------------------------------------------------------------------

# A19, written out independently of the implementation: public name -> column.
SORT_VOCABULARY = {
    "create_at": "create_at",
    "createTime": "create_at",
    "update_at": "update_at",
    "updateTime": "update_at",
    "name": "name",
    "status": "status",
    "flavor": "flavor",
    "id": "id",
    "feature": "feature",
}
FUZZY = {
    "name": "name",
    "pool_name": "pool_name",
    "flavor": "flavor",
    "swr_path": "swr_path",
    "description": "description",
    "username": "user_name",
}
STATUSES = [
    "INIT",
    "CREATING",
    "STARTING",
    "RUNNING",
    "STOPPING",
    "STOPPED",
    "SNAPSHOTTING",
    "DELETING",
    "CREATE_FAILED",
    "START_FAILED",
    "DELETE_FAILED",
    "ERROR",
    "FROZEN",
]  # DELETED is never stored


@dataclass
class Snapshot:
    rows: list[dict]
    tags: dict[str, set[tuple[str, str]]]


def read_store(api: Api) -> Snapshot:
    with api.services.notebooks.db.read() as conn:
        rows = [dict(r) for r in conn.execute(select(notebooks)).mappings()]
        tags: dict[str, set[tuple[str, str]]] = {}
        for t in conn.execute(select(notebook_tags)).mappings():
            tags.setdefault(t["notebook_id"], set()).add((t["key"], t["value"]))
    return Snapshot(rows, tags)


def reference(
    snap: Snapshot, *, project_id: str, caller_id: str, admin: bool, all_view: bool, params: dict[str, str]
) -> tuple[list[str], int, int, int]:
    """(ids of the page in order, total, size, offset) for a valid query."""
    rows = [r for r in snap.rows if r["project_id"] == project_id]
    owner = params.get("owner")
    if not admin:
        rows = [r for r in rows if r["user_id"] == caller_id]
    elif owner:
        rows = [r for r in rows if r["user_id"] == owner]
    elif not all_view:
        rows = [r for r in rows if r["user_id"] == caller_id]

    feature = params.get("feature", "NOTEBOOK").upper()
    workspace = params.get("workspace_id") or params.get("workspaceId") or "0"

    def keep(r: dict) -> bool:
        if r["feature"] != feature or r["workspace_id"] != workspace:
            return False
        if "status" in params and r["status"] != params["status"].upper():
            return False
        for name in ("pool_id", "ip"):
            if name in params and r[name] != params[name]:
                return False
        for name in ("id", "image_id"):
            if name in params and r[name] != params[name].lower():
                return False
        billing = params.get("billing", "ALL").upper()
        if billing == "COMPUTE" and r["status"] not in HOLDS_COMPUTE:
            return False
        if billing == "STORAGE" and r["volume_category"] not in ("EVS", "EFS"):
            return False
        if "tags" in params:
            have = snap.tags.get(r["id"], set())
            for pair in params["tags"].split(","):
                key, sep, value = pair.partition("|")
                if sep and (key, value) not in have:
                    return False
                if not sep and key not in {k for k, _ in have}:
                    return False
        for param, column in FUZZY.items():
            if param in params and params[param].lower() not in (r[column] or "").lower():
                return False
        return True

    matched = [r for r in rows if keep(r)]
    columns: list[str] = []
    for key in (params.get("sort_key") or "create_at").split(","):
        if SORT_VOCABULARY[key] not in columns:
            columns.append(SORT_VOCABULARY[key])
    descending = params.get("sort_dir", "DESC").upper() == "DESC"
    matched.sort(key=lambda r: tuple(r[c] for c in columns) + (r["id"],), reverse=descending)
    offset, size = int(params.get("offset", 0)), int(params.get("limit", 10))
    return [r["id"] for r in matched[offset : offset + size]], len(matched), size, offset


def check_page(api: Api, snap: Snapshot, caller: Creds, admin: bool, all_view: bool, params: dict) -> dict:
    path = "/notebooks/all" if all_view else "/notebooks"
    got = api.ok("GET", path, params, creds=caller)
    ids, total, size, offset = reference(
        snap, project_id=caller.project_id, caller_id=caller.user_id, admin=admin, all_view=all_view, params=params
    )
    assert [item["id"] for item in got["data"]] == ids, (path, params)
    assert got["total"] == total, (path, params)
    assert got["size"] == size
    assert got["pages"] == math.ceil(total / size)
    assert got["current"] == offset // size
    by_id = {r["id"]: r for r in snap.rows}
    for item in got["data"]:
        row = by_id[item["id"]]
        assert item["name"] == row["name"] and item["status"] == row["status"]
        # the notebook token is only shown to the instance's owner
        assert (item["token"] is not None) == (row["user_id"] == caller.user_id)
    return got


# --- query strategies ---------------------------------------------------------------------------------

NAME_PIECES = [
    "nb",
    "NB",
    "Nb",
    "a_b",
    "aXb",
    "a-b",
    "ab",
    "_",
    "-",
    "Test",
    "test",
    "TEST",
    "中文",
    "É",
    "é",
    "ü",
    "Ü",
    "x1",
    "0",
    "data",
    "Data",
    "fail",
]
DESCRIPTION_PIECES = [
    "api-test",
    "API",
    "100%",
    "50_50",
    "a%b",
    "a_b",
    "axb",
    "hello world",
    "Élan",
    "élan",
    "x",
    "",
    "TEST",
]
FLAVORS = ["modelarts.vm.cpu.2u", "modelarts.vm.cpu.4u", "modelarts.vm.cpu.8u"]
TAG_KEYS = ["env", "team", "键", "a b"]
TAG_VALUES = ["dev", "prod", "Dev", "", "值", "ml:x/y=z+1@2"]
IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "127.0.0.1"]
POOLS = [("pool-a1", "Pool-A"), ("pool-b2", "pool-b")]


def casing(text: str):
    return st.sampled_from([text, text.lower(), text.upper(), text.swapcase()])


def substring_of(text: str):
    if not text:
        return st.just("x")
    return st.integers(0, len(text) - 1).flatmap(lambda i: st.integers(i + 1, len(text)).map(lambda j: text[i:j]))


def fuzzy(pieces: list[str], known: list[str], valid=lambda s: True):
    """A non-empty case-varied fragment, either a known piece or a substring of a stored value."""
    source = st.sampled_from(pieces) | (st.sampled_from(known).flatmap(substring_of) if known else st.nothing())
    return source.filter(bool).flatmap(casing).filter(lambda s: bool(s) and valid(s))


def name_ok(s: str) -> bool:
    return len(s) <= 128 and all(c.isalnum() or c in "_-" for c in s)


@dataclass
class World:
    api: Api
    users: dict[str, Creds]  # label -> credentials
    admins: set[str]  # user ids with the admin flag
    workspace: str
    other_project: str
    images: list[dict]
    extra: dict = field(default_factory=dict)

    def label_admin(self, label: str) -> bool:
        return self.users[label].user_id in self.admins


@st.composite
def list_queries(draw, world: World, snap: Snapshot, callers: list[str], max_offset: int = 400):
    """(caller label, all_view, params) for a valid list query."""
    label = draw(st.sampled_from(callers))
    all_view = draw(st.booleans())
    rows = [r for r in snap.rows if r["project_id"] == world.users[label].project_id] or snap.rows
    names = sorted({r["name"] for r in rows})
    descriptions = sorted({r["description"] for r in rows if r["description"]})
    user_ids = sorted({c.user_id for c in world.users.values()})
    params: dict[str, str] = {}
    chosen = draw(
        st.sets(
            st.sampled_from(
                [
                    "name",
                    "status",
                    "feature",
                    "owner",
                    "workspace",
                    "flavor",
                    "description",
                    "username",
                    "billing",
                    "tags",
                    "id",
                    "image_id",
                    "ip",
                    "pool_id",
                    "pool_name",
                    "swr_path",
                ]
            ),
            max_size=3,
        )
    )
    for what in sorted(chosen):
        if what == "name":
            params["name"] = draw(fuzzy(NAME_PIECES, names, name_ok))
        elif what == "status":
            params["status"] = draw(st.sampled_from(STATUSES + ["DELETED"]).flatmap(casing))
        elif what == "feature":
            params["feature"] = draw(st.sampled_from(["NOTEBOOK", "DEFAULT"]).flatmap(casing))
        elif what == "owner":
            params["owner"] = draw(st.sampled_from(user_ids + [uuid.UUID(int=7).hex]))
        elif what == "workspace":
            spelling = draw(st.sampled_from(["workspace_id", "workspaceId"]))
            params[spelling] = draw(st.sampled_from(["0", world.workspace]))
        elif what == "flavor":
            params["flavor"] = draw(fuzzy(["cpu", "CPU", "2u", "8U", "vm.cpu", "free", ".", "4", "gpu"], FLAVORS))
        elif what == "description":
            params["description"] = draw(
                fuzzy(DESCRIPTION_PIECES, descriptions, lambda s: len(s) <= 512 and "<" not in s and ">" not in s)
            )
        elif what == "username":
            params["username"] = draw(
                fuzzy(
                    ["a", "A", "ali", "B", "bob_", "_", ".", "-", "admin", "OL-c", "xb"],
                    sorted({r["user_name"] for r in rows}),
                    lambda s: all(c.isascii() and (c.isalnum() or c in "._-") for c in s),
                )
            )
        elif what == "billing":
            params["billing"] = draw(st.sampled_from(["COMPUTE", "STORAGE", "ALL"]).flatmap(casing))
        elif what == "tags":
            keys = draw(st.lists(st.sampled_from(TAG_KEYS), min_size=1, max_size=2, unique=True))
            parts = []
            for key in keys:
                value = draw(st.none() | st.sampled_from(TAG_VALUES))
                parts.append(key if value is None else f"{key}|{value}")
            params["tags"] = ",".join(parts)
        elif what == "id":
            params["id"] = draw(
                st.sampled_from([r["id"] for r in snap.rows] + [str(uuid.uuid4())]).flatmap(
                    lambda v: st.sampled_from([v, v.upper()])
                )
            )
        elif what == "image_id":
            params["image_id"] = draw(st.sampled_from([i["id"] for i in world.images] + [str(uuid.uuid4())]))
        elif what == "ip":
            params["ip"] = draw(st.sampled_from(IPS + ["10.0.0.9"]))
        elif what == "pool_id":
            params["pool_id"] = draw(st.sampled_from([p for p, _ in POOLS] + ["pool-zz"]))
        elif what == "pool_name":
            params["pool_name"] = draw(st.sampled_from(["pool", "POOL", "A", "-b", "zz", "Pool-A"]))
        elif what == "swr_path":
            params["swr_path"] = draw(
                fuzzy(
                    ["notebook", "PYTHON", "scipy", ":", "/", "zzz"],
                    [i["swr_path"] for i in world.images],
                    lambda s: all(c.isascii() and (c.isalnum() or c in "_-.:/") for c in s),
                )
            )
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(sorted(SORT_VOCABULARY)), min_size=1, max_size=3, unique=True))
        params["sort_key"] = ",".join(keys)
    if draw(st.booleans()):
        params["sort_dir"] = draw(st.sampled_from(["ASC", "DESC"]).flatmap(casing))
    if draw(st.booleans()):
        params["limit"] = str(draw(st.integers(1, 50)))
    if draw(st.booleans()):
        params["offset"] = str(draw(st.integers(0, min(60, max_offset)) | st.integers(0, max_offset)))
    return label, all_view, params


# --- the fixed population -------------------------------------------------------------------------------


def start_app(tmp_path_factory, name: str, **overrides):
    settings = make_settings(tmp_path_factory.mktemp(name), **overrides)
    app = create_app(settings, announce=lambda _text: None)
    client = TestClient(app)
    client.__enter__()
    creds = json.loads((settings.data_dir / "credentials.json").read_text())
    api = Api(client, Creds(creds["ak"], creds["sk"], creds["project_id"], creds["user_id"]), app.state.services)
    return api, client


def make_world(api: Api) -> World:
    identity = api.services.identity
    users = {"admin": api.creds}
    admins = {api.creds.user_id}
    for label, admin in (("alice.a", False), ("Bob_b", False), ("bobxb", False), ("carol-C", True)):
        users[label] = api.new_user(label, admin=admin)
        if admin:
            admins.add(users[label].user_id)
    other = identity.create_project("project-b")
    users["dave"] = api.new_user("dave", project_id=other)
    for creds in users.values():
        identity.set_quota(creds.user_id, -1)
    workspace = identity.create_workspace(api.creds.project_id, "ws-one")
    images = [
        i
        for i in api.ok("GET", "/images", {"limit": 50})["data"]
        if "NOTEBOOK" in i["dev_services"] and "CPU" in i["resource_categories"]
    ]
    assert len(images) >= 2
    return World(api, users, admins, workspace, other, images)


def insert_population(
    world: World, count: int, seed: int, statuses: list[str] = STATUSES, fresh_ids: bool = False
) -> list[str]:
    """Rows written straight into the store, shaped like the rows the service writes; their ids.

    Creation times lie in the last minutes, so that no lease has expired (the reconciler would
    auto-stop those); many share a millisecond, so that the ``id`` tie-breaker matters.
    """
    api = world.api
    rng = random.Random(seed)
    spec_template = world.extra["spec"]
    ids = []
    base = api.services.notebooks.clock.now_ms() - 600_000
    has_default: set[str] = {r["user_id"] for r in read_store(api).rows if r["feature"] == "DEFAULT"}
    labels = sorted(world.users)
    with api.services.notebooks.db.write() as conn:
        for _ in range(count):
            label = rng.choice(labels)
            creds = world.users[label]
            feature = "NOTEBOOK"
            if creds.user_id not in has_default and rng.random() < 0.3:
                feature = "DEFAULT"
                has_default.add(creds.user_id)
            image = rng.choice(world.images)
            category = rng.choice(["EVS", "EVS", "EFS", "OBS", "OBSFS"])
            status = rng.choice(statuses + ["RUNNING", "STOPPED"] * 3)
            pool_id, pool_name = rng.choice([(None, None)] * 4 + POOLS)
            name = "".join(rng.choice(NAME_PIECES) for _ in range(rng.randint(1, 4)))
            description = " ".join(rng.choice(DESCRIPTION_PIECES) for _ in range(rng.randint(0, 3))).strip()
            create_at = base + rng.randrange(60) * 1000  # many ties: the tie-breaker matters
            tags = {}
            for key in rng.sample(TAG_KEYS, rng.randint(0, 3)):
                tags[key] = rng.choice(TAG_VALUES)
            spec = dict(spec_template, image=image, volume=dict(spec_template["volume"], category=category))
            row = {
                "id": str(uuid.uuid4() if fresh_ids else uuid.UUID(int=rng.getrandbits(128), version=4)),
                "project_id": creds.project_id,
                "user_id": creds.user_id,
                "user_name": label,
                "name": name,
                "description": description,
                "status": status,
                "desired": "STOPPED" if status in ("STOPPED", "STOPPING") else "RUNNING",
                "version": 1,
                "feature": feature,
                "workspace_id": world.workspace if rng.random() < 0.2 else "0",
                "flavor": "modelarts.vm.cpu.free" if feature == "DEFAULT" else rng.choice(FLAVORS),
                "image_id": image["id"],
                "swr_path": image["swr_path"],
                "pool_id": pool_id,
                "pool_name": pool_name,
                "ip": rng.choice([None, *IPS]),
                "volume_category": category,
                "token": api.services.notebooks.tokens.new(),
                "fail_reason": "boom" if status.endswith("FAILED") or status == "ERROR" else None,
                "action_progress": None,
                "lease_type": "TIMING",
                "lease_duration": 3_600_000,
                "lease_enable": True,
                "lease_update_at": create_at,
                "last_activity_at": None,
                "create_at": create_at,
                "update_at": create_at + rng.choice([0, 0, 1000, 5000, 60_000]),
                "spec": orjson.dumps(spec).decode(),
                "tags": orjson.dumps([{"key": k, "value": v} for k, v in tags.items()]).decode(),
                "placement": None,
                "claim_owner": None,
                "claim_until": None,
            }
            notebook_repo.insert_notebook(conn, row, tags.items())
            ids.append(row["id"])
    return ids


def wait_gone(api: Api, notebook_id: str, creds: Creds, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        response = api.call("GET", f"/notebooks/{notebook_id}", creds=creds)
        if response.status_code != 200:
            assert (response.status_code, response.json()["error_code"]) == (400, "ModelArts.6309")
            return
        assert time.monotonic() < deadline, f"{notebook_id} was not removed"
        time.sleep(0.02)


def create_body(
    world: World,
    name: str,
    *,
    feature: str = "NOTEBOOK",
    flavor: str = FLAVORS[0],
    description: str = "",
    workspace: str = "0",
) -> dict:
    body = {
        "name": name,
        "image_id": world.images[0]["id"],
        "volume": {"category": "EVS", "ownership": "MANAGED"},
        "flavor": "modelarts.vm.cpu.free" if feature == "DEFAULT" else flavor,
        "feature": feature,
        "workspace_id": workspace,
    }
    if description:
        body["description"] = description
    return body


PROPERTY = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


class TestFixedPopulation:
    @pytest.fixture(scope="class")
    def world(self, tmp_path_factory):
        # No sweeps or observations after start-up: the inserted rows must stay exactly as written.
        api, client = start_app(tmp_path_factory, "list-fixed", reconcile_interval=3600, observe_interval=3600)
        try:
            world = make_world(api)
            # A few real notebooks first (the reconciler is woken by each call), then settle them.
            made = []
            for label, name, feature, description in (
                ("admin", "notebook_5ee4bf0e", "DEFAULT", "api-test"),
                ("admin", "notebooks_test", "NOTEBOOK", "api-test"),
                ("alice.a", "Alice_NB", "NOTEBOOK", "50_50 split"),
                ("Bob_b", "bob-nb", "NOTEBOOK", "100% cpu"),
                ("Bob_b", "bobXnb", "NOTEBOOK", ""),
                ("dave", "dave_nb", "NOTEBOOK", "other project"),
            ):
                creds = world.users[label]
                nb = api.ok(
                    "POST",
                    "/notebooks",
                    body=create_body(world, name, feature=feature, description=description),
                    creds=creds,
                )
                made.append((nb["id"], creds))
            for notebook_id, creds in made:
                api.wait_status(notebook_id, "RUNNING", creds=creds)
            for notebook_id, creds in made[2::2]:
                api.ok("POST", f"/notebooks/{notebook_id}/stop", creds=creds)
                api.wait_status(notebook_id, "STOPPED", creds=creds)
            time.sleep(0.2)  # let the reconciler finish its bookkeeping for the stops
            world.extra["spec"] = orjson.loads(read_store(api).rows[0]["spec"])
            insert_population(world, 320, seed=20240611)
            world.extra["snapshot"] = read_store(api)
            yield world
            # the population really stayed fixed during the class
            assert read_store(api).rows == world.extra["snapshot"].rows
        finally:
            client.__exit__(None, None, None)

    def test_population_is_visible_and_varied(self, world):
        snap = world.extra["snapshot"]
        project = world.api.creds.project_id
        mine = [r for r in snap.rows if r["project_id"] == project]
        assert len(mine) > 250 and len([r for r in snap.rows if r["project_id"] != project]) > 10
        expected = [r for r in mine if r["feature"] == "NOTEBOOK" and r["workspace_id"] == "0"]
        got = world.api.ok("GET", "/notebooks/all", {"limit": 50})
        assert got["total"] == len(expected)
        assert len({r["create_at"] for r in mine}) < len(mine)  # ties on the default sort key
        assert {r["status"] for r in mine} >= set(STATUSES) - {"INIT"}
        assert sum(1 for r in mine if r["feature"] == "DEFAULT") >= 2

    def test_every_page_of_every_route_walks_the_whole_result(self, world):
        """Paging with offset += len(page) (what Terraform does) visits every row exactly once."""
        snap = world.extra["snapshot"]
        for label in ("admin", "alice.a", "carol-C"):
            for all_view in (False, True):
                for limit in (1, 7, 50) if label == "alice.a" else (7, 50):
                    seen, offset = [], 0
                    while True:
                        page = check_page(
                            world.api,
                            snap,
                            world.users[label],
                            world.label_admin(label),
                            all_view,
                            {"limit": str(limit), "offset": str(offset), "sort_key": "name", "sort_dir": "ASC"},
                        )
                        if not page["data"]:
                            break
                        seen += [d["id"] for d in page["data"]]
                        offset += len(page["data"])
                    assert len(seen) == len(set(seen)) == page["total"]

    def test_random_queries_match_the_reference(self, world):
        snap = world.extra["snapshot"]
        stats = Counter()
        callers = sorted(world.users)

        @PROPERTY
        @given(st.data())
        def check(data):
            label, all_view, params = data.draw(list_queries(world, snap, callers))
            got = check_page(world.api, snap, world.users[label], world.label_admin(label), all_view, params)
            stats["nonempty" if got["data"] else "empty"] += 1
            stats["filtered-nonempty"] += bool(got["data"]) and bool(
                set(params) - {"sort_key", "sort_dir", "limit", "offset"}
            )

        check()
        assert stats["nonempty"] >= 60, stats
        assert stats["filtered-nonempty"] >= 25, stats


# --- the mutating population ---------------------------------------------------------------------------

# Statuses the reconciler leaves alone, and from which delete is allowed (README §6.3).
STABLE = ("RUNNING", "STOPPED", "CREATE_FAILED", "START_FAILED", "ERROR", "DELETE_FAILED", "FROZEN")


class TestMutatingPopulation:
    @pytest.fixture(scope="class")
    def world(self, tmp_path_factory):
        api, client = start_app(tmp_path_factory, "list-mutating", simulated_fail=["name=fail*;step=3;op=create"])
        try:
            world = make_world(api)
            for creds in world.users.values():
                api.services.identity.set_quota(creds.user_id, None)  # the service default (10)
            nb = api.ok("POST", "/notebooks", body=create_body(world, "template"))
            world.extra["spec"] = orjson.loads(read_store(api).rows[0]["spec"])
            api.wait_status(nb["id"], "RUNNING")
            yield world
        finally:
            client.__exit__(None, None, None)

    def test_queries_between_random_operations_match_the_reference(self, world):
        api = world.api
        labels = sorted(world.users)
        stats = Counter()

        def pick(machine, data, statuses):
            # Candidates in creation order (not by random id), so that replaying an example draws alike.
            by_id = {r["id"]: r for r in read_store(api).rows}
            rows = [by_id[i] for i in machine.created if i in by_id and by_id[i]["status"] in statuses]
            if not rows:
                return None, None
            row = data.draw(st.sampled_from(rows))
            owner = next(c for c in world.users.values() if c.user_id == row["user_id"])
            admins = [
                c for c in world.users.values() if c.user_id in world.admins and c.project_id == row["project_id"]
            ]
            actor = data.draw(st.sampled_from([owner, *admins]))
            return row, (owner, actor)

        class Machine(RuleBasedStateMachine):
            def __init__(self):
                super().__init__()
                # Every example starts from the same store: earlier operations have settled, their rows
                # go, and a small base population in states the reconciler leaves alone comes in.
                with api.services.notebooks.db.write() as conn:
                    conn.execute(delete(notebook_tags))
                    conn.execute(delete(notebooks))
                self.created: list[str] = insert_population(world, 24, seed=7, statuses=list(STABLE), fresh_ids=True)

            @rule(
                data=st.data(),
                label=st.sampled_from(labels),
                name=st.lists(st.sampled_from(NAME_PIECES), min_size=1, max_size=3).map("".join),
                description=st.sampled_from(["", "api-test", "50_50", "100% sure", "Élan"]),
                flavor=st.sampled_from(FLAVORS),
                feature=st.sampled_from(["NOTEBOOK"] * 4 + ["DEFAULT"]),
                in_workspace=st.booleans(),
            )
            def create(self, data, label, name, description, flavor, feature, in_workspace):
                creds = world.users[label]
                workspace = world.workspace if in_workspace and creds.project_id == api.creds.project_id else "0"
                owned = [r for r in read_store(api).rows if r["user_id"] == creds.user_id]
                response = api.call(
                    "POST",
                    "/notebooks",
                    body=create_body(
                        world, name, feature=feature, flavor=flavor, description=description, workspace=workspace
                    ),
                    creds=creds,
                )
                if feature == "DEFAULT" and any(r["feature"] == "DEFAULT" for r in owned):
                    assert (response.status_code, response.json()["error_code"]) == (400, "ModelArts.6301")
                elif len(owned) >= 10:
                    assert (response.status_code, response.json()["error_code"]) == (400, "ModelArts.6302")
                else:
                    assert response.status_code == 200, response.text
                    self.created.append(response.json()["id"])
                    end = api.wait_status(response.json()["id"], "RUNNING", "CREATE_FAILED", creds=creds)
                    assert end["status"] == ("CREATE_FAILED" if name.startswith("fail") else "RUNNING")
                    stats["created"] += 1
                self.query(data)

            @rule(data=st.data())
            def stop(self, data):
                row, who = pick(self, data, ("RUNNING",))
                if row is None:
                    return
                owner, actor = who
                assert api.ok("POST", f"/notebooks/{row['id']}/stop", creds=actor)["status"] == "STOPPING"
                api.wait_status(row["id"], "STOPPED", creds=owner)
                stats["stopped"] += 1
                self.query(data)

            @rule(data=st.data())
            def start(self, data):
                row, who = pick(self, data, ("STOPPED",))
                if row is None:
                    return
                owner, actor = who
                assert api.ok("POST", f"/notebooks/{row['id']}/start", creds=actor)["status"] == "STARTING"
                api.wait_status(row["id"], "RUNNING", creds=owner)
                stats["started"] += 1
                self.query(data)

            @rule(data=st.data())
            def delete(self, data):
                row, who = pick(self, data, STABLE)
                if row is None:
                    return
                owner, actor = who
                assert api.ok("DELETE", f"/notebooks/{row['id']}", creds=actor)["status"] == "DELETING"
                wait_gone(api, row["id"], owner)
                stats["deleted"] += 1
                self.query(data)

            @rule(data=st.data(), name=st.lists(st.sampled_from(NAME_PIECES), min_size=1, max_size=3).map("".join))
            def rename(self, data, name):
                row, who = pick(self, data, ("RUNNING", "STOPPED"))
                if row is None:
                    return
                _, actor = who
                assert api.ok("PUT", f"/notebooks/{row['id']}", body={"name": name}, creds=actor)["name"] == name
                stats["renamed"] += 1
                self.query(data)

            @rule(data=st.data())
            def query(self, data):
                snap = read_store(api)
                label, all_view, params = data.draw(list_queries(world, snap, labels, max_offset=30))
                got = check_page(api, snap, world.users[label], world.label_admin(label), all_view, params)
                stats["queries"] += 1
                stats["nonempty"] += bool(got["data"])

        # No shrinking: replaying API operations is slow; the report shows the whole failing run.
        # Derandomized: the coverage checks below ask that every operation ran at least once, which a free
        # draw of 15 runs cannot promise (one run drew no start at all); a fixed draw that meets them does.
        run_state_machine_as_test(
            Machine,
            settings=settings(
                derandomize=True,
                max_examples=15,
                stateful_step_count=15,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
            ),
        )
        assert stats["queries"] >= 50 and stats["nonempty"] >= 10, stats
        for op in ("created", "stopped", "started", "deleted", "renamed"):
            assert stats[op] >= 1, stats
