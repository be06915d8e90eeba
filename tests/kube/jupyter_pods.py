"""What runs behind a "running" pod of the fake API server: a REAL jupyter-server per pod, started with the
command, token and base URL the runtime put into the pod (the fake's ``on_run``/``on_stop`` hooks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

# Only what answering needs: skips a second or two of loading extensions.
BARE = [
    "--ServerApp.jpserver_extensions={'jupyterlab': False, 'jupyter_lsp': False, "
    "'notebook_shim': False, 'jupyter_server_terminals': False}"
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JupyterBehindPods:
    """The fake's ``on_run``/``on_stop``: a jupyter-server per running pod, run as the pod's container says
    (its command, arguments and JUPYTER_TOKEN), on 127.0.0.1 instead of the pod's 0.0.0.0:8888."""

    def __init__(self, root: Path):
        self.root = root
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def on_run(self, pod: dict, services: list[dict]) -> tuple[str, int]:
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container.get("env") or []}
        assert container["command"] == ["python", "-m", "jupyter_server"]
        port = free_port()
        name = pod["metadata"]["name"]
        work = self.root / name / "work"
        home = self.root / name / "home"
        work.mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        # The pod's arguments, but for where it listens and its work directory (the pod's volume).
        args = [
            a
            for a in container["args"]
            if not a.startswith(("--ServerApp.ip=", "--ServerApp.port=", "--ServerApp.root_dir="))
        ]
        command = [
            sys.executable,
            "-m",
            "jupyter_server",
            *args,
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--ServerApp.root_dir={work}",
            *BARE,
            # The pod runs as uid 1000; the test's process is whoever runs the tests.
            *(["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []),
        ]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
        environment.update(
            JUPYTER_TOKEN=env["JUPYTER_TOKEN"],
            HOME=str(home),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            JUPYTER_CONFIG_DIR=str(home / ".jupyter"),
            JUPYTER_DATA_DIR=str(home / ".local"),
            IPYTHONDIR=str(home / ".ipython"),
        )
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (the process keeps it)
        process = subprocess.Popen(
            command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        with self.lock:
            self.processes[name] = process
            self.commands[name] = command
        return "127.0.0.1", port

    def on_stop(self, pod: dict) -> None:
        with self.lock:
            process = self.processes.pop(pod["metadata"]["name"], None)
        if process is not None:
            _end(process)

    def close(self) -> None:
        with self.lock:
            processes = list(self.processes.values())
            self.processes.clear()
        for process in processes:
            _end(process)


def _end(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
