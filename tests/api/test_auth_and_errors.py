"""Identity, project scoping and the error envelope of every failure."""

from __future__ import annotations

import uuid

from ..support import Creds, sign_headers


def test_no_credentials_is_apigw_0301(api):
    response = api.client.get(f"/v1/{api.creds.project_id}/notebooks")
    assert response.status_code == 401 and response.json()["error_code"] == "APIGW.0301"
    assert response.headers["x-request-id"] == response.json()["request_id"]


def test_unknown_ak_and_wrong_sk(api):
    assert api.error("GET", "/notebooks", creds=Creds("NOPE", "x", api.creds.project_id)) == (401, "APIGW.0301")
    wrong_sk = Creds(api.creds.ak, "wrong", api.creds.project_id)
    assert api.error("GET", "/notebooks", creds=wrong_sk) == (401, "APIGW.0301")


def test_stale_date_is_refused(api):
    path = f"/v1/{api.creds.project_id}/notebooks"
    headers = sign_headers(api.creds, "GET", path, "", b"", "testserver", sdk_date="20200101T000000Z")
    response = api.client.get(path, headers=headers)
    assert response.status_code == 401 and "skew" in response.json()["error_msg"]


def test_body_is_part_of_the_signature(api):
    path = f"/v1/{api.creds.project_id}/notebooks"
    headers = sign_headers(api.creds, "POST", path, "", b'{"name": "a"}', "testserver")
    response = api.client.post(path, content=b'{"name": "b"}', headers=headers)
    assert response.status_code == 401


def test_disabled_key_is_403_0206(api):
    user = api.new_user("disabled")
    api.services.identity.set_access_key_enabled(user.ak, False)
    assert api.error("GET", "/notebooks", creds=user) == (403, "ModelArts.0206")


def test_project_mismatch_is_403_0210(api):
    other = api.services.identity.create_project("other")
    assert api.error("GET", "/notebooks", project_id=other) == (403, "ModelArts.0210")
    path = f"/v1/{api.creds.project_id}/notebooks"
    headers = sign_headers(Creds(api.creds.ak, api.creds.sk, other), "GET", path, "", b"", "testserver")
    response = api.client.get(path, headers=headers)
    assert response.status_code == 403 and response.json()["error_code"] == "ModelArts.0210"


def test_tokens(api):
    token, _ = api.services.identity.create_token(api.creds.user_id, api.creds.project_id)
    path = f"/v1/{api.creds.project_id}/notebooks"
    ok = api.client.get(path, headers={"X-Auth-Token": token})
    assert ok.status_code == 200 and ok.json()["total"] == 0
    bad = api.client.get(path, headers={"X-Auth-Token": "nbt-garbage"})
    assert bad.status_code == 401 and bad.json()["error_code"] == "ModelArts.0203"
    other = api.services.identity.create_project("tok-other")
    wrong = api.client.get(f"/v1/{other}/notebooks", headers={"X-Auth-Token": token})
    assert wrong.status_code == 403 and wrong.json()["error_code"] == "ModelArts.0210"
    unscoped, _ = api.services.identity.create_token(api.creds.user_id, None)
    assert api.client.get(path, headers={"X-Auth-Token": unscoped}).json()["error_code"] == "ModelArts.0212"


def test_expired_token_is_0202(api):
    identity = api.services.identity
    identity.token_ttl_ms = -1
    token, _ = identity.create_token(api.creds.user_id, api.creds.project_id)
    response = api.client.get(f"/v1/{api.creds.project_id}/notebooks", headers={"X-Auth-Token": token})
    assert response.status_code == 401 and response.json()["error_code"] == "ModelArts.0202"


def _all_stored_text(api) -> str:
    """Every value of every table, as text (works on SQLite and PostgreSQL)."""
    from sqlalchemy import select

    from nbfleet.store.tables import metadata

    with api.services.identity.db.read() as conn:
        return "\n".join(
            str(value) for table in metadata.sorted_tables for row in conn.execute(select(table)) for value in row
        )


def test_tokens_are_stored_only_as_hashes(api):
    token, _ = api.services.identity.create_token(api.creds.user_id, api.creds.project_id)
    stored = _all_stored_text(api)
    assert token not in stored
    import hashlib

    assert hashlib.sha256(token.encode()).hexdigest() in stored


def test_secret_keys_are_not_readable_from_the_database(api):
    stored = _all_stored_text(api)
    assert api.creds.sk not in stored
    assert api.creds.ak in stored


def test_unknown_route_is_apigw_0101(api):
    response = api.client.get("/v2/nothing/here")
    assert response.status_code == 404 and response.json()["error_code"] == "APIGW.0101"
    assert response.headers["x-request-id"]


def test_wrong_method_is_405(api):
    response = api.call("PATCH", "/notebooks")
    assert response.status_code == 405 and response.json()["error_code"] == "ModelArts.0104"


def test_literal_routes_win_over_id_routes(api):
    assert "data" in api.ok("GET", "/notebooks/all")
    flavors = api.ok("GET", "/notebooks/flavors")
    assert flavors["data"] == flavors["flavors"] and flavors["total"] >= 4
    assert all(isinstance(f["memory"], int) and isinstance(f["sold_out"], bool) for f in flavors["data"])


def test_unexpected_exception_is_500_with_request_id(api, monkeypatch):
    def boom(*_args, **_kwargs):
        raise RuntimeError("secret internals")

    from starlette.testclient import TestClient

    monkeypatch.setattr(api.services.notebooks, "get", boom)
    # A client that reports the server's answer instead of re-raising the exception in the test.
    monkeypatch.setattr(api, "client", TestClient(api.client.app, raise_server_exceptions=False))
    response = api.call("GET", f"/notebooks/{uuid.uuid4()}")
    assert response.status_code == 500
    payload = response.json()
    assert payload["error_code"] == "ModelArts.0010" and "secret internals" not in response.text
    assert payload["request_id"] == response.headers["x-request-id"] and payload["request_id"] in payload["error_msg"]


def test_images_and_unknown_image(api):
    page = api.ok("GET", "/images")
    assert page["total"] == 4 and page["current"] == 1 and page["size"] == 200
    image = api.ok("GET", f"/images/{page['data'][0]['id']}")
    assert image["type"] == "BUILD_IN" and image["arch"] == "x86_64"
    assert api.error("GET", f"/images/{uuid.uuid4()}") == (400, "ModelArts.6404")
    gpu = api.ok("GET", "/images", {"name": "CUDA"})
    assert [i["name"] for i in gpu["data"]] == ["notebook-cuda"]
    assert api.error("GET", "/images", {"sort_key": "bogus"}) == (400, "ModelArts.6303")


def test_health_needs_no_auth(api):
    assert api.client.get("/health").json()["status"] == "ok"
