"""The console with the local runtime: create an instance, open its JupyterLab through nbfleet's port
and run a cell there, then stop and delete it — all from the browser."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from .. import notebook_http
from ..procs import ServeProcess
from ..runtime.test_server_local import jupyter_processes
from .conftest import Fleet, screenshot, sign_in

pytestmark = pytest.mark.slow
LOCAL_WAIT_MS = 90_000
NOTEBOOK = {
    "cells": [],
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
}


@pytest.fixture(scope="module")
def local_fleet(tmp_path_factory):
    server = ServeProcess(tmp_path_factory.mktemp("console-local") / "data", runtime="local").start()
    fleet = Fleet(server)
    yield fleet
    admin = fleet.users["admin"].api
    for nb in admin.ok("GET", "/notebooks/all", {"limit": 50})["data"]:
        admin.call("DELETE", f"/notebooks/{nb['id']}")
    deadline = time.monotonic() + 30
    while admin.ok("GET", "/notebooks/all", {"limit": 50})["total"] and time.monotonic() < deadline:
        time.sleep(0.2)
    fleet.close()
    server.terminate()
    for leftover in jupyter_processes(server.data_dir):  # only the servers this test's nbfleet started
        leftover.kill()


def test_open_jupyterlab_from_the_console_and_run_a_cell(local_fleet: Fleet, new_page):
    admin = local_fleet.users["admin"]
    page = sign_in(new_page(), local_fleet.endpoint, admin)
    page.click("nav.mainnav >> text=Create")
    page.fill("input[name=name]", "lab-from-console")
    page.click("#create-form button[type=submit]")
    page.wait_for_url(re.compile(r"/console/notebooks/[0-9a-f-]{36}$"))
    notebook_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#live [data-role=status]").first).to_have_text("RUNNING", timeout=LOCAL_WAIT_MS)

    nb = admin.api.ok("GET", f"/notebooks/{notebook_id}")
    port = local_fleet.server.port
    assert nb["url"] == f"http://{notebook_id}.nb.localhost:{port}/lab"  # its own origin, nbfleet's port
    assert page.get_attribute("#open-lab", "href") == f"{nb['url']}?token={nb['token']}"
    with page.context.expect_page() as opened:
        page.click("#open-lab")
    lab = opened.value
    lab.wait_for_load_state()
    assert lab.url.startswith(nb["url"])
    expect(lab).to_have_title(re.compile("JupyterLab"), timeout=LOCAL_WAIT_MS)

    base = nb["url"].rsplit("/lab", 1)[0]
    created = notebook_http.put(
        f"{base}/api/contents/x.ipynb",
        json={"type": "notebook", "content": NOTEBOOK},
        headers={"Authorization": f"token {nb['token']}"},
        timeout=30,
    )
    assert created.status_code in (200, 201), created.text
    lab.goto(f"{base}/lab/tree/x.ipynb?reset&token={nb['token']}")
    # An execute sent while the kernel still says "Connecting" is dropped: wait for Idle first.
    expect(lab.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=LOCAL_WAIT_MS)
    cell = lab.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content").first
    cell.click()
    lab.keyboard.type("6*7")
    lab.keyboard.press("Shift+Enter")
    expect(lab.locator(".jp-OutputArea-output").first).to_have_text("42", timeout=30_000)
    screenshot(lab, "jupyterlab-1280")
    lab.close()

    page.click("#live button[data-action=stop]")
    expect(page.locator("#live [data-role=status]").first).to_have_text("STOPPED", timeout=LOCAL_WAIT_MS)
    assert admin.api.ok("GET", f"/notebooks/{notebook_id}")["status"] == "STOPPED"
    # the proxy no longer reaches a Jupyter server
    assert notebook_http.get(f"{base}/api/status", headers={"Authorization": f"token {nb['token']}"}).status_code == 404
    page.click("#live button[data-action=delete]")
    page.wait_for_url(f"{local_fleet.endpoint}/console/notebooks")
    expect(page.locator(f"tr[data-id='{notebook_id}'] [data-role=status]")).to_have_text(
        "DELETED", timeout=LOCAL_WAIT_MS
    )
    assert admin.api.call("GET", f"/notebooks/{notebook_id}").json()["error_code"] == "ModelArts.6309"
