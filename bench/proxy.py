"""What nbfleet's notebook proxy costs: a small GET to a running instance's Jupyter through nbfleet's public port,
next to the same GET straight to that Jupyter's Unix socket, in one run on one machine.

One real instance on the local runtime (sandbox included). Latency: one keep-alive connection each, the
same minimal HTTP/1.1 client for both paths (so the client's own cost cancels out), requests interleaved in
blocks so that drift on a shared machine hits both alike. Throughput: wrk with 8 connections on one nbfleet
worker through the proxy, and nbfleet's ``/health`` (an empty endpoint of the same server) as its floor.

    python bench/proxy.py [--requests 3000] [--seconds 10] [--no-record]
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import median, percentile, publish, table  # noqa: E402
from tests.images import make_reachable  # noqa: E402
from tests.procs import ServeProcess, SignedClient  # noqa: E402

BLOCK = 100  # requests per path before switching to the other


class KeepAlive:
    """One HTTP/1.1 connection, a fixed request, the response read by Content-Length or chunks."""

    def __init__(self, sock: socket.socket, request: bytes):
        self.sock = sock
        self.request = request
        self.buffer = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        self.buffer += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def get(self) -> tuple[int, bytes]:
        self.sock.sendall(self.request)
        status = int(self._line().split()[1])
        headers = {}
        while line := self._line():
            key, _, value = line.partition(b":")
            headers[key.strip().lower()] = value.strip()
        if b"content-length" in headers:
            return status, self._take(int(headers[b"content-length"]))
        body = b""
        while size := int(self._line().split(b";")[0], 16):  # chunked
            body += self._take(size)
            self._take(2)
        self._line()
        return status, body


def request_bytes(host: str, token: str) -> bytes:
    return (f"GET /api/status HTTP/1.1\r\nHost: {host}\r\nAuthorization: token {token}\r\nAccept: */*\r\n\r\n").encode()


def timed(conn: KeepAlive, n: int, into: list[float]) -> None:
    for _ in range(n):
        t0 = time.perf_counter()
        status, _ = conn.get()
        into.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise RuntimeError(f"HTTP {status}")


def wrk(url: str, headers: list[str], seconds: int) -> float:
    command = ["wrk", "-t1", "-c8", f"-d{seconds}s", *[a for h in headers for a in ("-H", h)], url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        raise RuntimeError(f"wrk saw {non_2xx.group(1)} failed responses:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="latency samples per path")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()

    root = make_reachable(Path(tempfile.mkdtemp(prefix="nbfleet-bench-proxy-")))
    server = ServeProcess(root / "data", runtime="local").start()
    api = SignedClient(server.endpoint, server.admin_creds())
    nb = None
    try:
        nb = api.create("proxied")
        nb = api.wait_status(nb["id"], "RUNNING", "CREATE_FAILED", timeout=120)
        assert nb["status"] == "RUNNING", nb
        [sock_path] = list((server.data_dir / "instances" / nb["id"]).rglob("jupyter.sock"))
        host = f"{nb['id']}.nb.localhost:{server.port}"  # the instance's own origin (host routing)
        request = request_bytes(host, nb["token"])

        direct_sock = socket.socket(socket.AF_UNIX)
        direct_sock.connect(str(sock_path))
        direct = KeepAlive(direct_sock, request)
        proxied = KeepAlive(socket.create_connection(("127.0.0.1", server.port)), request)
        health = KeepAlive(
            socket.create_connection(("127.0.0.1", server.port)),
            f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode(),
        )
        for conn in (direct, proxied, health):  # warm up: connections, caches, Jupyter's auth
            timed(conn, 200, [])
        through, straight, empty = [], [], []
        for _ in range(max(1, args.requests // BLOCK)):
            timed(direct, BLOCK, straight)
            timed(proxied, BLOCK, through)
            timed(health, BLOCK, empty)

        rates = {}
        if shutil.which("wrk"):
            auth = [f"Host: {host}", f"Authorization: token {nb['token']}"]
            rates["proxied"] = wrk(f"http://127.0.0.1:{server.port}/api/status", auth, args.seconds)
            rates["health"] = wrk(f"http://127.0.0.1:{server.port}/health", [], args.seconds)
    finally:
        # nbfleet leaves instances running when it stops (the next start adopts them): delete ours first.
        if nb is not None:
            api.call("DELETE", f"/notebooks/{nb['id']}")
            deadline = time.monotonic() + 60
            while api.call("GET", f"/notebooks/{nb['id']}").status_code != 404 and time.monotonic() < deadline:
                time.sleep(0.2)
        api.close()
        server.terminate()

    overhead = median(through) - median(straight)
    rows = [
        ["direct to Jupyter's socket", f"{median(straight):.3f}", f"{percentile(straight, 99):.3f}", "", ""],
        [
            "through nbfleet's proxy",
            f"{median(through):.3f}",
            f"{percentile(through, 99):.3f}",
            f"+{overhead:.3f} ({median(through) / median(straight):.2f}×)",
            "≤ +0.3 ms " + ("✓" if overhead <= 0.3 else "✗"),
        ],
        ["nbfleet's /health (empty endpoint)", f"{median(empty):.3f}", f"{percentile(empty, 99):.3f}", "", ""],
    ]
    text = table(["GET /api/status (one connection)", "p50 ms", "p99 ms", "overhead p50", "target"], rows)
    if rates:
        text += "\n\n" + table(
            ["throughput, wrk, 8 connections, one nbfleet worker", "req/s", "target"],
            [
                [
                    "proxied GET /api/status",
                    f"{rates['proxied']:,.0f}",
                    "≥ 2,000 " + ("✓" if rates["proxied"] >= 2000 else "✗"),
                ],
                ["nbfleet's /health", f"{rates['health']:,.0f}", ""],
            ],
        )
    text += f"\n\n{args.requests} samples per path, interleaved in blocks of {BLOCK}; one instance, local runtime."
    publish(
        "proxy",
        "Notebook proxy overhead (local runtime)",
        text,
        {"direct_ms": straight, "proxied_ms": through, "health_ms": empty, "rates": rates},
        record=not args.no_record,
    )


if __name__ == "__main__":
    main()
