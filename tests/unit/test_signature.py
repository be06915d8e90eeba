"""AK/SK signature verification against the three worked vectors of spec README §3.1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nbfleet.auth import signature as sig

PROJECT = "0123456789abcdef0123456789abcdef"
HEADERS = {
    "content-type": "application/json",
    "host": "127.0.0.1:8080",
    "user-agent": "test-agent",
    "x-project-id": PROJECT,
    "x-sdk-date": "20240101T000000Z",
}
SIGNED = ("content-type", "host", "user-agent", "x-project-id", "x-sdk-date")
WHEN = datetime(2024, 1, 1, tzinfo=UTC)

VECTORS = [
    (
        "GET",
        f"/v1/{PROJECT}/notebooks",
        "limit=10&name=my%20nb%2F1&offset=0",
        b"",
        "7efa1062166ed99337639317d709b2c0f271eff4c0483030b1f8a82d2e3fdff7",
        "768ffc1ed0dde971d92687fd73b6419aa9f89d2d6cb302a8ed7f660c38c4b9a2",
    ),
    (
        "POST",
        f"/v1/{PROJECT}/notebooks/abc/start",
        "duration=3600000",
        b"",
        "042fc86db59ffa8022a35fe9195da29af55fb29ed813012e23a7127fdf3075d0",
        "669bacac6e245e1819afdc43d1fc8399267ba78abe4c4047609edfd8ba62813d",
    ),
    (
        "PATCH",
        f"/v1/{PROJECT}/notebooks/abc/lease",
        "",
        b'{"duration": 3600000, "type": "TIMING"}',
        "bd202095e01088b4a816a1cebc49e9576e0545a11fc5d10d74d740ebb0f3f150",
        "34e838e500776788a1d367fcffa7435bf13a501b76f51b487583822027312875",
    ),
]


def _auth(signature: str) -> sig.SignedRequest:
    return sig.parse_authorization(
        f"SDK-HMAC-SHA256 Access=AKEXAMPLE, SignedHeaders={';'.join(SIGNED)}, Signature={signature}"
    )


@pytest.mark.parametrize("method,path,query,body,creq_hash,signature", VECTORS)
def test_worked_vectors(method, path, query, body, creq_hash, signature):
    import hashlib

    canonical = sig.canonical_request(method, path, query, HEADERS, SIGNED, body)
    assert hashlib.sha256(canonical.encode()).hexdigest() == creq_hash
    assert sig.sign("SKEXAMPLE", HEADERS["x-sdk-date"], canonical) == signature
    sig.verify(_auth(signature), "SKEXAMPLE", method, path, query, HEADERS, body, WHEN)


@pytest.mark.parametrize("method,path,query,body,creq_hash,signature", VECTORS[:1])
def test_wrong_secret_and_tampered_query_fail(method, path, query, body, creq_hash, signature):
    with pytest.raises(sig.SignatureError):
        sig.verify(_auth(signature), "WRONG", method, path, query, HEADERS, body, WHEN)
    with pytest.raises(sig.SignatureError):
        sig.verify(
            _auth(signature), "SKEXAMPLE", method, path, query.replace("limit=10", "limit=20"), HEADERS, body, WHEN
        )


def test_query_order_and_trailing_slash_do_not_matter():
    method, path, query, body, _, signature = VECTORS[0]
    sig.verify(
        _auth(signature), "SKEXAMPLE", method, path + "/", "offset=0&name=my%20nb%2F1&limit=10", HEADERS, body, WHEN
    )


@pytest.mark.parametrize("skew", [timedelta(minutes=14), timedelta(minutes=-14)])
def test_date_within_fifteen_minutes_is_accepted(skew):
    method, path, query, body, _, signature = VECTORS[0]
    sig.verify(_auth(signature), "SKEXAMPLE", method, path, query, HEADERS, body, WHEN + skew)


@pytest.mark.parametrize("skew", [timedelta(minutes=16), timedelta(minutes=-16)])
def test_date_outside_fifteen_minutes_is_refused(skew):
    method, path, query, body, _, signature = VECTORS[0]
    with pytest.raises(sig.SignatureError, match="skew"):
        sig.verify(_auth(signature), "SKEXAMPLE", method, path, query, HEADERS, body, WHEN + skew)


def test_missing_signed_header_and_malformed_date_fail():
    method, path, query, body, _, signature = VECTORS[0]
    headers = {k: v for k, v in HEADERS.items() if k != "user-agent"}
    with pytest.raises(sig.SignatureError, match="missing"):
        sig.verify(_auth(signature), "SKEXAMPLE", method, path, query, headers, body, WHEN)
    with pytest.raises(sig.SignatureError, match="malformed"):
        sig.verify(_auth(signature), "SKEXAMPLE", method, path, query, {**HEADERS, "x-sdk-date": "2024"}, body, WHEN)


def test_authorization_parsing_variants():
    parsed = sig.parse_authorization(
        "SDK-HMAC-SHA256 Credential=AK1/20240101/x, SignedHeaders=host;x-sdk-date, Signature=ABCDEF"
    )
    assert parsed.access_key == "AK1" and parsed.signed_headers == ("host", "x-sdk-date")
    assert parsed.signature == "abcdef"
    for bad in (
        "SDK-HMAC-SM3 Access=a, SignedHeaders=host, Signature=00",
        "SDK-HMAC-SHA256 Access=a",
        "Basic dXNlcjpwYXNz",
    ):
        with pytest.raises(sig.SignatureError):
            sig.parse_authorization(bad)


def test_host_and_date_must_be_signed():
    method, path, query, body, _, signature = VECTORS[0]
    partial = sig.parse_authorization(f"SDK-HMAC-SHA256 Access=AK, SignedHeaders=content-type, Signature={signature}")
    with pytest.raises(sig.SignatureError):
        sig.verify(partial, "SKEXAMPLE", method, path, query, HEADERS, body, WHEN)


# --- X-Sdk-Content-Sha256 (the payload hash a client may state instead of letting the server compute it) ---

BODY = VECTORS[2][3]


def _signed_with_content_header(value: str, body: bytes, *, sign_the_header: bool = True):
    """A request the way a client signs it when it sends ``X-Sdk-Content-Sha256: value``: the stated value
    stands in for the body's hash in the canonical request."""
    import hashlib

    headers = {**HEADERS, "x-sdk-content-sha256": value}
    signed = (*SIGNED, "x-sdk-content-sha256") if sign_the_header else SIGNED
    lines = "".join(f"{name}:{headers[name]}\n" for name in signed)
    canonical = "\n".join(
        [
            "PATCH",
            f"/v1/{PROJECT}/notebooks/abc/lease/",
            "",
            lines,
            ";".join(signed),
            value if body else hashlib.sha256(b"").hexdigest(),
        ]
    )
    auth = sig.parse_authorization(
        f"SDK-HMAC-SHA256 Access=AKEXAMPLE, SignedHeaders={';'.join(signed)}, "
        f"Signature={sig.sign('SKEXAMPLE', HEADERS['x-sdk-date'], canonical)}"
    )
    return auth, headers


def _verify(auth, headers, body, **kw):
    sig.verify(auth, "SKEXAMPLE", "PATCH", f"/v1/{PROJECT}/notebooks/abc/lease", "", headers, body, WHEN, **kw)


def test_signed_content_hash_that_matches_the_body_is_accepted():
    import hashlib

    auth, headers = _signed_with_content_header(hashlib.sha256(BODY).hexdigest(), BODY)
    _verify(auth, headers, BODY)


def test_signed_content_hash_of_another_body_is_refused():
    import hashlib

    auth, headers = _signed_with_content_header(hashlib.sha256(BODY).hexdigest(), BODY)
    with pytest.raises(sig.SignatureError, match="X-Sdk-Content-Sha256"):
        _verify(auth, headers, b'{"duration": -1}')


def test_unsigned_content_hash_header_never_replaces_the_body_hash():
    """The attack: a request signed for one body, replayed with another body and the first body's hash in an
    X-Sdk-Content-Sha256 header that is not among SignedHeaders."""
    import hashlib

    original = sig.canonical_request("PATCH", f"/v1/{PROJECT}/notebooks/abc/lease", "", HEADERS, SIGNED, BODY)
    signature = sig.sign("SKEXAMPLE", HEADERS["x-sdk-date"], original)
    forged_headers = {**HEADERS, "x-sdk-content-sha256": hashlib.sha256(BODY).hexdigest()}
    with pytest.raises(sig.SignatureError):
        _verify(_auth(signature), forged_headers, b'{"duration": -1}')
    _verify(_auth(signature), forged_headers, BODY)  # the header is ignored, the real body's hash is what counts


def test_unsigned_payload_is_refused_for_a_body_unless_allowed():
    auth, headers = _signed_with_content_header("UNSIGNED-PAYLOAD", BODY)
    with pytest.raises(sig.SignatureError, match="UNSIGNED-PAYLOAD"):
        _verify(auth, headers, BODY)
    _verify(auth, headers, BODY, allow_unsigned_payload=True)
    # without a body the header plays no part (the SDK hashes nothing then either)
    empty_auth, empty_headers = _signed_with_content_header("UNSIGNED-PAYLOAD", b"")
    _verify(empty_auth, empty_headers, b"")
