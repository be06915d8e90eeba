"""A burst of wrong password sign-ins against the real server: what it costs the server and /health.

Starts ``nbfleet serve`` (simulated runtime), gives the admin a password, then sends ``--burst`` wrong
``POST /v3/auth/tokens`` at once (one thread each) while probing ``GET /health`` and sampling the server's
RSS. Reports how many sign-ins were checked (401) and refused at once (429), /health latency before and
during the burst, and peak RSS. The backoff is switched off (free failures set high) so that only the
bound on concurrent password checks is measured.

    python bench/signin_flood.py                     # 32 at once, default 2 check slots
    python bench/signin_flood.py --checks 32         # as if unbounded, for comparison
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._report import median, percentile, publish, table  # noqa: E402
from tests.procs import ServeProcess  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst", type=int, default=32)
    parser.add_argument("--checks", type=int, default=None, help="NBFLEET_SIGNIN_CONCURRENT_CHECKS (default: 2)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    env = {"NBFLEET_SIGNIN_FREE_FAILURES": "100000"}
    if args.checks is not None:
        env["NBFLEET_SIGNIN_CONCURRENT_CHECKS"] = str(args.checks)
    data_dir = Path(tempfile.mkdtemp()) / "data"
    server = ServeProcess(data_dir, runtime="simulated", env=env).start()
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "nbfleet.cli.main",
                "admin",
                "set-password",
                "--user",
                server.creds["user_id"],
                "--password-stdin",
                "--data-dir",
                str(data_dir),
            ],
            input="the-right-password\n",
            text=True,
            check=True,
            capture_output=True,
            env=server.cli_env(),
        )
        process = psutil.Process(server.proc.pid)
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": "admin", "password": "a-wrong-password", "domain": {"name": "nbfleet"}}
                    },
                }
            }
        }
        with httpx.Client(base_url=server.endpoint, timeout=60) as probe:
            idle = _health_times(probe, 50)
            rss_before = process.memory_info().rss
            statuses: list[int] = []
            peak = [rss_before]
            done = threading.Event()

            def sign_in() -> None:
                with httpx.Client(base_url=server.endpoint, timeout=120) as client:
                    statuses.append(client.post("/v3/auth/tokens", json=body).status_code)

            def sample_rss() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], process.memory_info().rss)
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample_rss)
            sampler.start()
            threads = [threading.Thread(target=sign_in) for _ in range(args.burst)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            during = []
            while any(t.is_alive() for t in threads):
                during += _health_times(probe, 1)
            burst_s = time.perf_counter() - t0
            done.set()
            sampler.join()
    finally:
        server.terminate()

    checks = args.checks if args.checks is not None else 2
    mib = 1024 * 1024
    rows = [
        ["sign-ins sent at once", args.burst, ""],
        ["checked (401)", statuses.count(401), f"{checks} check slots"],
        ["refused at once (429)", statuses.count(429), ""],
        ["burst took", f"{burst_s:.2f} s", ""],
        ["/health p50 idle", f"{median(idle):.2f} ms", ""],
        [
            "/health p50 / max during the burst",
            f"{median(during):.2f} / {max(during or [0]):.2f} ms",
            f"{len(during)} probes",
        ],
        ["RSS before / peak", f"{rss_before / mib:.0f} / {peak[0] / mib:.0f} MiB", ""],
    ]
    text = table(["what", "result", "note"], rows)
    publish(
        "signin_flood",
        f"Sign-in burst, {args.burst} wrong passwords at once, {checks} check slots",
        text,
        {
            "burst": args.burst,
            "checks": checks,
            "statuses": statuses,
            "burst_s": burst_s,
            "health_idle_p50_ms": median(idle),
            "health_during_p50_ms": median(during),
            "health_during_p99_ms": percentile(during, 99),
            "rss_before": rss_before,
            "rss_peak": peak[0],
        },
        record=not args.no_record,
    )


def _health_times(client: httpx.Client, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert client.get("/health").status_code == 200
        times.append((time.perf_counter() - t0) * 1000)
    return times


if __name__ == "__main__":
    main()
