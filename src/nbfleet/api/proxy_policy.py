"""What the notebook proxy lets through between browsers and a notebook whose owner controls every byte.

Two rules, independent of how the instance's Jupyter is configured (its owner can change that):

- **Cookies from a notebook stay with that notebook.** An upstream ``Set-Cookie`` named like one of
  nbfleet's own cookies is dropped; so is one whose ``Path`` leaves the instance's prefix (path routing);
  a ``Domain`` attribute is removed, so a cookie is host-only and never reaches a sibling instance's origin.
- **Only the instance's own pages may change it** (host routing): a request that can change state (any
  method but GET/HEAD/OPTIONS) and every websocket must not come from another origin. Browsers name the
  origin of such requests (``Origin``, ``Sec-Fetch-Site``); a page of another notebook on a sibling
  ``*.<domain>`` host is same-site, so its requests carry the victim's cookies, and a sibling can plant
  cookies for the whole domain from script: this check is what stops it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NBFLEET_COOKIE_PREFIX = "nbfleet_"


def foreign_origin(method: str | None, headers, *, websocket: bool = False) -> str | None:
    """Why a request to an instance comes from elsewhere (refuse it), or None when it may pass.

    ``headers`` are the request's (lower-case lookup). Requests without ``Origin`` or ``Sec-Fetch-Site``
    (scripts, curl, the SDK) carry no browser credentials of another site and pass."""
    if not websocket and (method or "GET").upper() in SAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} request"
    origin = headers.get("origin")
    if origin is None:
        return None
    if origin == "null":
        return "a request from an opaque origin"
    host = headers.get("host", "")
    if urlsplit(origin).netloc.lower() != host.lower():
        return f"a request from {origin}"
    return None


def filter_set_cookie(value: str, path_prefix: str | None) -> str | None:
    """The ``Set-Cookie`` header to pass on, rewritten to stay with the instance, or None to drop it.

    ``path_prefix``: the instance's path (path routing); None for an origin of its own."""
    name = value.split("=", 1)[0].strip()
    if not name or name.lower().startswith(NBFLEET_COOKIE_PREFIX):
        return None
    parts = [part.strip() for part in value.split(";")]
    kept = [parts[0]]
    for attribute in parts[1:]:
        key = attribute.split("=", 1)[0].strip().lower()
        if key == "domain":
            continue  # host-only: never shared with sibling instances under the same domain
        if key == "path" and path_prefix is not None:
            path = attribute.split("=", 1)[1].strip() if "=" in attribute else ""
            if not (path + "/").startswith(path_prefix.rstrip("/") + "/"):
                return None
        kept.append(attribute)
    if path_prefix is not None and not any(a.split("=", 1)[0].strip().lower() == "path" for a in kept[1:]):
        # Without a Path the browser scopes a cookie to the response's directory; name it explicitly.
        kept.append(f"Path={path_prefix.rstrip('/')}/")
    return "; ".join(kept)
