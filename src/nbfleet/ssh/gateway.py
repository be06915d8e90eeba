"""The SSH gateway: one asyncssh server in nbfleet, on one port, for every instance with an SSH endpoint.

The SSH user name names the instance (``ssh <instance id>@host -p port``), the endpoint's ``uri`` says so.
For each connection, in this order:

1. the instance must be RUNNING with an SSH endpoint, and the client's address within the endpoint's
   ``allowed_access_ips``: checked when the client names its user, before any key is looked at;
2. public-key authentication against the key pairs named on the instance (its owner's); passwords,
   keyboard-interactive and host-based authentication are not offered;
3. every channel runs inside the instance (``runtime/sessions.py``): ``exec``, a shell with or without a
   terminal, the ``sftp`` subsystem (OpenSSH's ``sftp-server`` inside the sandbox, never an SFTP server in
   nbfleet's process), and ``direct-tcpip`` (``ssh -L``/``-W``) to the instance's own loopback, through a
   relay process inside its network namespace. Remote forwarding, agent and X11 forwarding are refused.

Nothing runs in nbfleet's process on the client's behalf beyond copying bytes. A stopped or deleted
instance takes its sessions down with its PID namespace, and the gateway closes its connections.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncssh

from ..runtime.sessions import SessionEntry, SessionRefused
from .hostkey import load_or_create
from .sessions import Relay, SessionChannel

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class SshGateway:
    """``access(id)``: ``SshAccess | None`` (blocking, from the store); ``enter(id, placement)``: a
    ``SessionEntry`` (blocking), raising ``SessionRefused``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        host_key: Path,
        access: Callable,
        enter: Callable,
        watch_interval: float = 2.0,
        max_channels_per_connection: int = 10,
        max_sessions_per_instance: int = 32,
        max_sessions: int = 256,
        threads: int = 8,
    ):
        self.host = host
        self.port = port
        self.host_key_path = host_key
        self.access = access
        self.enter = enter
        self.watch_interval = watch_interval
        self.max_channels_per_connection = max_channels_per_connection
        self.max_sessions_per_instance = max_sessions_per_instance
        self.max_sessions = max_sessions
        self._server: asyncssh.SSHAcceptor | None = None
        self._connections: dict[asyncssh.SSHServerConnection, tuple[str, str | None]] = {}
        self._watcher: asyncio.Task | None = None
        self._per_instance: dict[str, int] = {}
        self._open = 0
        # The blocking work of clients (store reads, finding and entering sandboxes, waiting for a terminal)
        # runs here, bounded, never in the loop's default executor that the rest of nbfleet shares.
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="nbfleet-ssh")

    async def blocking(self, function: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)

    def take_slot(self, channels: _ChannelCount, notebook_id: str) -> _Slot:
        """A place for one more channel of this connection, or ChannelOpenError: a client, or the users of
        one instance, cannot hold more of nbfleet's file descriptors, processes and threads than this."""
        if channels.count >= self.max_channels_per_connection:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_RESOURCE_SHORTAGE, f"at most {self.max_channels_per_connection} channels per connection"
            )
        if self._per_instance.get(notebook_id, 0) >= self.max_sessions_per_instance:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_RESOURCE_SHORTAGE, f"at most {self.max_sessions_per_instance} sessions per instance"
            )
        if self._open >= self.max_sessions:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE, "the SSH gateway is busy")
        return _Slot(self, channels, notebook_id)

    async def start(self) -> None:
        key = await self.blocking(load_or_create, self.host_key_path)
        self._server = await asyncssh.create_server(
            lambda: _Connection(self),
            self.host,
            self.port,
            server_host_keys=[key],
            encoding=None,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            # a dead client's sessions should not linger: ask it every 30 s, give up after 3 misses
            keepalive_interval=30,
            keepalive_count_max=3,
            login_timeout=30,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._watcher = asyncio.create_task(self._watch(), name="nbfleet-ssh-watch")
        log.info("SSH gateway listening on %s:%s (host key %s)", self.host, self.port, self.host_key_path)

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self._server is not None:
            self._server.close()
        # Sessions end with their connections (their processes get SIGHUP, then SIGKILL); the instances
        # themselves keep running across a restart of nbfleet.
        for conn in list(self._connections):
            conn.close()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except TimeoutError:
                log.warning("SSH gateway: connections still closing at shutdown")
        self._threads.shutdown(wait=False, cancel_futures=True)

    def opened(self, conn: asyncssh.SSHServerConnection, notebook_id: str, key: str | None = None) -> None:
        self._connections[conn] = (notebook_id, key)

    def closed(self, conn: asyncssh.SSHServerConnection) -> None:
        self._connections.pop(conn, None)

    async def _watch(self) -> None:
        """Close connections whose instance stopped, was deleted or lost its SSH endpoint, and those signed
        in with a key that is no longer one of the instance's key pairs. Sessions of a stopped instance
        already ended with its PID namespace; this also ends idle connections, open shells of a deleted
        key pair and ``ssh -N -L`` ones."""
        while True:
            await asyncio.sleep(self.watch_interval)
            for notebook_id in {nid for nid, _ in self._connections.values()}:
                try:
                    still = await self.blocking(self.access, notebook_id)
                except Exception:
                    log.exception("SSH: could not check instance %s", notebook_id)
                    continue
                keys = {_key_id(k) for k in still.public_keys} if still is not None else set()
                for conn, (nid, key) in list(self._connections.items()):
                    if nid != notebook_id or (still is not None and key in keys):
                        continue
                    log.info(
                        "SSH: closing a connection to %s (%s)",
                        notebook_id,
                        "no longer running" if still is None else "its key pair was removed",
                    )
                    conn.close()
                    self.closed(conn)

    async def open_entry(self, notebook_id: str, key: str | None) -> SessionEntry:
        """Checked again for every channel: the instance still runs, and the key the connection signed in
        with is still one of its key pairs (a key pair deleted meanwhile opens nothing more)."""
        access = await self.blocking(self.access, notebook_id)
        if access is None:
            raise SessionRefused("the instance is not running")
        if key is None or key not in {_key_id(k) for k in access.public_keys}:
            raise SessionRefused("the key is no longer one of the instance's key pairs")
        return await self.blocking(self.enter, notebook_id, access.placement)

    async def spawn(
        self, notebook_id: str, key: str | None, command: list[str], *, env: dict[str, str] | None = None
    ) -> asyncio.subprocess.Process:
        """Start ``command`` inside the instance with pipes."""
        entry = await self.open_entry(notebook_id, key)
        try:
            return await asyncio.create_subprocess_exec(
                *entry.argv(command, env=env),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=entry.pass_fds,
                start_new_session=True,
                env=entry.launch_env,
            )
        finally:
            entry.close()

    async def spawn_terminal(
        self, notebook_id: str, key: str | None, command: list[str], *, env: dict[str, str] | None = None
    ) -> tuple[asyncio.subprocess.Process, int]:
        """Start ``command`` inside the instance on a terminal of its own; returns the process and the
        terminal's master side (non-blocking)."""
        entry = await self.open_entry(notebook_id, key)
        if not entry.terminal_inside:  # a container's exec makes its own terminal; this one only carries it
            master, slave = os.openpty()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *entry.argv(command, tty=True, env=env),
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    pass_fds=entry.pass_fds,
                    start_new_session=True,
                    env=entry.launch_env,
                )
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
                entry.close()
            os.set_blocking(master, False)
            return proc, master
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = await asyncio.create_subprocess_exec(
                *entry.argv(command, tty=theirs.fileno(), env=env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                pass_fds=(*entry.pass_fds, theirs.fileno()),
                start_new_session=True,
                env=entry.launch_env,
            )
        finally:
            entry.close()
            theirs.close()
        try:
            ours.settimeout(15)
            _, fds, _, _ = await self.blocking(socket.recv_fds, ours, 16, 1)
        except OSError:
            fds = []
        except BaseException:
            _end(proc)
            raise
        finally:
            ours.close()
        if not fds:
            _end(proc)
            raise SessionRefused("the instance is not running")
        for extra in fds[1:]:
            os.close(extra)
        os.set_blocking(fds[0], False)
        return proc, fds[0]

    async def open_forward(self, notebook_id: str, key: str | None, port: int, slot: _Slot | None = None) -> Relay:
        """A relay inside the instance's network namespace, connected to its loopback ``port``."""
        try:
            entry = await self.open_entry(notebook_id, key)
        except SessionRefused as exc:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
        try:
            if not entry.private_network:  # its loopback is the host's: every host service is there
                raise asyncssh.ChannelOpenError(
                    asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "port forwarding needs the instance's private network"
                )
            proc = await asyncio.create_subprocess_exec(
                *entry.argv([entry.python, "-I", "-S", "-c", RELAY, str(port)]),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                pass_fds=entry.pass_fds,
                start_new_session=True,
                env=entry.launch_env,
            )
        finally:
            entry.close()
        try:
            ready = await asyncio.wait_for(proc.stdout.readexactly(1), 15)
        except (TimeoutError, asyncio.IncompleteReadError):
            ready = b""
        except BaseException:
            _end(proc)
            raise
        if ready != b"+":
            _end(proc)
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED, f"nothing listens on port {port} in the instance"
            )
        return Relay(proc, slot)


# Runs inside the instance as ma-user: connect to its own loopback, say "+", then copy both ways.
RELAY = """
import os, socket, sys, threading
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
except OSError:
    sys.exit(1)
s.settimeout(None)
os.write(1, b"+")
def up():
    while True:
        data = os.read(0, 65536)
        if not data:
            s.shutdown(socket.SHUT_WR)
            return
        s.sendall(data)
threading.Thread(target=up, daemon=True).start()
while True:
    data = s.recv(65536)
    if not data:
        break
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]
"""


def _key_id(public_key: str) -> str:
    """A public key without its comment: type and key material."""
    return " ".join(public_key.split()[:2])


class _ChannelCount:
    count = 0


class _Slot:
    """One open channel under the gateway's limits; released once, when the channel is done."""

    def __init__(self, gateway: SshGateway, channels: _ChannelCount, notebook_id: str):
        self.gateway, self.channels, self.notebook_id = gateway, channels, notebook_id
        self._held = True
        channels.count += 1
        gateway._per_instance[notebook_id] = gateway._per_instance.get(notebook_id, 0) + 1
        gateway._open += 1

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        self.channels.count -= 1
        gateway = self.gateway
        gateway._open -= 1
        left = gateway._per_instance.get(self.notebook_id, 1) - 1
        if left > 0:
            gateway._per_instance[self.notebook_id] = left
        else:
            gateway._per_instance.pop(self.notebook_id, None)


def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class _Connection(asyncssh.SSHServer):
    """One client connection: its instance, checked address and the keys that may authenticate."""

    def __init__(self, gateway: SshGateway):
        self.gateway = gateway
        self.conn: asyncssh.SSHServerConnection | None = None
        self.notebook_id: str | None = None
        self.keys: asyncssh.SSHAuthorizedKeys | None = None
        self.key: str | None = None  # the public key the client signed in with
        self.channels = _ChannelCount()
        self.lost = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.conn is not None:
            self.gateway.closed(self.conn)

    async def begin_auth(self, username: str) -> bool:
        access = await self.gateway.blocking(self.gateway.access, username)
        peer = self.conn.get_extra_info("peername")[0]
        # One answer for an unknown instance, a stopped one and a refused address: nobody learns which
        # instances exist from here.
        if access is None or not _allowed(peer, access.allowed_networks):
            log.info("SSH: refused %s for %r (not running, no SSH endpoint, or address not allowed)", peer, username)
            raise asyncssh.PermissionDenied("not available to this address")
        self.notebook_id = username
        self.keys = (
            asyncssh.import_authorized_keys("\n".join(access.public_keys) + "\n") if access.public_keys else None
        )
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if self.keys is None or username != self.notebook_id:
            return False
        peer = self.conn.get_extra_info("peername")[0]
        if self.keys.validate(key, peer, peer) is None:
            return False
        self.key = _key_id(key.export_public_key("openssh").decode())
        return True

    def auth_completed(self) -> None:
        log.info("SSH: session to %s from %s", self.notebook_id, self.conn.get_extra_info("peername")[0])
        self.gateway.opened(self.conn, self.notebook_id, self.key)

    def session_requested(self):
        slot = self.gateway.take_slot(self.channels, self.notebook_id)
        return SessionChannel(self.gateway, self.notebook_id, self.key, slot)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int):
        if dest_host not in LOOPBACK:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "only the instance's own loopback (127.0.0.1) can be reached"
            )
        return self._forward(self.gateway.take_slot(self.channels, self.notebook_id), dest_port)

    async def _forward(self, slot: _Slot, port: int) -> Relay:
        try:
            relay = await self.gateway.open_forward(self.notebook_id, self.key, port, slot)
        except BaseException:
            slot.release()
            raise
        if self.lost:  # the client left while the relay started: its channel will never open
            relay.abandon()
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "the connection closed")
        return relay

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False  # remote forwarding would open a listener in nbfleet's own network

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False


def _allowed(peer: str, networks: list[str] | None) -> bool:
    if networks is None:
        return True
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(net, strict=False) for net in networks)
