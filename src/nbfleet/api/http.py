"""Request parsing and response rendering shared by the routers."""
from __future__ import annotations

from collections import defaultdict
from urllib.parse import unquote

import orjson
from fastapi import Request
from fastapi.responses import Response

from ..domain.errors import InvalidPayload
from .inputs import check_document


class JSONBytes(Response):
    """JSON rendered by orjson (numbers stay numbers, booleans stay booleans)."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content)


def query_params(request: Request) -> dict[str, list[str]]:
    """Query parameters decoded with percent-decoding only, as the signature sees them (``+`` stays ``+``)."""
    params: dict[str, list[str]] = defaultdict(list)
    raw = request.scope.get("query_string", b"").decode("latin-1")
    for item in raw.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        params[unquote(name)].append(unquote(value))
    return params


def first(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def parse_json(raw: bytes, *, allow_empty: bool = True):
    """The JSON body, or None when empty; anything unparsable is 6400, anything out of bounds (see
    ``inputs.check_document``) another 400."""
    if not raw or not raw.strip():
        if allow_empty:
            return None
        raise InvalidPayload("Invalid request payload: the body is empty.")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidPayload("Invalid request payload: the body is not valid JSON.") from None
    check_document(document)
    return document
