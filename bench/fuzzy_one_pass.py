"""Rare fuzzy terms on SQLite: the page and its exact total in one statement, against the two statements
(count, then page) it replaced, on the same store, interleaved, through ``notebook_list`` itself.

Uses a store seeded by ``bench/list_api.py`` (``--data-dir`` of that run) and the admin's view of the big
project, as its matrix does:

    python bench/fuzzy_one_pass.py --data-dir /tmp/bench1m [--samples 200] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._report import median, percentile, publish, table  # noqa: E402

TERMS = ("Tango-Echo", "4242")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="a store seeded by bench/list_api.py")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()

    from nbfleet.app import open_store
    from nbfleet.domain.query import parse_notebook_query
    from nbfleet.settings import Settings
    from nbfleet.store import notebook_list

    seed = json.loads((args.data_dir / "seed.json").read_text())
    creds = json.loads((args.data_dir / "credentials.json").read_text())
    db, _ = open_store(Settings(data_dir=args.data_dir))
    if not db.is_sqlite:
        raise SystemExit("the one-pass statement is SQLite's (PostgreSQL counts with pg_trgm apart)")

    def two_statements(conn, q):
        """What ``page`` did before: the exact total, then the page (each matching the candidates)."""
        total_stmt, forward, _backward, _plain, _counted, params = notebook_list.statements(q, conn)
        total = int(conn.execute(total_stmt, params).scalar_one())
        rows = conn.execute(forward, params).mappings().all() if total else []
        return list(rows), total

    rows, results = [], []
    for term in TERMS:
        q = parse_notebook_query(
            {"name": [term]},
            project_id=creds["project_id"],
            caller_id=creds["user_id"],
            caller_is_admin=True,
            all_view=True,
        )
        timings: dict[str, list[float]] = {"one": [], "two": []}
        answers = {}
        for i in range(args.samples + 10):  # interleaved, so that both see the same machine
            for name, run in (("one", notebook_list.page), ("two", two_statements)):
                t0 = time.perf_counter()
                with db.read() as conn:
                    page, total = run(conn, q)
                if i >= 10:
                    timings[name].append((time.perf_counter() - t0) * 1000)
                answers[name] = ([r["id"] for r in page], total)
        assert answers["one"] == answers["two"], term  # the same page, the same total
        one, two = median(timings["one"]), median(timings["two"])
        rows.append(
            [
                f"name={term}",
                f"{answers['one'][1]:,}",
                f"{two:.2f} / {percentile(timings['two'], 99):.2f}",
                f"{one:.2f} / {percentile(timings['one'], 99):.2f}",
                f"{two / one:.2f}×",
            ]
        )
        results.append({"term": term, "total": answers["one"][1], "one_pass_ms": one, "two_statements_ms": two})
    db.dispose()
    text = table(
        ["query (admin, big project)", "total", "count + page p50 / p99 ms", "one pass p50 / p99 ms", "faster"], rows
    )
    text += f"\n\nStore: {seed['instances']:,} instances (SQLite); {args.samples} samples each, interleaved."
    publish(
        "fuzzy_one_pass",
        f"Rare fuzzy terms, one pass vs count + page, {seed['instances']:,} instances, SQLite",
        text,
        {"queries": results},
        record=not args.no_record,
    )


if __name__ == "__main__":
    main()
