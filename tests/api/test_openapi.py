"""The OpenAPI document and the documentation pages."""
from __future__ import annotations

from starlette.testclient import TestClient

from nbfleet.app import create_app

from ..conftest import make_settings


def test_docs_pages_are_off_by_default(api):
    for path in ("/docs", "/redoc"):
        response = api.client.get(path)
        assert response.status_code == 404 and response.json()["error_code"] == "APIGW.0101"
        assert "cdn" not in response.text.lower()
    assert api.client.get("/openapi.json").status_code == 200


def test_docs_pages_can_be_switched_on(tmp_path):
    app = create_app(make_settings(tmp_path, api_docs=True), announce=lambda _t: None)
    with TestClient(app) as client:
        assert client.get("/docs").status_code == 200
        assert client.get("/redoc").status_code == 200
