"""GET /metrics: protected by its own bearer token, Prometheus text, bounded label sets."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from nbfleet.app import create_app

from ..conftest import make_settings
from ..support import Api, Creds

TOKEN = "scrape-me-0123456789"


@pytest.fixture
def metered(tmp_path):
    settings = make_settings(tmp_path, metrics_token=TOKEN)
    app = create_app(settings, announce=lambda _text: None)
    with TestClient(app) as client:
        creds = json.loads((settings.data_dir / "credentials.json").read_text())
        yield Api(client, Creds(creds["ak"], creds["sk"], creds["project_id"], creds["user_id"]), app.state.services)


def scrape(api: Api) -> dict:
    response = api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def series(families: dict) -> set[tuple]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))) for family in families.values() for sample in family.samples
    }


def work(api: Api, creds: Creds, n: int) -> None:
    """What a user does: create, list, show, stop, start and delete instances, and one refused call."""
    for i in range(n):
        nb = api.create(f"m-{creds.user_id[:6]}-{i}", creds=creds)
        api.ok("GET", "/notebooks", creds=creds)
        api.ok("GET", f"/notebooks/{nb['id']}", creds=creds)
        api.ok("POST", f"/notebooks/{nb['id']}/stop", creds=creds)
        api.wait_status(nb["id"], "STOPPED", creds=creds)
        api.ok("POST", f"/notebooks/{nb['id']}/start", creds=creds)
        api.wait_status(nb["id"], "RUNNING", creds=creds)
        api.ok("DELETE", f"/notebooks/{nb['id']}", creds=creds)
        api.error("GET", f"/notebooks/{nb['id']}-missing", creds=creds)
    api.client.get(f"/no/such/path/{creds.user_id}")


def test_metrics_are_off_without_a_token(api):
    response = api.client.get("/metrics")
    assert response.status_code == 404
    assert response.json()["error_code"] == "APIGW.0101"


def test_metrics_need_the_bearer_token(metered):
    assert metered.client.get("/metrics").status_code == 401
    wrong = metered.client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    assert metered.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_metric_families_and_bounded_cardinality(metered):
    alice, bob = metered.new_user("alice"), metered.new_user("bob")
    work(metered, alice, 1)
    work(metered, bob, 1)
    scrape(metered)  # a scrape is itself a request, counted once it is answered
    families = scrape(metered)
    for name in (
        "nbfleet_http_requests",
        "nbfleet_http_request_duration_seconds",
        "nbfleet_instances",
        "nbfleet_reconciler_queue_depth",
        "nbfleet_reconciler_claims_held",
        "nbfleet_transition_duration_seconds",
        "nbfleet_reconciler_failures",
        "nbfleet_reconciler_sweep_duration_seconds",
        "nbfleet_proxy_upstream_latency_seconds",
        "nbfleet_proxy_websockets_open",
        "nbfleet_proxy_bytes",
        "nbfleet_auto_stops",
        "nbfleet_db_pool_checked_out",
    ):
        assert name in families, name
    routes = {s.labels["route"] for s in families["nbfleet_http_requests"].samples}
    assert "/v1/{project_id}/notebooks" in routes
    assert "/v1/{project_id}/notebooks/{notebook_id}/stop" in routes
    assert "unmatched" in routes
    kinds = {(s.labels["kind"], s.labels["outcome"]) for s in families["nbfleet_transition_duration_seconds"].samples}
    assert {("create", "ok"), ("stop", "ok"), ("start", "ok")} <= kinds
    statuses = {s.labels["status"]: s.value for s in families["nbfleet_instances"].samples}
    assert "RUNNING" in statuses and "CREATING" in statuses

    before = series(families)
    carol, dave = metered.new_user("carol"), metered.new_user("dave")
    work(metered, alice, 2)
    work(metered, carol, 2)
    work(metered, dave, 1)
    after = series(scrape(metered))
    assert after == before, sorted(after ^ before)
    # No identifier of a user, project or instance is a label value.
    for _name, labels in after:
        for _key, value in labels:
            for ident in (alice.user_id, bob.user_id, carol.user_id, metered.creds.project_id):
                assert ident not in value


def test_a_lease_auto_stop_is_counted_and_its_lines_carry_no_request_id(tmp_path, caplog):
    import logging

    from nbfleet.clock import ManualClock
    from nbfleet.observability.metrics import REGISTRY

    clock = ManualClock()
    settings = make_settings(tmp_path, observe_interval=0.05)
    app = create_app(settings, clock=clock, announce=lambda _text: None)
    with TestClient(app) as client:
        c = json.loads((settings.data_dir / "credentials.json").read_text())
        api = Api(client, Creds(c["ak"], c["sk"], c["project_id"], c["user_id"]), app.state.services)
        before = REGISTRY.get_sample_value("nbfleet_auto_stops_total", {"reason": "lease"}) or 0
        nb = api.create("leased")
        with caplog.at_level(logging.INFO, logger="nbfleet.transition"):
            clock.advance(3_600_000)
            api.services.reconciler.wake()
            api.wait_status(nb["id"], "STOPPED")
    assert REGISTRY.get_sample_value("nbfleet_auto_stops_total", {"reason": "lease"}) == before + 1
    lines = [r for r in caplog.records if r.name == "nbfleet.transition" and r.instance_id == nb["id"]]
    assert [(r.from_status, r.to_status, r.kind) for r in lines] == [
        ("RUNNING", "STOPPING", "auto_stop"),
        ("STOPPING", "STOPPED", "stop"),
    ]
    assert all(r.request_id is None for r in lines)  # nobody asked for this work
