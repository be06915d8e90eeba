"""The OpenAPI document of the API as it really is (served at ``/openapi.json``).

The routes parse their query strings and bodies by hand (the SDK's wire quirks need it), so FastAPI
cannot see what they take. The parameters and bodies are declared here, once, with the member names
and JSON types of the official SDK's models (``huaweicloudsdkmodelarts.v1.model``); the document is
FastAPI's own for paths and methods, with every operation's parameters, body and answers replaced by
these declarations. Routes not declared here (the console, the notebook proxy) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..domain.images import NAME_RE, NAMESPACE_RE, TAG_RE

STR = {"type": "string"}
INT = {"type": "integer", "format": "int64"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(items: dict) -> dict:
    return {"type": "array", "items": items}


def _object(properties: dict, required: tuple[str, ...] = ()) -> dict:
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _enum(*values: str) -> dict:
    return {"type": "string", "enum": list(values)}


def _pattern(regex: str, max_length: int, min_length: int = 1) -> dict:
    return {"type": "string", "pattern": regex, "minLength": min_length, "maxLength": max_length}


# An image reference ([registry[:port]/]namespace/name:tag); domain.images.parse_swr_path has the exact rules.
WORKSPACE = _pattern(r"^(0|[0-9a-z]{32})$", 32)
NO_ENTERPRISE_REGISTRY = {"type": "string", "maxLength": 0}  # nbfleet has none: only "" is accepted
SWR_PATH = _pattern(
    r"^([a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?(:[0-9]{1,5})?/)?[a-z][a-z0-9._-]{0,30}/"
    r"[a-z0-9]([a-z0-9._-]{0,30}[a-z0-9])?:[A-Za-z0-9._-]{1,30}$",
    2048,
    16,
)


VOLUME = _object(
    {
        "category": _enum("EVS", "OBS", "OBSFS", "EFS"),
        "ownership": _enum("MANAGED", "DEDICATED"),
        "uri": STR,
        "id": STR,
        "mount_path": STR,
        "read_only": BOOL,
        "dew_secret_name": STR,
        "capacity": INT,
    },
    ("category", "ownership"),
)
SCHEMAS = {
    "VolumeMountRequest": VOLUME,
    "EndpointsReq": _object(
        {"service": _enum("NOTEBOOK", "SSH"), "key_pair_names": _array(STR), "allowed_access_ips": _array(STR)}
    ),
    "Config": _object({"script": STR, "type": _enum("COMMAND", "SCRIPT"), "mode": _enum("BLOCK", "ASYNC")}),
    "ContainerHooks": _object({"pre_start": _ref("Config"), "post_start": _ref("Config")}),
    "CustomHooks": _object({"container_hooks": _ref("ContainerHooks")}),
    "LeaseReq": _object({"duration": INT, "type": _enum("TIMING", "IDLE")}),
    "AffinityRule": _object(
        {
            "key": STR,
            "operator": _enum("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"),
            "values": _array(STR),
            "weight": INT,
        },
        ("key", "operator", "values"),
    ),
    "AffinityType": _object(
        {
            "required_during_scheduling_ignored_during_execution": _array(_ref("AffinityRule")),
            "preferred_during_scheduling_ignored_during_execution": _array(_ref("AffinityRule")),
        }
    ),
    "RunUserRequest": _object({"uid": INT, "gid": INT}),
    "UserVpcRequest": _object(
        {
            "vpc_id": STR,
            "subnet_id": STR,
            "security_group_ids": _array(STR),
            "connect_cidrs": _array(STR),
            "nat_id": STR,
            "eip_id": STR,
        },
        ("vpc_id", "subnet_id", "security_group_ids"),
    ),
    "PublicNetworkConfig": _object({"public_network_type": _enum("SHARED", "EXCLUSIVE", "FORBIDDEN")}),
    "NotebookCustomSpec": _object(
        {
            "gpu": NUM,
            "cpu": NUM,
            "memory": NUM,
            "gpu_type": STR,
            "arch": _enum("X86_64", "AARCH64"),
            "category": _enum("CPU", "GPU"),
            "resource_flavor": STR,
        },
        ("cpu", "memory"),
    ),
    "NotebookCreateRequest": _object(
        {
            "name": STR,
            "image_id": STR,
            "volume": _ref("VolumeMountRequest"),
            "flavor": STR,
            "description": STR,
            "feature": _enum("DEFAULT", "NOTEBOOK"),
            "custom_spec": _ref("NotebookCustomSpec"),
            "pool_id": STR,
            "workspace_id": STR,
            "endpoints": _array(_ref("EndpointsReq")),
            "hooks": _ref("CustomHooks"),
            "lease": _ref("LeaseReq"),
            "duration": INT,
            "affinity": _ref("AffinityType"),
            "run_user": _ref("RunUserRequest"),
            "data_volumes": _array(_ref("VolumeMountRequest")),
            "user_vpc": _ref("UserVpcRequest"),
            "public_network_config": _ref("PublicNetworkConfig"),
        },
        ("name", "image_id", "volume"),
    ),
    # The SDK's members and the reference page's (spec A12).
    "NotebookUpdateRequest": _object(
        {
            "name": STR,
            "description": STR,
            "flavor": STR,
            "image_id": STR,
            "endpoints": _array(_ref("EndpointsReq")),
            "storage_new_size": INT,
            "hooks": _ref("CustomHooks"),
            "dew_secret_name": STR,
            "public_network_config": _ref("PublicNetworkConfig"),
        }
    ),
    "TmsTag": _object({"key": STR, "value": STR}, ("key",)),
    # Images (spec images-flavors-tags-storage.md §2). Register's tags are "key=value" strings in the SDK; the
    # server also takes {key, value} objects.
    "ImageRegRequest": _object(
        {
            "swr_path": SWR_PATH,
            "arch": _enum("X86_64", "AARCH64"),
            "description": STR,
            "origin": _enum("CUSTOMIZE", "IMAGE_SAVE"),
            "resource_category": _array(_enum("CPU", "GPU", "ASCEND")),
            "service_type": _enum("COMMON", "INFERENCE", "TRAIN", "DEV", "UNKNOWN"),
            "services": _array(_enum("NOTEBOOK", "SSH")),
            "visibility": _enum("PRIVATE", "PUBLIC"),
            "flavor_type": _enum("ASCEND_SNT9", "ASCEND_SNT9B", "ASCEND_SNT3"),
            "tags": _array(STR),
            "swr_instance_id": NO_ENTERPRISE_REGISTRY,
            "read_me": STR,
            "workspace_id": WORKSPACE,
        },
        ("swr_path",),
    ),
    "ImageCreateReq": _object(
        {
            "name": _pattern(NAME_RE.pattern, 128),
            "namespace": _pattern(NAMESPACE_RE.pattern, 64),
            "tag": _pattern(TAG_RE.pattern, 64),
            "description": STR,
            "workspace_id": WORKSPACE,
            "swr_instance_id": NO_ENTERPRISE_REGISTRY,
            "swr_instance_domain": NO_ENTERPRISE_REGISTRY,
        },
        ("name", "namespace"),
    ),
    "DeleteImageRequestBody": _object({"is_force": BOOL}),
    "DeleteImageGroupRequestBody": _object({"is_force": BOOL}),
    "UpdateImageGroupRequestBodyTags": _object({"key": STR, "value": STR}),
    "UpdateImageGroupRequestBody": _object({"read_me": STR, "tags": _array(_ref("UpdateImageGroupRequestBodyTags"))}),
    "TmsTagsRequest": _object({"tags": _array(_ref("TmsTag"))}, ("tags",)),
    # Dynamic storage (spec §4): the SDK marks all but efs_id required; efs_id is required for EFS.
    "DataVolumesReq": _object(
        {
            "category": _enum("OBS", "OBSFS", "EFS"),
            "mount_path": {"type": "string", "maxLength": 256, "pattern": "^/data/"},
            "uri": {"type": "string", "maxLength": 256},
            "efs_id": STR,
        },
        ("category", "mount_path", "uri"),
    ),
    "PasswordAuthRequest": _object(
        {
            "auth": _object(
                {
                    "identity": _object(
                        {
                            "methods": _array(_enum("password")),
                            "password": _object(
                                {
                                    "user": _object(
                                        {"name": STR, "password": STR, "domain": _object({"name": STR})},
                                        ("name", "password"),
                                    )
                                },
                                ("user",),
                            ),
                        },
                        ("methods", "password"),
                    ),
                    "scope": _object({"project": _object({"id": STR, "name": STR})}),
                },
                ("identity",),
            )
        },
        ("auth",),
    ),
    "KeypairCreateRequest": _object(
        {
            "keypair": _object(
                {"name": _pattern(r"^[A-Za-z0-9_-]{1,64}$", 64), "public_key": STR}, ("name", "public_key")
            )
        },
        ("keypair",),
    ),
    "ErrorBody": _object({"error_code": STR, "error_msg": STR, "request_id": STR}, ("error_code", "error_msg")),
    # Answers are described by their envelope; the members of each item are in the spec (NotebookResp …).
    "Page": _object(
        {"current": INT, "data": _array({"type": "object"}), "pages": INT, "size": INT, "total": INT}, ("data", "total")
    ),
    "Object": {"type": "object"},
}


@dataclass(frozen=True)
class Operation:
    operation_id: str
    query: tuple[tuple[str, dict], ...] = ()
    body: str | None = None
    body_required: bool = False
    answer: str = "200"
    answer_schema: str | None = "Object"
    public: bool = False  # no credentials needed


def _query(*names: str, **typed: dict) -> tuple[tuple[str, dict], ...]:
    return tuple((name, STR) for name in names) + tuple(typed.items())


PAGING = {"limit": INT, "offset": INT, "sort_dir": _enum("ASC", "DESC")}
LIST_QUERY = _query(
    "name",
    "pool_id",
    "owner",
    "sort_key",
    "workspace_id",
    "workspaceId",
    "flavor",
    "image_id",
    "id",
    "tags",
    "swr_path",
    "pool_name",
    "description",
    "ip",
    "username",
    feature=_enum("DEFAULT", "NOTEBOOK"),
    status=_enum(
        "INIT",
        "CREATING",
        "STARTING",
        "STOPPING",
        "DELETING",
        "RUNNING",
        "STOPPED",
        "SNAPSHOTTING",
        "CREATE_FAILED",
        "START_FAILED",
        "DELETE_FAILED",
        "ERROR",
        "DELETED",
        "FROZEN",
    ),
    billing=_enum("COMPUTE", "STORAGE", "ALL"),
    **PAGING,
)
NOTEBOOK = "/v1/{project_id}/notebooks"
ITEM = NOTEBOOK + "/{notebook_id}"
STORAGE = NOTEBOOK + "/{instance_id}/storage"  # the SDK's name of the notebook id on these paths
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("get", "/health"): Operation("health", public=True),
    ("post", "/v3/auth/tokens"): Operation(
        "create_token", body="PasswordAuthRequest", body_required=True, answer="201", public=True
    ),
    ("get", NOTEBOOK): Operation("list_notebooks", LIST_QUERY, answer_schema="Page"),
    ("get", NOTEBOOK + "/all"): Operation("list_all_notebooks", LIST_QUERY, answer_schema="Page"),
    ("post", NOTEBOOK): Operation("create_notebook", body="NotebookCreateRequest", body_required=True),
    ("get", NOTEBOOK + "/flavors"): Operation(
        "list_flavors",
        _query(
            "sort_key",
            "flavor_type",
            category=_enum("CPU", "GPU", "ASCEND"),
            type=_enum("MANAGED", "DEDICATED"),
            feature=_enum("DEFAULT", "NOTEBOOK"),
            **PAGING,
        ),
        answer_schema="Page",
    ),
    ("get", NOTEBOOK + "/tags"): Operation("show_notebook_tags", _query("workspace_id")),
    ("get", ITEM): Operation("show_notebook"),
    ("put", ITEM): Operation("update_notebook", body="NotebookUpdateRequest"),
    ("delete", ITEM): Operation("delete_notebook"),
    ("post", ITEM + "/start"): Operation("start_notebook", _query(duration=INT, type=_enum("TIMING", "IDLE"))),
    ("post", ITEM + "/stop"): Operation("stop_notebook"),
    ("get", ITEM + "/lease"): Operation("show_lease"),
    ("patch", ITEM + "/lease"): Operation("renew_lease", _query(duration=INT), body="LeaseReq"),
    ("get", ITEM + "/flavors"): Operation(
        "show_switchable_flavors", _query("sort_key", **PAGING), answer_schema="Page"
    ),
    ("get", ITEM + "/events"): Operation("list_notebook_events", _query(**PAGING), answer_schema="Page"),
    ("post", ITEM + "/tags/create"): Operation(
        "create_notebook_tags",
        _query("workspace_id"),
        body="TmsTagsRequest",
        body_required=True,
        answer="204",
        answer_schema=None,
    ),
    ("delete", ITEM + "/tags/delete"): Operation(
        "delete_notebook_tags",
        _query("workspace_id"),
        body="TmsTagsRequest",
        body_required=True,
        answer="204",
        answer_schema=None,
    ),
    ("get", "/v1/{project_id}/images"): Operation(
        "list_image",
        _query(
            "name",
            "namespace",
            "sort_key",
            "workspace_id",
            "show_name",
            "show_tag",
            name_fuzzy_match=BOOL,
            type=_enum("BUILD_IN", "DEDICATED"),
            service_type=_enum("COMMON", "INFERENCE", "TRAIN", "DEV", "UNKNOWN"),
            **PAGING,
        ),
        answer_schema="Page",
    ),
    ("post", "/v1/{project_id}/images"): Operation("register_image", body="ImageRegRequest", body_required=True),
    ("get", "/v1/{project_id}/images/group"): Operation(
        "list_image_group",
        _query(
            "name",
            "namespace",
            "workspace_id",
            "swr_instance_id",
            name_fuzzy_match=BOOL,
            type=_enum("BUILD_IN", "DEDICATED"),
            limit=INT,
            offset=INT,
        ),
        answer_schema="Page",
    ),
    ("put", "/v1/{project_id}/images/group/{group_id}"): Operation(
        "update_image_group", body="UpdateImageGroupRequestBody"
    ),
    ("delete", "/v1/{project_id}/images/group/{group_id}"): Operation(
        "delete_image_group", _query(force=BOOL), body="DeleteImageGroupRequestBody"
    ),
    ("get", "/v1/{project_id}/images/{image_id}"): Operation("show_image"),
    ("delete", "/v1/{project_id}/images/{image_id}"): Operation(
        "delete_image", _query(force=BOOL), body="DeleteImageRequestBody"
    ),
    ("post", "/v1/{project_id}/images/{image_id}/sync"): Operation("sync_image"),
    ("post", ITEM + "/create-image"): Operation("create_image", body="ImageCreateReq", body_required=True),
    ("post", STORAGE): Operation("attach_dynamic_storage", body="DataVolumesReq", body_required=True),
    ("get", STORAGE): Operation("list_dynamic_storages", answer_schema="Page"),
    ("get", STORAGE + "/{storage_id}"): Operation("show_dynamic_storage"),
    ("delete", STORAGE + "/{storage_id}"): Operation("detach_dynamic_storage"),
    ("get", "/v1/{project_id}/authoring/features/{feature}"): Operation("list_features"),
    ("get", "/v3/{project_id}/keypairs"): Operation("list_keypairs"),
    ("post", "/v3/{project_id}/keypairs"): Operation("create_keypair", body="KeypairCreateRequest", body_required=True),
    ("delete", "/v3/{project_id}/keypairs/{keypair_name}"): Operation("delete_keypair"),
    ("get", "/v1/{project_id}/nbfleet/audit"): Operation(
        "list_audit_events", _query("since", "user", "instance", limit=INT)
    ),
}


def _path_parameters(path: str) -> list[dict]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
    return [{"name": name, "in": "path", "required": True, "schema": STR} for name in names]


def _document(app: FastAPI) -> dict:
    base = get_openapi(
        title=app.title,
        version=app.version,
        routes=app.routes,
        description="ModelArts DevEnviron notebook API v1, as nbfleet serves it.",
    )
    paths: dict = {}
    for path, item in base["paths"].items():
        for method in item:
            declared = OPERATIONS.get((method, path))
            if declared is None:
                continue
            operation: dict = {
                "operationId": declared.operation_id,
                "parameters": _path_parameters(path)
                + [
                    {"name": name, "in": "query", "required": False, "schema": schema}
                    for name, schema in declared.query
                ],
                "responses": {
                    "default": {
                        "description": "An error",
                        "content": {"application/json": {"schema": _ref("ErrorBody")}},
                    }
                },
            }
            answer: dict = {"description": "Success"}
            if declared.answer_schema:
                answer["content"] = {"application/json": {"schema": _ref(declared.answer_schema)}}
            operation["responses"][declared.answer] = answer
            if declared.body:
                operation["requestBody"] = {
                    "required": declared.body_required,
                    "content": {"application/json": {"schema": _ref(declared.body)}},
                }
            if declared.public:
                operation["security"] = []
            paths.setdefault(path, {})[method] = operation
    return {
        "openapi": base["openapi"],
        "info": base["info"],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Auth-Token",
                    "description": "from POST /v3/auth/tokens or `nbfleet admin create-token`",
                },
                "signature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "SDK-HMAC-SHA256 request signature (AK/SK), as the official SDK signs",
                },
            },
        },
        "security": [{"token": []}, {"signature": []}],
    }


def install_openapi(app: FastAPI) -> None:
    """Serve the declared document at ``app.openapi_url`` (built once, on first request)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to supply the schema
