"""The list's ``tags`` filter with many pairs: planning and execution time of the store query.

Seeds (or reuses) a store of a few thousand instances, gives a share of them several tags, and runs the
list query of the admin's ``/notebooks/all`` with 1, 20 and the largest accepted number of tag pairs
(``MAX_TAG_FILTERS``) through ``notebook_repo.page`` on the same database. On PostgreSQL it also reports
the planner's own planning time (``EXPLAIN (ANALYZE)``), which is what grew with the number of pairs.

    python bench/tag_filter.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/nbfleet_bench
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._report import median, publish, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=5000)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary data dir")
    parser.add_argument(
        "--pairs",
        type=int,
        nargs="*",
        default=None,
        help="numbers of tag pairs to measure (default: 1, 20 and the accepted maximum)",
    )
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()

    from sqlalchemy import event, insert, select

    from nbfleet.app import open_store
    from nbfleet.clock import SystemClock
    from nbfleet.domain import query as query_model
    from nbfleet.domain.query import TagFilter, parse_notebook_query
    from nbfleet.services.images import ImageCatalog
    from nbfleet.settings import Settings
    from nbfleet.store import notebook_list
    from nbfleet.store.seed import seed
    from nbfleet.store.tables import notebook_tags, notebooks

    data_dir = Path(tempfile.mkdtemp(prefix="nbfleet-tags-"))
    settings = Settings(data_dir=data_dir, database_url=args.database_url)
    db, identity = open_store(settings)
    identity.bootstrap(settings.data_dir, settings.base_url())
    ImageCatalog(db, SystemClock(), None).sync_builtins()
    with db.read() as conn:
        existing = conn.execute(select(notebooks.c.id).limit(1)).first()
    if existing is None:
        seed(
            db,
            instances=args.instances,
            projects_count=2,
            big_share=0.8,
            big_project=identity.bootstrap_project(),
            now_ms=int(time.time() * 1000),
        )
        rng = random.Random(7)
        with db.write() as conn:
            ids = list(conn.execute(select(notebooks.c.id)).scalars())
            rows = []
            for notebook_id in rng.sample(ids, len(ids) // 3):
                pairs = {f"k{rng.randrange(40)}": f"v{rng.randrange(5)}" for _ in range(8)}
                conn.execute(notebook_tags.delete().where(notebook_tags.c.notebook_id == notebook_id))
                rows += [{"notebook_id": notebook_id, "key": k, "value": v} for k, v in pairs.items()]
            conn.execute(insert(notebook_tags), rows)
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE" if db.is_sqlite else "VACUUM ANALYZE")
    project = identity.bootstrap_project()

    @event.listens_for(db.engine, "before_cursor_execute", retval=True)
    def _explain(conn, cursor, statement, parameters, context, executemany):
        if conn.get_execution_options().get("explain"):
            statement = "EXPLAIN (ANALYZE, FORMAT JSON) " + statement
        return statement, parameters

    sqlite = db.is_sqlite
    counts = args.pairs or [1, 20, getattr(query_model, "MAX_TAG_FILTERS", 20)]
    results, rows_out = {}, []
    for n in counts:
        raw = ",".join(f"k{i % 40}|v{i % 5}" for i in range(n))
        params = {"tags": [raw]}
        try:
            q = parse_notebook_query(
                params, project_id=project, caller_id="0" * 32, caller_is_admin=True, all_view=True
            )
        except Exception as exc:  # more pairs than the API accepts: measure the store query alone
            q = parse_notebook_query({}, project_id=project, caller_id="0" * 32, caller_is_admin=True, all_view=True)
            q = type(q)(**{**q.__dict__, "tags": tuple(TagFilter(f"k{i % 40}", f"v{i % 5}") for i in range(n))})
            note = f" (API refuses: {exc})"
        else:
            note = ""
        timings, planning = [], []
        for _ in range(args.samples):
            with db.read() as conn:
                t0 = time.perf_counter()
                notebook_list.page(conn, q)
                timings.append((time.perf_counter() - t0) * 1000)
                if not sqlite:
                    _total, forward, _b, _plain, _counted, p = notebook_list.statements(q, conn)
                    explain = conn.execution_options(explain=True)
                    plan = explain.execute(forward, p).scalar_one()
                    planning.append(plan[0]["Planning Time"])
        results[n] = {"page_ms_p50": median(timings), "planning_ms_p50": median(planning) if planning else None}
        rows_out.append([n, f"{median(timings):.2f}", f"{median(planning):.2f}" if planning else "—", note or ""])
    text_out = table(
        ["tag pairs", "store query p50 ms (count + page)", "PostgreSQL planning p50 ms (page)", "note"], rows_out
    )
    text_out += f"\n\nStore: {'SQLite' if sqlite else 'PostgreSQL'}, {args.instances:,} instances, a third with 8 tags."
    publish("tag_filter", "Tag filter with many pairs", text_out, results, record=not args.no_record)
    db.dispose()


if __name__ == "__main__":
    main()
