"""``nbfleet notebooks|images|flavors …`` and ``nbfleet configure``: a client of any notebook API v1 endpoint.

Exit codes: 0 ok, 1 the API refused (or a waited-for instance failed), 2 usage or configuration
error, 3 the endpoint could not be reached. Errors go to stderr; ``--output json`` keeps stdout
machine-readable (the API's JSON, unchanged).
"""

from __future__ import annotations

import functools
import json
import re
import time
import webbrowser
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast
from urllib.parse import quote

import typer

from ..domain.ids import is_uuid
from . import profiles
from .client import ApiClient, ApiConnectionError, ApiError
from .render import (
    err_console,
    lease_summary,
    local_time,
    notebook_details,
    notebooks_table,
    out_console,
    page_footer,
    simple_table,
    wait_with_progress,
)

EXIT_API, EXIT_USAGE, EXIT_CONNECTION = 1, 2, 3
FAILED_STATUSES = {"CREATE_FAILED", "START_FAILED", "ERROR"}
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d)")

notebooks_app = typer.Typer(
    help="Notebook instances: list, create, start, stop, renew, delete, open.", no_args_is_help=True
)
images_app = typer.Typer(help="Images notebooks can be created from.", no_args_is_help=True)
flavors_app = typer.Typer(help="Flavors (compute sizes) notebooks can use.", no_args_is_help=True)
keypairs_app = typer.Typer(help="SSH public keys that may open SSH sessions in your notebooks.", no_args_is_help=True)


class Output(str, Enum):
    table = "table"
    json = "json"


class LeaseType(str, Enum):
    timing = "timing"
    idle = "idle"


class SortDir(str, Enum):
    ASC = "ASC"
    DESC = "DESC"


class Feature(str, Enum):
    NOTEBOOK = "NOTEBOOK"
    DEFAULT = "DEFAULT"


def parse_duration(text: str | None) -> int | None:
    """Milliseconds from ``3600000``, ``-1`` (no auto-stop) or a human form such as ``2h``, ``1h30m``, ``45m``."""
    if text is None:
        return None
    value = text.strip().lower()
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise typer.BadParameter(f"{text!r} is not a duration (milliseconds, or e.g. 2h, 30m, 1h30m)")
    return sum(int(n) * _UNIT_MS[u] for n, u in parts)


ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        "-p",
        envvar="NBFLEET_PROFILE",
        show_envvar=False,
        help="Profile of the config file to use (default: 'default'; env NBFLEET_PROFILE).",
    ),
]
OutputOpt = Annotated[
    Output,
    typer.Option("--output", "-o", case_sensitive=False, help="table for people, json (the API's answer) for scripts."),
]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Show progress until the operation has finished.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds --wait waits before giving up.")]
DurationOpt = Annotated[
    str | None,
    typer.Option(
        "--duration",
        callback=parse_duration,
        metavar="DURATION",
        help="Running time before auto-stop: ms, or 2h / 30m / 1h30m; -1 = no auto-stop.",
    ),
]
LeaseTypeOpt = Annotated[
    LeaseType | None,
    typer.Option(
        "--lease-type", case_sensitive=False, help="timing: stop at a fixed time; idle: stop after inactivity."
    ),
]
IdArg = Annotated[str, typer.Argument(help="Notebook id.")]


def fail(message: str, code: int) -> NoReturn:
    # Plain echo, not rich: an API message may contain [brackets] that rich would take for markup.
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def reports_errors(command):
    """Turn the client's exceptions into one stderr line and the documented exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ApiError as exc:
            fail(f"{exc.code}: {exc.message}", EXIT_API)
        except ApiConnectionError as exc:
            fail(str(exc), EXIT_CONNECTION)
        except profiles.ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        except KeyboardInterrupt:
            typer.echo("interrupted (an operation already sent keeps running on the server)", err=True)
            raise typer.Exit(130) from None

    return wrapper


@contextmanager
def api(profile: str | None) -> Iterator[ApiClient]:
    with ApiClient(profiles.resolve(profile)) as client:
        yield client


def print_json(data) -> None:
    typer.echo(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False))


def finish(client: ApiClient, nb: dict, output: Output, wait: bool, targets: tuple[str, ...], timeout: float) -> None:
    """Print what an asynchronous call answered, or wait for its outcome first."""
    if wait:
        nb = wait_with_progress(client, nb, targets, FAILED_STATUSES, timeout)
    if output is Output.json:
        print_json(nb)
    else:
        hint = "" if wait else f"; follow it with `nbfleet notebooks show {nb['id']}` (or use --wait)"
        out_console().print(f"{nb['name']} ({nb['id']}) is {nb['status']}{hint}", markup=False, highlight=False)
    if not wait:
        return
    if nb["status"] in FAILED_STATUSES:
        fail(f"{nb['name']} ({nb['id']}) is {nb['status']}: {nb.get('fail_reason') or 'no reason given'}", EXIT_API)
    if nb["status"] not in targets:
        fail(f"{nb['name']} is still {nb['status']} after {timeout:g} s", EXIT_API)


# --- notebooks ----------------------------------------------------------------------------------


@notebooks_app.command("list")
@reports_errors
def list_notebooks(
    profile: ProfileOpt = None,
    output: OutputOpt = Output.table,
    name: Annotated[str | None, typer.Option(help="Name contains this (case-insensitive).")] = None,
    status: Annotated[str | None, typer.Option(help="Exact status, e.g. RUNNING.")] = None,
    feature: Annotated[
        Feature | None, typer.Option(case_sensitive=False, help="NOTEBOOK (default) or DEFAULT.")
    ] = None,
    owner: Annotated[str | None, typer.Option(help="User id (admins only).")] = None,
    workspace_id: Annotated[str | None, typer.Option(help='Workspace (default "0").')] = None,
    flavor: Annotated[str | None, typer.Option(help="Flavor id contains this.")] = None,
    sort_key: Annotated[
        str | None, typer.Option(help="create_at, update_at, name, status, flavor, id, feature.")
    ] = None,
    sort_dir: Annotated[SortDir | None, typer.Option(case_sensitive=False)] = None,
    offset: Annotated[int | None, typer.Option(min=0, help="Records to skip.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Page size (server default 10).")] = None,
    all_view: Annotated[bool, typer.Option("--all", help="Every user's notebooks (GET /notebooks/all).")] = False,
):
    """List notebooks with the list API's filters, sort and paging."""
    params = {
        "name": name,
        "status": status and status.upper(),
        "feature": feature and feature.value,
        "owner": owner,
        "workspace_id": workspace_id,
        "flavor": flavor,
        "sort_key": sort_key,
        "sort_dir": sort_dir and sort_dir.value,
        "offset": offset,
        "limit": limit,
    }
    with api(profile) as client:
        response = client.list_notebooks(params, all_view=all_view)
    if output is Output.json:
        print_json(response.text)
        return
    page = response.json()
    console = out_console()
    console.print(notebooks_table(page["data"], with_owner=all_view or owner is not None))
    console.print(page_footer(page, offset or 0, "notebooks"), markup=False, highlight=False)


@notebooks_app.command("show")
@reports_errors
def show(notebook_id: IdArg, profile: ProfileOpt = None, output: OutputOpt = Output.table):
    """Show a notebook: status, flavor, image, auto-stop time, URL and any failure reason."""
    with api(profile) as client:
        nb = client.notebook(notebook_id)
    if output is Output.json:
        print_json(nb)
    else:
        out_console().print(notebook_details(nb))


def resolve_image(client: ApiClient, image: str) -> str:
    """An image id from an id, a name, or ``name:tag`` (looked up with GET /images)."""
    if is_uuid(image):
        return image
    name, _, tag = image.partition(":")
    found = client.images({"name": name, "name_fuzzy_match": False, "limit": 200}).json()["data"]
    matches = [i for i in found if i["name"] == name and (not tag or i.get("tag") == tag)]
    if len(matches) == 1:
        return matches[0]["id"]
    if not matches:
        fail(f"no image named {image!r} (see `nbfleet images list`)", EXIT_USAGE)
    tags = ", ".join(sorted(f"{i['name']}:{i.get('tag')}" for i in matches))
    fail(f"image name {image!r} is ambiguous; use one of: {tags}", EXIT_USAGE)


@notebooks_app.command("create")
@reports_errors
def create(
    name: Annotated[str, typer.Option(help="Instance name (letters, digits, - and _).")],
    flavor: Annotated[str, typer.Option(help="Flavor id, e.g. modelarts.vm.cpu.2u (see `nbfleet flavors list`).")],
    image: Annotated[str, typer.Option(help="Image id, name or name:tag (see `nbfleet images list`).")],
    description: Annotated[str | None, typer.Option()] = None,
    duration: DurationOpt = None,
    lease_type: LeaseTypeOpt = None,
    volume_size: Annotated[int | None, typer.Option(min=1, help="EVS volume size in GB (server default 5).")] = None,
    ssh_key: Annotated[
        list[str] | None,
        typer.Option("--ssh-key", help="Enable SSH with this key pair (see `nbfleet keypairs`); repeatable."),
    ] = None,
    ssh_allow: Annotated[
        list[str] | None,
        typer.Option("--ssh-allow", help="Only this IPv4 address or CIDR may connect over SSH; repeatable (max 5)."),
    ] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 600.0,
    profile: ProfileOpt = None,
    output: OutputOpt = Output.table,
):
    """Create a notebook (it starts at once)."""
    with api(profile) as client:
        volume: dict[str, Any] = {"category": "EVS", "ownership": "MANAGED"}
        if volume_size is not None:
            volume["capacity"] = volume_size
        body: dict[str, Any] = {
            "name": name,
            "flavor": flavor,
            "image_id": resolve_image(client, image),
            "volume": volume,
        }
        if description is not None:
            body["description"] = description
        if ssh_key or ssh_allow:
            body["endpoints"] = [
                {"service": "SSH", "key_pair_names": list(ssh_key or []), "allowed_access_ips": list(ssh_allow or [])}
            ]
        if duration is not None or lease_type is not None:
            body["lease"] = {
                k: v
                for k, v in (("duration", duration), ("type", lease_type and lease_type.value.upper()))
                if v is not None
            }
        nb = client.create_notebook(body)
        finish(client, nb, output, wait, ("RUNNING",), timeout)


@notebooks_app.command("start")
@reports_errors
def start(
    notebook_id: IdArg,
    duration: DurationOpt = None,
    lease_type: LeaseTypeOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 600.0,
    profile: ProfileOpt = None,
    output: OutputOpt = Output.table,
):
    """Start a stopped (or failed) notebook; --duration sets its new auto-stop time."""
    with api(profile) as client:
        # DURATION arrives in milliseconds: parse_duration, its typer callback, converted it.
        nb = client.start_notebook(notebook_id, cast(int | None, duration), lease_type and lease_type.value.upper())
        finish(client, nb, output, wait, ("RUNNING",), timeout)


@notebooks_app.command("stop")
@reports_errors
def stop(
    notebook_id: IdArg,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 600.0,
    profile: ProfileOpt = None,
    output: OutputOpt = Output.table,
):
    """Stop a running notebook (its work volume is kept)."""
    with api(profile) as client:
        nb = client.stop_notebook(notebook_id)
        finish(client, nb, output, wait, ("STOPPED",), timeout)


@notebooks_app.command("delete")
@reports_errors
def delete(
    notebook_id: IdArg,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 600.0,
    profile: ProfileOpt = None,
    output: OutputOpt = Output.table,
):
    """Delete a notebook and its volume; --wait returns once it is gone."""
    with api(profile) as client:
        nb = client.delete_notebook(notebook_id)
        if output is Output.json:
            print_json(nb)
        if not wait:
            if output is Output.table:
                out_console().print(f"{nb['name']} ({nb['id']}) is {nb['status']}", markup=False, highlight=False)
            return
        deadline = time.monotonic() + timeout
        pause = 0.2
        with err_console().status(f"deleting {nb['name']}…"):
            while time.monotonic() < deadline:
                try:
                    nb = client.notebook(notebook_id)
                except ApiError as exc:
                    if exc.code in ("ModelArts.6309", "ModelArts.6404"):
                        if output is Output.table:
                            out_console().print(
                                f"{nb['name']} ({notebook_id}) is deleted", markup=False, highlight=False
                            )
                        return
                    raise
                if nb["status"] == "DELETE_FAILED":
                    fail(f"{nb['name']} is DELETE_FAILED: {nb.get('fail_reason') or 'no reason given'}", EXIT_API)
                time.sleep(pause)
                pause = min(pause * 1.5, 2.0)
        fail(f"{nb['name']} is still {nb['status']} after {timeout:g} s", EXIT_API)


@notebooks_app.command("renew")
@reports_errors
def renew(
    notebook_id: IdArg,
    duration: DurationOpt = None,
    lease_type: LeaseTypeOpt = None,
    profile: ProfileOpt = None,
    output: OutputOpt = Output.table,
):
    """Push a running notebook's auto-stop to now + DURATION (default 1h)."""
    with api(profile) as client:
        lease = client.renew_lease(
            notebook_id, 3_600_000 if duration is None else cast(int, duration), lease_type and lease_type.value.upper()
        )
    if output is Output.json:
        print_json(lease)
    else:
        when, remaining = lease_summary(lease)
        out_console().print(
            f"auto-stop: {when}" + (f" ({remaining})" if remaining else ""), markup=False, highlight=False
        )


@notebooks_app.command("events")
@reports_errors
def events(
    notebook_id: IdArg,
    limit: Annotated[int, typer.Option(min=1, max=50)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    profile: ProfileOpt = None,
    output: OutputOpt = Output.table,
):
    """What happened to a notebook (status changes, failures, auto-stops), newest first."""
    with api(profile) as client:
        response = client.events(notebook_id, {"limit": limit, "offset": offset})
    if output is Output.json:
        print_json(response.text)
        return
    page = response.json()
    console = out_console()
    console.print(
        simple_table(
            ("TIME", "TYPE", "MESSAGE"),
            [(local_time(e.get("create_at")), e.get("type"), e.get("message")) for e in page["data"]],
        )
    )
    console.print(page_footer(page, offset, "events"), markup=False, highlight=False)


@notebooks_app.command("open")
@reports_errors
def open_notebook(
    notebook_id: IdArg,
    browser: Annotated[bool, typer.Option("--browser", help="Open it in the web browser.")] = False,
    profile: ProfileOpt = None,
):
    """Print the notebook's JupyterLab address (with the owner's token); --browser opens it."""
    with api(profile) as client:
        nb = client.notebook(notebook_id)
    url = nb.get("url")
    if not url:
        fail(f"{nb['name']} has no url", EXIT_API)
    if nb.get("token"):
        url += ("&" if "?" in url else "?") + "token=" + quote(nb["token"], safe="")
    else:
        typer.echo("warning: no token in the answer (only the owner gets one); JupyterLab will ask for it", err=True)
    if nb["status"] != "RUNNING":
        typer.echo(
            f"warning: {nb['name']} is {nb['status']}; start it with `nbfleet notebooks start {nb['id']} --wait`",
            err=True,
        )
    typer.echo(url)
    if browser and not webbrowser.open(url):
        typer.echo("warning: no web browser could be started; open the address above by hand", err=True)


@notebooks_app.command("ssh")
@reports_errors
def ssh(
    notebook_id: IdArg,
    identity: Annotated[str | None, typer.Option("--identity", "-i", help="Private key file to use (ssh -i).")] = None,
    run: Annotated[bool, typer.Option("--run", help="Run ssh instead of printing the command.")] = False,
    config: Annotated[
        bool, typer.Option("--config", help="Print a ~/.ssh/config entry instead (for VS Code Remote-SSH).")
    ] = False,
    profile: ProfileOpt = None,
):
    """Print the ssh command that opens a shell in the notebook (or run it with --run)."""
    from ..ssh.address import ssh_argv, ssh_command, ssh_config

    with api(profile) as client:
        nb = client.notebook(notebook_id)
    endpoint = next((ep for ep in nb.get("endpoints") or [] if ep.get("service") == "SSH"), None)
    if endpoint is None:
        fail(f"{nb['name']} has no SSH endpoint; create it with --ssh-key NAME", EXIT_API)
    if not endpoint.get("uri"):
        fail(
            f"{nb['name']} has no SSH address: it is {nb['status']}"
            if nb["status"] != "RUNNING"
            else f"{nb['name']} has no SSH address: this server offers no SSH",
            EXIT_API,
        )
    if config:
        typer.echo(ssh_config(endpoint["uri"], f"nb-{nb['id'][:8]}", identity), nl=False)
    elif run:
        import os
        import shutil

        if not shutil.which("ssh"):
            fail("no ssh client on PATH (install OpenSSH)", EXIT_USAGE)
        argv = ssh_argv(endpoint["uri"], identity)
        os.execvp(argv[0], argv)
    else:
        typer.echo(ssh_command(endpoint["uri"], identity))


# --- SSH key pairs --------------------------------------------------------------------------------


@keypairs_app.command("list")
@reports_errors
def list_keypairs(profile: ProfileOpt = None, output: OutputOpt = Output.table):
    """Your SSH key pairs: names usable with `notebooks create --ssh-key`."""
    with api(profile) as client:
        pairs = client.keypairs()
    if output is Output.json:
        print_json(pairs)
        return
    out_console().print(
        simple_table(
            ("NAME", "FINGERPRINT", "CREATED"),
            [(k["name"], k["fingerprint"], local_time(k.get("create_at"))) for k in pairs],
        )
    )


@keypairs_app.command("add")
@reports_errors
def add_keypair(
    name: Annotated[str, typer.Argument(help="Name to use in --ssh-key / key_pair_names.")],
    public_key: Annotated[
        Path,
        typer.Option("--public-key", exists=True, dir_okay=False, help="Public key file, e.g. ~/.ssh/id_ed25519.pub."),
    ],
    profile: ProfileOpt = None,
    output: OutputOpt = Output.table,
):
    """Register an SSH public key under a name (never give the private key)."""
    with api(profile) as client:
        made = client.add_keypair(name, public_key.read_text())
    if output is Output.json:
        print_json(made)
    else:
        typer.echo(f"{made['name']}: {made['fingerprint']}")


@keypairs_app.command("delete")
@reports_errors
def delete_keypair(name: Annotated[str, typer.Argument()], profile: ProfileOpt = None):
    """Remove a key pair: it no longer opens SSH sessions of the notebooks that name it."""
    with api(profile) as client:
        client.delete_keypair(name)
    typer.echo(f"{name} deleted")


# --- images and flavors ----------------------------------------------------------------------------


@images_app.command("list")
@reports_errors
def list_images(
    name: Annotated[str | None, typer.Option(help="Name contains this.")] = None,
    image_type: Annotated[str | None, typer.Option("--type", help="BUILD_IN or DEDICATED.")] = None,
    offset: Annotated[int | None, typer.Option(min=0)] = None,
    limit: Annotated[int | None, typer.Option(min=1)] = None,
    profile: ProfileOpt = None,
    output: OutputOpt = Output.table,
):
    """List the images you can create notebooks from."""
    with api(profile) as client:
        response = client.images({"name": name, "type": image_type, "offset": offset, "limit": limit})
    if output is Output.json:
        print_json(response.text)
        return
    page = response.json()
    rows = [
        (
            i["id"],
            i["name"],
            i.get("tag"),
            i.get("type"),
            i.get("arch"),
            ",".join(i.get("resource_categories") or []),
            ",".join(i.get("dev_services") or []),
            i.get("description"),
        )
        for i in page["data"]
    ]
    console = out_console()
    console.print(simple_table(("ID", "NAME", "TAG", "TYPE", "ARCH", "CATEGORIES", "SERVICES", "DESCRIPTION"), rows))
    console.print(page_footer(page, offset or 0, "images"), markup=False, highlight=False)


@flavors_app.command("list")
@reports_errors
def list_flavors(
    feature: Annotated[Feature | None, typer.Option(case_sensitive=False)] = None,
    category: Annotated[str | None, typer.Option(help="CPU, GPU or ASCEND.")] = None,
    profile: ProfileOpt = None,
    output: OutputOpt = Output.table,
):
    """List the flavors (compute sizes) notebooks can use."""
    with api(profile) as client:
        response = client.flavors({"feature": feature and feature.value, "category": category})
    if output is Output.json:
        print_json(response.text)
        return
    rows = []
    for f in response.json()["data"]:
        gpu = f.get("gpu") or {}
        rows.append(
            (
                f["id"],
                f.get("name"),
                f.get("category"),
                f.get("vcpus"),
                f"{(f.get('memory') or 0) / 1024 / 1024:g} GB",  # the API counts memory in KB
                f"{gpu.get('gpu')}×{gpu.get('type')}" if gpu else "",
                f.get("feature"),
                "sold out" if f.get("sold_out") else "available",
            )
        )
    out_console().print(simple_table(("ID", "NAME", "CATEGORY", "VCPUS", "MEMORY", "GPU", "FEATURE", "STATE"), rows))


# --- configure ----------------------------------------------------------------------------------


def configure(
    profile: Annotated[str, typer.Option("--profile", "-p", help="Profile to write.")] = profiles.DEFAULT_PROFILE,
    endpoint: Annotated[str | None, typer.Option(help="e.g. http://127.0.0.1:8080")] = None,
    project_id: Annotated[str | None, typer.Option()] = None,
    ak: Annotated[str | None, typer.Option(help="Access key.")] = None,
    sk: Annotated[str | None, typer.Option(help="Secret key (prefer the prompt: argv is visible in ps).")] = None,
    from_credentials: Annotated[
        Path | None,
        typer.Option(
            "--from-credentials",
            exists=True,
            dir_okay=False,
            help="Take all four from a server's credentials.json (e.g. nbfleet-data/credentials.json).",
        ),
    ] = None,
):
    """Save an endpoint and AK/SK pair as a named profile (prompts for what is not given)."""
    path = profiles.config_path()
    try:
        current = profiles.read_profiles(path).get(profile, {})
        if from_credentials is not None:
            given = json.loads(from_credentials.read_text())
            endpoint, project_id = endpoint or given.get("endpoint"), project_id or given.get("project_id")
            ak, sk = ak or given.get("ak"), sk or given.get("sk")
        endpoint = endpoint or typer.prompt("Endpoint", default=current.get("endpoint", "http://127.0.0.1:8080"))
        project_id = project_id or typer.prompt("Project id", default=current.get("project_id"))
        ak = ak or typer.prompt("Access key (AK)", default=current.get("ak"))
        sk = sk or typer.prompt("Secret key (SK)", default=current.get("sk"), hide_input=True, show_default=False)
        profiles.write_profile(
            path,
            profile,
            {
                "endpoint": endpoint.strip().rstrip("/"),
                "project_id": project_id.strip(),
                "ak": ak.strip(),
                "sk": sk.strip(),
            },
        )
    except (profiles.ConfigError, ValueError, OSError) as exc:
        fail(str(exc), EXIT_USAGE)
    typer.echo(f"saved profile '{profile}' to {path}")
