"""``nbfleet notebooks|images|flavors`` against a real server: tables for people, the API's JSON for scripts."""

from __future__ import annotations

import re
import sys
import time

import pytest

from .conftest import Cli

DEFAULT_IMAGE = "notebook-python3.11"
FLAVOR = "modelarts.vm.cpu.2u"


@pytest.fixture(scope="module")
def user(server, tmp_path_factory) -> Cli:
    """A CLI whose default profile is the server's admin."""
    cli = Cli(tmp_path_factory.mktemp("cli-home"))
    cli.configure(server.creds)
    return cli


def now_ms() -> int:
    return int(time.time() * 1000)


def running(api, name: str, **extra) -> dict:
    nb = api.create(name, **extra)
    return api.wait_status(nb["id"], "RUNNING", timeout=30)


def test_images_and_flavors_list(user, api):
    images = user.ok("images", "list").stdout
    for image in api.ok("GET", "/images")["data"]:
        assert image["id"] in images and image["name"] in images
    assert user.json("images", "list", "--name", "scipy") == api.ok("GET", "/images", {"name": "scipy"})

    flavors = user.ok("flavors", "list").stdout
    assert re.search(r"modelarts\.vm\.cpu\.2u\s+CPU: 2 vCPUs 8 GB\s+CPU\s+2\s+8 GB", flavors), flavors
    assert "modelarts.vm.cpu.free" not in flavors  # NOTEBOOK feature unless asked
    assert "modelarts.vm.cpu.free" in user.ok("flavors", "list", "--feature", "default").stdout
    assert user.json("flavors", "list", "--category", "GPU") == api.ok("GET", "/notebooks/flavors", {"category": "GPU"})


def test_create_with_wait_reaches_running_and_shows_the_four_steps(user, api):
    done = user.ok(
        "notebooks",
        "create",
        "--name",
        "cli-wait",
        "--flavor",
        FLAVOR,
        "--image",
        DEFAULT_IMAGE,
        "--duration",
        "2h",
        "--volume-size",
        "7",
        "--description",
        "made by [the] cli",
        "--wait",
        "--timeout",
        "30",
    )
    assert re.fullmatch(r"cli-wait \(([0-9a-f-]{36})\) is RUNNING\n", done.stdout), done.stdout
    assert "4/4" in done.stderr and "step 4/4 completed: Initialize the instance" in done.stderr
    notebook_id = re.search(r"\(([0-9a-f-]{36})\)", done.stdout).group(1)
    nb = api.ok("GET", f"/notebooks/{notebook_id}")
    assert nb["status"] == "RUNNING" and nb["volume"]["capacity"] == 7
    assert nb["description"] == "made by [the] cli" and nb["image"]["name"] == DEFAULT_IMAGE
    expiry = nb["lease"]["create_at"] + nb["lease"]["duration"]
    assert abs(expiry - (nb["create_at"] + 7_200_000)) < 1000


def test_create_without_wait_prints_the_api_answer_as_json(user, api):
    image_id = api.image_id()
    nb = user.json("notebooks", "create", "--name", "cli-json", "--flavor", FLAVOR, "--image", image_id)
    assert nb["status"] in ("CREATING", "INIT") and nb["image"]["id"] == image_id
    assert api.ok("GET", f"/notebooks/{nb['id']}")["name"] == "cli-json"


def test_create_with_an_unknown_flavor_prints_the_api_error(user, api):
    done = user.run(
        "notebooks", "create", "--name", "cli-bad", "--flavor", "modelarts.vm.nope", "--image", DEFAULT_IMAGE
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: ModelArts.6323: ")
    assert api.ok("GET", "/notebooks", {"name": "cli-bad"})["total"] == 0


def test_create_wait_on_a_failing_instance_exits_non_zero_with_the_fail_reason(user, api):
    done = user.run(
        "notebooks",
        "create",
        "--name",
        "fail-x",
        "--flavor",
        FLAVOR,
        "--image",
        DEFAULT_IMAGE,
        "--wait",
        "--timeout",
        "30",
    )
    assert done.returncode == 1, done.stderr
    assert "CREATE_FAILED" in done.stderr and "simulated failure at step 3" in done.stderr
    assert "step 3/4 failed" in done.stderr
    page = api.ok("GET", "/notebooks", {"name": "fail-x"})
    assert [nb["status"] for nb in page["data"]] == ["CREATE_FAILED"]


def test_list_table_json_filters_sort_and_paging(user, api):
    for name, flavor in (("lst-beta", FLAVOR), ("lst-alpha", FLAVOR), ("lst-gamma", "modelarts.vm.cpu.4u")):
        running(api, name, flavor=flavor)

    query = ["--name", "lst-", "--sort-key", "name", "--sort-dir", "asc"]
    page = user.json("notebooks", "list", *query)
    assert page == api.ok("GET", "/notebooks", {"name": "lst-", "sort_key": "name", "sort_dir": "ASC"})
    assert [nb["name"] for nb in page["data"]] == ["lst-alpha", "lst-beta", "lst-gamma"]

    table = user.ok("notebooks", "list", *query).stdout
    assert table.index("lst-alpha") < table.index("lst-beta") < table.index("lst-gamma")
    assert all(nb["id"] in table for nb in page["data"])
    assert "RUNNING" in table and "1-3 of 3 notebooks" in table

    desc = user.json("notebooks", "list", "--name", "lst-", "--sort-key", "name", "--sort-dir", "DESC")
    assert [nb["name"] for nb in desc["data"]] == ["lst-gamma", "lst-beta", "lst-alpha"]
    paged = user.ok("notebooks", "list", *query, "--limit", "2", "--offset", "1").stdout
    assert "lst-alpha" not in paged and "2-3 of 3 notebooks" in paged
    first = user.ok("notebooks", "list", *query, "--limit", "2").stdout
    assert "next page: --offset 2" in first
    assert [nb["name"] for nb in user.json("notebooks", "list", "--flavor", "cpu.4u", "--name", "lst-")["data"]] == [
        "lst-gamma"
    ]
    assert user.json("notebooks", "list", "--name", "lst-", "--status", "stopped")["total"] == 0
    assert user.json("notebooks", "list", "--name", "lst-", "--feature", "DEFAULT")["total"] == 0
    everyone = user.ok("notebooks", "list", "--all", "--name", "lst-").stdout
    assert "OWNER" in everyone and "admin" in everyone
    assert user.json("notebooks", "list", "--all", "--name", "lst-") == api.ok(
        "GET", "/notebooks/all", {"name": "lst-"}
    )
    bad_sort = user.run("notebooks", "list", "--sort-key", "colour")
    assert bad_sort.returncode == 1 and "ModelArts.6303" in bad_sort.stderr


def test_show_stop_start_renew_events_delete(user, api):
    nb = running(api, "cli-life")
    shown = user.ok("notebooks", "show", nb["id"]).stdout
    for text in ("RUNNING", FLAVOR, f"{DEFAULT_IMAGE}:1.0", nb["url"], "(in 59m)"):
        assert text in shown, (text, shown)
    assert user.json("notebooks", "show", nb["id"])["id"] == nb["id"]

    stopped = user.ok("notebooks", "stop", nb["id"], "--wait", "--timeout", "30")
    assert stopped.stdout.strip() == f"cli-life ({nb['id']}) is STOPPED"
    assert api.ok("GET", f"/notebooks/{nb['id']}")["status"] == "STOPPED"
    assert "none while STOPPED" in user.ok("notebooks", "show", nb["id"]).stdout
    not_running = user.run("notebooks", "renew", nb["id"], "--duration", "2h")
    assert not_running.returncode == 1 and "ModelArts.6327" in not_running.stderr

    before = now_ms()
    started = user.ok("notebooks", "start", nb["id"], "--duration", "3h", "--wait", "--timeout", "30")
    assert started.stdout.strip() == f"cli-life ({nb['id']}) is RUNNING" and "4/4" in started.stderr
    lease = api.ok("GET", f"/notebooks/{nb['id']}/lease")
    assert before + 3 * 3_600_000 - 1000 <= lease["create_at"] + lease["duration"] <= now_ms() + 3 * 3_600_000

    before = now_ms()
    renewed = user.ok("notebooks", "renew", nb["id"], "--duration", "90m").stdout
    assert renewed.startswith("auto-stop: ") and "(in 1h 29m)" in renewed
    lease = api.ok("GET", f"/notebooks/{nb['id']}/lease")
    assert before + 5_400_000 - 1000 <= lease["create_at"] + lease["duration"] <= now_ms() + 5_400_000
    assert user.json("notebooks", "renew", nb["id"], "--duration", "2h")["type"] == "TIMING"

    events = user.ok("notebooks", "events", nb["id"]).stdout
    for text in ("Stop requested", "Start requested", "Lease renewed"):
        assert text in events, (text, events)
    assert user.json("notebooks", "events", nb["id"], "--limit", "3") == api.ok(
        "GET", f"/notebooks/{nb['id']}/events", {"limit": 3, "offset": 0}
    )

    deleted = user.ok("notebooks", "delete", nb["id"], "--wait", "--timeout", "30")
    assert deleted.stdout.strip() == f"cli-life ({nb['id']}) is deleted"
    assert api.call("GET", f"/notebooks/{nb['id']}").json()["error_code"] == "ModelArts.6309"
    gone = user.run("notebooks", "show", nb["id"])
    assert gone.returncode == 1
    assert gone.stderr.strip() == "error: ModelArts.6309: The instance does not exist."


def test_open_prints_the_url_with_the_owners_token(user, api):
    nb = running(api, "cli-open")
    done = user.ok("notebooks", "open", nb["id"])
    assert done.stdout.strip() == f"{nb['url']}?token={nb['token']}"
    assert nb["token"] and done.stderr == ""

    api.ok("POST", f"/notebooks/{nb['id']}/stop")
    api.wait_status(nb["id"], "STOPPED")
    stopped = user.ok("notebooks", "open", nb["id"])
    assert "is STOPPED" in stopped.stderr and stopped.stdout.startswith(nb["url"])


def test_open_with_browser_hands_the_url_to_the_browser(user, api, tmp_path):
    nb = running(api, "cli-browser")
    opened = tmp_path / "opened.txt"
    script = tmp_path / "browser.py"
    script.write_text(f"import sys\nopen({str(opened)!r}, 'w').write(sys.argv[1])\n")
    done = user.ok("notebooks", "open", nb["id"], "--browser", env={"BROWSER": f"{sys.executable} {script} %s"})
    assert opened.read_text() == done.stdout.strip() == f"{nb['url']}?token={nb['token']}"
