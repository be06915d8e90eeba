"""Shared output of the benchmarks: a Markdown table on stdout, JSON in bench/results/, and the same
table appended to docs/benchmarks.md with the exact command that produced it."""

from __future__ import annotations

import json
import platform
import shlex
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def median(values):
    return statistics.median(values) if values else float("nan")


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(q / 100 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def publish(name: str, title: str, text: str, data: dict, *, record: bool = True) -> None:
    print(text)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(data, indent=2))
    if not record:
        return
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/" + Path(sys.argv[0]).name, *sys.argv[1:]])
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with open(ROOT / "docs" / "benchmarks.md", "a") as f:
        f.write(
            f"\n## {title} — {stamp}\n\nCommand: `{command}` ({platform.node() or 'host'}, "
            f"Python {platform.python_version()}, {_cores()} cores)\n\n{text}\n"
        )


def _cores() -> int:
    import os

    return os.cpu_count() or 0
