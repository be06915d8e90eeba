"""A password change ends what the old password opened: console sessions and password tokens."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from .test_iam import PASSWORD, auth_body

NEW_PASSWORD = "a brand new password"


def _console_session(client) -> str:
    page = client.get("/console/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post(
        "/console/login", data={"csrf_token": csrf, "user": "admin", "password": PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return client.cookies.get("nbfleet_session")


def _set_password_with_the_cli(settings, user_id: str, password: str) -> None:
    env = {**os.environ, **({"NBFLEET_DATABASE_URL": settings.database_url} if settings.database_url else {})}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbfleet.cli.main",
            "admin",
            "set-password",
            "--user",
            user_id,
            "--password-stdin",
            "--data-dir",
            str(settings.data_dir),
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr


def test_set_password_revokes_sessions_and_password_tokens(api, settings):
    identity = api.services.identity
    identity.set_password(api.creds.user_id, PASSWORD)
    project = api.creds.project_id
    issued = api.client.post("/v3/auth/tokens", json=auth_body("admin", PASSWORD, project_id=project))
    password_token = issued.headers["x-subject-token"]
    session = _console_session(api.client)
    operator_token, _ = identity.create_token(api.creds.user_id, project)  # `nbfleet admin create-token`
    listing = f"/v1/{project}/notebooks"
    assert api.client.get(listing, headers={"X-Auth-Token": password_token}).status_code == 200
    assert api.client.get("/console/api/status").status_code == 200

    _set_password_with_the_cli(settings, api.creds.user_id, NEW_PASSWORD)

    revoked = api.client.get(listing, headers={"X-Auth-Token": password_token})
    assert revoked.status_code == 401 and revoked.json()["error_code"] == "ModelArts.0203"
    assert api.client.get("/console/api/status", cookies={"nbfleet_session": session}).status_code == 401
    page = api.client.get("/console/notebooks", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/console/login")
    # Issued by the operator, not opened with the password: it stays until it expires.
    assert api.client.get(listing, headers={"X-Auth-Token": operator_token}).status_code == 200
    # The new password opens a new session.
    fresh = api.client.post("/v3/auth/tokens", json=auth_body("admin", NEW_PASSWORD, project_id=project))
    assert api.client.get(listing, headers={"X-Auth-Token": fresh.headers["x-subject-token"]}).status_code == 200


def test_other_users_sessions_survive(api):
    identity = api.services.identity
    identity.set_password(api.creds.user_id, PASSWORD)
    bob = api.new_user("bob")
    identity.set_password(bob.user_id, PASSWORD)
    project = api.creds.project_id
    bobs = api.client.post("/v3/auth/tokens", json=auth_body("bob", PASSWORD, project_id=project))
    identity.set_password(api.creds.user_id, NEW_PASSWORD)
    listing = f"/v1/{project}/notebooks"
    assert api.client.get(listing, headers={"X-Auth-Token": bobs.headers["x-subject-token"]}).status_code == 200
