"""Fixtures for the CLI tests: one real ``nbfleet serve`` per module and the CLI run as a subprocess.

Every CLI run gets HOME and NBFLEET_CONFIG inside the test's temporary directory and none of the
caller's NBFLEET_* variables, so nothing reads or writes the real home.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..procs import ServeProcess, SignedClient, free_port

CLI_TIMEOUT = 60
# Instances named fail-* fail at step 3 of their creation (the simulated runtime's failure injection).
FAIL_RULES = json.dumps(["name=fail-*;step=3;op=create"])


@dataclass
class Cli:
    """``python -m nbfleet.cli.main …`` with an isolated home and config file."""

    home: Path

    @property
    def config(self) -> Path:
        return self.home / "nbfleet-config.toml"

    def env(self, extra: dict | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLEET_") and k != "XDG_CONFIG_HOME"}
        env.update(HOME=str(self.home), NBFLEET_CONFIG=str(self.config), NO_COLOR="1")
        for key, value in (extra or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def run(self, *args: str, env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "nbfleet.cli.main", *args],
            env=self.env(env),
            input=input,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            cwd=self.home,
        )

    def ok(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        done = self.run(*args, env=env)
        assert done.returncode == 0, f"{args} exited {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
        return done

    def json(self, *args: str, env: dict | None = None):
        return json.loads(self.ok(*args, "--output", "json", env=env).stdout)

    def configure(self, creds: dict, profile: str = "default", **overrides: str) -> subprocess.CompletedProcess:
        values = {**{k: creds[k] for k in ("endpoint", "project_id", "ak", "sk")}, **overrides}
        return self.ok(
            "configure",
            "--profile",
            profile,
            "--endpoint",
            values["endpoint"],
            "--project-id",
            values["project_id"],
            "--ak",
            values["ak"],
            "--sk",
            values["sk"],
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("nbfleet-cli")
    srv = ServeProcess(
        base / "data", runtime="simulated", env={"NBFLEET_SIMULATED_FAIL": FAIL_RULES, "NBFLEET_INSTANCE_QUOTA": "-1"}
    ).start()
    try:
        yield srv
    finally:
        srv.terminate()


@pytest.fixture(scope="module")
def api(server):
    """The API itself, signed with the official SDK's signer: what the CLI's output is checked against."""
    client = SignedClient(server.endpoint, server.admin_creds())
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def closed_endpoint() -> str:
    """An address where nothing listens (a port just freed)."""
    return f"http://127.0.0.1:{free_port()}"
