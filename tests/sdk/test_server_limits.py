"""Bodies against the real server process: refused before they are read, capped while they stream.

Raw sockets, so the test decides how much of a body is ever sent: an answer that arrives while most of
the body is still unsent proves the server did not wait for it (and so never held it in memory).
"""

from __future__ import annotations

import json
import select
import socket
from contextlib import closing

from ..support import sign_headers

ANSWER_WAIT = 20.0  # upper bound on waiting for an answer; a server that waits for the body never answers


def _connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_WAIT)
    sock.settimeout(ANSWER_WAIT)
    return sock


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _read_answer(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of the first response on ``sock`` (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without an answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:] if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of the answer"
        rest += chunk
    return status, json.loads(rest[:length])


def test_anonymous_huge_post_is_refused_by_its_length_before_the_body(server):
    path = f"/v1/{server.creds['project_id']}/notebooks"
    with closing(_connect(server)) as sock:
        sock.sendall(
            _head(
                "POST",
                path,
                {
                    "Host": f"127.0.0.1:{server.port}",
                    "Content-Type": "application/json",
                    "Content-Length": str(400 * 1024 * 1024),
                },
            )
        )
        status, body = _read_answer(sock)  # not one byte of the 400 MiB was sent
    assert status == 413 and body["error_code"] == "ModelArts.6400", body


def test_anonymous_post_under_the_limit_is_refused_before_the_body(server):
    """Authentication comes first: a caller without credentials never gets the server to read a body."""
    path = f"/v1/{server.creds['project_id']}/notebooks"
    with closing(_connect(server)) as sock:
        sock.sendall(
            _head(
                "POST",
                path,
                {
                    "Host": f"127.0.0.1:{server.port}",
                    "Content-Type": "application/json",
                    "Content-Length": str(512 * 1024),
                },
            )
        )
        status, body = _read_answer(sock)
    assert status == 401 and body["error_code"] == "APIGW.0301", body


def test_chunked_body_over_the_limit_is_refused_while_it_streams(server, admin):
    path = f"/v1/{admin.project_id}/notebooks"
    host = f"127.0.0.1:{server.port}"
    body = json.dumps({"name": "huge", "description": "x" * (32 * 1024 * 1024)}).encode()
    from ..support import Creds

    headers = sign_headers(Creds(admin.ak, admin.sk, admin.project_id), "POST", path, "", body, host)
    headers.update({"Host": host, "Transfer-Encoding": "chunked"})
    sent = 0
    with closing(_connect(server)) as sock:
        sock.sendall(_head("POST", path, headers))
        # Send 64 KiB chunks until the server answers (it must, once 1 MiB arrived) or the body is all sent.
        while sent < len(body) and not select.select([sock], [], [], 0)[0]:
            piece = body[sent : sent + 65536]
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        if sent >= len(body):
            sock.sendall(b"0\r\n\r\n")
        status, answer_body = _read_answer(sock)
    assert status == 413 and answer_body["error_code"] == "ModelArts.6400", answer_body
    assert sent < len(body), "the server let the whole 32 MiB body arrive before refusing it"
