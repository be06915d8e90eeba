"""Bounds every request must meet before its values reach a service or the store.

One place for what no field may hold, whatever its own rules: control characters in the path, the
query string or a JSON string (a NUL is an error in PostgreSQL and a malformed FTS5 query in SQLite, so
it surfaced as a 500 or a 503), JSON nested deeper than any request of this API needs, and integers
that no column can store. Field-specific rules (lengths, patterns, enums) stay with the fields.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from ..domain import errors as E
from .errors import error_bytes_response

# C0 controls and DEL, raw or percent-encoded. UTF-8 encodes every other character with bytes of 0x80 and
# above, so a multi-byte character can never contain one of these: a byte-level search is exact.
_CONTROL_IN_URL = re.compile(rb"[\x00-\x1f\x7f]|%[01][0-9a-fA-F]|%7[fF]")
# In JSON strings: C0 controls and DEL except tab, line feed and carriage return.
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

MAX_JSON_DEPTH = 32  # the deepest request of the API (hooks.container_hooks.pre_start.script) has 4
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
GUARDED_PREFIXES = ("/v1/", "/v3/", "/console", "/health")  # the notebook proxy forwards paths as they are


class ControlCharacterGuard:
    """Refuse a request whose path or query string holds a control character (400 ModelArts.0104)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(GUARDED_PREFIXES):
            raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
            where = (
                "path"
                if _CONTROL_IN_URL.search(raw_path)
                else "query string"
                if _CONTROL_IN_URL.search(scope.get("query_string", b""))
                else None
            )
            if where is not None:
                error = E.InvalidParameter(f"Parameter error: the {where} contains a control character.")
                await error_bytes_response(scope, error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a character that no string of a request may (forms of the console too)."""
    return _CONTROL_IN_TEXT.search(text) is not None


def check_document(document) -> None:
    """Raise a 400 for a parsed JSON body that nests deeper than ``MAX_JSON_DEPTH``, holds a string (or
    member name) with a control character, or an integer outside 64 bits."""
    pending = [(document, "", 1)]
    while pending:
        value, path, depth = pending.pop()
        if isinstance(value, dict):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep()
            for key, item in value.items():
                member = f"{path}.{key}" if path else key
                if _CONTROL_IN_TEXT.search(key):
                    raise _control(path or "body")
                pending.append((item, member, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep()
            pending.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            if _CONTROL_IN_TEXT.search(value):
                raise _control(path or "body")
        elif isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
            raise E.InvalidProperty(path or "body", "The number is out of range.")


def _control(path: str) -> E.ModelArtsError:
    return E.InvalidProperty(path, "Control characters are not allowed.")


def _too_deep() -> E.ModelArtsError:
    return E.InvalidPayload(f"Invalid request payload: JSON nested deeper than {MAX_JSON_DEPTH} levels.")
