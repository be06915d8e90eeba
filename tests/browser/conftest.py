"""Browser tests of the web console: Debian's Chromium driven by Playwright against a real server.

Never run ``playwright install``: the tests launch ``/usr/bin/chromium`` (``apt-get install chromium``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..procs import ServeProcess, SignedClient
from ..support import Creds

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 420, "height": 800}
WAIT_MS = 15_000  # upper bound of any wait for the page (simulated runtime)
SIM_ENV = {
    "NBFLEET_SIMULATED_DELAY": "0.4",  # ~1.6 s per create/start: long enough to watch, short enough to wait
    "NBFLEET_INSTANCE_QUOTA": "40",
    "NBFLEET_SIMULATED_FAIL": json.dumps(["name=fail-*;step=3;op=create"]),
}


@dataclass
class User:
    name: str
    password: str
    user_id: str
    project_id: str
    api: SignedClient


def set_password(server: ServeProcess, user_id: str, password: str) -> None:
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
            str(server.data_dir),
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=server.cli_env(),
    )
    assert done.returncode == 0, done.stderr


class Fleet:
    """A running server and its users, each with a password and a signed API client."""

    def __init__(self, server: ServeProcess):
        self.server = server
        self.users: dict[str, User] = {}
        admin = server.admin_creds()
        set_password(server, admin.user_id, "admin-password-1")
        self.users["admin"] = User(
            "admin", "admin-password-1", admin.user_id, admin.project_id, SignedClient(server.endpoint, admin)
        )

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def user(self, name: str, *, admin: bool = False) -> User:
        """The user ``name``, created (with a password) on first use."""
        if name not in self.users:
            args = ["admin", "create-user", "--name", name, "--json"] + (["--admin"] if admin else [])
            made = self.server.cli(*args)
            password = f"{name}-password-1"
            set_password(self.server, made["user_id"], password)
            creds = Creds(made["ak"], made["sk"], made["project_id"], made["user_id"])
            self.users[name] = User(
                name, password, made["user_id"], made["project_id"], SignedClient(self.server.endpoint, creds)
            )
        return self.users[name]

    def close(self) -> None:
        for user in self.users.values():
            user.api.close()


@pytest.fixture(scope="package")  # closed before other folders run: it keeps an event loop running
def chromium():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        message = "install Debian's browser: apt-get install -y chromium (never `playwright install`)"
        if os.environ.get("NBFLEET_REQUIRE_BROWSER") == "1":  # .ci/run sets it: CI must not skip these
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    """One nbfleet process with the simulated runtime for the console tests."""
    server = ServeProcess(tmp_path_factory.mktemp("console") / "data", runtime="simulated", env=SIM_ENV).start()
    fleet = Fleet(server)
    yield fleet
    fleet.close()
    server.terminate()


@pytest.fixture
def new_page(chromium):
    """Pages in fresh browser contexts (own cookies), closed after the test."""
    contexts = []

    def make(viewport: dict = WIDE):
        context = chromium.new_context(viewport=viewport)
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # the confirm() of Delete
        return page

    yield make
    for context in contexts:
        context.close()


def sign_in(page, endpoint: str, user: User, *, project: str = ""):
    page.goto(f"{endpoint}/console/")
    page.fill("input[name=user]", user.name)
    page.fill("input[name=password]", user.password)
    page.fill("input[name=project]", project)
    page.click("button[type=submit]")
    page.wait_for_url(f"{endpoint}/console/notebooks")
    return page


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def wait_until(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
