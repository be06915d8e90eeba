"""A local S3-compatible server (moto) for the object-storage mounts, on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .procs import free_port

ACCESS_KEY = "nbfleet-test-ak"
SECRET_KEY = "nbfleet-test-secret-9f2c1e"  # searched for where it must never appear


class S3Server:
    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.log_path = Path(log_dir) / f"moto-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> S3Server:
        server = shutil.which("moto_server", path=os.path.dirname(sys.executable))
        argv = [server] if server else [sys.executable, "-m", "moto.server"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*argv, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto did not answer within {timeout} s")
            time.sleep(0.1)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def storage_env(s3: S3Server, efs_dir: Path, efs_id: str, bucket: str) -> dict[str, str]:
    """nbfleet's settings offering ``efs_dir`` as file system ``efs_id`` and ``bucket`` to every project."""
    import json

    return {
        "NBFLEET_STORAGE__EFS": json.dumps({efs_id: {"path": str(efs_dir), "projects": ["*"]}}),
        "NBFLEET_STORAGE__OBS__ENDPOINT": s3.endpoint,
        "NBFLEET_STORAGE__OBS__ACCESS_KEY": ACCESS_KEY,
        "NBFLEET_STORAGE__OBS__SECRET_KEY": SECRET_KEY,
        "NBFLEET_STORAGE__OBS__BUCKETS": json.dumps({bucket: ["*"]}),
    }
