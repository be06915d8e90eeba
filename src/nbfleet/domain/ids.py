"""The forms of nbfleet's ids, and new ones.

Notebook instances (and images, file systems) have UUIDs, 8-4-4-4-12 hex digits; projects and users have
32 lower-case hex digits. The checks are cheap guards before asking the store: text that cannot be an id
(a proxy host name, an SSH user name, a console path) is answered like an unknown id, without a query.
"""

from __future__ import annotations

import re
import uuid

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX_ID = re.compile(r"[0-9a-f]{32}")


def is_uuid(text: object) -> bool:
    """Whether ``text`` has the form of a UUID (8-4-4-4-12 hex digits, nothing around them)."""
    return isinstance(text, str) and _UUID.fullmatch(text) is not None


def is_instance_id(text: object) -> bool:
    """Whether ``text`` can be a notebook instance's id."""
    return is_uuid(text)


def is_hex_id(text: object) -> bool:
    """Whether ``text`` can be a project's or user's id (32 lower-case hex digits)."""
    return isinstance(text, str) and _HEX_ID.fullmatch(text) is not None


def new_id() -> str:
    """32 lower-case hex characters, the id format of projects and users."""
    return uuid.uuid4().hex
