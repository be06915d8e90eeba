"""Console notebook pages in a real browser: lifecycle, live statuses, errors, and the list's query
parity with the API (the rows a page shows are the rows the API returns for the same query)."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qsl, urlsplit

import pytest
from playwright.sync_api import expect

from .conftest import NARROW, WAIT_MS, WIDE, screenshot, sign_in, wait_until

ROWS = "#results tbody tr[data-id]"


def row_ids(page) -> list[str]:
    return page.eval_on_selector_all(ROWS, "rows => rows.map(r => r.dataset.id)")


def page_query(page) -> dict[str, str]:
    # Asked from the page: ``page.url`` is a cached value that a sync caller's polling loop never refreshes.
    return dict(parse_qsl(urlsplit(page.evaluate("location.href")).query))


def assert_same_rows_as_api(page, user, *, expect_query: dict | None = None) -> dict:
    """The table's ids, in order, and its total are the API's for the query in the page's URL."""
    if expect_query is not None:
        wait_until(lambda: page_query(page) == expect_query, what=f"URL query {expect_query}, have {page_query(page)}")
    path = "/notebooks/all" if page.evaluate("location.pathname").endswith("/all") else "/notebooks"
    api = user.api.ok("GET", path, page_query(page))
    assert row_ids(page) == [nb["id"] for nb in api["data"]], (page.url, api["total"])
    pager = page.locator("#results .pager").inner_text()
    if api["total"]:
        first = api["current"] * api["size"] + 1
        assert f"{first}–{first + len(api['data']) - 1} of {api['total']}" in pager
    else:
        assert "0 notebooks" in pager
    return api


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


@pytest.fixture(scope="module")
def hank(fleet):
    """A user with 12 notebooks: 5 alpha (RUNNING), 4 beta (STOPPED), 3 gamma (RUNNING), three flavors."""
    hank = fleet.user("hank")
    flavors = ["modelarts.vm.cpu.2u", "modelarts.vm.cpu.4u", "modelarts.vm.cpu.8u"]
    names = (
        [f"alpha-{i:02d}" for i in range(1, 6)]
        + [f"beta-{i:02d}" for i in range(1, 5)]
        + [f"gamma-{i:02d}" for i in range(1, 4)]
    )
    made = [
        hank.api.create(name, flavor=flavors[i % 3], description=f"notebook number {i}") for i, name in enumerate(names)
    ]
    for nb in made:
        hank.api.wait_status(nb["id"], "RUNNING", timeout=30)
    for nb in made:
        if nb["name"].startswith("beta"):
            hank.api.ok("POST", f"/notebooks/{nb['id']}/stop")
    for nb in made:
        if nb["name"].startswith("beta"):
            hank.api.wait_status(nb["id"], "STOPPED", timeout=30)
    return hank


def test_create_watch_it_run_renew_stop_start_and_delete(fleet, new_page):
    gina = fleet.user("gina")
    page = sign_in(new_page(), fleet.endpoint, gina)
    page.click("nav.mainnav >> text=Create")
    page.wait_for_url(f"{fleet.endpoint}/console/notebooks/new")
    page.fill("input[name=name]", "gina-nb")
    page.select_option("select[name=flavor]", "modelarts.vm.cpu.4u")
    scipy = page.locator("select[name=image_id] option", has_text="notebook-scipy").get_attribute("value")
    page.select_option("select[name=image_id]", scipy)
    page.select_option("select[name=lease_duration]", "7200000")
    page.fill("textarea[name=description]", "made in the console")
    screenshot(page, "create-1280")
    page.click("#create-form button[type=submit]")
    page.wait_for_url(re.compile(r"/console/notebooks/[0-9a-f-]{36}$"))
    notebook_id = page.url.rsplit("/", 1)[1]
    badge = page.locator("#live [data-role=status]").first
    assert badge.inner_text() in ("INIT", "CREATING")
    assert page.locator("#live .steps li").count() == 4
    screenshot(page, "detail-creating-1280")
    page.evaluate("window.__sameDocument = 'yes'")
    expect(badge).to_have_text("RUNNING", timeout=WAIT_MS)
    assert page.evaluate("window.__sameDocument") == "yes"  # no reload happened

    nb = gina.api.ok("GET", f"/notebooks/{notebook_id}")
    assert (nb["status"], nb["flavor"], nb["description"], nb["image"]["name"]) == (
        "RUNNING",
        "modelarts.vm.cpu.4u",
        "made in the console",
        "notebook-scipy",
    )
    assert page.get_attribute("#open-lab", "href") == f"{nb['url']}?token={nb['token']}"
    assert re.fullmatch(r"in (1 h 5\d|2 h 0) min", page.locator("#live [data-expires]").first.inner_text())
    events = page.locator("#live .eventlist li .kind").all_inner_texts()
    api_events = gina.api.ok("GET", f"/notebooks/{notebook_id}/events", {"limit": 20})["data"]
    assert events == [e["type"] for e in api_events]
    screenshot(page, "detail-1280")

    page.select_option("#live select[name=duration]", "14400000")
    page.click("#live button:has-text('Renew lease')")
    expect(page.locator(".flash.ok")).to_contain_text("Lease renewed")
    lease = gina.api.ok("GET", f"/notebooks/{notebook_id}/lease")
    left = lease["create_at"] + lease["duration"] - time.time() * 1000
    assert 4 * 3_600_000 - 120_000 < left <= 4 * 3_600_000

    page.click("#live button[data-action=stop]")
    expect(page.locator("#live [data-role=status]").first).to_have_text("STOPPED", timeout=WAIT_MS)
    assert page.locator("#live button[data-action=start]").is_enabled()
    assert page.locator("#live button[data-action=stop]").is_disabled()
    assert page.locator("#open-lab").get_attribute("href") is None
    page.click("#live button[data-action=start]")
    expect(page.locator("#live [data-role=status]").first).to_have_text("RUNNING", timeout=WAIT_MS)

    page.click("#live button[data-action=delete]")  # confirm() is accepted by the fixture
    page.wait_for_url(f"{fleet.endpoint}/console/notebooks")
    expect(page.locator(".flash.ok")).to_contain_text("Delete requested")
    row_badge = page.locator(f"tr[data-id='{notebook_id}'] [data-role=status]")
    expect(row_badge).to_have_text("DELETED", timeout=WAIT_MS)  # the list polls the row away
    assert gina.api.call("GET", f"/notebooks/{notebook_id}").json()["error_code"] == "ModelArts.6309"


def test_list_buttons_and_failed_create_update_live(fleet, new_page):
    gina = fleet.user("gina")
    page = sign_in(new_page(), fleet.endpoint, gina)
    page.click("nav.mainnav >> text=Create")
    page.fill("input[name=name]", "fail-on-purpose")
    page.click("#create-form button[type=submit]")
    page.wait_for_url(re.compile(r"/console/notebooks/[0-9a-f-]{36}$"))
    notebook_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#live [data-role=status]").first).to_have_text("CREATE_FAILED", timeout=WAIT_MS)
    reason = gina.api.ok("GET", f"/notebooks/{notebook_id}")["fail_reason"]
    assert reason and reason in page.locator("#live .flash.error").inner_text()

    other = gina.api.create("gina-runs")
    page.goto(f"{fleet.endpoint}/console/notebooks")
    row = page.locator(f"tr[data-id='{other['id']}']")
    expect(row.locator("[data-role=status]")).to_have_text("RUNNING", timeout=WAIT_MS)
    expect(row.locator("button[data-action=stop]")).to_be_enabled()
    row.locator("button[data-action=stop]").click()
    page.wait_for_url(f"{fleet.endpoint}/console/notebooks")
    row = page.locator(f"tr[data-id='{other['id']}']")
    expect(row.locator("[data-role=status]")).to_have_text("STOPPED", timeout=WAIT_MS)
    expect(row.locator("button[data-action=start]")).to_be_enabled()
    expect(row.locator("button[data-action=renew]")).to_be_disabled()
    assert gina.api.ok("GET", f"/notebooks/{other['id']}")["status"] == "STOPPED"


def test_errors_show_the_apis_code_and_message(fleet, new_page):
    gina = fleet.user("gina")
    page = sign_in(new_page(), fleet.endpoint, gina)
    page.goto(f"{fleet.endpoint}/console/notebooks/new")
    page.fill("input[name=name]", "bad name!")
    image_id = page.input_value("select[name=image_id]")
    page.click("#create-form button[type=submit]")
    api = gina.api.call(
        "POST",
        "/notebooks",
        body={
            "name": "bad name!",
            "flavor": "modelarts.vm.cpu.2u",
            "image_id": image_id,
            "description": "",
            "feature": "NOTEBOOK",
            "volume": {"category": "EVS", "ownership": "MANAGED"},
            "lease": {"duration": 3_600_000, "type": "TIMING"},
        },
    ).json()
    shown = page.locator(".flash.error").inner_text()
    assert api["error_code"] in shown and api["error_msg"] in shown
    assert page.input_value("input[name=name]") == "bad name!"  # the form keeps what was typed

    nb = gina.api.wait_status(gina.api.create("gina-errors")["id"], "RUNNING")
    page.goto(f"{fleet.endpoint}/console/notebooks/{nb['id']}")
    page.select_option("#live select[name=duration]", "900000")  # 15 min: below the TIMING minimum
    page.click("#live button:has-text('Renew lease')")
    shown = page.locator(".flash.error").inner_text()
    api = gina.api.call("PATCH", f"/notebooks/{nb['id']}/lease", {"duration": "900000"}).json()
    assert api["error_code"] == "ModelArts.6349"
    assert api["error_code"] in shown and api["error_msg"] in shown


def test_filters_sort_and_paging_show_exactly_the_apis_rows(fleet, new_page, hank):
    page = sign_in(new_page(), fleet.endpoint, hank)
    api = assert_same_rows_as_api(page, hank, expect_query={})
    assert api["total"] == 12 and len(row_ids(page)) == 10

    page.locator("input[name=name]").press_sequentially("alp", delay=40)  # search as you type
    api = assert_same_rows_as_api(page, hank, expect_query={"name": "alp", "feature": "NOTEBOOK", "limit": "10"})
    assert api["total"] == 5

    page.select_option("select[name=status]", "STOPPED")
    assert_same_rows_as_api(
        page, hank, expect_query={"name": "alp", "status": "STOPPED", "feature": "NOTEBOOK", "limit": "10"}
    )
    assert page.locator(ROWS).count() == 0
    page.fill("input[name=name]", "")
    api = assert_same_rows_as_api(page, hank, expect_query={"status": "STOPPED", "feature": "NOTEBOOK", "limit": "10"})
    assert sorted(nb["name"] for nb in api["data"]) == ["beta-01", "beta-02", "beta-03", "beta-04"]
    page.select_option("select[name=status]", "")

    base = {"feature": "NOTEBOOK", "limit": "10"}
    page.click("#results th >> text=Name")
    api = assert_same_rows_as_api(page, hank, expect_query={**base, "sort_key": "name", "sort_dir": "ASC"})
    assert [nb["name"] for nb in api["data"]] == sorted(nb["name"] for nb in api["data"])
    assert page.get_attribute("#results th.sorted", "aria-sort") == "ascending"
    page.click("#results th >> text=Name")
    assert_same_rows_as_api(page, hank, expect_query={**base, "sort_key": "name", "sort_dir": "DESC"})

    page.click("#results a[rel=next]")
    api = assert_same_rows_as_api(
        page, hank, expect_query={**base, "sort_key": "name", "sort_dir": "DESC", "offset": "10"}
    )
    assert [nb["name"] for nb in api["data"]] == ["alpha-02", "alpha-01"]
    page.go_back()  # history works like pages
    assert_same_rows_as_api(page, hank, expect_query={**base, "sort_key": "name", "sort_dir": "DESC"})

    page.click("#results th >> text=Flavor")
    assert_same_rows_as_api(page, hank, expect_query={**base, "sort_key": "flavor", "sort_dir": "ASC"})
    page.click("#results th >> text=Status")
    assert_same_rows_as_api(page, hank, expect_query={**base, "sort_key": "status", "sort_dir": "ASC"})
    page.select_option("select[name=limit]", "20")
    api = assert_same_rows_as_api(
        page, hank, expect_query={"feature": "NOTEBOOK", "limit": "20", "sort_key": "status", "sort_dir": "ASC"}
    )
    assert len(api["data"]) == 12
    page.select_option("select[name=feature]", "DEFAULT")
    assert_same_rows_as_api(
        page, hank, expect_query={"feature": "DEFAULT", "limit": "20", "sort_key": "status", "sort_dir": "ASC"}
    )
    page.select_option("select[name=feature]", "NOTEBOOK")

    page.fill("input[name=name]", "a b")  # the API refuses this name
    wait_until(lambda: page_query(page).get("name") == "a b", what="name=a b in the URL")
    api = hank.api.call("GET", "/notebooks", page_query(page)).json()
    shown = page.locator("#results .flash.error").inner_text()
    assert api["error_code"] in shown and api["error_msg"] in shown and page.locator(ROWS).count() == 0

    # Loading a list URL directly gives the same rows as the API for that query (no script involved).
    page.goto(f"{fleet.endpoint}/console/notebooks?sort_key=create_at&sort_dir=ASC&limit=3&offset=3&name=ha-0")
    api = assert_same_rows_as_api(page, hank)
    assert api["total"] == 5 and [nb["name"] for nb in api["data"]] == ["alpha-04", "alpha-05"]


def test_pages_fit_wide_and_narrow_windows(fleet, new_page, hank):
    for size, suffix in ((WIDE, "1280"), (NARROW, "420")):
        page = new_page(size)
        page.goto(f"{fleet.endpoint}/console/login")
        assert no_horizontal_scroll(page), f"sign-in page scrolls sideways at {suffix}"
        if suffix == "420":
            screenshot(page, "signin-420")
        sign_in(page, fleet.endpoint, hank)
        page.wait_for_selector(ROWS)
        assert no_horizontal_scroll(page), f"list scrolls sideways at {suffix}"
        screenshot(page, f"list-{suffix}")
        notebook_id = row_ids(page)[0]
        page.goto(f"{fleet.endpoint}/console/notebooks/{notebook_id}")
        assert no_horizontal_scroll(page), f"detail page scrolls sideways at {suffix}"
        if suffix == "420":
            screenshot(page, "detail-420")
        page.goto(f"{fleet.endpoint}/console/notebooks/new")
        assert no_horizontal_scroll(page), f"create page scrolls sideways at {suffix}"
        if suffix == "420":
            screenshot(page, "create-420")
