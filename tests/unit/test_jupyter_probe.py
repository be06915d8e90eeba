"""What an instance's Jupyter answers is its owner's to shape: nonsense is "cannot tell", never an error."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from nbfleet.runtime.base import FlavorLimits, ImageRef, InstanceSpec, Placement
from nbfleet.runtime.jupyter import JupyterProbe


def serve(path: str, answers: dict[str, bytes]) -> socket.socket:
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(8)

    def loop():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            request = conn.recv(65536).decode()
            target = request.split(" ", 2)[1].split("?", 1)[0]
            body = answers.get(target, b"{}")
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (len(body), body)
            )
            conn.close()

    threading.Thread(target=loop, daemon=True).start()
    return server


SPEC = InstanceSpec(
    id="i",
    name="i",
    token="t",
    flavor=FlavorLimits("f", 1, 512),
    image=ImageRef("x", "x"),
    owner_id="u",
    project_id="p",
)


@pytest.mark.parametrize(
    "status,kernels",
    [
        (b"[]", b"[]"),
        (b'{"last_activity": 5}', b"[]"),
        (b'{"last_activity": "2026-01-01T00:00:00Z"}', b'[{"last_activity": ["x"]}]'),
        (b'{"last_activity": "not a date", "connections": "many"}', b'"kernels"'),
        (b'{"last_activity": "2026-01-01T00:00:00Z"}', b"[1, 2]"),
    ],
)
def test_activity_of_a_server_that_answers_nonsense_is_unknown_or_sane(tmp_path, status, kernels):
    path = str(tmp_path / "jupyter.sock")
    server = serve(path, {"/api/status": status, "/api/kernels": kernels})

    async def ask():
        probe = JupyterProbe(lambda _id: "/")
        try:
            return await probe.activity(SPEC, Placement(socket=path))
        finally:
            await probe.close()

    try:
        activity = asyncio.run(ask())
    finally:
        server.close()
    assert activity is None or isinstance(activity.last_activity_ms, (int, type(None)))
