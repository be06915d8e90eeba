"""Run one command in an instance's container through the Docker Engine API (exec), for an SSH session.

Started by nbfleet as ``python -m nbfleet.runtime.docker_exec '<json>'`` with the channel's pipes or a
terminal as its standard streams; it copies bytes between them and the exec's hijacked connection and
exits with the command's exit status. The command runs in the container as ``ma-user`` (1000:100), in
``/home/ma-user/work``, with the container's environment and the given variables; the container keeps it
inside its limits, namespaces, capabilities (none) and no-new-privileges. On a terminal, window size
changes reach the exec (``exec_resize``).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import sys
import termios
import threading
import tty
from typing import cast


def main() -> None:
    spec = json.loads(sys.argv[1])
    import docker

    api = docker.APIClient(base_url=spec["docker_host"]) if spec.get("docker_host") else docker.from_env().api
    terminal = spec["tty"]
    try:
        exec_id = api.exec_create(
            spec["container"],
            spec["argv"],
            stdin=True,
            tty=terminal,
            user=spec["user"],
            workdir=spec["cwd"],
            environment=spec["env"],
        )["Id"]
        connection = api.exec_start(exec_id, socket=True, tty=terminal)
    except docker.errors.APIError as exc:
        os.write(2, f"nbfleet: the instance is not running ({exc.explanation or exc})\n".encode())
        sys.exit(126)
    sock = cast(socket.socket, getattr(connection, "_sock", connection))
    if terminal:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        tty.setraw(0)  # the container's terminal does the line discipline; this one passes bytes as they are

        def resize(*_: object) -> None:
            rows, cols = struct.unpack("hhhh", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))[:2]
            try:
                api.exec_resize(exec_id, height=rows, width=cols)
            except docker.errors.APIError:
                pass

        signal.signal(signal.SIGWINCH, resize)
        resize()
    threading.Thread(target=_upload, args=(sock,), daemon=True).start()
    if terminal:
        _copy(sock, 1)
    else:
        _demultiplex(sock)
    code = api.exec_inspect(exec_id).get("ExitCode")
    os._exit(code if isinstance(code, int) and code >= 0 else 255)


def _upload(sock: socket.socket) -> None:
    while True:
        try:
            data = os.read(0, 65536)
        except OSError:
            data = b""
        if not data:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return
        sock.sendall(data)


def _copy(sock: socket.socket, fd: int) -> None:
    while True:
        data = sock.recv(65536)
        if not data:
            return
        _write(fd, data)


def _demultiplex(sock: socket.socket) -> None:
    """Without a terminal the engine frames the output: 8-byte header (stream, size), then the bytes."""
    buffer = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        buffer += data
        while len(buffer) >= 8:
            stream, size = buffer[0], struct.unpack(">I", buffer[4:8])[0]
            if len(buffer) < 8 + size:
                break
            _write(2 if stream == 2 else 1, buffer[8 : 8 + size])
            buffer = buffer[8 + size :]


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


if __name__ == "__main__":
    main()
