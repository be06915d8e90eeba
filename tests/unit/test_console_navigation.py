"""Where the console may send a browser after sign-in or an action: its own pages, nothing else."""

from __future__ import annotations

import pytest

from nbfleet.console.navigation import console_page

DEFAULT = "/console/notebooks"
NB = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    "target",
    [
        "/console/notebooks",
        "/console/notebooks/all",
        "/console/notebooks/new",
        f"/console/notebooks/{NB}",
        "/console/notebooks?status=RUNNING&offset=10&name=a%20b",
        "/console/notebooks/all?username=frank",
    ],
)
def test_console_pages_are_kept(target):
    assert console_page(target, DEFAULT) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "/console/../notebooks/x",  # the reported one: normalises to /notebooks/x
        "/console/notebooks/../../notebooks/x",
        "/console/./notebooks",
        "/console/%2e%2e/notebooks/x",
        "/console/%2E%2E/notebooks/x",  # encoded dots
        "/console/notebooks%2f..%2f..%2fnotebooks",  # encoded slashes
        "/console//notebooks",
        "//evil.example/console/notebooks",  # scheme-relative: another host
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/console\\..\\notebooks",
        "https://evil.example/console/notebooks",
        "http:/console/notebooks",
        "javascript:alert(1)",
        "/notebooks/x/lab",  # a notebook, not the console
        "/console/logout",
        "/console/api/status",
        "/console/static/console.js",
        f"/console/notebooks/{NB}/live",
        "/console/notebooks/not-an-id",
        "/console/notebooks\r\nSet-Cookie: x=y",
        "/console/notebooks\t",
        "console/notebooks",
        "/console/notebooks#fragment",
    ],
)
def test_everything_else_falls_back_to_the_default(target):
    assert console_page(target, DEFAULT) == DEFAULT
