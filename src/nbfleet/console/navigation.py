"""Where the console may send a browser (after sign-in, after an action): its own pages, nothing else.

A ``next`` parameter comes from the address bar, so anyone can write it. A prefix check on the raw text
let ``/console/../notebooks/<id>`` through, which the browser resolves to a notebook's page: a page whose
owner controls what it serves. A target is kept only if it already is, exactly, the path of a console
page (no dot segments, doubled or escaped slashes, escapes at all, backslashes, control characters,
scheme or host); anything else is replaced by the caller's default.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import urlsplit

_NOTEBOOK_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CONSOLE_PAGE = re.compile(rf"/console/notebooks(?:/all|/new|/{_NOTEBOOK_ID})?")
MAX_TARGET = 2048


def console_page(target: str | None, default: str) -> str:
    """``target`` if it names a console page (with its query), else ``default``."""
    if not target or len(target) > MAX_TARGET or "\\" in target:
        return default
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.fragment or "#" in target:
        return default
    path = parts.path
    # Page paths never need escapes; an escape could hide a dot segment or a slash from the checks below.
    if "%" in path or posixpath.normpath(path) != path or not CONSOLE_PAGE.fullmatch(path):
        return default
    return path + ("?" + parts.query if parts.query else "")
