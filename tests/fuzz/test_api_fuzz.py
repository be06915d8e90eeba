"""The fuzzing gate: schemathesis against a live ``nbfleet serve`` (simulated runtime).

Every operation of ``/openapi.json`` gets schemathesis' boundary cases (its coverage phase: the largest
and smallest numbers, empty and over-long strings, wrong types, missing members, other methods) and a
bounded number of generated requests, valid and invalid, with a fixed seed so that a run is repeatable.
Operations on one instance run twice: with generated ids, and with the id of a real
instance (one running, one stopped). Every answer must be below 500, and every error must carry a
ModelArts error body. Authenticated with an ``X-Auth-Token`` from ``nbfleet admin create-token``.
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.hypothesis.builder import HypothesisTestConfig, HypothesisTestMode, create_test
from schemathesis.generation.overrides import Override

from ..procs import ServeProcess, SignedClient
from ..support import Creds

EXAMPLES = int(os.environ.get("NBFLEET_FUZZ_EXAMPLES", "12"))  # generated ones per operation and id kind
SEED = 20261130


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    server = ServeProcess(tmp_path_factory.mktemp("fuzz") / "data")
    server.start()
    try:
        creds = server.admin_creds()
        token = server.cli("admin", "create-token", "--user", creds.user_id, "--project", creds.project_id, "--json")[
            "token"
        ]
        client = SignedClient(server.endpoint, Creds(creds.ak, creds.sk, creds.project_id))
        running = client.create("fuzz-running")["id"]
        stopped = client.create("fuzz-stopped")["id"]
        client.wait_status(stopped, "RUNNING")
        client.ok("POST", f"/notebooks/{stopped}/stop")
        client.wait_status(stopped, "STOPPED")
        client.wait_status(running, "RUNNING")
        image = client.image_id()
        group = client.ok("GET", "/images/group", {"type": "BUILD_IN"})["data"][0]["id"]
        client.close()
        schema = schemathesis.openapi.from_url(f"{server.endpoint}/openapi.json")
        yield {
            "server": server,
            "schema": schema,
            "token": token,
            "project_id": creds.project_id,
            "instances": (running, stopped),
            "image_id": image,
            "group_id": group,
        }
    finally:
        server.terminate()


def _problems(response: httpx.Response) -> str | None:
    if response.status_code >= 500:
        return f"answered {response.status_code}"
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            return f"{response.status_code} without a JSON body: {response.text[:200]!r}"
        if not (
            isinstance(body, dict)
            and isinstance(body.get("error_code"), str)
            and isinstance(body.get("error_msg"), str)
        ):
            return f"{response.status_code} without a ModelArts error body: {body!r:.200}"
    return None


def _run(operation, path_parameters: dict, target: dict, found: list) -> list[int]:
    """Send the operation's boundary cases (schemathesis' coverage phase: huge and negative numbers, empty
    and over-long strings, wrong types, missing members) and ``EXAMPLES`` generated ones, valid and invalid;
    return the statuses."""
    statuses: list[int] = []

    def exercise(case):
        # The document also names the signature scheme; a generated Authorization header would be checked
        # instead of the token and turn every request into a 401.
        case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers["X-Auth-Token"] = target["token"]
        response = case.call(base_url=target["server"].endpoint, timeout=30)
        statuses.append(response.status_code)
        problem = _problems(response)
        if problem is not None:
            found.append(f"{operation.label}: {problem}\n    {case.as_curl_command()}")

    config = HypothesisTestConfig(
        project=target["schema"].config,
        modes=list(HypothesisTestMode),
        seed=SEED,
        settings=settings(
            max_examples=EXAMPLES,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        ),
        override=Override(path_parameters=path_parameters),
    )
    test = create_test(operation=operation, test_func=exercise, config=config)
    try:
        test()
    except Unsatisfiable:  # nothing left to make invalid (no parameters, no body, every id fixed)
        pass
    if os.environ.get("NBFLEET_FUZZ_VERBOSE"):
        print(f"{operation.label} {path_parameters}: {sorted(set(statuses))} x{len(statuses)}")
    return statuses


def test_no_generated_request_gets_a_5xx_or_an_error_without_a_modelarts_body(target):
    found: list[str] = []
    sent = 0
    operations = [result.ok() for result in target["schema"].get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        fixed = {"project_id": target["project_id"]}
        id_kinds = [{}]
        if "{notebook_id}" in operation.path:
            id_kinds += [{"notebook_id": notebook_id} for notebook_id in target["instances"]]
        if "{image_id}" in operation.path:
            id_kinds.append({"image_id": target["image_id"]})
        if "{group_id}" in operation.path:
            id_kinds.append({"group_id": target["group_id"]})
        for ids in id_kinds:
            sent += len(_run(operation, {**fixed, **ids}, target, found))
    assert sent >= len(operations) * EXAMPLES
    assert not found, f"{len(found)} of {sent} requests failed the gate:\n" + "\n".join(found[:30])
    # the server is still healthy after all of that
    assert httpx.get(f"{target['server'].endpoint}/health", timeout=10).json()["status"] == "ok"
