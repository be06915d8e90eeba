"""The fixture and the context manager as a user's project meets them: a fresh pytest (or Python) process of
its own, with the plugin found through its entry point, under ``pytest -n``, with both scopes, and nothing
left behind — no file in the temporary directory, no process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

USER_TESTS = textwrap.dedent("""
    import json, os
    from pathlib import Path

    import pytest
    from huaweicloudsdkmodelarts.v1 import ListNotebooksRequest

    @pytest.mark.parametrize("n", range(4))
    def test_uses_the_server(nbfleet_server, modelarts_client, n):
        assert modelarts_client.list_notebooks(ListNotebooksRequest()).total == 0   # nothing from another test
        [nb] = nbfleet_server.seed(1, status="RUNNING")
        nbfleet_server.clock.advance(hours=2)
        out = Path(os.environ["RECORD_DIR"]) / f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{n}.json"
        out.write_text(json.dumps({"endpoint": nbfleet_server.endpoint, "data_dir": str(nbfleet_server.data_dir),
                                   "pid": os.getpid()}))
        assert modelarts_client.list_notebooks(ListNotebooksRequest(status="STOPPED")).total == 1
""")

SCRIPT = textwrap.dedent("""
    from huaweicloudsdkmodelarts.v1 import ListNotebooksRequest
    from nbfleet.testing import emulator

    with emulator(frozen=True) as env:
        [nb] = env.seed(1, status="RUNNING")
        env.clock.advance(hours=2)
        print("with:", env.client().list_notebooks(ListNotebooksRequest(status="STOPPED")).total)

    @emulator()
    def job(env, name):
        env.seed(2, status="STOPPED", owner=name)
        return env.user(name).client().list_notebooks(ListNotebooksRequest()).total

    print("decorated:", job("ann"))
""")


def isolated_env(tmp_path: Path) -> tuple[dict, Path]:
    """The child's environment: a temporary directory of its own (to find what it leaves), no NBFLEET_ settings."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBFLEET_", "PYTEST_"))}
    env.update(TMPDIR=str(tmp), RECORD_DIR=str(tmp_path / "records"))
    (tmp_path / "records").mkdir()
    return env, tmp


def run_user_project(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict], Path]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_user.py").write_text(USER_TESTS)
    (project / "pytest.ini").write_text("[pytest]\n")
    env, tmp = isolated_env(tmp_path)
    # pytest's own temporary directories go elsewhere: what is left in ``tmp`` is nbfleet.testing's.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'basetemp'}",
            *args,
            "test_user.py",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "records").iterdir())]
    return result, records, tmp


def assert_nothing_left(tmp: Path, records: list[dict]) -> None:
    assert list(tmp.iterdir()) == []  # data dirs and the store template are gone
    for record in records:
        assert not Path(record["data_dir"]).exists()
        assert not psutil.pid_exists(record["pid"]) or record["pid"] == os.getpid()
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if any(str(tmp) in a for a in p.info["cmdline"] or ())]
    assert leftovers == []


@pytest.mark.slow
def test_function_scope_under_pytest_n(tmp_path):
    result, records, tmp = run_user_project(tmp_path, "-n", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout
    assert len({r["endpoint"] for r in records}) == 4  # a server per test
    assert len({r["pid"] for r in records}) == 2  # in two worker processes
    assert_nothing_left(tmp, records)


@pytest.mark.slow
def test_session_scope_shares_one_server_and_resets_it(tmp_path):
    result, records, tmp = run_user_project(tmp_path, "--nbfleet-scope=session")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout
    assert len({r["endpoint"] for r in records}) == 1  # one server, emptied before each test
    assert_nothing_left(tmp, records)


@pytest.mark.slow
def test_the_context_manager_from_a_plain_script(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env, tmp = isolated_env(tmp_path)
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["with: 1", "decorated: 2"]
    assert list(tmp.iterdir()) == []


@pytest.mark.slow
def test_serve_testing_is_the_same_double_for_any_language(tmp_path):
    """``nbfleet serve --testing``: the test routes over HTTP, for test suites that are not in Python."""
    from nbfleet.cli.client import ApiClient, Credentials

    from ..procs import ServeProcess

    proc = ServeProcess(tmp_path / "data", args=["--testing"]).start()
    try:
        creds = proc.admin_creds()
        with ApiClient(Credentials(proc.endpoint, creds.project_id, creds.ak, creds.sk)) as client:
            before = client.request("GET", "/nbfleet/testing/clock")["now_ms"]
            after = client.request("POST", "/nbfleet/testing/clock", body={"advance_ms": 86_400_000})["now_ms"]
            assert after - before >= 86_400_000
            ids = client.request("POST", "/nbfleet/testing/seed", body={"count": 2, "status": "STOPPED"})["ids"]
            assert client.request("GET", "/notebooks", {"status": "STOPPED"})["total"] == 2 == len(ids)
    finally:
        proc.terminate()
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbfleet.cli.main",
            "serve",
            "--testing",
            "--runtime",
            "local",
            "--data-dir",
            str(tmp_path / "other"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        "error: --testing runs the simulated runtime: leave out --runtime or give --runtime simulated"
    ]
