"""Console sign-in, sign-out, CSRF and per-user isolation in a real browser."""

from __future__ import annotations

import re

from .conftest import NARROW, screenshot, sign_in


def session_cookie(page):
    return next((c for c in page.context.cookies() if c["name"] == "nbfleet_session"), None)


def test_sign_in_refuses_a_wrong_password_then_accepts_the_right_one(fleet, new_page):
    alice = fleet.user("alice")
    page = new_page()
    page.goto(f"{fleet.endpoint}/console/notebooks")
    page.wait_for_url(re.compile(r"/console/login\?next="))
    screenshot(page, "signin-1280")
    page.fill("input[name=user]", "alice")
    page.fill("input[name=password]", "not-her-password")
    page.click("button[type=submit]")
    error = page.locator(".flash.error")
    error.wait_for()
    assert "APIGW.0301" in error.inner_text() and "wrong" in error.inner_text()
    assert "/console/login" in page.url and session_cookie(page) is None
    assert page.input_value("input[name=user]") == "alice"  # kept, the password is not
    assert page.input_value("input[name=password]") == ""

    page.fill("input[name=password]", alice.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{fleet.endpoint}/console/notebooks")  # back where the sign-in started
    cookie = session_cookie(page)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/console"
    assert page.locator(".who .user").inner_text().startswith("alice")
    assert page.evaluate("document.cookie").find("nbfleet_session") == -1  # not readable by scripts


def test_unknown_user_and_foreign_project_are_refused(fleet, new_page):
    fleet.user("alice")
    other_project = fleet.server.cli("admin", "create-project", "--name", "elsewhere", "--json")["project_id"]
    page = new_page()
    page.goto(f"{fleet.endpoint}/console/login")
    page.fill("input[name=user]", "nobody")
    page.fill("input[name=password]", "whatever-it-is")
    page.click("button[type=submit]")
    assert "wrong" in page.locator(".flash.error").inner_text()
    page.fill("input[name=user]", "alice")
    page.fill("input[name=password]", fleet.users["alice"].password)
    page.fill("input[name=project]", other_project)
    page.click("button[type=submit]")
    assert "not a member" in page.locator(".flash.error").inner_text()
    assert session_cookie(page) is None


def test_sign_out_ends_the_session_for_good(fleet, new_page):
    page = sign_in(new_page(), fleet.endpoint, fleet.user("alice"))
    token = session_cookie(page)["value"]
    page.click("text=Sign out")
    page.wait_for_url(f"{fleet.endpoint}/console/login")
    assert session_cookie(page) is None
    # The old token is revoked on the server, not only forgotten by the browser.
    replay = page.context.request.get(
        f"{fleet.endpoint}/console/api/status", headers={"Cookie": f"nbfleet_session={token}"}
    )
    assert replay.status == 401
    api = page.context.request.get(
        f"{fleet.endpoint}/v1/{fleet.users['alice'].project_id}/notebooks", headers={"X-Auth-Token": token}
    )
    assert api.status == 401


def test_posts_without_the_csrf_token_are_refused(fleet, new_page):
    carol = fleet.user("carol")
    nb = carol.api.wait_status(carol.api.create("csrf-target")["id"], "RUNNING")
    page = sign_in(new_page(), fleet.endpoint, carol)
    csrf = page.get_attribute("input[name=csrf_token] >> nth=0", "value")
    request = page.context.request  # carries the session cookie, like a forged cross-site form would
    url = f"{fleet.endpoint}/console/notebooks/{nb['id']}/stop"
    missing = request.post(url, form={"next": "/console/notebooks"}, max_redirects=0)
    wrong = request.post(url, form={"csrf_token": "0" * 64}, max_redirects=0)
    assert missing.status == 403 and wrong.status == 403
    assert "CSRF" in missing.text()
    assert carol.api.ok("GET", f"/notebooks/{nb['id']}")["status"] == "RUNNING"  # nothing happened
    logout = request.post(f"{fleet.endpoint}/console/logout", form={}, max_redirects=0)
    assert logout.status == 403 and session_cookie(page) is not None
    create = request.post(f"{fleet.endpoint}/console/notebooks/new", form={"name": "forged"}, max_redirects=0)
    assert create.status == 403
    assert carol.api.ok("GET", "/notebooks", {"name": "forged"})["total"] == 0
    # The same request with the page's token goes through: the token is what was missing.
    ok = request.post(url, form={"csrf_token": csrf, "next": "/console/notebooks"}, max_redirects=0)
    assert ok.status == 303
    carol.api.wait_status(nb["id"], "STOPPED")
    # The sign-in form has its own token (double-submit cookie).
    fresh = new_page()
    refused = fresh.context.request.post(
        f"{fleet.endpoint}/console/login", form={"user": "carol", "password": carol.password}, max_redirects=0
    )
    assert refused.status == 403 and session_cookie(fresh) is None
    carol.api.call("DELETE", f"/notebooks/{nb['id']}")


def test_one_user_never_sees_anothers_notebooks(fleet, new_page):
    dave, erin = fleet.user("dave"), fleet.user("erin")
    mine = dave.api.create("dave-private")
    theirs = erin.api.create("erin-private")
    page = sign_in(new_page(), fleet.endpoint, dave)
    ids = page.eval_on_selector_all("#results tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")
    assert mine["id"] in ids and theirs["id"] not in ids
    assert page.locator("nav.mainnav >> text=All users").count() == 0  # no admin view for dave
    page.goto(f"{fleet.endpoint}/console/notebooks/all")
    ids = page.eval_on_selector_all("#results tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")
    assert theirs["id"] not in ids and mine["id"] in ids  # /all is the caller's own, as in the API
    page.goto(f"{fleet.endpoint}/console/notebooks/{theirs['id']}")
    assert "ModelArts.6309" in page.locator(".flash.error").inner_text()
    assert "erin-private" not in page.content()
    status = page.context.request.get(f"{fleet.endpoint}/console/api/status?id={theirs['id']}").json()
    assert status["notebooks"][theirs["id"]]["status"] == "DELETED"  # indistinguishable from gone
    stop = page.context.request.post(
        f"{fleet.endpoint}/console/notebooks/{theirs['id']}/stop",
        form={"csrf_token": page.get_attribute("input[name=csrf_token] >> nth=0", "value")},
    )
    assert "ModelArts.6309" in stop.text()  # refused, with the API's code
    assert erin.api.wait_status(theirs["id"], "RUNNING")["status"] == "RUNNING"


def test_admin_sees_every_users_notebooks_like_the_api(fleet, new_page):
    admin = fleet.users["admin"]
    frank = fleet.user("frank")  # made here, not by another test, so the rows below are known
    nb = frank.api.create("frank-visible")
    page = sign_in(new_page(), fleet.endpoint, admin)
    page.click("nav.mainnav >> text=All users")
    page.wait_for_url(f"{fleet.endpoint}/console/notebooks/all")
    page.fill("input[name=username]", "frank")
    page.wait_for_url(re.compile(r"username=frank"))
    ids = page.eval_on_selector_all("#results tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")
    api = admin.api.ok("GET", "/notebooks/all", {"username": "frank"})
    assert ids == [n["id"] for n in api["data"]] == [nb["id"]]
    assert page.locator("#results tbody tr[data-id] td[data-label=Owner]").inner_text() == "frank"
    page.set_viewport_size(NARROW)
    screenshot(page, "list-all-420")


def test_sign_in_with_a_next_that_climbs_out_of_the_console_stays_in_it(fleet, new_page):
    """``next=/console/../notebooks/<id>`` once led a fresh session to a page a notebook's owner controls."""
    alice = fleet.user("alice")
    page = new_page()
    page.goto(f"{fleet.endpoint}/console/login?next=/console/../notebooks/0f8fad5b-d9cb-469f-a165-70867728950e/lab")
    page.fill("input[name=user]", alice.name)
    page.fill("input[name=password]", alice.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{fleet.endpoint}/console/notebooks")
    assert session_cookie(page) is not None
    # signed in, the same link still leads into the console
    page.goto(f"{fleet.endpoint}/console/login?next=/console/%2e%2e/notebooks/x")
    page.wait_for_url(f"{fleet.endpoint}/console/notebooks")
