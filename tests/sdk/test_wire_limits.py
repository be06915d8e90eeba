"""Requests the HTTP server refuses before the application sees them still get a ModelArts error body."""

from __future__ import annotations

import json
import socket


def _raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        received = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:  # the server closes the connection after such a refusal
                return received
            received += chunk


def _error_of(response: bytes) -> tuple[int, dict, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


def test_a_request_line_over_64_kib_gets_a_modelarts_error_body(server):
    project = server.creds["project_id"]
    request = (
        f"GET /v1/{project}/notebooks?name={'a' * 80_000} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n"
    ).encode()
    status, headers, body = _error_of(_raw_exchange(server.port, request))
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert body["error_code"] == "ModelArts.0101" and body["error_msg"]
    assert headers["x-request-id"] == body["request_id"]


def test_a_malformed_request_line_gets_a_modelarts_error_body(server):
    status, _headers, body = _error_of(_raw_exchange(server.port, b"GET /health HTTP/1.1 extra\r\n\r\n"))
    assert status == 400 and body["error_code"] == "ModelArts.0101"


def test_the_server_still_answers_after_refusing(server):
    _raw_exchange(server.port, b"\x00\x01garbage\r\n\r\n")
    status, _h, body = _error_of(
        _raw_exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    )
    assert status == 200 and body["status"] == "ok"
