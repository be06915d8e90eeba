"""SSH channels of the gateway: a session (exec, shell, sftp) or a forwarded connection, each backed by one
process inside the instance. Here only bytes are copied, with flow control both ways."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import signal
import struct
import termios

import asyncssh

from ..runtime.sessions import SessionRefused

log = logging.getLogger(__name__)

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
# What a client may set in the session's environment (OpenSSH's AcceptEnv default in Debian).
ACCEPTED_ENV = ("LANG", "LC_")
CHUNK = 65536
ORPHAN_AFTER = 60  # seconds a forwarding relay may wait for its channel to open


class SessionChannel(asyncssh.SSHServerSession):
    def __init__(self, gateway, notebook_id: str, key: str | None, slot=None):
        self.gateway = gateway
        self.notebook_id = notebook_id
        self.key = key
        self.slot = slot  # this channel's place under the gateway's limits, given back when it closes
        self._closed = False  # the channel closed, maybe while its process was being started
        self._typed = bytearray()  # terminal input not yet taken by the terminal
        self.chan: asyncssh.SSHServerChannel | None = None
        self.command: list[str] | None = None
        self.term: tuple[str, tuple[int, int, int, int]] | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.master: int | None = None
        self._input: list[bytes] = []
        self._eof = False
        self._task: asyncio.Task | None = None
        self._writable = asyncio.Event()
        self._writable.set()

    # -- requests ---------------------------------------------------------------------------

    def connection_made(self, chan) -> None:
        self.chan = chan

    def pty_requested(self, term_type, term_size, term_modes) -> bool:
        self.term = (term_type or "xterm", term_size)
        return True

    def shell_requested(self) -> bool:
        self.command = ["/bin/bash", "-l"]
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = ["/bin/bash", "-c", command]
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self.command = [SFTP_SERVER]
        self.term = None  # a file transfer never runs on a terminal
        return True

    def session_started(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"nbfleet-ssh-{self.notebook_id}")

    # -- data from the client ---------------------------------------------------------------

    def data_received(self, data: bytes, datatype) -> None:
        if self.proc is None:
            self._input.append(data)
            self.chan.pause_reading()  # resumed once the process runs
            return
        self._to_process(data)

    def eof_received(self) -> bool:
        self._eof = True
        if self.proc is not None and self.master is None and self.proc.stdin is not None:
            self.proc.stdin.close()
        return True  # keep the channel open for the output

    def terminal_size_changed(self, width, height, pixwidth, pixheight) -> None:
        if self.master is not None:
            _set_size(self.master, (width, height, pixwidth, pixheight))

    def signal_received(self, name: str) -> None:
        sig = getattr(signal, f"SIG{name}", None)
        if self.proc is not None and sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL):
            _signal(self.proc, sig)

    def break_received(self, msec: int) -> bool:
        return False

    def connection_lost(self, exc) -> None:
        self._closed = True
        if self.slot is not None:
            self.slot.release()
        if self.proc is not None:
            _signal(self.proc, signal.SIGHUP)
            asyncio.get_event_loop().call_later(3, _signal, self.proc, signal.SIGKILL)
        # else a start under way ends its process itself once it returns (``_run``)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _to_process(self, data: bytes) -> None:
        if self.master is not None:
            self._typed += data
            self._flush_typed()
        elif self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.write(data)
            if self.proc.stdin.transport.get_write_buffer_size() > 4 * CHUNK:
                self.chan.pause_reading()
                asyncio.ensure_future(self._drain_stdin())

    def _flush_typed(self) -> None:
        """Write pending terminal input in order; a terminal takes a few KiB at a time, so a large paste
        waits for it (reading from the client paused) instead of blocking the gateway."""
        loop = asyncio.get_event_loop()
        while self._typed and self.master is not None:
            try:
                written = os.write(self.master, self._typed)
            except BlockingIOError:
                loop.add_writer(self.master, self._flush_typed)
                self.chan.pause_reading()
                return
            except OSError:
                self._typed.clear()
                break
            del self._typed[:written]
        if self.master is not None:
            loop.remove_writer(self.master)
        self.chan.resume_reading()

    async def _drain_stdin(self) -> None:
        try:
            await self.proc.stdin.drain()
        except (ConnectionError, OSError):
            pass
        self.chan.resume_reading()

    # -- the process ------------------------------------------------------------------------

    async def _run(self) -> None:
        env = {
            k: v
            for k, v in (self.chan.get_environment() or {}).items()
            if isinstance(k, str) and isinstance(v, str) and k.startswith(ACCEPTED_ENV)
        }
        command = self.command or ["/bin/bash", "-l"]
        try:
            if self.term is not None:
                env["TERM"] = self.term[0]
                self.proc, self.master = await self.gateway.spawn_terminal(self.notebook_id, self.key, command, env=env)
            else:
                self.proc = await self.gateway.spawn(self.notebook_id, self.key, command, env=env)
        except SessionRefused as exc:
            self._exit_quietly(f"nbfleet: {exc}\r\n".encode())
            return
        except Exception:
            log.exception("SSH: could not start a session in %s", self.notebook_id)
            self._exit_quietly(b"nbfleet: the session could not be started\r\n")
            return
        # From here on the process and its terminal are ours: whatever happens, the terminal is closed and
        # the process ended (a client may send anything, and may be gone already).
        code = None
        try:
            if self._closed:  # the client left while the process started: nobody will ever end it
                return
            if self.master is not None:
                _set_size(self.master, self.term[1])
            for data in self._input:
                self._to_process(data)
            self._input.clear()
            if self._eof and self.master is None:
                self.proc.stdin.close()
            self.chan.resume_reading()
            if self.master is not None:
                await self._pump_terminal()
            else:
                await asyncio.gather(
                    self._pump(self.proc.stdout, self.chan.write), self._pump(self.proc.stderr, self.chan.write_stderr)
                )
            code = await self.proc.wait()
        except (BrokenPipeError, ConnectionError):  # asyncssh: a write to a closed channel is a BrokenPipeError
            return
        except Exception:
            log.exception("SSH: a session in %s failed", self.notebook_id)
            return
        finally:
            if code is None:
                _signal(self.proc, signal.SIGKILL)
            if self.master is not None:
                asyncio.get_event_loop().remove_writer(self.master)
                os.close(self.master)
                self.master = None
            if code is None:
                self._exit_quietly(None, 255)
        try:
            if code < 0:
                name = signal.Signals(-code).name.removeprefix("SIG")
                self.chan.exit_with_signal(name)
            else:
                self.chan.exit(code)
        except (BrokenPipeError, OSError, asyncssh.Error):
            pass

    def _exit_quietly(self, message: bytes | None, code: int = 1) -> None:
        if self._closed:
            return
        try:
            if message:
                self.chan.write_stderr(message)
            self.chan.exit(code)
        except (BrokenPipeError, OSError, asyncssh.Error):
            pass

    async def _pump(self, reader: asyncio.StreamReader, write) -> None:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                return
            await self._writable.wait()
            write(data)

    async def _pump_terminal(self) -> None:
        """Copy the terminal's output until the session's processes closed it, or, once the command ended,
        until it stays quiet (a background job may keep the terminal open, as with OpenSSH's sshd)."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(self.master, readable.set)
        waiting = asyncio.ensure_future(self.proc.wait())
        try:
            while True:
                try:
                    data = os.read(self.master, CHUNK)
                except BlockingIOError:
                    data = None
                except OSError as exc:  # EIO: every holder of the terminal closed it
                    if exc.errno == errno.EIO:
                        return
                    raise
                if data == b"":
                    return
                if data:
                    await self._writable.wait()
                    self.chan.write(data)
                    continue
                readable.clear()
                if waiting.done():
                    try:
                        await asyncio.wait_for(readable.wait(), 0.2)
                    except TimeoutError:
                        return
                else:
                    await asyncio.wait(
                        {waiting, asyncio.ensure_future(readable.wait())}, return_when=asyncio.FIRST_COMPLETED
                    )
        finally:
            loop.remove_reader(self.master)


class Relay(asyncssh.SSHTCPSession):
    """A forwarded connection: the channel's bytes to the relay process inside the instance and back."""

    def __init__(self, proc: asyncio.subprocess.Process, slot=None):
        self.proc = proc
        self.slot = slot
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task | None = None
        # A channel whose connection closed before it was opened never calls back: end the relay then.
        self._orphan = asyncio.get_event_loop().call_later(ORPHAN_AFTER, self.abandon)

    def abandon(self) -> None:
        """End the relay process of a channel that will never open (or has closed)."""
        self._orphan.cancel()
        _signal(self.proc, signal.SIGKILL)
        if self.slot is not None:
            self.slot.release()

    def connection_made(self, chan) -> None:
        self._orphan.cancel()
        self.chan = chan
        self._task = asyncio.create_task(self._copy_out())

    def data_received(self, data: bytes, datatype) -> None:
        stdin = self.proc.stdin
        if stdin is None or stdin.is_closing():
            return
        stdin.write(data)
        if stdin.transport.get_write_buffer_size() > 4 * CHUNK:
            self.chan.pause_reading()
            asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            await self.proc.stdin.drain()
        except (ConnectionError, OSError):
            pass
        self.chan.resume_reading()

    def eof_received(self) -> bool:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        return True

    def connection_lost(self, exc) -> None:
        self.abandon()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def _copy_out(self) -> None:
        try:
            while True:
                data = await self.proc.stdout.read(CHUNK)
                if not data:
                    break
                await self._writable.wait()
                self.chan.write(data)
            self.chan.write_eof()
            await self.proc.wait()
        except (BrokenPipeError, ConnectionError, OSError):
            pass
        finally:
            _signal(self.proc, signal.SIGKILL)
            self.chan.close()


def _set_size(fd: int, size) -> None:
    """The client's terminal size; SSH sends uint32s, a terminal keeps 16 bits of each."""
    try:
        width, height, pixwidth, pixheight = (_dimension(v) for v in (list(size) + [0, 0, 0, 0])[:4])
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, pixwidth, pixheight))
    except (OSError, TypeError, ValueError, struct.error):
        pass


def _dimension(value) -> int:
    return min(max(int(value), 0), 0xFFFF)


def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
    if proc.returncode is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
