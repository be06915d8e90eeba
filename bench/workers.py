"""What a second worker adds where no store work is done: wrk on ``/health`` (8 connections) against
``serve`` with one worker and with ``--workers N`` on PostgreSQL, and how much of the machine's CPU was
idle meanwhile (from /proc/stat), which says whether the cores, not nbfleet, were the limit.

    python bench/workers.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres [--workers 2]

Each server gets a database of its own next to the given one (created and dropped here).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import publish, table  # noqa: E402
from tests.procs import ServeProcess  # noqa: E402


def cpu_times() -> tuple[int, int]:
    """(all, idle + iowait) jiffies of the machine since boot."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def measure(url: str, workers: int, seconds: int) -> tuple[float, float]:
    """(req/s, % CPU idle) of wrk on /health against a server with ``workers`` workers."""
    args = ["--workers", str(workers)] if workers > 1 else []
    server = ServeProcess(Path(tempfile.mkdtemp()) / "data", env={"NBFLEET_DATABASE_URL": url}, args=args).start()
    try:
        endpoint = f"{server.endpoint}/health"
        subprocess.run(["wrk", "-t1", "-c8", "-d3s", endpoint], capture_output=True, check=True)  # warm-up
        all0, idle0 = cpu_times()
        out = subprocess.run(
            ["wrk", "-t1", "-c8", f"-d{seconds}s", endpoint], capture_output=True, text=True, check=True
        ).stdout
        all1, idle1 = cpu_times()
        found = re.search(r"Requests/sec:\s+([\d.]+)", out)
        assert found, out
        return float(found.group(1)), 100.0 * (idle1 - idle0) / (all1 - all0)
    finally:
        server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server's URL (any database)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    admin = create_engine(args.database_url, isolation_level="AUTOCOMMIT")
    names = [f"nbfleet_bench_workers_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    results = []
    try:
        for name, workers in zip(names, (1, args.workers), strict=True):
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = make_url(args.database_url).set(database=name).render_as_string(hide_password=False)
            results.append(measure(url, workers, args.seconds))
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    (one, idle_one), (several, idle_several) = results
    rows = [
        ["1 worker", f"{one:,.0f}", f"{idle_one:.0f} %", ""],
        [f"{args.workers} workers", f"{several:,.0f}", f"{idle_several:.0f} %", f"{several / one:.2f}×"],
    ]
    text_ = table(["`/health`, wrk, 8 connections", "req/s", "CPU idle meanwhile", "vs one worker"], rows)
    text_ += f"\n\n{args.seconds} s each after a 3 s warm-up; wrk runs on the same machine."
    publish(
        "workers",
        f"serve --workers {args.workers} on an endpoint without store work",
        text_,
        {"one_rps": one, "several_rps": several, "idle_one_pct": idle_one, "idle_several_pct": idle_several},
        record=not args.no_record,
    )


if __name__ == "__main__":
    main()
