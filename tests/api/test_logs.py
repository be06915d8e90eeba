"""Structured logs: a JSON line per request and per lifecycle transition, request ids carried from the API
call into the reconciler's lines for the work it caused, and nothing secret in any line."""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest

from nbfleet.observability.logs import JsonFormatter, RequestContextFilter

from ..procs import ServeProcess
from ..support import Creds, encode_query, sign_headers


@pytest.fixture
def json_lines():
    """Every log record of the test, formatted as ``serve --log-format json`` does; the parsed lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    names = ("nbfleet", "nbfleet.access", "nbfleet.transition", "nbfleet.reconciler")
    levels = {name: logging.getLogger(name).level for name in names}
    root.addHandler(handler)
    for name in names:
        logging.getLogger(name).setLevel(logging.INFO)

    def lines() -> list[dict]:
        handler.flush()
        return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]

    lines.raw = stream.getvalue
    yield lines
    root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_request_and_transition_lines(api, json_lines, monkeypatch):
    alice = api.new_user("alice")
    runtime = api.services.runtime

    def logging_call(name):
        call = getattr(runtime, name)

        def logged(*args, **kwargs):
            logging.getLogger("nbfleet.reconciler").info("runtime %s of instance %s", name, args[0].id)
            return call(*args, **kwargs)

        return logged

    for name in ("start", "stop"):  # the runtime logs as the reconciler calls it
        monkeypatch.setattr(runtime, name, logging_call(name))
    created = api.call(
        "POST",
        "/notebooks",
        body={
            "name": "logged",
            "image_id": api.image_id(),
            "flavor": "modelarts.vm.cpu.2u",
            "volume": {"category": "EVS", "ownership": "MANAGED"},
        },
        creds=alice,
    )
    assert created.status_code == 200
    nb, create_rid = created.json(), created.headers["x-request-id"]
    api.wait_status(nb["id"], "RUNNING", creds=alice)
    stopped = api.call("POST", f"/notebooks/{nb['id']}/stop", creds=alice)
    stop_rid = stopped.headers["x-request-id"]
    api.wait_status(nb["id"], "STOPPED", creds=alice)
    api.ok("GET", "/notebooks", query={"name": "logged"}, creds=alice)

    lines = json_lines()
    access = [line for line in lines if line["logger"] == "nbfleet.access"]
    create_line = next(line for line in access if line["request_id"] == create_rid)
    assert create_line["method"] == "POST" and create_line["route"] == "/v1/{project_id}/notebooks"
    assert create_line["status"] == 200 and isinstance(create_line["duration_ms"], float)
    assert create_line["user_id"] == alice.user_id and create_line["project_id"] == alice.project_id
    listed = [line for line in access if line["method"] == "GET" and line["route"] == "/v1/{project_id}/notebooks"]
    assert listed and all("logged" not in line["msg"] for line in listed)  # no query string

    transitions = {
        (line["from_status"], line["to_status"]): line
        for line in lines
        if line["logger"] == "nbfleet.transition" and line["instance_id"] == nb["id"]
    }
    up = transitions[("CREATING", "RUNNING")]
    assert (up["kind"], up["request_id"]) == ("create", create_rid) and up["duration_ms"] >= 0
    down = transitions[("STOPPING", "STOPPED")]
    assert (down["kind"], down["request_id"]) == ("stop", stop_rid)

    # The reconciler's own lines about the work carry the id of the call that asked for it.
    work = [line for line in lines if line["logger"] == "nbfleet.reconciler" and nb["id"] in line["msg"]]
    assert {line["msg"].split()[1]: line["request_id"] for line in work} == {"start": create_rid, "stop": stop_rid}

    text = json_lines.raw()
    for secret in (alice.sk, alice.ak, api.creds.sk, nb.get("token") or "no-token-shown"):
        assert secret not in text
    assert "Authorization" not in text and "SDK-HMAC-SHA256" not in text


@pytest.mark.slow
def test_serve_log_format_json(tmp_path):
    server = ServeProcess(
        tmp_path / "data", args=["--log-format", "json"], env={"NBFLEET_METRICS_TOKEN": "t0ken-for-metrics"}
    ).start()
    try:
        c = server.creds
        creds = Creds(c["ak"], c["sk"], c["project_id"], c["user_id"])
        path = f"/v1/{creds.project_id}/notebooks"
        query = encode_query({"limit": 5})
        headers = sign_headers(creds, "GET", path, query, b"", f"127.0.0.1:{server.port}")
        answer = httpx.get(f"{server.endpoint}{path}?{query}", headers=headers)
        assert answer.status_code == 200
        scraped = httpx.get(f"{server.endpoint}/metrics", headers={"Authorization": "Bearer t0ken-for-metrics"})
        assert scraped.status_code == 200 and "nbfleet_instances" in scraped.text
    finally:
        server.terminate()
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(line["msg"].startswith("nbfleet ready") for line in lines)
    request = next(line for line in lines if line.get("request_id") == answer.headers["x-request-id"])
    assert request["route"] == "/v1/{project_id}/notebooks" and request["user_id"] == creds.user_id
    # The log lines, not the credentials banner of the first start.
    logged = "\n".join(line for line in server.log().splitlines() if line.startswith("{"))
    assert c["sk"] not in logged and "t0ken-for-metrics" not in logged
