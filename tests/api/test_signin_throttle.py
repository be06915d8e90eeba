"""Password sign-in is throttled: backoff per account and per address (in the store), a bounded number of
password checks at once, and 429 ModelArts.6101 with Retry-After when a sign-in must wait."""

from __future__ import annotations

import re
import threading

import pytest
from starlette.testclient import TestClient

from nbfleet.app import create_app
from nbfleet.clock import ManualClock

from ..conftest import make_settings
from .test_iam import PASSWORD, auth_body

WRONG = "not-the-password"


@pytest.fixture
def signin(api):
    """The admin with a password, and a clock for the sign-in throttle that moves only when told to."""
    api.services.identity.set_password(api.creds.user_id, PASSWORD)
    clock = ManualClock()
    api.services.signin.clock = clock
    return api, clock


def token_for(client, user: str, password: str, project_id: str):
    return client.post("/v3/auth/tokens", json=auth_body(user, password, project_id=project_id))


def assert_throttled(response, retry_after: int):
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == str(retry_after)
    body = response.json()
    assert body["error_code"] == "ModelArts.6101" and f"{retry_after} s" in body["error_msg"]
    assert "x-subject-token" not in response.headers


def test_wrong_passwords_then_the_right_one_waits_for_the_backoff(signin):
    api, clock = signin
    project = api.creds.project_id
    for _ in range(5):
        assert token_for(api.client, "admin", WRONG, project).status_code == 401
    assert_throttled(token_for(api.client, "admin", PASSWORD, project), 1)  # right, but too soon
    clock.advance(1_000)
    assert token_for(api.client, "admin", WRONG, project).status_code == 401  # the 6th failure: 2 s now
    assert_throttled(token_for(api.client, "admin", PASSWORD, project), 2)
    clock.advance(2_000)
    assert token_for(api.client, "admin", PASSWORD, project).status_code == 201


def test_a_success_clears_the_accounts_count(signin):
    api, clock = signin
    project = api.creds.project_id
    for _ in range(4):
        assert token_for(api.client, "admin", WRONG, project).status_code == 401
    assert token_for(api.client, "admin", PASSWORD, project).status_code == 201
    for _ in range(4):
        assert token_for(api.client, "admin", WRONG, project).status_code == 401
    assert token_for(api.client, "admin", PASSWORD, project).status_code == 201


def test_unknown_names_are_throttled_like_real_ones(signin):
    api, _clock = signin
    for _ in range(5):
        assert token_for(api.client, "ghost", WRONG, api.creds.project_id).status_code == 401
    assert_throttled(token_for(api.client, "ghost", WRONG, api.creds.project_id), 1)


def test_one_address_guessing_many_accounts_is_throttled(signin):
    api, _clock = signin
    for n in range(20):  # four times an account's free failures, each at another name
        assert token_for(api.client, f"guess-{n}", WRONG, api.creds.project_id).status_code == 401
    assert_throttled(token_for(api.client, "admin", PASSWORD, api.creds.project_id), 1)


def test_the_backoff_is_shared_by_replicas(signin, settings):
    api, clock = signin
    for _ in range(5):
        assert token_for(api.client, "admin", WRONG, api.creds.project_id).status_code == 401
    replica = create_app(settings.model_copy(update={"migrate": False}), clock=clock, announce=lambda _t: None)
    with TestClient(replica) as other:
        assert_throttled(token_for(other, "admin", PASSWORD, api.creds.project_id), 1)


def _console_login(client, user: str, password: str):
    page = client.get("/console/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return client.post(
        "/console/login", data={"csrf_token": csrf, "user": user, "password": password}, follow_redirects=False
    )


def test_console_sign_in_is_throttled_with_a_page_that_says_when(signin):
    api, clock = signin
    for _ in range(5):
        assert _console_login(api.client, "admin", WRONG).status_code == 401
    page = _console_login(api.client, "admin", PASSWORD)
    assert page.status_code == 429 and page.headers["retry-after"] == "1"
    assert "text/html" in page.headers["content-type"]
    assert "ModelArts.6101" in page.text and "Try again in 1 s" in page.text and "UTC" in page.text
    assert "nbfleet_session" not in page.headers.get("set-cookie", "")
    clock.advance(1_000)
    signed_in = _console_login(api.client, "admin", PASSWORD)
    assert signed_in.status_code == 303 and "nbfleet_session=" in signed_in.headers["set-cookie"]


def test_sign_ins_beyond_the_check_slots_are_refused_not_queued(tmp_path):
    """Eight sign-ins at once with two check slots: two are checked, six get 429 at once, /health answers."""
    settings = make_settings(tmp_path, signin_concurrent_checks=2)
    with TestClient(create_app(settings, announce=lambda _t: None)) as client:
        services = client.app.state.services
        inside, release = threading.Semaphore(0), threading.Event()
        checked = services.identity.check_password

        def slow_check(*args, **kwargs):  # holds its slot until the test lets it go
            inside.release()
            release.wait(30)
            return checked(*args, **kwargs)

        services.identity.check_password = slow_check
        project = services.identity.bootstrap_project()
        results: dict[int, object] = {}

        def attempt(i: int) -> None:
            results[i] = token_for(client, f"user-{i}", WRONG, project)

        holders = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
        for t in holders:
            t.start()
        assert inside.acquire(timeout=30) and inside.acquire(timeout=30)  # both slots taken
        others = [threading.Thread(target=attempt, args=(i,)) for i in range(2, 8)]
        for t in others:
            t.start()
        for t in others:
            t.join(30)
        refused = [results[i] for i in range(2, 8)]
        assert all(r.status_code == 429 and r.json()["error_code"] == "ModelArts.6101" for r in refused), refused
        assert all(r.headers["retry-after"] == "1" for r in refused)
        assert client.get("/health").status_code == 200  # while both checks are still running
        release.set()
        for t in holders:
            t.join(30)
        assert [results[i].status_code for i in range(2)] == [401, 401]
