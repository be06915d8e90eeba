"""``POST /v3/auth/tokens``: the password subset of the IAM token API, and the tokens it issues."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime

import pytest
from sqlalchemy import select

from nbfleet.store.tables import users

PASSWORD = "correct horse battery"


def auth_body(
    user: str,
    password: str,
    *,
    domain: str | None = "nbfleet",
    project_id: str | None = None,
    project_name: str | None = None,
) -> dict:
    user_part: dict = {"name": user, "password": password}
    if domain is not None:
        user_part["domain"] = {"name": domain}
    body: dict = {"auth": {"identity": {"methods": ["password"], "password": {"user": user_part}}}}
    if project_id or project_name:
        project = {"id": project_id} if project_id else {"name": project_name}
        body["auth"]["scope"] = {"project": project}
    return body


def post_tokens(api, body):
    return api.client.post("/v3/auth/tokens", json=body)


@pytest.fixture
def admin_with_password(api):
    api.services.identity.set_password(api.creds.user_id, PASSWORD)
    return api


def assert_refused(response, status: int = 401) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error_code", "error_msg"}, body
    assert "x-subject-token" not in response.headers
    return body


def test_password_token_by_project_id_works_on_the_api(admin_with_password):
    api = admin_with_password
    project = api.creds.project_id
    response = post_tokens(api, auth_body("admin", PASSWORD, project_id=project))
    assert response.status_code == 201, response.text
    token = response.headers["x-subject-token"]
    assert token
    body = response.json()["token"]
    assert body["methods"] == ["password"]
    assert body["user"]["id"] == api.creds.user_id and body["user"]["name"] == "admin"
    assert body["user"]["domain"]["name"] == "nbfleet" and body["user"]["domain"]["id"]
    assert body["project"]["id"] == project and body["project"]["name"] == "default"
    issued = datetime.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert (expires - issued).total_seconds() == 86_400
    listed = api.client.get(f"/v1/{project}/notebooks", headers={"X-Auth-Token": token})
    assert listed.status_code == 200, listed.text
    assert listed.json()["total"] == 0


def test_project_can_be_named_and_the_token_is_scoped_to_it(admin_with_password):
    api = admin_with_password
    other = api.services.identity.create_project("elsewhere")
    api.services.identity.add_member(api.creds.user_id, other)
    response = post_tokens(api, auth_body("admin", PASSWORD, project_name="elsewhere"))
    assert response.status_code == 201, response.text
    assert response.json()["token"]["project"] == {
        "id": other,
        "name": "elsewhere",
        "domain": response.json()["token"]["user"]["domain"],
    }
    token = response.headers["x-subject-token"]
    assert api.client.get(f"/v1/{other}/notebooks", headers={"X-Auth-Token": token}).status_code == 200
    wrong = api.client.get(f"/v1/{api.creds.project_id}/notebooks", headers={"X-Auth-Token": token})
    assert wrong.status_code == 403 and wrong.json()["error_code"] == "ModelArts.0210"


def test_wrong_password_unknown_user_and_user_without_password_are_401(admin_with_password):
    api = admin_with_password
    project = api.creds.project_id
    api.new_user("nopass")
    wrong = assert_refused(post_tokens(api, auth_body("admin", PASSWORD + "x", project_id=project)))
    unknown = assert_refused(post_tokens(api, auth_body("ghost", PASSWORD, project_id=project)))
    no_password = assert_refused(post_tokens(api, auth_body("nopass", PASSWORD, project_id=project)))
    # One answer for all three: the response does not tell which user names exist.
    assert wrong["error_code"] == unknown["error_code"] == no_password["error_code"] == "APIGW.0301"
    assert wrong["error_msg"] == unknown["error_msg"] == no_password["error_msg"]
    assert "password" in wrong["error_msg"]


def test_wrong_domain_and_foreign_project_are_refused(admin_with_password):
    api = admin_with_password
    assert_refused(
        post_tokens(api, auth_body("admin", PASSWORD, domain="other-domain", project_id=api.creds.project_id))
    )
    foreign = api.services.identity.create_project("not-mine")
    body = assert_refused(post_tokens(api, auth_body("admin", PASSWORD, project_id=foreign)))
    assert "project" in body["error_msg"]
    assert_refused(post_tokens(api, auth_body("admin", PASSWORD, project_name="no-such-project")))


def test_unscoped_token_has_no_project_and_cannot_list(admin_with_password):
    api = admin_with_password
    response = post_tokens(api, auth_body("admin", PASSWORD, domain=None))
    assert response.status_code == 201, response.text
    body = response.json()["token"]
    assert "project" not in body and body["domain"]["name"] == "nbfleet"
    listed = api.client.get(
        f"/v1/{api.creds.project_id}/notebooks", headers={"X-Auth-Token": response.headers["x-subject-token"]}
    )
    assert listed.status_code == 401 and listed.json()["error_code"] == "ModelArts.0212"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"auth": {"identity": {"methods": ["token"], "token": {"id": "x"}}}},
        {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin"}}}}},
        {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": 7, "password": PASSWORD}}}}},
        {
            "auth": {
                "identity": {"methods": ["password"], "password": {"user": {"name": "admin", "password": PASSWORD}}},
                "scope": {"project": {}},
            }
        },
        [],
    ],
)
def test_malformed_bodies_are_400_and_issue_nothing(admin_with_password, body):
    assert_refused(post_tokens(admin_with_password, body), 400)


def test_non_json_body_is_400(admin_with_password):
    response = admin_with_password.client.post(
        "/v3/auth/tokens", content=b"user=admin", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert_refused(response, 400)


def test_password_is_stored_as_argon2_hash_only(admin_with_password):
    api = admin_with_password
    with api.services.identity.db.read() as conn:
        stored = conn.execute(select(users.c.password_hash).where(users.c.id == api.creds.user_id)).scalar()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    api.services.identity.set_password(api.creds.user_id, PASSWORD)
    with api.services.identity.db.read() as conn:
        again = conn.execute(select(users.c.password_hash).where(users.c.id == api.creds.user_id)).scalar()
    assert again != stored  # a fresh salt every time


def test_short_password_is_refused_and_the_old_one_keeps_working(admin_with_password):
    api = admin_with_password
    with pytest.raises(ValueError):
        api.services.identity.set_password(api.creds.user_id, "short")
    response = post_tokens(api, auth_body("admin", PASSWORD, project_id=api.creds.project_id))
    assert response.status_code == 201


def test_cli_set_password_from_stdin(api, settings):
    project = api.creds.project_id
    assert_refused(post_tokens(api, auth_body("admin", "from-the-cli-1", project_id=project)))
    env = {**os.environ, **({"NBFLEET_DATABASE_URL": settings.database_url} if settings.database_url else {})}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbfleet.cli.main",
            "admin",
            "set-password",
            "--user",
            api.creds.user_id,
            "--password-stdin",
            "--data-dir",
            str(settings.data_dir),
        ],
        input="from-the-cli-1\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert post_tokens(api, auth_body("admin", "from-the-cli-1", project_id=project)).status_code == 201
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbfleet.cli.main",
            "admin",
            "set-password",
            "--user",
            "0" * 32,
            "--password-stdin",
            "--data-dir",
            str(settings.data_dir),
        ],
        input="from-the-cli-1\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert bad.returncode == 1 and "does not exist" in bad.stderr
