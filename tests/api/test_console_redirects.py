"""The sign-in page's ``next`` leads to console pages only, however it is spelled."""

from __future__ import annotations

import re

import pytest

from .test_iam import PASSWORD

ESCAPES = [
    "/console/../notebooks/x",
    "/console/%2e%2e/notebooks/x",
    "//evil.example/console/notebooks",
    "/console/notebooks/../../notebooks/x/lab",
    "https://evil.example/",
    "/console\\..\\notebooks",
]


def _sign_in(client, next_value: str):
    page = client.get("/console/login", params={"next": next_value})
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return page, client.post(
        "/console/login",
        data={"csrf_token": csrf, "user": "admin", "password": PASSWORD, "next": next_value},
        follow_redirects=False,
    )


@pytest.fixture
def console(api):
    api.services.identity.set_password(api.creds.user_id, PASSWORD)
    return api.client


@pytest.mark.parametrize("next_value", ESCAPES)
def test_sign_in_never_redirects_out_of_the_console(console, next_value):
    page, response = _sign_in(console, next_value)
    assert 'name="next"' not in page.text  # the form does not carry it on
    assert response.status_code == 303 and response.headers["location"] == "/console/notebooks"
    # signed in now: the sign-in page sends a session on, to the same place
    again = console.get("/console/login", params={"next": next_value}, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/console/notebooks"


def test_a_console_page_is_where_sign_in_leads(console):
    _page, response = _sign_in(console, "/console/notebooks/all?username=admin")
    assert response.headers["location"] == "/console/notebooks/all?username=admin"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://0badc0de-0000-4000-8000-000000000000.nb.localhost:8080"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_form_from_another_origin_is_refused_even_with_the_right_tokens(console, headers):
    """A notebook page of a sibling site could plant the sign-in cookie and post the matching form: the
    browser still names where the form comes from."""
    page = console.get("/console/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    form = {"csrf_token": csrf, "user": "admin", "password": PASSWORD}
    refused = console.post("/console/login", data=form, headers=headers, follow_redirects=False)
    assert refused.status_code == 403 and "nbfleet_session" not in refused.headers.get("set-cookie", "")
    own = console.post("/console/login", data=form, headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert own.status_code == 303


def test_hosts_under_the_notebook_domain_that_name_no_instance_get_the_unknown_answer(console):
    for url in ("http://a.b.nb.localhost/console/notebooks", "http://nb.localhost/v1/x/notebooks"):
        answer = console.get(url, follow_redirects=False)
        assert answer.status_code == 404 and answer.json()["error_code"] == "ModelArts.6309", url
