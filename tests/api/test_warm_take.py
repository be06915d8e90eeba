"""How a create uses the warm pool's members (services/notebooks.py ``_WarmTake``), and the pool's setting.

The pool itself, with real sandboxes, is tested in tests/runtime/test_warm_pool.py; here the create's side
of the contract: the member is taken only once nothing can refuse the create, its id and token become the
row's, and a create that fails after taking one (its commit included) gives it back.
"""

from __future__ import annotations

import uuid

import pytest

from nbfleet.runtime.warm_pool import parse_targets
from nbfleet.store import notebook_repo


class Members:
    """The pool's side of the contract, recording what creates did with it."""

    def __init__(self, count: int):
        self.ready = [(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(count)]
        self.asked: list[tuple[str, str]] = []
        self.given_back: list[tuple[str, str]] = []

    def take(self, swr_path: str, flavor_id: str):
        self.asked.append((swr_path, flavor_id))
        return self.ready.pop(0) if self.ready else None

    def give_back(self, instance_id: str, token: str) -> None:
        self.given_back.append((instance_id, token))


def test_a_create_gets_the_members_id_and_token(api):
    members = Members(1)
    expected = members.ready[0]
    api.services.notebooks.warm = members
    nb = api.create("warm", wait=False)
    assert (nb["id"], nb["token"]) == expected
    swr_path, flavor = members.asked[0]
    assert flavor == nb["flavor"] and swr_path == nb["image"]["swr_path"]
    # With the pool empty, the next create gets an id and token of its own.
    other = api.create("cold", wait=False)
    assert other["id"] != expected[0] and other["token"] != expected[1] and other["token"]
    assert members.given_back == []


def test_a_refused_create_takes_no_member(api):
    members = Members(1)
    api.services.notebooks.warm = members
    bad = api.call("POST", "/notebooks", body={"name": "x", "flavor": "no.such.flavor"})
    assert bad.status_code == 400
    assert members.asked == [] and len(members.ready) == 1


def test_a_create_that_fails_after_taking_a_member_gives_it_back(api, monkeypatch):
    members = Members(1)
    taken = members.ready[0]
    api.services.notebooks.warm = members

    def broken_insert(conn, row):
        raise RuntimeError("the store failed")

    monkeypatch.setattr(notebook_repo, "insert_notebook", broken_insert)
    body = {
        "name": "lost",
        "image_id": api.image_id(),
        "flavor": "modelarts.vm.cpu.2u",
        "volume": {"category": "EVS", "ownership": "MANAGED"},
    }
    with pytest.raises(RuntimeError, match="the store failed"):  # the in-process client re-raises it
        api.call("POST", "/notebooks", body=body)
    assert api.ok("GET", "/notebooks")["total"] == 0
    assert members.given_back == [taken]


def test_pool_entries_name_a_catalogue_image_and_a_count():
    images = {"notebook-python3.11": "swr/nb/py311:1.0"}
    assert parse_targets(["notebook-python3.11@modelarts.vm.cpu.2u=2"], images) == {
        ("swr/nb/py311:1.0", "modelarts.vm.cpu.2u"): 2
    }
    assert parse_targets(["swr/nb/py311:1.0@f=1", "notebook-python3.11@g=0", " "], images) == {
        ("swr/nb/py311:1.0", "f"): 1
    }
    for wrong in (
        "notebook-python3.11=2",
        "notebook-python3.11@f",
        "@f=1",
        "nope@f=1",
        "notebook-python3.11@f=-1",
    ):
        with pytest.raises(ValueError):
            parse_targets([wrong], images)
    with pytest.raises(ValueError, match="twice"):
        parse_targets(["notebook-python3.11@f=1", "swr/nb/py311:1.0@f=2"], images)
    digest = {"pinned": "swr/nb/py311@sha256:abc"}
    assert parse_targets(["swr/nb/py311@sha256:abc@f=1"], digest) == {("swr/nb/py311@sha256:abc", "f"): 1}
