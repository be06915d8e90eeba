"""Verification of ``SDK-HMAC-SHA256`` request signatures, byte for byte as the official SDK signs.

The canonical request is rebuilt from what was received (spec README §3.1): method, canonical
URI (always ending in ``/``), canonical query (sorted, strict RFC 3986), the signed headers in the
order listed, the signed-header list, and the payload hash.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
CONTENT_HASH_HEADER = "x-sdk-content-sha256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


class SignatureError(Exception):
    """The request's signature cannot be accepted; the message says why (shown to the client)."""


@dataclass(frozen=True)
class SignedRequest:
    access_key: str
    signed_headers: tuple[str, ...]
    signature: str


def _encode(text: str) -> str:
    return quote(text, safe="~")


def parse_authorization(value: str) -> SignedRequest:
    """Parse ``SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=hex`` leniently."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError("unsupported signing algorithm")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, val = part.strip().partition("=")
        if sep:
            fields[name.strip()] = val.strip()
    access = fields.get("Access")
    if access is None and "Credential" in fields:
        access = fields["Credential"].split("/", 1)[0]
    if not access or "SignedHeaders" not in fields or "Signature" not in fields:
        raise SignatureError("Authorization header is malformed")
    headers = tuple(h for h in fields["SignedHeaders"].split(";") if h)
    return SignedRequest(access, headers, fields["Signature"].lower())


def canonical_uri(path: str) -> str:
    uri = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def split_query(raw_query: str) -> list[tuple[str, str]]:
    """Decode ``a=1&b=x%20y`` into pairs with percent-decoding only (``+`` stays ``+``)."""
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def canonical_query(raw_query: str) -> str:
    pairs = sorted(split_query(raw_query))
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in pairs)


def payload_hash(
    headers: dict[str, str], signed_headers: tuple[str, ...], body: bytes, *, allow_unsigned_payload: bool = False
) -> str:
    """The last line of the canonical request: the hash of the body that was actually received.

    The SDK puts the value of ``X-Sdk-Content-Sha256`` there instead when it sends one (``UNSIGNED-PAYLOAD``
    for non-JSON bodies). That header is honoured only when the signature covers it and it states this
    body's hash; an unsigned copy could carry the hash of another body the request was first signed for.
    """
    if not body:
        return EMPTY_BODY_SHA256  # the SDK ignores the header for an empty body, and so do we
    actual = hashlib.sha256(body).hexdigest()
    if CONTENT_HASH_HEADER not in signed_headers:
        return actual
    stated = headers.get(CONTENT_HASH_HEADER, "").strip()
    if stated == UNSIGNED_PAYLOAD:
        if not allow_unsigned_payload:
            raise SignatureError(
                "verify aksk signature fail (UNSIGNED-PAYLOAD is not accepted for a request with a body)"
            )
        return stated
    if stated.lower() != actual:
        raise SignatureError("verify aksk signature fail (X-Sdk-Content-Sha256 is not the SHA-256 of the body)")
    return stated  # verbatim: that is what the client signed


def canonical_request(
    method: str,
    path: str,
    raw_query: str,
    headers: dict[str, str],
    signed_headers: tuple[str, ...],
    body: bytes,
    *,
    allow_unsigned_payload: bool = False,
) -> str:
    """The six-line canonical request; ``headers`` maps lower-case names to received values."""
    lines = []
    for name in signed_headers:
        if name not in headers:
            raise SignatureError(f"signed header '{name}' is missing")
        lines.append(f"{name}:{headers[name].strip()}\n")
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query(raw_query),
            "".join(lines),
            ";".join(signed_headers),
            payload_hash(headers, signed_headers, body, allow_unsigned_payload=allow_unsigned_payload),
        ]
    )


def string_to_sign(sdk_date: str, canonical: str) -> str:
    return f"{ALGORITHM}\n{sdk_date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def sign(secret_key: str, sdk_date: str, canonical: str) -> str:
    return hmac.new(secret_key.encode(), string_to_sign(sdk_date, canonical).encode(), hashlib.sha256).hexdigest()


def check_date(sdk_date: str | None, now: datetime, max_skew_seconds: int) -> None:
    if not sdk_date:
        raise SignatureError("verify aksk signature fail (X-Sdk-Date is missing)")
    try:
        when = _parse_date(sdk_date)
    except ValueError:
        raise SignatureError("verify aksk signature fail (X-Sdk-Date is malformed)") from None
    if abs((now - when).total_seconds()) > max_skew_seconds:
        raise SignatureError("verify aksk signature fail (X-Sdk-Date is outside the allowed clock skew)")


def signing_time_ms(headers: dict[str, str]) -> int:
    """The request's ``X-Sdk-Date`` in epoch milliseconds (call after ``check_date`` accepted it)."""
    return int(_parse_date(headers["x-sdk-date"]).timestamp() * 1000)


@lru_cache(maxsize=256)
def _parse_date(sdk_date: str) -> datetime:
    # strptime is slow and a client's requests within one second carry the same date
    return datetime.strptime(sdk_date, DATE_FORMAT).replace(tzinfo=UTC)


def check_before_body(signed: SignedRequest, headers: dict[str, str], now: datetime, max_skew_seconds: int) -> None:
    """The checks that need no body: host and date signed, date within the skew. Done before the body is read."""
    if "host" not in signed.signed_headers or "x-sdk-date" not in signed.signed_headers:
        raise SignatureError("verify aksk signature fail (host and x-sdk-date must be signed)")
    check_date(headers.get("x-sdk-date"), now, max_skew_seconds)


def verify(
    signed: SignedRequest,
    secret_key: str,
    method: str,
    path: str,
    raw_query: str,
    headers: dict[str, str],
    body: bytes,
    now: datetime,
    max_skew_seconds: int = 900,
    *,
    allow_unsigned_payload: bool = False,
) -> None:
    """Raise ``SignatureError`` unless the request carries a valid signature by ``secret_key``."""
    check_before_body(signed, headers, now, max_skew_seconds)
    canonical = canonical_request(
        method, path, raw_query, headers, signed.signed_headers, body, allow_unsigned_payload=allow_unsigned_payload
    )
    expected = sign(secret_key, headers["x-sdk-date"], canonical)
    if not hmac.compare_digest(expected, signed.signature):
        raise SignatureError("verify aksk signature fail")
