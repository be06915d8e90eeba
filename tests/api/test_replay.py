"""A signed state-changing request counts once: a repeat within the clock-skew window is refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.clock import ManualClock
from nbfleet.store.tables import request_signatures

from ..support import sign_headers


def signed(api, method: str, path: str, body: bytes = b"", sdk_date: str | None = None) -> tuple[str, dict]:
    full = f"/v1/{api.creds.project_id}{path}"
    return full, sign_headers(api.creds, method, full, "", body, "testserver", sdk_date=sdk_date)


def test_the_same_signed_tag_request_is_accepted_once(api):
    """The attack: one captured POST …/tags/create sent three times."""
    nb = api.create("replayed")
    body = json.dumps({"tags": [{"key": "team", "value": "a"}]}).encode()
    path, headers = signed(api, "POST", f"/notebooks/{nb['id']}/tags/create", body)
    first = api.client.post(path, content=body, headers=headers)
    assert first.status_code == 204, first.text
    for _ in range(2):
        again = api.client.post(path, content=body, headers=headers)
        assert again.status_code == 401, again.text
        assert again.json()["error_code"] == "ModelArts.0208" and "already received" in again.json()["error_msg"]


def test_a_replayed_create_creates_nothing_more(api):
    body = json.dumps(
        {
            "name": "once",
            "image_id": api.image_id(),
            "flavor": "modelarts.vm.cpu.2u",
            "volume": {"category": "EVS", "ownership": "MANAGED"},
        }
    ).encode()
    path, headers = signed(api, "POST", "/notebooks", body)
    assert api.client.post(path, content=body, headers=headers).status_code == 200
    assert api.client.post(path, content=body, headers=headers).json()["error_code"] == "ModelArts.0208"
    assert api.ok("GET", "/notebooks", {"name": "once"})["total"] == 1


def test_reads_may_repeat(api):
    path, headers = signed(api, "GET", "/notebooks")
    for _ in range(3):
        assert api.client.get(path, headers=headers).status_code == 200


def test_a_refused_request_is_not_remembered(api):
    """Only a request whose signature is valid is recorded: a bad one cannot block the genuine one."""
    body = json.dumps({"tags": [{"key": "k", "value": "v"}]}).encode()
    nb = api.create("genuine")
    path, headers = signed(api, "POST", f"/notebooks/{nb['id']}/tags/create", body)
    forged = dict(headers, Authorization=headers["Authorization"][:-4] + "0000")
    assert api.client.post(path, content=body, headers=forged).status_code == 401
    assert api.client.post(path, content=body, headers=headers).status_code == 204


def test_another_replica_refuses_the_repeat_too(api, settings):
    """Signatures live in the store: a second server on the same database knows them."""
    nb = api.create("two-replicas")
    body = json.dumps({"tags": [{"key": "replica", "value": "1"}]}).encode()
    path, headers = signed(api, "POST", f"/notebooks/{nb['id']}/tags/create", body)
    assert api.client.post(path, content=body, headers=headers).status_code == 204
    with TestClient(create_app(settings.model_copy(update={"migrate": False}), announce=lambda _t: None)) as other:
        again = other.post(path, content=body, headers=headers)
    assert again.status_code == 401 and again.json()["error_code"] == "ModelArts.0208"


def test_signatures_are_forgotten_once_their_date_is_out_of_the_window(api):
    authenticator = api.services.authenticator
    clock = ManualClock()
    authenticator.clock = clock

    def count() -> int:
        with authenticator.db.read() as conn:
            return conn.execute(select(func.count()).select_from(request_signatures)).scalar()

    def at(when: datetime) -> str:
        return when.strftime("%Y%m%dT%H%M%SZ")

    nb = api.create("purge")
    start = datetime.fromtimestamp(clock.now_ms() / 1000, UTC)
    path, headers = signed(api, "POST", f"/notebooks/{nb['id']}/stop", sdk_date=at(start))
    assert api.client.post(path, headers=headers).status_code == 200
    remembered = count()
    assert remembered >= 1
    clock.advance(16 * 60 * 1000)  # past the 15-minute window of everything recorded so far
    later = start + timedelta(minutes=16)
    path, headers = signed(api, "POST", f"/notebooks/{nb['id']}/start", sdk_date=at(later))
    assert api.client.post(path, headers=headers).status_code in (200, 400)
    assert count() == 1  # only the last request is still remembered
