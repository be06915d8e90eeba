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


def test_the_document_declares_every_api_route_with_its_parameters_and_bodies(api):
    doc = api.client.get("/openapi.json").json()
    from fastapi.openapi.utils import get_openapi

    app = api.client.app
    frameworks = get_openapi(title="x", version="0", routes=app.routes)["paths"]  # every route FastAPI knows
    routes = {
        (method, path) for path, item in frameworks.items() if path.startswith(("/v1/", "/v3/")) for method in item
    }
    declared = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert routes <= declared
    lists = doc["paths"]["/v1/{project_id}/notebooks"]["get"]
    assert {p["name"] for p in lists["parameters"]} >= {"project_id", "limit", "offset", "tags", "sort_key"}
    create = doc["paths"]["/v1/{project_id}/notebooks"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("NotebookCreateRequest")
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert operation["responses"]["default"]["content"]["application/json"]["schema"]["$ref"].endswith(
                "ErrorBody"
            ), (method, path)
            assert {p["name"] for p in operation["parameters"] if p["in"] == "path"} == {
                part[1:-1] for part in path.split("/") if part.startswith("{")
            }, (method, path)


def test_request_schemas_use_the_sdk_member_names_and_types(api):
    from huaweicloudsdkmodelarts.v1 import model

    schemas = api.client.get("/openapi.json").json()["components"]["schemas"]
    json_types = {"str": "string", "int": "integer", "bool": "boolean", "float": "number"}
    for name in (
        "NotebookCreateRequest",
        "VolumeMountRequest",
        "LeaseReq",
        "AffinityType",
        "AffinityRule",
        "RunUserRequest",
        "UserVpcRequest",
        "PublicNetworkConfig",
        "NotebookCustomSpec",
        "CustomHooks",
        "ContainerHooks",
        "Config",
        "TmsTag",
        "ImageRegRequest",
        "ImageCreateReq",
        "DeleteImageRequestBody",
        "DeleteImageGroupRequestBody",
        "UpdateImageGroupRequestBody",
        "UpdateImageGroupRequestBodyTags",
        "DataVolumesReq",
    ):
        sdk = getattr(model, name)
        declared = schemas[name]["properties"]
        assert set(sdk.attribute_map.values()) <= set(declared), name
        for attribute, sdk_type in sdk.openapi_types.items():
            member = declared[sdk.attribute_map[attribute]]
            if sdk_type in json_types:
                assert member.get("type") == json_types[sdk_type], (name, attribute)
            elif sdk_type.startswith("list["):
                assert member.get("type") == "array", (name, attribute)
            else:
                assert member.get("$ref", "").endswith(sdk_type), (name, attribute)


def test_the_image_routes_are_declared(api):
    paths = api.client.get("/openapi.json").json()["paths"]
    images = "/v1/{project_id}/images"
    assert set(paths[images]) == {"get", "post"}
    assert set(paths[images + "/group"]) == {"get"}
    assert set(paths[images + "/group/{group_id}"]) == {"put", "delete"}
    assert set(paths[images + "/{image_id}"]) == {"get", "delete"}
    assert set(paths[images + "/{image_id}/sync"]) == {"post"}
    assert set(paths["/v1/{project_id}/notebooks/{notebook_id}/create-image"]) == {"post"}


def test_the_storage_routes_are_declared(api):
    paths = api.client.get("/openapi.json").json()["paths"]
    storage = "/v1/{project_id}/notebooks/{instance_id}/storage"
    assert set(paths[storage]) == {"get", "post"}
    assert set(paths[storage + "/{storage_id}"]) == {"get", "delete"}
    assert paths[storage]["post"]["operationId"] == "attach_dynamic_storage"
