"""The pytest plugin (registered through the ``pytest11`` entry point, so installing nbfleet is enough).

Fixtures:

- ``nbfleet_server``: an ``Emulator`` (``nbfleet.testing.emulator``). A fresh server per test by default; with
  ``--nbfleet-scope=session`` (or ``nbfleet_scope = session`` in the ini file) one server for the whole
  session, reset before each test (every instance gone, no scripted failures, the clock at the wall
  clock's time), so tests stay independent either way.
- ``modelarts_client``: an official SDK client (``huaweicloudsdkmodelarts``) signing as the server's admin.

``@pytest.mark.nbfleet(step_seconds=…, frozen=…, failures=[…], settings={…})`` sets the server's options for
one test (function scope only: a session's server is made before any test's marks are known).

Nothing is imported from nbfleet until a fixture is used: the plugin costs a test run that does not use it
nothing.
"""

from __future__ import annotations

from typing import Literal

import pytest

Scope = Literal["function", "session"]
SCOPES: tuple[Scope, ...] = ("function", "session")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nbfleet", "nbfleet emulator (nbfleet.testing)")
    group.addoption(
        "--nbfleet-scope",
        choices=SCOPES,
        default=None,
        help="lifetime of the nbfleet_server fixture's server: function (default) or session",
    )
    parser.addini(
        "nbfleet_scope", "lifetime of the nbfleet_server fixture's server: function or session", default="function"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "nbfleet(step_seconds=2.0, frozen=False, failures=(), settings=None): "
        "options of the nbfleet_server fixture's server for this test",
    )


def _scope(fixture_name: str, config: pytest.Config) -> Scope:
    scope = config.getoption("--nbfleet-scope") or config.getini("nbfleet_scope") or "function"
    for known in SCOPES:
        if scope == known:
            return known
    raise pytest.UsageError(f"nbfleet_scope must be one of {', '.join(SCOPES)}, not {scope!r}")


@pytest.fixture(scope=_scope)
def _nbfleet_emulator(request: pytest.FixtureRequest):
    from .emulation import start_emulator

    options = {}
    if request.scope == "function":
        marker = request.node.get_closest_marker("nbfleet")
        options = dict(marker.kwargs) if marker is not None else {}
    env = start_emulator(**options)
    try:
        yield env
    finally:
        env.close()


@pytest.fixture
def nbfleet_server(_nbfleet_emulator, request: pytest.FixtureRequest):
    """An emulated nbfleet (``nbfleet.testing.Emulator``): ``endpoint``, ``project_id``, ``ak``, ``sk``,
    ``client()``, ``clock``, ``fail_next``, ``seed``, ``user``, ``crash``, ``set_activity``."""
    if _scope("nbfleet_server", request.config) == "session":
        if request.node.get_closest_marker("nbfleet") is not None:
            raise pytest.UsageError("@pytest.mark.nbfleet needs a server per test; it is session-scoped here")
        _nbfleet_emulator.reset()
    return _nbfleet_emulator


@pytest.fixture
def modelarts_client(nbfleet_server):
    """An official ``huaweicloudsdkmodelarts`` v1 ``ModelArtsClient`` signing as the emulated server's admin."""
    return nbfleet_server.client()
