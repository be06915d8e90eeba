"""Profiles, environment precedence, the signer, and the exit codes of errors (1 API, 2 usage, 3 connection)."""

from __future__ import annotations

import stat
import tomllib
from datetime import UTC, datetime
from urllib.parse import unquote

import httpx
import pytest
import typer
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from nbfleet.auth import signature
from nbfleet.cli.client import ApiClient, ApiError, Credentials
from nbfleet.cli.notebooks import parse_duration


def test_configure_writes_a_private_file_with_two_profiles_and_profile_picks_one(cli, server, closed_endpoint):
    cli.configure(server.creds, profile="default", endpoint=closed_endpoint)
    cli.configure(server.creds, profile="lab")

    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    doc = tomllib.loads(cli.config.read_text())
    assert doc["profiles"]["default"]["endpoint"] == closed_endpoint
    assert doc["profiles"]["lab"] == {k: server.creds[k] for k in ("endpoint", "project_id", "ak", "sk")}

    assert cli.run("notebooks", "list").returncode == 3  # the default profile: nothing listens there
    page = cli.json("notebooks", "list", "--profile", "lab")
    assert {"current", "data", "pages", "size", "total"} <= set(page)
    assert cli.json("images", "list", env={"NBFLEET_PROFILE": "lab"})["total"] >= 1

    missing = cli.run("notebooks", "list", "--profile", "nope")
    assert missing.returncode == 2 and "profile 'nope' not found" in missing.stderr


def test_configure_replaces_one_profile_and_keeps_the_mode(cli, server):
    cli.configure(server.creds, profile="a")
    cli.configure(server.creds, profile="b")
    cli.configure(server.creds, profile="a", sk="rotated")
    profiles = tomllib.loads(cli.config.read_text())["profiles"]
    assert profiles["a"]["sk"] == "rotated" and profiles["b"]["sk"] == server.creds["sk"]
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600


def test_configure_prompts_for_what_is_not_given(cli, server):
    c = server.creds
    done = cli.run(
        "configure", "--profile", "asked", input=f"{c['endpoint']}\n{c['project_id']}\n{c['ak']}\n{c['sk']}\n"
    )
    assert done.returncode == 0, done.stderr
    assert c["sk"] not in done.stdout  # the secret key prompt does not echo
    assert cli.json("notebooks", "list", "--profile", "asked")["total"] >= 0


def test_xdg_config_home_and_home_locate_the_file_without_nbfleet_config(cli, server):
    c = server.creds
    args = ("configure", "--endpoint", c["endpoint"], "--project-id", c["project_id"], "--ak", c["ak"], "--sk", c["sk"])
    xdg = cli.home / "xdg"
    assert cli.run(*args, env={"NBFLEET_CONFIG": None, "XDG_CONFIG_HOME": str(xdg)}).returncode == 0
    assert (xdg / "nbfleet" / "config.toml").exists()
    assert cli.run(*args, env={"NBFLEET_CONFIG": None}).returncode == 0
    assert (cli.home / ".config" / "nbfleet" / "config.toml").exists()
    assert not cli.config.exists()


def test_environment_variables_win_over_the_file(cli, server, closed_endpoint):
    cli.configure(server.creds, endpoint=closed_endpoint, sk="not-the-secret")
    assert cli.run("notebooks", "list").returncode == 3
    wrong_sk = cli.run("notebooks", "list", env={"NBFLEET_ENDPOINT": server.endpoint})
    assert wrong_sk.returncode == 1 and "APIGW.0301" in wrong_sk.stderr
    both = {"NBFLEET_ENDPOINT": server.endpoint, "NBFLEET_SK": server.creds["sk"]}
    assert cli.json("notebooks", "list", env=both)["total"] >= 0


def test_environment_alone_is_enough(cli, server):
    env = {f"NBFLEET_{k.upper()}": server.creds[k] for k in ("endpoint", "project_id", "ak", "sk")}
    assert not cli.config.exists()
    assert cli.json("flavors", "list", env=env)["data"]


def test_wrong_secret_key_exits_1_with_the_gateway_code(cli, server):
    cli.configure(server.creds, sk="wrong-secret")
    done = cli.run("notebooks", "list")
    assert done.returncode == 1
    assert done.stderr.startswith("error: APIGW.0301: ")
    assert done.stdout == ""


def test_connection_refused_exits_3(cli, server, closed_endpoint):
    cli.configure(server.creds, endpoint=closed_endpoint)
    done = cli.run("notebooks", "show", "0b9b6a4c-5a4d-4bd5-9a51-9a3c1d0f6a11")
    assert done.returncode == 3
    assert done.stderr.startswith("error: cannot reach") and closed_endpoint in done.stderr


def test_missing_configuration_and_bad_arguments_exit_2(cli, server):
    nothing = cli.run("notebooks", "list")
    assert nothing.returncode == 2 and "nbfleet configure" in nothing.stderr
    cli.configure(server.creds)
    assert cli.run("notebooks", "renew", "x", "--duration", "5 parsecs").returncode == 2
    assert cli.run("notebooks", "list", "--sort-dir", "sideways").returncode == 2
    assert cli.run("notebooks", "create", "--name", "x").returncode == 2  # --flavor/--image required
    unknown_image = cli.run(
        "notebooks", "create", "--name", "x", "--flavor", "modelarts.vm.cpu.2u", "--image", "no-such-image"
    )
    assert unknown_image.returncode == 2 and "no image named 'no-such-image'" in unknown_image.stderr


@pytest.mark.parametrize(
    "text,ms",
    [
        ("3600000", 3_600_000),
        ("-1", -1),
        ("2h", 7_200_000),
        ("30m", 1_800_000),
        ("1h30m", 5_400_000),
        ("1d", 86_400_000),
        ("90s", 90_000),
        ("250ms", 250),
    ],
)
def test_parse_duration(text, ms):
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "2x", "h", "1h 30m", "1.5h", "2h-"])
def test_parse_duration_refuses_other_forms(text):
    with pytest.raises(typer.BadParameter):
        parse_duration(text)


def test_requests_are_signed_exactly_as_the_official_sdk_signs_them():
    """Same headers and date into the SDK's own Signer give the same Authorization header."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    creds = Credentials("http://127.0.0.1:8080", "0123456789abcdef0123456789abcdef", "AKEXAMPLE", "SKEXAMPLE")
    with ApiClient(creds, transport=httpx.MockTransport(answer)) as client:
        client.request("GET", "/notebooks", {"offset": 0, "name": "my nb/1", "limit": 10, "status": None})
        client.request("PATCH", "/notebooks/abc/lease", body={"duration": 3600000, "type": "TIMING"})

    for request in seen:
        headers = {
            k: v
            for k, v in request.headers.items()
            if k in ("content-type", "host", "user-agent", "x-client-request-id", "x-project-id", "x-sdk-date")
        }
        assert headers["host"] == "127.0.0.1:8080" and headers["x-project-id"] == creds.project_id
        raw_query = request.url.query.decode()
        pairs = [tuple(unquote(p) for p in item.split("=", 1)) for item in raw_query.split("&") if item]
        sdk = SdkRequest(
            method=request.method,
            schema="http",
            host="127.0.0.1:8080",
            resource_path=request.url.path,
            query_params=pairs,
            header_params={k.title(): v for k, v in headers.items()},
            body=request.content or "",
        )
        Signer(BasicCredentials(creds.ak, creds.sk, creds.project_id)).sign(sdk)
        assert request.headers["authorization"] == sdk.header_params["Authorization"]
        # and the server's verifier accepts it
        signature.verify(
            signature.parse_authorization(request.headers["authorization"]),
            creds.sk,
            request.method,
            request.url.path,
            raw_query,
            dict(request.headers),
            request.content,
            datetime.now(UTC),
        )
    assert seen[0].url.query == b"limit=10&name=my%20nb%2F1&offset=0"  # sorted, strict encoding, None left out


def test_error_bodies_become_api_errors_with_the_request_id():
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            headers={"X-Request-Id": "rid-1"},
            json={"error_code": "ModelArts.6309", "error_msg": "The instance does not exist."},
        )

    creds = Credentials("127.0.0.1:9", "p", "ak", "sk")
    with ApiClient(creds, transport=httpx.MockTransport(answer)) as client:
        assert str(client.base) == "https://127.0.0.1:9"  # a bare host gets https://, as in the SDK
        with pytest.raises(ApiError) as info:
            client.notebook("x")
    assert (info.value.status, info.value.code, info.value.request_id) == (400, "ModelArts.6309", "rid-1")
    assert info.value.message == "The instance does not exist."


def test_a_success_that_is_not_json_is_reported_not_crashed_on():
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "text/html"}, text="<html>a login page</html>")

    credentials = Credentials("http://127.0.0.1:9", "p", "ak", "sk")
    with (
        ApiClient(credentials, transport=httpx.MockTransport(answer)) as client,
        pytest.raises(ApiError, match="not JSON"),
    ):
        client.notebook("x")
