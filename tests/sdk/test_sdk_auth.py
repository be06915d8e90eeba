"""Authentication and authorisation as an SDK user sees them: errors, request ids, X-Auth-Token."""

from __future__ import annotations

import uuid

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials as SdkBasicCredentials
from huaweicloudsdkcore.http.http_handler import HttpHandler
from huaweicloudsdkcore.signer.signer import Signer
from huaweicloudsdkmodelarts.v1 import (
    DeleteNotebookRequest,
    ListNotebooksRequest,
    ShowLeaseRequest,
    ShowNotebookRequest,
    StartNotebookRequest,
    StopNotebookRequest,
)

from .conftest import DEFAULT_IMAGE, create_notebook, expect_error, make_client


class BasicCredentials(SdkBasicCredentials):
    """Token credentials. The client builder accepts only a class *named* BasicCredentials, so the
    subclass keeps that name; it sends X-Auth-Token instead of an AK/SK signature."""

    def __init__(self, token: str, project_id: str):
        super().__init__("token-auth-unused-ak", "token-auth-unused-sk", project_id)
        self.token = token

    def sign_request(self, request):
        request.header_params["X-Project-Id"] = self.project_id
        request.header_params["X-Auth-Token"] = self.token
        Signer.process_request_uri(request)
        return request


def token_client(endpoint: str, token: str, project_id: str):
    return make_client(endpoint, None, None, project_id, credentials=BasicCredentials(token, project_id))


@pytest.fixture(scope="module")
def other_project(server, alice) -> str:
    """A second project alice is not a member of."""
    project = server.create_project("elsewhere")
    assert project != alice.project_id
    return project


@pytest.fixture(scope="module")
def alice_token(server, alice) -> str:
    issued = server.create_token(alice)
    assert issued["token"] and isinstance(issued["expires_at"], int)
    return issued["token"]


def test_unknown_notebook_is_6309_everywhere(alice):
    c = alice.client
    missing = str(uuid.uuid4())
    calls = [
        lambda: c.show_notebook(ShowNotebookRequest(id=missing)),
        lambda: c.show_lease(ShowLeaseRequest(id=missing)),
        lambda: c.start_notebook(StartNotebookRequest(id=missing)),
        lambda: c.stop_notebook(StopNotebookRequest(id=missing)),
        lambda: c.delete_notebook(DeleteNotebookRequest(id=missing)),
        lambda: c.show_notebook(ShowNotebookRequest(id="not-a-uuid")),
    ]
    request_ids = {expect_error(call, 400, "ModelArts.6309").request_id for call in calls}
    assert len(request_ids) == len(calls), "request ids must be fresh per request"


def test_wrong_project_is_0210(server, alice, other_project):
    client = make_client(server.endpoint, alice.ak, alice.sk, other_project)
    exc = expect_error(lambda: client.list_notebooks(ListNotebooksRequest()), 403, "ModelArts.0210")
    assert "project" in exc.error_msg.lower()
    # the same key keeps working in its own project
    assert alice.client.list_notebooks(ListNotebooksRequest()).total >= 0


def test_bad_signature_is_apigw_0301(server, alice):
    client = make_client(server.endpoint, alice.ak, alice.sk + "x", alice.project_id)
    expect_error(lambda: client.list_notebooks(ListNotebooksRequest()), 401, "APIGW.0301")
    expect_error(lambda: client.show_notebook(ShowNotebookRequest(id=str(uuid.uuid4()))), 401, "APIGW.0301")


def test_unknown_access_key_is_apigw_0301(server, alice):
    client = make_client(server.endpoint, "AKNOTKNOWN0000000000", alice.sk, alice.project_id)
    exc = expect_error(lambda: client.list_notebooks(ListNotebooksRequest()), 401, "APIGW.0301")
    assert "ak" in exc.error_msg.lower()


def test_disabled_access_key_is_0206(server):
    user = server.create_user("disabled")
    assert user.client.list_notebooks(ListNotebooksRequest()).total == 0
    server.disable_key(user.ak)
    expect_error(lambda: user.client.list_notebooks(ListNotebooksRequest()), 403, "ModelArts.0206")
    # a fresh client with the same key is refused the same way
    fresh = make_client(server.endpoint, user.ak, user.sk, user.project_id)
    expect_error(lambda: fresh.show_notebook(ShowNotebookRequest(id=str(uuid.uuid4()))), 403, "ModelArts.0206")


def test_x_auth_token_via_credentials_subclass(server, alice, alice_token, image_ids):
    nb = create_notebook(alice.client, image_ids[DEFAULT_IMAGE], "token-seen", wait=False)
    client = token_client(server.endpoint, alice_token, alice.project_id)
    via_token = client.list_notebooks(ListNotebooksRequest(limit=50))
    via_aksk = alice.client.list_notebooks(ListNotebooksRequest(limit=50))
    assert nb.id in {n.id for n in via_token.data}
    assert [n.id for n in via_token.data] == [n.id for n in via_aksk.data]
    assert via_token.total == via_aksk.total
    shown = client.show_notebook(ShowNotebookRequest(id=nb.id))
    assert shown.user_id == alice.user_id and shown.token == nb.token  # the owner sees the UI token


def test_x_auth_token_via_http_handler(server, alice, alice_token):
    token = alice_token
    seen: list[dict] = []

    def use_token(**kwargs):
        headers = kwargs["request"].header_params
        headers.pop("Authorization", None)
        headers.pop("X-Sdk-Date", None)
        headers["X-Auth-Token"] = token
        seen.append(dict(headers))

    client = make_client(
        server.endpoint,
        "dummy-ak",
        "dummy-sk",
        alice.project_id,
        http_handler=HttpHandler().add_request_handler(use_token),
    )
    page = client.list_notebooks(ListNotebooksRequest())
    assert page.total == alice.client.list_notebooks(ListNotebooksRequest()).total
    assert seen and "Authorization" not in seen[-1]


def test_garbage_and_expired_tokens_are_refused(server, alice):
    garbage = token_client(server.endpoint, "nbt-" + uuid.uuid4().hex, alice.project_id)
    expect_error(lambda: garbage.list_notebooks(ListNotebooksRequest()), 401, "ModelArts.0203")
    expired = server.create_token(alice, env={"NBFLEET_TOKEN_TTL_SECONDS": "0"})
    client = token_client(server.endpoint, expired["token"], alice.project_id)
    expect_error(lambda: client.list_notebooks(ListNotebooksRequest()), 401, "ModelArts.0202", "ModelArts.0203")


def test_token_of_one_project_is_refused_in_another(server, alice_token, other_project):
    client = token_client(server.endpoint, alice_token, other_project)
    expect_error(lambda: client.list_notebooks(ListNotebooksRequest()), 403, "ModelArts.0210")


def test_a_captured_sdk_request_cannot_be_replayed(server, alice, image_ids):
    """Someone who saw one signed request of the SDK (a log, a proxy) sends it again: refused; the SDK's own
    next call (signed anew) goes through."""
    import httpx
    from huaweicloudsdkmodelarts.v1 import CreateNotebookTagsRequest, CreateTmsTagsRequest, TmsTag

    nb = create_notebook(alice.client, image_ids[DEFAULT_IMAGE], "replay-target", wait=False)
    captured: list = []

    def capture(**kwargs):
        request = kwargs["request"]
        captured.append((request.method, request.uri, dict(request.header_params), request.body))

    client = make_client(
        server.endpoint, alice.ak, alice.sk, alice.project_id, http_handler=HttpHandler().add_request_handler(capture)
    )
    client.create_notebook_tags(
        CreateNotebookTagsRequest(resource_id=nb.id, body=CreateTmsTagsRequest(tags=[TmsTag(key="team", value="a")]))
    )
    method, uri, headers, body = captured[-1]
    with httpx.Client(base_url=server.endpoint) as raw:
        for _ in range(2):
            replay = raw.request(method, uri, headers=headers, content=body)
            assert replay.status_code == 401, replay.text
            assert replay.json()["error_code"] == "ModelArts.0208"
    assert alice.client.show_notebook(ShowNotebookRequest(id=nb.id)).id == nb.id
