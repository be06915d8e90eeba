"""``nbfleet dev …``: tools for benchmarks and demos."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

dev = typer.Typer(help="Development tools: bulk-load a store for benchmarks.", no_args_is_help=True)


@dev.command("seed")
def seed_command(
    instances: int = typer.Option(..., "--instances", help="How many notebooks to add."),
    projects: int = typer.Option(100, "--projects", help="Spread them over this many projects."),
    big_project_share: float = typer.Option(
        0.2, "--big-project-share", help="Share that goes to the bootstrap project (the admin's)."
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data directory (env NBFLEET_DATA_DIR)."),
    database_url: str | None = typer.Option(None, "--database-url", help="SQLAlchemy URL."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Bulk-load a realistic population (owners, statuses, features, workspaces, names, tags, times)."""
    from ..app import open_store
    from ..clock import SystemClock
    from ..services.images import ImageCatalog
    from ..settings import Settings
    from ..store.seed import AlreadySeeded, seed

    given: dict[str, Any] = {"data_dir": data_dir, "database_url": database_url}
    overrides = {k: v for k, v in given.items() if v is not None}
    settings = Settings(**overrides)
    db, identity = open_store(settings)
    identity.bootstrap(settings.data_dir, settings.base_url())
    ImageCatalog(db, SystemClock(), settings.images_file).sync_builtins()
    big = identity.bootstrap_project()
    assert big is not None  # bootstrap made it
    started = time.monotonic()
    last = [0.0]

    def progress(done: int) -> None:
        if not as_json and time.monotonic() - last[0] > 5:
            last[0] = time.monotonic()
            typer.echo(f"  {done:,} / {instances:,} instances ({done / (time.monotonic() - started):,.0f}/s)")

    try:
        report = seed(
            db,
            instances=instances,
            projects_count=projects,
            big_share=big_project_share,
            big_project=big,
            now_ms=SystemClock().now_ms(),
            seal=identity.box.seal,
            progress=progress,
        )
    except AlreadySeeded as exc:
        db.dispose()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    # Planner statistics for the new population (without them SQLite guesses, and guesses badly).
    # On PostgreSQL also VACUUM: index-only scans (deep offsets) need the visibility map it sets.
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE" if db.is_sqlite else "VACUUM ANALYZE")
    # A key for one ordinary user, so that benchmarks can measure a non-admin's own list.
    ak, sk = identity.create_access_key(report.sample_user["user_id"])
    summary = {
        "instances": report.instances,
        "projects": report.projects,
        "users": report.users,
        "big_project": report.big_project,
        "big_project_instances": report.big_project_instances,
        "sample_user": {**report.sample_user, "ak": ak, "sk": sk},
        "seconds": round(time.monotonic() - started, 1),
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"seeded {report.instances:,} instances in {summary['seconds']} s "
            f"({report.big_project_instances:,} in the bootstrap project {report.big_project})"
        )
    db.dispose()
