"""The console's SSH fields: choosing a key pair or pasting a public key when creating a notebook, and the
SSH section of its page."""

from __future__ import annotations

import re

import asyncssh
import pytest

from .test_iam import PASSWORD


@pytest.fixture
def console(api):
    api.services.identity.set_password(api.creds.user_id, PASSWORD)
    page = api.client.get("/console/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    signed_in = api.client.post(
        "/console/login", data={"csrf_token": csrf, "user": "admin", "password": PASSWORD}, follow_redirects=False
    )
    assert signed_in.status_code == 303
    return api


def create_form(api, **fields):
    page = api.client.get("/console/notebooks/new")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    form = {
        "csrf_token": csrf,
        "name": "ssh-console",
        "flavor": "modelarts.vm.cpu.2u",
        "image_id": api.image_id(),
        "lease_type": "TIMING",
        "lease_duration": "3600000",
        "description": "",
        **fields,
    }
    return page, api.client.post("/console/notebooks/new", data=form, follow_redirects=False)


def keypair_names(api) -> list[str]:
    return [k["keypair"]["name"] for k in api.ok("GET", f"/v3/{api.creds.project_id}/keypairs")["keypairs"]]


def test_a_pasted_public_key_is_registered_and_enabled(console):
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    _, created = create_form(console, ssh_public_key=key, ssh_key_name="from-console", ssh_allow="203.0.113.0/24")
    assert created.status_code == 303, created.text
    notebook_id = created.headers["location"].rsplit("/", 1)[1]
    nb = console.ok("GET", f"/notebooks/{notebook_id}")
    [ssh] = [ep for ep in nb["endpoints"] if ep["service"] == "SSH"]
    assert ssh["key_pair_names"] == ["from-console"] and ssh["allowed_access_ips"] == ["203.0.113.0/24"]
    assert keypair_names(console) == ["from-console"]
    page = console.client.get(f"/console/notebooks/{notebook_id}")
    assert 'id="ssh-access"' in page.text and "from-console" in page.text and "203.0.113.0/24" in page.text
    # the registered key pair is offered on the next form
    form, _ = create_form(console, name="second")
    assert '<option value="from-console"' in form.text


def test_a_refused_form_registers_no_key(console):
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    _, refused = create_form(console, ssh_public_key=key, ssh_key_name="kept-out", ssh_allow="not-an-address")
    assert refused.status_code == 400 and "ModelArts.6336" in refused.text
    assert keypair_names(console) == []
    _, bad_key = create_form(console, ssh_public_key="ssh-ed25519 nonsense")
    assert bad_key.status_code == 400 and keypair_names(console) == []
    assert console.ok("GET", "/notebooks/all", {"limit": 50})["total"] == 0
