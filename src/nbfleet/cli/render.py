"""How the CLI shows notebooks to people: tables, the detail view, lease times, and --wait progress.

Every value from the API is wrapped in ``Text`` so that a ``[name]`` in a description is shown, not
taken for rich markup.
"""

from __future__ import annotations

import time
from datetime import datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "RUNNING": "green",
    "STOPPED": "dim",
    "CREATE_FAILED": "red",
    "START_FAILED": "red",
    "ERROR": "red",
    "DELETE_FAILED": "red",
    "FROZEN": "blue",
}
# Poll quickly at first (fast operations end fast), then back off so a long start does not hammer the API.
POLL_FIRST, POLL_MAX = 0.2, 2.0
STEPS = 4  # action_progress: storage, compute, network, instance initialisation


def out_console() -> Console:
    console = Console()
    if not console.is_terminal:
        # Piped or captured: do not wrap ids at the default 80 columns, they must stay copyable.
        console = Console(width=200)
    return console


def err_console() -> Console:
    return Console(stderr=True)


def cell(value) -> Text:
    return Text("" if value is None else str(value))


def status_text(status: str | None) -> Text:
    return Text(status or "", style=STATUS_STYLES.get(status or "", "yellow"))


def local_time(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def fmt_duration(ms: int) -> str:
    """``5400000`` -> ``1h 30m``; seconds only below a minute."""
    seconds = max(0, ms // 1000)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return " ".join(parts) if parts else f"{secs}s"


def lease_summary(lease: dict | None, now_ms: int | None = None) -> tuple[str, str]:
    """(when it auto-stops, how long from now); the lease's duration counts from ``create_at``."""
    lease = lease or {}
    if not lease.get("enable") or lease.get("duration") is None:
        return "off", ""
    if lease.get("type") == "IDLE":
        window = lease["duration"] - (lease["update_at"] - lease["create_at"])
        return f"after {fmt_duration(window)} idle", ""
    expiry = lease["create_at"] + lease["duration"]
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    remaining = expiry - now_ms
    return local_time(expiry), (f"in {fmt_duration(remaining)}" if remaining > 0 else "due now")


def simple_table(headers: tuple[str, ...], rows) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, no_wrap=header in ("ID", "TIME"), overflow="fold")
    for row in rows:
        table.add_row(*(cell(v) for v in row))
    return table


def notebooks_table(items: list[dict], *, with_owner: bool) -> Table:
    headers = ["ID", "NAME", "STATUS", "FLAVOR", "IMAGE", "AUTO-STOP", "CREATED"] + (["OWNER"] if with_owner else [])
    table = simple_table(tuple(headers), [])
    for nb in items:
        when, remaining = lease_summary(nb.get("lease"))
        image = nb.get("image") or {}
        # Remaining time is what matters while it runs; a stopped instance has no pending auto-stop.
        auto_stop = (remaining or when) if nb.get("status") == "RUNNING" else ""
        row = [
            cell(nb["id"]),
            cell(nb.get("name")),
            status_text(nb.get("status")),
            cell(nb.get("flavor")),
            cell(image.get("name")),
            cell(auto_stop),
            cell(local_time(nb.get("create_at"))),
        ]
        if with_owner:
            row.append(cell((nb.get("user") or {}).get("name") or nb.get("user_id")))
        table.add_row(*row)
    return table


def page_footer(page: dict, offset: int, noun: str) -> str:
    total, shown = page.get("total", 0), len(page.get("data") or [])
    if not shown:
        return f"no {noun} (total {total})"
    text = f"{offset + 1}-{offset + shown} of {total} {noun}"
    if offset + shown < total:
        text += f"; next page: --offset {offset + shown}"
    return text


def notebook_details(nb: dict) -> Table:
    """The fields people look at, as a two-column grid."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    image = nb.get("image") or {}
    when, remaining = lease_summary(nb.get("lease"))
    if nb.get("status") not in ("RUNNING", "CREATING", "STARTING", "INIT"):
        when, remaining = f"none while {nb.get('status')} (set again by start)", ""
    rows = [
        ("id", cell(nb["id"])),
        ("name", cell(nb.get("name"))),
        ("status", status_text(nb.get("status"))),
        ("flavor", cell(nb.get("flavor"))),
        ("image", cell(f"{image.get('name')}:{image.get('tag')}" if image.get("name") else image.get("id"))),
        ("auto-stop", cell(f"{when} ({remaining})" if remaining else when)),
        ("url", cell(nb.get("url"))),
        ("owner", cell((nb.get("user") or {}).get("name") or nb.get("user_id"))),
        ("created", cell(local_time(nb.get("create_at")))),
    ]
    if nb.get("description"):
        rows.insert(2, ("description", cell(nb["description"])))
    for endpoint in nb.get("endpoints") or []:
        if endpoint.get("service") == "SSH" and endpoint.get("uri"):
            rows.append(("ssh", cell(endpoint["uri"])))
    steps = nb.get("action_progress") or []
    if steps and nb.get("status") in ("CREATING", "STARTING", "INIT"):
        done = sum(1 for s in steps if s.get("status") == "COMPLETED")
        rows.append(("progress", cell(f"{done}/{STEPS} steps")))
    if nb.get("fail_reason"):
        rows.append(("fail_reason", Text(str(nb["fail_reason"]), style="red")))
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def wait_with_progress(client, nb: dict, targets: tuple[str, ...], failed: set[str], timeout: float) -> dict:
    """Poll until the notebook reaches a target or failed status (or ``timeout``); return its last state.

    The bar counts the four ``action_progress`` steps of a create/start; each step change is also
    printed as a line, so a log (stderr not a terminal) shows what happened too.
    """
    deadline = time.monotonic() + timeout
    console = err_console()
    has_steps = "RUNNING" in targets
    seen: dict[int, str] = {}
    pause = POLL_FIRST
    columns = (
        [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        if has_steps
        else [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"{nb['name']}: {nb['status']}", total=STEPS if has_steps else None)
        while True:
            steps = sorted(nb.get("action_progress") or [], key=lambda s: s.get("step", 0))
            for step in steps:
                number, state = step.get("step"), step.get("status")
                if state != "WAITING" and seen.get(number) != state:
                    seen[number] = state
                    text = step.get("description") or step.get("step_description") or ""
                    progress.console.print(
                        Text(f"step {number}/{STEPS} {state.lower()}: {text}", style="red" if state == "FAILED" else "")
                    )
            current = next((s for s in steps if s.get("status") in ("PROCESSING", "FAILED")), None)
            label = f"{nb['name']}: {nb['status']}"
            if current is not None:
                label += f" · {current.get('description') or ''}"
            done = sum(1 for s in steps if s.get("status") == "COMPLETED")
            if nb["status"] in targets:
                progress.update(
                    task,
                    description=f"{nb['name']}: {nb['status']}",
                    completed=STEPS if has_steps else 1,
                    total=STEPS if has_steps else 1,
                )
                return nb
            progress.update(task, description=label, completed=done if has_steps else 0)
            if nb["status"] in failed or time.monotonic() > deadline:
                return nb
            time.sleep(pause)
            pause = min(pause * 1.5, POLL_MAX)
            nb = client.notebook(nb["id"])
