"""Request parsing and response rendering shared by the routers."""

from __future__ import annotations

from collections import defaultdict

import orjson
from fastapi import Request
from fastapi.responses import Response

from ..auth.signature import split_query  # the one parser: what the signature covers is what the routes read
from ..domain.errors import InvalidPayload, PayloadTooLarge
from .inputs import check_document


class JSONBytes(Response):
    """JSON rendered by orjson (numbers stay numbers, booleans stay booleans)."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content)


def query_params(request: Request) -> dict[str, list[str]]:
    """Query parameters decoded with percent-decoding only, as the signature sees them (``+`` stays ``+``)."""
    params: dict[str, list[str]] = defaultdict(list)
    for name, value in split_query(request.scope.get("query_string", b"").decode("latin-1")):
        params[name].append(value)
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


def refuse_declared_oversize(request: Request, limit: int) -> None:
    """Refuse a body by its ``Content-Length`` alone, before a byte of it is read."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.strip().isdigit():
        raise InvalidPayload("Invalid request payload: Content-Length is not a number.")
    if int(declared) > limit:
        raise PayloadTooLarge(limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) by its declared length or once more than ``limit`` bytes arrived.

    A chunked body has no declared length, so it is counted as it streams in and never held beyond the
    limit. Read it once: the stream is consumed.
    """
    refuse_declared_oversize(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
