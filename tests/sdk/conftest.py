"""Process-level fixtures for the SDK conformance tests.

One real ``nbfleet serve`` process (simulated runtime) per test session, driven only through the
official ``huaweicloudsdkmodelarts`` client. Extra users, projects, tokens and disabled keys are made
with the ``nbfleet admin`` CLI while the server runs.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkmodelarts.v1 import (
    CreateNotebookRequest,
    ListImageRequest,
    ModelArtsClient,
    NotebookCreateRequest,
    ShowNotebookRequest,
    StopNotebookRequest,
    VolumeMountRequest,
)

from ..procs import ServeProcess

WAIT_TIMEOUT = 15.0
DEFAULT_FLAVOR = "modelarts.vm.cpu.2u"
DEFAULT_IMAGE = "notebook-python3.11"


def make_client(endpoint: str, ak: str, sk: str, project_id: str, *, credentials=None, http_handler=None):
    cfg = HttpConfig.get_default_config()
    cfg.ignore_ssl_verification = True
    cfg.timeout = (5, 30)
    builder = (
        ModelArtsClient.new_builder()
        .with_http_config(cfg)
        .with_credentials(credentials or BasicCredentials(ak, sk, project_id))
        .with_endpoint(endpoint)
    )
    if http_handler is not None:
        builder = builder.with_http_handler(http_handler)
    return builder.build()


@dataclass
class User:
    """A principal of the running server and an SDK client signing with its key."""

    user_id: str
    project_id: str
    ak: str
    sk: str
    endpoint: str
    name: str = ""
    client: object = field(default=None, repr=False)

    def __post_init__(self):
        if self.client is None:
            self.client = make_client(self.endpoint, self.ak, self.sk, self.project_id)


class Server(ServeProcess):
    """A running ``nbfleet serve`` process (simulated runtime) and the admin CLI of its data directory."""

    def stop(self) -> None:
        self.terminate()

    # --- admin CLI --------------------------------------------------------------------------
    def cli(self, *args: str, env: dict | None = None, as_json: bool = True):
        cmd = [sys.executable, "-m", "nbfleet.cli.main", "admin", *args, "--data-dir", str(self.data_dir)]
        if as_json:
            cmd.insert(-2, "--json")
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=self.cli_env(env))
        assert done.returncode == 0, f"{cmd} failed: {done.stderr}"
        return json.loads(done.stdout) if as_json else done.stdout

    def create_user(self, prefix: str = "user", *, admin: bool = False, project: str | None = None) -> User:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        args = ["create-user", "--name", name]
        if project:
            args += ["--project", project]
        if admin:
            args.append("--admin")
        out = self.cli(*args)
        return User(out["user_id"], out["project_id"], out["ak"], out["sk"], self.endpoint, name)

    def create_project(self, prefix: str = "proj") -> str:
        return self.cli("create-project", "--name", f"{prefix}-{uuid.uuid4().hex[:8]}")["project_id"]

    def create_token(self, user: User, *, env: dict | None = None) -> dict:
        return self.cli("create-token", "--user", user.user_id, "--project", user.project_id, env=env)

    def disable_key(self, ak: str) -> None:
        self.cli("disable-key", ak, as_json=False)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("nbfleet-sdk")
    srv = Server(base / "data")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def admin(server) -> User:
    c = server.creds
    assert c["endpoint"] == server.endpoint
    return User(c["user_id"], c["project_id"], c["ak"], c["sk"], c["endpoint"], c["user_name"])


@pytest.fixture(scope="session")
def alice(server) -> User:
    """A non-admin user of the default project (no instance quota); the common caller of the tests."""
    user = server.create_user("alice")
    server.cli("set-quota", "--user", user.user_id, "--quota", "-1", as_json=False)
    return user


@pytest.fixture(scope="session")
def image_ids(admin) -> dict[str, str]:
    """Built-in image name -> id, found through list_image."""
    page = admin.client.list_image(ListImageRequest(limit=200))
    return {img.name: img.id for img in page.data}


# --- helpers used by the test modules -----------------------------------------------------------


def expect_error(fn, status: int, *codes: str) -> ClientRequestException:
    """Call ``fn`` and check it fails with one of ``codes`` and a request id."""
    try:
        result = fn()
    except ClientRequestException as exc:
        assert exc.status_code == status, (exc.status_code, exc.error_code, exc.error_msg)
        assert exc.error_code in codes, (exc.error_code, exc.error_msg)
        assert exc.error_msg and isinstance(exc.error_msg, str)
        assert exc.request_id, "error carries no request id"
        return exc
    raise AssertionError(f"expected {status} {codes}, got success: {result}")


def wait_status(client, notebook_id: str, *statuses: str, timeout: float = WAIT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        nb = client.show_notebook(ShowNotebookRequest(id=notebook_id))
        if nb.status in statuses:
            return nb
        if time.monotonic() > deadline:
            raise AssertionError(f"{notebook_id} stayed {nb.status}, wanted {statuses}")
        time.sleep(0.03)


def wait_gone(client, notebook_id: str, timeout: float = WAIT_TIMEOUT) -> ClientRequestException:
    deadline = time.monotonic() + timeout
    while True:
        try:
            nb = client.show_notebook(ShowNotebookRequest(id=notebook_id))
        except ClientRequestException as exc:
            return exc
        assert nb.status == "DELETING", nb.status
        if time.monotonic() > deadline:
            raise AssertionError(f"{notebook_id} still {nb.status}")
        time.sleep(0.03)


def create_notebook(client, image_id: str, name: str, *, wait: bool = True, flavor: str = DEFAULT_FLAVOR, **extra):
    body = NotebookCreateRequest(
        name=name,
        image_id=image_id,
        flavor=flavor,
        volume=VolumeMountRequest(category="EVS", ownership="MANAGED"),
        **extra,
    )
    nb = client.create_notebook(CreateNotebookRequest(body=body))
    if wait:
        return wait_status(client, nb.id, "RUNNING", "CREATE_FAILED")
    return nb


def stop_and_wait(client, notebook_id: str):
    client.stop_notebook(StopNotebookRequest(id=notebook_id))
    return wait_status(client, notebook_id, "STOPPED")


def now_ms() -> int:
    return int(time.time() * 1000)


def next_signing_second() -> None:
    """Wait for the wall clock's next second before repeating a call on purpose.

    The SDK signs with a one-second ``X-Sdk-Date``, so the same call made twice within one second is one
    signed request sent twice, which nbfleet refuses as a replay (401 ModelArts.0208, docs/api.md)."""
    now = time.time()
    time.sleep(math.ceil(now) - now + 0.01)
