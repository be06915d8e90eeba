"""The ``nbfleet`` command: ``serve``, ``admin …``, ``db upgrade``, and the API client (``notebooks`` …)."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ..settings import Settings
from .deploy import deploy_app
from .dev import dev
from .notebooks import configure, flavors_app, images_app, keypairs_app, notebooks_app

app = typer.Typer(help="nbfleet: notebook instances behind a ModelArts-compatible API.", no_args_is_help=True)
admin = typer.Typer(
    help="Manage projects, users, access keys and tokens (works while the server runs).", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(admin, name="admin")
app.add_typer(db_app, name="db")
app.add_typer(dev, name="dev")
app.add_typer(deploy_app, name="deploy")
app.add_typer(notebooks_app, name="notebooks")
app.add_typer(images_app, name="images")
app.add_typer(flavors_app, name="flavors")
app.add_typer(keypairs_app, name="keypairs")
app.command("configure")(configure)

DataDir = typer.Option(None, "--data-dir", help="Data directory (env NBFLEET_DATA_DIR).")
DbUrl = typer.Option(
    None,
    "--database-url",
    help="SQLAlchemy URL (env NBFLEET_DATABASE_URL). Every local user "
    "can read a command line: put a URL with a password in the environment or a file instead.",
)
DbUrlFile = typer.Option(
    None, "--database-url-file", help="File whose content is the SQLAlchemy URL (env NBFLEET_DATABASE_URL_FILE)."
)


def settings_from(runtime_default: str | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with the flags given on the command line winning (``runtime_default``:
    the runtime when neither gives one)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if runtime_default and "runtime" not in given and not os.environ.get("NBFLEET_RUNTIME"):
        given["runtime"] = runtime_default
    # A URL flag replaces any URL from the environment, whichever of the two forms either uses.
    if "database_url" in given:
        given.setdefault("database_url_file", None)
        _warn_if_password(given["database_url"])
    elif "database_url_file" in given:
        given["database_url"] = None
    try:
        return Settings(**given)
    except ValidationError as exc:
        _fail("; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors()))


def _warn_if_password(url: str) -> None:
    try:
        has_password = make_url(url).password is not None
    except ArgumentError:
        return  # not a URL at all: the store says so when it tries it
    if has_password:
        typer.echo(
            "warning: the database password in --database-url is visible to every local user (ps, "
            "/proc/<pid>/cmdline); give the URL in NBFLEET_DATABASE_URL or in a file "
            "(--database-url-file, NBFLEET_DATABASE_URL_FILE) instead",
            err=True,
        )


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Address to listen on (env NBFLEET_HOST, default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (env NBFLEET_PORT, default 8080)."),
    data_dir: Path | None = DataDir,
    database_url: str | None = DbUrl,
    database_url_file: Path | None = DbUrlFile,
    runtime: str | None = typer.Option(
        None, help="simulated | local | docker | kubernetes (env NBFLEET_RUNTIME, default local)."
    ),
    public_url: str | None = typer.Option(None, help="Base URL users reach nbfleet at (env NBFLEET_PUBLIC_URL)."),
    stop_notebooks_on_exit: bool | None = typer.Option(
        None,
        "--stop-notebooks-on-exit/--keep-notebooks-on-exit",
        help="Stop RUNNING notebooks when nbfleet exits (default: keep them running).",
    ),
    migrate: bool | None = typer.Option(
        None,
        "--migrate/--no-migrate",
        help="Run the schema migrations at start (env NBFLEET_MIGRATE, default on). With --no-migrate run "
        "`nbfleet db upgrade` yourself; serve refuses a schema that is not current.",
    ),
    single_user: bool | None = typer.Option(
        None,
        "--single-user",
        help="Run notebooks without a sandbox, as nbfleet's own user (env NBFLEET_SINGLE_USER). Every notebook "
        "can then read nbfleet's data and every other notebook: for one trusted user only.",
    ),
    testing: bool | None = typer.Option(
        None,
        "--testing",
        help="Serve as a test double (env NBFLEET_TESTING): simulated runtime, a clock that tests move and the "
        "test routes under /v1/{project_id}/nbfleet/testing (docs/testing.md). Never for people's notebooks.",
    ),
    log_level: str = typer.Option("info", help="debug | info | warning | error"),
    log_format: str | None = typer.Option(
        None,
        "--log-format",
        help="text | json: one JSON object per line, with request ids and a line per "
        "request and per lifecycle transition (env NBFLEET_LOG_FORMAT, default text).",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help="Serving processes on one port (env NBFLEET_WORKERS, default 1). More than one needs PostgreSQL: "
        "each is a replica of the others (docs/operations.md).",
    ),
    listen_fd: int | None = typer.Option(None, "--listen-fd", hidden=True, help="A worker's inherited socket."),
):
    """Run the API server (and its reconciler and notebook proxy)."""
    import uvicorn

    from ..app import build_isolation, create_app
    from ..observability.logs import configure_logging
    from ..runtime.sandbox import SandboxUnavailable
    from ..store.db import MissingDriver, check_driver

    settings = settings_from(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        database_url_file=database_url_file,
        runtime=runtime,
        public_url=public_url,
        stop_notebooks_on_exit=stop_notebooks_on_exit,
        migrate=migrate,
        single_user=single_user,
        testing=testing,
        log_format=log_format,
        workers=workers,
        runtime_default="simulated" if testing else None,
    )
    if settings.testing and settings.runtime != "simulated":
        _fail("--testing runs the simulated runtime: leave out --runtime or give --runtime simulated")
    try:  # refuse before anything else: without its driver the store cannot even be opened
        check_driver(settings.sqlalchemy_url())
    except MissingDriver as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if settings.workers > 1 and listen_fd is None:
        if settings.sqlalchemy_url().startswith("sqlite"):
            _fail(
                "--workers above 1 needs PostgreSQL (NBFLEET_DATABASE_URL): SQLite has one owning process, "
                "and each worker is a replica"
            )
        from .workers import run_workers

        configure_logging(settings.log_format, log_level)
        raise typer.Exit(run_workers(sys.argv[1:], settings.host, settings.port, settings.workers))
    configure_logging(settings.log_format, log_level)
    # Whatever nbfleet creates is its own (the data dir holds keys, tokens, the database); what other uids
    # must read (image environments, instance directories) gets its mode explicitly.
    os.umask(0o077)
    if settings.runtime == "docker":
        try:  # refuse before listening: without its engine the runtime can do nothing
            from ..runtime.docker import engine_client

            engine_client(settings.docker_host).ping()
        except Exception as exc:
            typer.echo(
                f"error: the docker runtime cannot reach a Docker engine "
                f"({settings.docker_host or 'DOCKER_HOST or the default socket'}): {exc}",
                err=True,
            )
            raise typer.Exit(2) from None
    if settings.runtime == "kubernetes":
        try:  # refuse before listening: without its API server the runtime can do nothing
            from ..runtime.kubernetes import api_client, check_reachable

            client = api_client(settings.kube_config, settings.kube_api_url, retries=0)  # one answer, one line
            check_reachable(client, settings.kube_namespace)
        except Exception as exc:
            typer.echo(
                f"error: the kubernetes runtime cannot reach the Kubernetes API (namespace "
                f"{settings.kube_namespace}): {exc}",
                err=True,
            )
            raise typer.Exit(2) from None
    if settings.runtime == "local":
        try:  # refuse before listening: notebooks for many users need their sandbox
            build_isolation(settings).check([settings.image_root()])
        except SandboxUnavailable as exc:
            typer.echo(f"error: the local runtime cannot isolate notebooks: {exc}", err=True)
            raise typer.Exit(2) from None
    from ..api.wire import http_protocol

    application = create_app(settings, announce=lambda text: typer.echo(text))
    # In JSON, uvicorn's own lines go through nbfleet's handler too (log_config=None keeps uvicorn's off).
    json_logs: dict[str, Any] = {"log_config": None} if settings.log_format == "json" else {}
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        **json_logs,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=10,
        http=http_protocol(),
    )
    if listen_fd is None:
        uvicorn.Server(config).run()
    else:  # a worker of `serve --workers N` (cli/workers.py), on the socket its parent bound
        uvicorn.Server(config).run(sockets=[socket.socket(fileno=listen_fd)])


@images_app.command("build")
def images_build(
    name: str | None = typer.Argument(None, help="Image name (default: every image of the catalogue)."),
    runtime: str | None = typer.Option(None, help="local | docker (env NBFLEET_RUNTIME, default local)."),
    data_dir: Path | None = DataDir,
    as_json: bool = typer.Option(False, "--json"),
):
    """Build the catalogue's images ahead of time: Python environments in the image dir (local runtime),
    or engine images (docker runtime)."""
    from ..runtime.builds import BuildFailed, build_images

    settings = settings_from(data_dir=data_dir, runtime=runtime)
    results = []
    try:
        for built in build_images(settings, name):
            results.append(
                {
                    "name": built.name,
                    "path": built.where,
                    "built_seconds": None if built.seconds is None else round(built.seconds, 1),
                }
            )
            if not as_json:
                typer.echo(
                    f"{built.name}: "
                    + ("already built" if built.seconds is None else f"built in {built.seconds:.1f} s")
                    + f" ({built.where})"
                )
    except BuildFailed as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(results))


def _identity(data_dir, database_url, database_url_file):
    from ..app import open_store
    from ..store.migrate import SchemaOutOfDate

    settings = settings_from(data_dir=data_dir, database_url=database_url, database_url_file=database_url_file)
    try:
        _, identity = open_store(settings)
    except SchemaOutOfDate as exc:  # NBFLEET_MIGRATE=false and an old schema
        _fail(str(exc))
    return identity


def _out(data: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data))
    else:
        for key, value in data.items():
            typer.echo(f"{key}: {value}")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@admin.command("create-project")
def create_project(
    name: str = typer.Option(..., "--name"),
    as_json: bool = typer.Option(False, "--json"),
    data_dir: Path | None = DataDir,
    database_url: str | None = DbUrl,
    database_url_file: Path | None = DbUrlFile,
):
    """Create a project; prints its id."""
    try:
        project_id = _identity(data_dir, database_url, database_url_file).create_project(name)
    except ValueError as exc:
        _fail(str(exc))
    _out({"project_id": project_id}, as_json)


@admin.command("create-user")
def create_user(
    name: str = typer.Option(..., "--name"),
    project: str | None = typer.Option(None, "--project", help="Project id (default: the bootstrap project)."),
    is_admin: bool = typer.Option(False, "--admin"),
    as_json: bool = typer.Option(False, "--json"),
    data_dir: Path | None = DataDir,
    database_url: str | None = DbUrl,
    database_url_file: Path | None = DbUrlFile,
):
    """Create a user in a project with a fresh AK/SK pair."""
    identity = _identity(data_dir, database_url, database_url_file)
    project = project or identity.bootstrap_project()
    if not project:
        _fail("no project given and the store has no bootstrap project yet (start `nbfleet serve` once)")
    try:
        user = identity.create_user(name, project, is_admin=is_admin)
    except ValueError as exc:
        _fail(str(exc))
    _out({"user_id": user.user_id, "project_id": user.project_id, "ak": user.ak, "sk": user.sk}, as_json)


@admin.command("add-member")
def add_member(
    user: str = typer.Option(..., "--user"),
    project: str = typer.Option(..., "--project"),
    data_dir: Path | None = DataDir,
    database_url: str | None = DbUrl,
    database_url_file: Path | None = DbUrlFile,
):
    """Let a user work in one more project."""
    try:
        _identity(data_dir, database_url, database_url_file).add_member(user, project)
    except ValueError as exc:
        _fail(str(exc))


@admin.command("create-key")
def create_key(
    user: str = typer.Option(..., "--user"),
    as_json: bool = typer.Option(False, "--json"),
    data_dir: Path | None = DataDir,
    database_url: str | None = DbUrl,
    database_url_file: Path | None = DbUrlFile,
):
    """Create another AK/SK pair for a user."""
    try:
        ak, sk = _identity(data_dir, database_url, database_url_file).create_access_key(user)
    except ValueError as exc:
        _fail(str(exc))
    _out({"ak": ak, "sk": sk}, as_json)


@admin.command("disable-key")
def disable_key(
    ak: str = typer.Argument(...),
    enable: bool = typer.Option(False, "--enable"),
    data_dir: Path | None = DataDir,
    database_url: str | None = DbUrl,
    database_url_file: Path | None = DbUrlFile,
):
    """Disable (or with --enable, re-enable) an access key."""
    try:
        _identity(data_dir, database_url, database_url_file).set_access_key_enabled(ak, enable)
    except ValueError as exc:
        _fail(str(exc))


@admin.command("create-token")
def create_token(
    user: str = typer.Option(..., "--user"),
    project: str | None = typer.Option(None, "--project"),
    as_json: bool = typer.Option(False, "--json"),
    data_dir: Path | None = DataDir,
    database_url: str | None = DbUrl,
    database_url_file: Path | None = DbUrlFile,
):
    """Issue an X-Auth-Token for a user, scoped to a project (24 h)."""
    identity = _identity(data_dir, database_url, database_url_file)
    try:
        token, expires = identity.create_token(user, project or identity.bootstrap_project())
    except ValueError as exc:
        _fail(str(exc))
    _out({"token": token, "expires_at": expires}, as_json)


@admin.command("set-password")
def set_password(
    user: str = typer.Option(..., "--user", help="User id."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin."
    ),
    data_dir: Path | None = DataDir,
    database_url: str | None = DbUrl,
    database_url_file: Path | None = DbUrlFile,
):
    """Set a user's password (for the web console and POST /v3/auth/tokens); prompts unless --password-stdin."""
    import sys

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        _identity(data_dir, database_url, database_url_file).set_password(user, password)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo("password set", err=True)


@admin.command("set-quota")
def set_quota(
    user: str = typer.Option(..., "--user"),
    quota: int = typer.Option(..., "--quota", help="Instances the user may own; -1 = unlimited."),
    data_dir: Path | None = DataDir,
    database_url: str | None = DbUrl,
    database_url_file: Path | None = DbUrlFile,
):
    """Change a user's instance quota."""
    try:
        _identity(data_dir, database_url, database_url_file).set_quota(user, quota)
    except ValueError as exc:
        _fail(str(exc))


@admin.command("set-admin")
def set_admin(
    user: str = typer.Option(..., "--user"),
    revoke: bool = typer.Option(False, "--revoke"),
    data_dir: Path | None = DataDir,
    database_url: str | None = DbUrl,
    database_url_file: Path | None = DbUrlFile,
):
    """Grant (or with --revoke, take away) the admin flag."""
    try:
        _identity(data_dir, database_url, database_url_file).set_admin(user, not revoke)
    except ValueError as exc:
        _fail(str(exc))


@admin.command("add-keypair")
def add_keypair(
    user: str = typer.Option(..., "--user"),
    name: str = typer.Option(..., "--name"),
    public_key: Path = typer.Option(..., "--public-key", exists=True, readable=True),
    data_dir: Path | None = DataDir,
    database_url: str | None = DbUrl,
    database_url_file: Path | None = DbUrlFile,
):
    """Register an SSH public key under a name usable in `endpoints[].key_pair_names`."""
    try:
        _identity(data_dir, database_url, database_url_file).add_keypair(user, name, public_key.read_text())
    except ValueError as exc:
        _fail(str(exc))


@admin.command("create-workspace")
def create_workspace(
    project: str = typer.Option(..., "--project"),
    name: str = typer.Option(..., "--name"),
    as_json: bool = typer.Option(False, "--json"),
    data_dir: Path | None = DataDir,
    database_url: str | None = DbUrl,
    database_url_file: Path | None = DbUrlFile,
):
    """Create a workspace in a project (notebooks default to workspace "0")."""
    try:
        workspace_id = _identity(data_dir, database_url, database_url_file).create_workspace(project, name)
    except ValueError as exc:
        _fail(str(exc))
    _out({"workspace_id": workspace_id}, as_json)


@admin.command("list-users")
def list_users(
    data_dir: Path | None = DataDir, database_url: str | None = DbUrl, database_url_file: Path | None = DbUrlFile
):
    """List users with their projects."""
    from ..store import identity_repo

    identity = _identity(data_dir, database_url, database_url_file)
    with identity.db.read() as conn:
        for user in identity_repo.list_users(conn):
            projects = ",".join(identity_repo.user_projects(conn, user["id"]))
            flag = " admin" if user["is_admin"] else ""
            typer.echo(f"{user['id']}  {user['name']}{flag}  projects={projects}")


@admin.command("audit")
def audit(
    since: str | None = typer.Option(
        None,
        "--since",
        help="Only from this time on (ISO 8601, e.g. 2026-11-30 or 2026-11-30T08:00:00Z; no zone = UTC).",
    ),
    user: str | None = typer.Option(None, "--user", help="Only this user (id or name)."),
    instance: str | None = typer.Option(None, "--instance", help="Only calls on this instance id."),
    project: str | None = typer.Option(None, "--project", help="Only this project id."),
    limit: int = typer.Option(50, "--limit", min=1, max=10000, help="At most this many rows, newest first."),
    as_json: bool = typer.Option(False, "--json", help="One JSON array of rows."),
    data_dir: Path | None = DataDir,
    database_url: str | None = DbUrl,
    database_url_file: Path | None = DbUrlFile,
):
    """Show the audit trail: state-changing API and console calls, newest first."""
    from ..observability.audit import parse_since, wire
    from ..store import audit_repo

    try:
        since_ms = parse_since(since) if since else None
    except ValueError:
        _fail(f"--since: not an ISO 8601 time: {since!r}")
    identity = _identity(data_dir, database_url, database_url_file)
    with identity.db.read() as conn:
        rows = [
            wire(row)
            for row in audit_repo.page(
                conn, since=since_ms, user=user, instance=instance, project_id=project, limit=limit
            )
        ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        who = row["user_name"] or row["user_id"] or "-"
        outcome = str(row["status"]) + (f" {row['error_code']}" if row["error_code"] else "")
        typer.echo(
            f"{row['time']}  {who}  {row['method']} {row['route']}  {row['action']}  "
            f"{row['instance_id'] or '-'}  {outcome}  {row['request_id'] or '-'}"
        )


@db_app.command("upgrade")
def db_upgrade(
    data_dir: Path | None = DataDir, database_url: str | None = DbUrl, database_url_file: Path | None = DbUrlFile
):
    """Run the schema migrations to the newest revision (also with NBFLEET_MIGRATE=false)."""
    from ..app import open_store

    open_store(
        settings_from(data_dir=data_dir, database_url=database_url, database_url_file=database_url_file), migrate=True
    )
    typer.echo("schema is up to date")


if __name__ == "__main__":
    app()
