"""What the console's pages show about a notebook, derived from its API form (``NotebookResp``)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from ..domain import errors as E
from ..domain import lease as leases
from ..domain.model import TRANSITIONAL, LeaseType, Status
from ..domain.transitions import Op, check

# The buttons of the console and the operation of the transition table each one asks for.
ACTIONS = (("start", Op.START), ("stop", Op.STOP), ("delete", Op.DELETE), ("renew", Op.RUN_ONLY))
PROGRESSING = frozenset({Status.INIT, Status.CREATING, Status.STARTING})
# Columns the list can be sorted by (all are API sort keys) and their first direction when clicked.
SORTABLE = {"name": "ASC", "status": "ASC", "flavor": "ASC", "create_at": "DESC", "update_at": "DESC"}
LIST_LIMITS = (10, 20, 50)
LEASE_CHOICES_MS = (900_000, 3_600_000, 7_200_000, 14_400_000, 28_800_000, 86_400_000, 259_200_000)


def allowed_actions(status: str, *, strict_delete: bool = False) -> dict[str, bool]:
    """Which console buttons the transition table allows in ``status`` (nothing for unknown ones)."""
    out = {}
    for name, op in ACTIONS:
        try:
            check(status, op, strict_delete=strict_delete)
            out[name] = True
        except (E.IllegalTransition, KeyError, ValueError):
            out[name] = False
    return out


def lease_of(nb: dict) -> leases.Lease:
    return leases.lease_from_wire(nb["lease"])


def lease_summary(nb: dict) -> dict:
    """``{"expires_at": ms | None, "text": str}``: when a running instance stops on its own."""
    lease = lease_of(nb)
    if nb["status"] != Status.RUNNING:
        return {"expires_at": None, "text": "—"}
    if not lease.enable:
        return {"expires_at": None, "text": "never"}
    if lease.type is LeaseType.IDLE:
        window = leases.idle_window(lease)
        return {"expires_at": None, "text": f"after {duration_text(window)} idle" if window else "—"}
    return {"expires_at": lease.expires_at(), "text": ""}


def status_json(nb: dict, *, strict_delete: bool) -> dict:
    """The live part of a notebook the list page polls for."""
    steps = nb.get("action_progress") or []
    done = sum(1 for s in steps if s["status"] == "COMPLETED")
    return {
        "status": nb["status"],
        "busy": nb["status"] in TRANSITIONAL or nb["status"] == Status.SNAPSHOTTING,
        "actions": allowed_actions(nb["status"], strict_delete=strict_delete),
        "lease": lease_summary(nb),
        "progress": f"{done}/{len(steps)}" if nb["status"] in PROGRESSING and steps else None,
        "fail_reason": nb.get("fail_reason"),
    }


def gone_json() -> dict:
    return {
        "status": "DELETED",
        "busy": False,
        "actions": {name: False for name, _ in ACTIONS},
        "lease": {"expires_at": None, "text": "—"},
        "progress": None,
        "fail_reason": None,
    }


def open_url(nb: dict) -> str | None:
    """JupyterLab through nbfleet's port, with the instance token (only the owner's view has it)."""
    if nb["status"] != Status.RUNNING or not nb.get("token"):
        return None
    return f"{nb['url']}?{urlencode({'token': nb['token']})}"


def ssh_access(nb: dict) -> dict | None:
    """The instance's SSH endpoint as the page shows it: key pairs, addresses, and while it runs the
    command and the ~/.ssh/config entry (VS Code Remote-SSH)."""
    from ..ssh.address import ssh_command, ssh_config

    endpoint = next((ep for ep in nb.get("endpoints") or [] if ep.get("service") == "SSH"), None)
    if endpoint is None:
        return None
    uri = endpoint.get("uri")
    return {
        "keys": endpoint.get("key_pair_names") or [],
        "allowed": endpoint.get("allowed_access_ips") or [],
        "uri": uri,
        "command": ssh_command(uri) if uri else None,
        "config": ssh_config(uri, f"nb-{nb['id'][:8]}") if uri else None,
    }


def timestamp(ms: int | None) -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration_text(ms: int | None) -> str:
    if ms is None:
        return "—"
    minutes = round(ms / 60_000)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


def lease_choices(limits: leases.LeaseLimits) -> list[tuple[int, str]]:
    """Running times offered by the forms: the standard ones the limits allow, and "never"."""
    low = min(limits.timing_min, limits.idle_min)
    choices = [(ms, duration_text(ms)) for ms in LEASE_CHOICES_MS if low <= ms <= limits.timing_max]
    return [*choices, (leases.NO_AUTO_STOP, "never (no auto-stop)")]
