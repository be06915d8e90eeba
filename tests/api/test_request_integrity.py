"""Signed requests cover the body that was received: X-Sdk-Content-Sha256 and UNSIGNED-PAYLOAD."""

from __future__ import annotations

import hashlib
import json

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from starlette.testclient import TestClient

from nbfleet.app import create_app

from ..conftest import make_settings


def sdk_signed(creds, method: str, path: str, body: bytes, extra_headers: dict | None = None) -> dict:
    """Headers as the SDK's signer makes them; headers in ``extra_headers`` are signed too."""
    headers = {"Content-Type": "application/json", "X-Project-Id": creds.project_id, **(extra_headers or {})}
    request = SdkRequest(
        method=method,
        schema="http",
        host="testserver",
        resource_path=path,
        query_params=[],
        header_params=headers,
        body=body,
    )
    Signer(BasicCredentials(creds.ak, creds.sk, creds.project_id)).sign(request)
    return dict(request.header_params)


def test_update_signed_for_one_body_is_refused_with_another_body_and_its_hash(api):
    """The attack: a PUT signed for one body, sent with another body and the signed body's hash in an
    X-Sdk-Content-Sha256 header that the signature does not cover."""
    nb = api.create("integrity")
    path = f"/v1/{api.creds.project_id}/notebooks/{nb['id']}"
    signed_body = json.dumps({"description": "as signed"}).encode()
    headers = sdk_signed(api.creds, "PUT", path, signed_body)
    forged_body = json.dumps({"description": "forged"}).encode()
    headers["X-Sdk-Content-Sha256"] = hashlib.sha256(signed_body).hexdigest()
    response = api.client.put(path, content=forged_body, headers=headers)
    assert response.status_code == 401 and response.json()["error_code"] == "APIGW.0301", response.text
    assert api.ok("GET", f"/notebooks/{nb['id']}")["description"] == ""


def test_signed_content_hash_must_be_the_hash_of_the_body(api):
    nb = api.create("integrity-signed")
    path = f"/v1/{api.creds.project_id}/notebooks/{nb['id']}"
    signed_body = json.dumps({"description": "as signed"}).encode()
    headers = sdk_signed(
        api.creds, "PUT", path, signed_body, {"X-Sdk-Content-Sha256": hashlib.sha256(signed_body).hexdigest()}
    )
    forged = api.client.put(path, content=json.dumps({"description": "forged"}).encode(), headers=headers)
    assert forged.status_code == 401 and "X-Sdk-Content-Sha256" in forged.json()["error_msg"]
    assert api.ok("GET", f"/notebooks/{nb['id']}")["description"] == ""
    honest = api.client.put(path, content=signed_body, headers=headers)
    assert honest.status_code == 200 and honest.json()["description"] == "as signed"


def test_unsigned_payload_is_refused_for_a_body(api):
    nb = api.create("unsigned")
    path = f"/v1/{api.creds.project_id}/notebooks/{nb['id']}"
    body = json.dumps({"description": "anything at all"}).encode()
    # The SDK marks non-JSON bodies this way; the signature then covers no body at all.
    headers = sdk_signed(api.creds, "PUT", path, body, {"Content-Type": "application/octet-stream"})
    assert headers["X-Sdk-Content-Sha256"] == "UNSIGNED-PAYLOAD"
    response = api.client.put(path, content=body, headers=headers)
    assert response.status_code == 401 and "UNSIGNED-PAYLOAD" in response.json()["error_msg"]
    assert api.ok("GET", f"/notebooks/{nb['id']}")["description"] == ""


def test_unsigned_payload_is_accepted_when_the_operator_allows_it(tmp_path):
    settings = make_settings(tmp_path, allow_unsigned_payload=True)
    with TestClient(create_app(settings, announce=lambda _text: None)) as client:
        creds = json.loads((settings.data_dir / "credentials.json").read_text())
        from ..support import Creds

        me = Creds(creds["ak"], creds["sk"], creds["project_id"], creds["user_id"])
        path = f"/v1/{me.project_id}/notebooks"
        body = json.dumps({"name": "x"}).encode()
        headers = sdk_signed(me, "POST", path, body, {"Content-Type": "application/octet-stream"})
        response = client.post(path, content=body, headers=headers)
        # past authentication: the body itself is what the service judges now
        assert response.status_code == 400 and response.json()["error_code"] != "APIGW.0301", response.text
