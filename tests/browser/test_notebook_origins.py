"""A hostile notebook page opened by another signed-in user: it must not act as that user.

Mallory owns a notebook and controls what its Jupyter serves: a config file in her volume makes it serve a
page of hers (``extra_static_paths``). Victoria is signed in to the console and has her own notebook open
in JupyterLab. She opens Mallory's page. The page tries what such a page did when notebooks shared the
console's origin: read Victoria's console (her CSRF token, her notebook's token), write into her
notebook, start a kernel there, and swap her console session with a cookie. With every notebook on an
origin of its own, all of it fails; with ``NBFLEET_NOTEBOOK_ROUTING=path`` (documented as unsafe for more
than one user) the same page reads her console, which shows the test can tell the difference.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import expect

from .. import notebook_http
from ..jupyter_client import execute, start_kernel
from ..procs import ServeProcess
from .conftest import Fleet, sign_in

pytestmark = pytest.mark.slow
LOCAL_WAIT_MS = 90_000

EVIL_PAGE = """<!doctype html><html><head><title>cat pictures</title></head><body><script>
(async () => {
  const args = JSON.parse(decodeURIComponent(location.hash.slice(1)));
  const out = {};
  async function attempt(name, fn) {
    try { out[name] = await fn(); } catch (e) { out[name] = "blocked: " + e.name; }
  }
  await attempt("console", async () => {
    const r = await fetch(args.console + "/console/notebooks/" + args.victim_id, {credentials: "include"});
    const text = await r.text();
    const token = text.match(/token=([0-9a-f-]{36})/);
    return r.status + (token ? " token:" + token[1] : " no-token");
  });
  await attempt("write", async () => {
    const r = await fetch(args.victim_base + "/api/contents/pwned.txt", {
      method: "PUT", credentials: "include", mode: "no-cors", headers: {"Content-Type": "text/plain"},
      body: JSON.stringify({type: "file", format: "text", content: "pwned"})});
    return "sent " + r.type;
  });
  await attempt("kernel", async () => {
    const r = await fetch(args.victim_base + "/api/kernels", {method: "POST", credentials: "include",
      mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: "{}"});
    return "sent " + r.type;
  });
  await attempt("websocket", () => new Promise((resolve) => {
    // A refused websocket is accepted and closed at once with its code; one that stays open got through.
    const ws = new WebSocket(args.victim_base.replace("http", "ws") + "/api/events/subscribe");
    const stayed = setTimeout(() => { resolve("stayed open"); ws.close(); }, 3000);
    ws.onclose = (e) => { clearTimeout(stayed); resolve("closed " + e.code); };
    ws.onerror = () => {};
  }));
  document.cookie = "nbfleet_session=mallory; path=/console";
  document.cookie = "nbfleet_session=mallory; path=/console; domain=" + args.notebook_domain;
  window.result = out;
  document.title = "done";
})();
</script></body></html>"""

JUPYTER_CONFIG = "c.ServerApp.extra_static_paths = ['/home/ma-user/work/site']\n"


def _shut_down(fleet: Fleet) -> None:
    """Delete every instance (their sandboxes outlive the server otherwise), then stop the server."""
    for user in fleet.users.values():
        for nb in user.api.ok("GET", "/notebooks", {"limit": 50})["data"]:
            user.api.call("DELETE", f"/notebooks/{nb['id']}")
    admin = fleet.users["admin"].api
    deadline = time.monotonic() + 60
    while admin.ok("GET", "/notebooks/all", {"limit": 50})["total"] and time.monotonic() < deadline:
        time.sleep(0.2)
    fleet.close()
    fleet.server.terminate()


def _fleet(tmp_path_factory, routing: str) -> Fleet:
    env = {"NBFLEET_NOTEBOOK_ROUTING": routing}
    server = ServeProcess(tmp_path_factory.mktemp(f"origins-{routing}") / "data", runtime="local", env=env).start()
    return Fleet(server)


def _running(user, name: str) -> dict:
    return user.api.wait_status(user.api.create(name)["id"], "RUNNING", timeout=120)


def _mallorys_page(fleet: Fleet) -> tuple[dict, str]:
    """Mallory's notebook, restarted with her config, and the address of the page it serves."""
    mallory = fleet.user("mallory")
    nb = _running(mallory, "innocent")
    base = nb["url"].rsplit("/lab", 1)[0]
    # Her code writes her Jupyter's configuration (a hidden file the contents API would not create).
    write = (
        f"import os; os.makedirs('/home/ma-user/.jupyter', exist_ok=True); os.makedirs('site', exist_ok=True)\n"
        f"open('/home/ma-user/.jupyter/jupyter_server_config.py', 'w').write({JUPYTER_CONFIG!r})\n"
        f"open('site/cats.html', 'w').write({EVIL_PAGE!r})"
    )
    execute(base, nb["token"], start_kernel(base, nb["token"]), write)
    mallory.api.ok("POST", f"/notebooks/{nb['id']}/stop")
    mallory.api.wait_status(nb["id"], "STOPPED", timeout=60)
    mallory.api.ok("POST", f"/notebooks/{nb['id']}/start")
    nb = mallory.api.wait_status(nb["id"], "RUNNING", timeout=120)
    base = nb["url"].rsplit("/lab", 1)[0]
    page = f"{base}/static/cats.html"
    assert "cat pictures" in notebook_http.get(page).text  # served by her Jupyter, on her notebook's origin
    return nb, page


def _victim_opens(fleet: Fleet, new_page, page_url: str) -> tuple[dict, dict, object]:
    """Victoria signs in, opens her own JupyterLab (so her browser holds its login cookie), then the page."""
    victoria = fleet.user("victoria")
    nb = _running(victoria, "thesis")
    page = sign_in(new_page(), fleet.endpoint, victoria)
    page.goto(f"{fleet.endpoint}/console/notebooks/{nb['id']}")
    with page.context.expect_page() as opened:
        page.click("#open-lab")
    lab = opened.value
    expect(lab).to_have_title(re.compile("JupyterLab"), timeout=LOCAL_WAIT_MS)
    args = {
        "console": fleet.endpoint,
        "victim_id": nb["id"],
        "victim_base": nb["url"].rsplit("/lab", 1)[0],
        "notebook_domain": "nb.localhost",
    }
    evil = page.context.new_page()
    evil.goto(page_url + "#" + json.dumps(args))
    expect(evil).to_have_title("done", timeout=30_000)
    return nb, evil.evaluate("window.result"), page


@pytest.fixture(scope="module")
def origins(tmp_path_factory):
    fleet = _fleet(tmp_path_factory, "host")
    yield fleet
    _shut_down(fleet)


def test_a_notebook_page_cannot_act_as_the_user_who_opens_it(origins: Fleet, new_page):
    mallory_nb, page_url = _mallorys_page(origins)
    assert page_url.startswith(f"http://{mallory_nb['id']}.nb.localhost:")
    victim_nb, result, console = _victim_opens(origins, new_page, page_url)

    # Reading the console is a cross-origin read: the browser refuses to hand over the response.
    assert result["console"].startswith("blocked"), result
    # Writes and websockets to her notebook come from another origin: the proxy refuses them.
    victoria = origins.users["victoria"]
    time.sleep(0.5)
    base = victim_nb["url"].rsplit("/lab", 1)[0]
    pwned = notebook_http.get(
        f"{base}/api/contents/pwned.txt", headers={"Authorization": f"token {victim_nb['token']}"}
    )
    assert pwned.status_code == 404
    kernels = notebook_http.get(f"{base}/api/kernels", headers={"Authorization": f"token {victim_nb['token']}"})
    assert kernels.json() == []  # her JupyterLab shows the launcher; no kernel was started for her
    assert result["websocket"] == "closed 4403", result  # refused by nbfleet, whatever her Jupyter allows
    # Her console session is still hers: the page's cookies never reach the console's origin.
    console.goto(f"{origins.endpoint}/console/notebooks")
    expect(console.locator(".user").first).to_contain_text("victoria")
    assert victoria.api.ok("GET", f"/notebooks/{victim_nb['id']}")["status"] == "RUNNING"


def test_path_routing_lets_the_page_read_the_console_as_documented(tmp_path_factory, new_page):
    """The same page under /notebooks/<id>/ on the console's origin: it reads the console as Victoria."""
    fleet = _fleet(tmp_path_factory, "path")
    try:
        mallory_nb, page_url = _mallorys_page(fleet)
        assert page_url.startswith(f"{fleet.endpoint}/notebooks/")
        victim_nb, result, _ = _victim_opens(fleet, new_page, page_url)
        assert result["console"].startswith("200 token:"), result
    finally:
        _shut_down(fleet)
