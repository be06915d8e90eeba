"""nbfleet connects to an instance's socket file itself, never to what a link in its place points at."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import httpx
import pytest

from nbfleet.runtime.upstream import UpstreamClients, connectable


def http_server(path: str, body: bytes) -> tuple[socket.socket, list]:
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(8)
    seen: list = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            seen.append(True)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, seen


def test_a_link_in_place_of_the_socket_is_refused_and_never_followed(tmp_path):
    real, real_seen = http_server(str(tmp_path / "jupyter.sock"), b"real")
    decoy, decoy_seen = http_server(str(tmp_path / "decoy.sock"), b"decoy")
    instance = tmp_path / "run"
    instance.mkdir()
    os.symlink(tmp_path / "jupyter.sock", instance / "real-link.sock")
    os.symlink(tmp_path / "decoy.sock", instance / "jupyter.sock")
    (instance / "plain").write_text("not a socket")

    async def get(path):
        clients = UpstreamClients(timeout=httpx.Timeout(5.0))
        try:
            return (await clients.get(path).get("/")).text
        finally:
            await clients.aclose()

    for refused in (instance / "jupyter.sock", instance / "real-link.sock", instance / "plain", instance / "none"):
        with pytest.raises(httpx.ConnectError):
            asyncio.run(get(str(refused)))
        with pytest.raises(ConnectionRefusedError), connectable(str(refused)):
            pass
    assert decoy_seen == [] and real_seen == []
    assert asyncio.run(get(str(tmp_path / "jupyter.sock"))) == "real"  # the socket itself is fine
    long_dir = tmp_path / ("d" * 100)
    long_dir.mkdir()
    os.rename(tmp_path / "jupyter.sock", long_dir / "jupyter.sock")  # beyond a socket address's 107 bytes
    assert asyncio.run(get(str(long_dir / "jupyter.sock"))) == "real"
    real.close()
    decoy.close()
