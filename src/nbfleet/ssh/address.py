"""From an SSH endpoint's ``uri`` (``ssh://<instance id>@<host>:<port>``) to what users type."""

from __future__ import annotations

import shlex
from urllib.parse import urlsplit


def parse_uri(uri: str) -> tuple[str, str, int]:
    """(user, host, port) of an SSH endpoint's uri; ValueError for anything else."""
    parts = urlsplit(uri)
    if parts.scheme != "ssh" or not parts.username or not parts.hostname:
        raise ValueError(f"not an SSH address: {uri!r}")
    return parts.username, parts.hostname, parts.port or 22


def ssh_argv(uri: str, identity: str | None = None) -> list[str]:
    user, host, port = parse_uri(uri)
    return ["ssh", *(["-i", identity] if identity else []), "-p", str(port), f"{user}@{host}"]


def ssh_command(uri: str, identity: str | None = None) -> str:
    return shlex.join(ssh_argv(uri, identity))


def ssh_config(uri: str, alias: str, identity: str | None = None) -> str:
    """A ``~/.ssh/config`` entry, e.g. for VS Code Remote-SSH."""
    user, host, port = parse_uri(uri)
    lines = [f"Host {alias}", f"    HostName {host}", f"    Port {port}", f"    User {user}"]
    if identity:
        lines.append(f"    IdentityFile {identity}")
        lines.append("    IdentitiesOnly yes")
    return "\n".join(lines) + "\n"
