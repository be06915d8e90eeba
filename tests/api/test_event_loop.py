"""Store work of API requests runs in worker threads, never on the event loop: one slow query must not
stall every other request of the process (and /health with them)."""

from __future__ import annotations

import asyncio

import pytest

from nbfleet.store.db import Database


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def loop_spy(api, monkeypatch):
    """The store entry points (and how) every request after this point used, recorded."""
    uses: list[tuple[str, bool]] = []
    for name in ("read", "read_one", "write"):
        original = getattr(Database, name)

        def spied(self, *args, _original=original, _name=name, **kwargs):
            uses.append((_name, _on_event_loop()))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Database, name, spied)
    return uses


def test_authentication_lists_show_and_writes_stay_off_the_event_loop(api, loop_spy):
    nb = api.create("off-the-loop")
    loop_spy.clear()
    api.ok("GET", "/notebooks")
    api.ok("GET", "/notebooks/all", {"tags": "k|v"})
    api.ok("GET", f"/notebooks/{nb['id']}")
    api.ok("GET", f"/notebooks/{nb['id']}/lease")
    api.ok("GET", f"/notebooks/{nb['id']}/events")
    api.ok("GET", "/notebooks/tags")
    api.ok("GET", "/images")
    api.ok("GET", "/authoring/features/NOTEBOOK")
    assert (
        api.call("POST", f"/notebooks/{nb['id']}/tags/create", body={"tags": [{"key": "k", "value": "v"}]}).status_code
        == 204
    )
    assert len(loop_spy) >= 9
    assert [use for use in loop_spy if use[1]] == []


def test_token_requests_stay_off_the_event_loop(api, loop_spy):
    api.services.identity.set_password(api.creds.user_id, "a-long-enough-password-1")
    loop_spy.clear()
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "admin", "password": "a-long-enough-password-1", "domain": {"name": "nbfleet"}}
                },
            },
            "scope": {"project": {"id": api.creds.project_id}},
        }
    }
    response = api.client.post("/v3/auth/tokens", json=body)
    assert response.status_code == 201, response.text
    token = response.headers["X-Subject-Token"]
    assert api.client.get(f"/v1/{api.creds.project_id}/notebooks", headers={"X-Auth-Token": token}).status_code == 200
    assert {name for name, _ in loop_spy} >= {"read", "write"}
    assert [use for use in loop_spy if use[1]] == []
