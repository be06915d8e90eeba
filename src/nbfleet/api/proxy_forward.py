"""The proxy's fast path: one HTTP/1.1 request forwarded to an instance's Jupyter over a pooled connection.

A general client (httpx) costs about a millisecond per proxied request in pool bookkeeping, cancellation
shields and header objects; what the proxy needs is narrower: write the request line and headers it already
has as bytes, copy the body, parse the answer (httptools, the parser uvicorn uses) and hand it to the ASGI
server as it arrives. Everything that is not plain request/response (websockets, HEAD, the version probe)
stays on the general client in ``proxy.py``.

Framing is nbfleet's own in both directions, never passed through: the request goes upstream with a
Content-Length when the client sent one and chunked otherwise (the ASGI server has already undone the
client's framing, so a request cannot be smuggled past it); the answer's body is handed to the ASGI server,
which frames it for the client again. Connections are pooled per upstream (an instance's socket or
address), so what a notebook's server does to its connections (a malformed answer, a connection left in a
bad state) reaches only that notebook's own later requests; any answer that does not parse closes the
connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httptools

from ..observability import metrics
from ..runtime.upstream import connectable

READ_SIZE = 65536
IDLE_SECONDS = 20.0  # an idle pooled connection older than this is closed instead of reused
IDLE_PER_UPSTREAM = 16
MAX_IDLE = 256  # idle connections in all
# The answer's status line and headers: what a notebook's server sends there is held in memory until the
# head is complete, and that server is the tenant's to replace, so it is bounded (h11, under httpx, allowed
# 16 KiB; Jupyter's heads are well below 4 KiB).
MAX_HEAD = 64 * 1024


class UpstreamUnreachable(Exception):
    """No connection could be made, or it failed before any byte of the answer arrived."""


class ClientGone(Exception):
    """The client left while its request's body was being sent upstream."""


class BodyMismatch(Exception):
    """The request's body does not match the length it declared (nothing past that length went upstream)."""


class UpstreamBroken(Exception):
    """The upstream broke off or answered what does not parse, after the answer had begun."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = field(default_factory=time.monotonic)

    def usable(self) -> bool:
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and time.monotonic() - self.idle_since < IDLE_SECONDS
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class ConnectionPool:
    """Idle keep-alive connections per upstream key (``unix:<path>`` or ``tcp:<host>:<port>``); one event loop.

    At most ``IDLE_PER_UPSTREAM`` per upstream and ``MAX_IDLE`` in all (the least recently used upstream's
    oldest go first), so instances that come and go cannot pile up open connections."""

    def __init__(self, connect_timeout: float):
        self.connect_timeout = connect_timeout
        self._idle: collections.OrderedDict[str, collections.deque[_Connection]] = collections.OrderedDict()
        self._count = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def acquire(self, socket_path: str | None, host: str, port: int) -> tuple[_Connection, bool]:
        """A connection and whether it was reused (a reused one may have been closed by the other side)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections belong to the loop that opened them (test clients: one each)
            self.close()
            self._loop = loop
        key = _key(socket_path, host, port)
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            self._count -= 1
            if conn.usable():
                if not idle:
                    del self._idle[key]
                return conn, True
            conn.close()
        if idle is not None:
            del self._idle[key]  # no entry kept per upstream that has nothing idle: instances come and go
        return await self._open(socket_path, host, port), False

    async def _open(self, socket_path: str | None, host: str, port: int) -> _Connection:
        try:
            if socket_path:
                # The socket's directory is the instance's to write: connect to the socket file itself, never
                # through a link it may have put there (runtime/upstream.py).
                with connectable(socket_path) as address:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_unix_connection(address, limit=READ_SIZE), self.connect_timeout
                    )
            else:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, limit=READ_SIZE), self.connect_timeout
                )
        except (OSError, TimeoutError) as exc:
            raise UpstreamUnreachable(repr(exc)) from None
        return _Connection(reader, writer)

    def release(self, socket_path: str | None, host: str, port: int, conn: _Connection) -> None:
        if asyncio.get_running_loop() is not self._loop or not conn.usable():
            conn.close()
            return
        key = _key(socket_path, host, port)
        idle = self._idle.setdefault(key, collections.deque())
        self._idle.move_to_end(key)
        if len(idle) >= IDLE_PER_UPSTREAM:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)
        self._count += 1
        while self._count > MAX_IDLE:
            oldest_key, oldest = next(iter(self._idle.items()))
            oldest.popleft().close()
            self._count -= 1
            if not oldest:
                del self._idle[oldest_key]

    def forget(self, socket_path: str | None, host: str, port: int) -> None:
        for conn in self._idle.pop(_key(socket_path, host, port), ()):
            conn.close()
            self._count -= 1

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        self._count = 0


def _key(socket_path: str | None, host: str, port: int) -> str:
    return f"unix:{socket_path}" if socket_path else f"tcp:{host}:{port}"


class _Answer:
    """httptools' callbacks, collecting the head and the body's pieces of one answer."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.parser: httptools.HttpResponseParser | None = None
        self.keep_alive = False
        self.head_done = False
        self.done = False
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.fed = 0  # bytes given to the parser
        self.chunks = 0
        self.interim = False  # a 1xx answer is being read: the real one follows
        self.extra = False  # bytes beyond the answer: the connection is not used again

    def on_message_begin(self) -> None:
        if self.done:
            self.extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:  # trailers (after a chunked body) are dropped, as before
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # 101 makes the parser raise HttpParserUpgrade
            self.interim, self.headers = True, []
            return
        self.head_done = True
        # Asked here: once the message is complete, httptools answers for the next one (always False).
        self.keep_alive = self.parser.should_keep_alive()

    def on_chunk_header(self) -> None:
        self.chunks += 1

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.body_bytes += len(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.done = True

    def framing_bytes_allowed(self) -> int:
        """How many bytes that are not body the answer may have taken so far: its head, then a chunk-size
        line per chunk (trailers and chunk extensions are held by the parser until their line ends)."""
        return MAX_HEAD + 64 * self.chunks


HeadFilter = Callable[[list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]]
Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]


async def forward(
    pool: ConnectionPool,
    target: tuple[str | None, str, int],
    head: bytes,
    body_framing: str | None,
    receive: Receive,
    send: Send,
    response_headers: HeadFilter,
    *,
    idempotent: bool = False,
) -> None:
    """Send ``head`` (request line and headers, without framing headers or the blank line) and the request's
    body (``body_framing``: None, "length:<n>" or "chunked") upstream, and the answer to ``send``.

    Raises ``UpstreamUnreachable`` before anything was sent to the client (the caller answers instead), and
    ``UpstreamBroken`` after the answer has begun (the caller can only end the client's connection).
    """
    socket_path, host, port = target
    # A reused connection the upstream had closed fails before a single byte of an answer: a GET (or
    # OPTIONS) without a body may then go again on a fresh one. Nothing else may: the upstream may have
    # acted on it, and a body has been read from the client already.
    attempts = 2 if body_framing is None and idempotent else 1
    for attempt in range(attempts):
        conn, reused = await pool.acquire(socket_path, host, port)
        try:
            reusable = await _exchange(conn, head, body_framing, receive, send, response_headers)
        except _NoAnswer:
            conn.close()
            if reused and attempt + 1 < attempts:
                continue
            raise UpstreamUnreachable("the connection closed before an answer") from None
        except BaseException:
            conn.close()
            raise
        if reusable:
            pool.release(socket_path, host, port, conn)
        else:
            conn.close()
        return


class _NoAnswer(Exception):
    """Not a byte of an answer: the connection was closed (the request may be sent again if idempotent)."""


async def _exchange(
    conn: _Connection,
    head: bytes,
    body_framing: str | None,
    receive: Receive,
    send: Send,
    response_headers: HeadFilter,
) -> bool:
    """One request and its answer on ``conn``; True when the connection may serve another."""
    writer, reader = conn.writer, conn.reader
    if body_framing is None:
        writer.write(head + b"\r\n")
    elif body_framing == "chunked":
        writer.write(head + b"transfer-encoding: chunked\r\n\r\n")
    else:
        writer.write(head + b"content-length: " + body_framing.split(":", 1)[1].encode() + b"\r\n\r\n")
    request_complete = True
    try:
        if body_framing is not None:
            request_complete = await _copy_body(writer, body_framing, receive)
        await writer.drain()
    except (ConnectionError, OSError):
        raise _NoAnswer from None
    if not request_complete:
        raise ClientGone  # nobody to answer; the upstream still waits for the rest: the connection goes

    answer = _Answer()
    parser = answer.parser = httptools.HttpResponseParser(answer)
    with metrics.upstream_timer():
        while not answer.head_done:
            try:
                got = await _read_into(reader, parser, answer)
            except _Unparsable as exc:
                raise UpstreamUnreachable(str(exc)) from None
            if not got:
                if answer.fed == 0:
                    raise _NoAnswer
                raise UpstreamUnreachable("the connection closed in the middle of the answer's head")
    status = parser.get_status_code()
    await send({"type": "http.response.start", "status": status, "headers": response_headers(answer.headers)})
    out = metrics.PROXY_BYTES.labels("out")
    watcher: asyncio.Future[None] | None = None
    try:
        while True:
            if answer.body:
                pieces, answer.body = answer.body, []
                chunk = b"".join(pieces)
                out.inc(len(chunk))
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if answer.done:
                break
            if watcher is None and request_complete:
                # A body still to come (a download, a stream): stop reading it when the client leaves.
                watcher = asyncio.ensure_future(_close_on_disconnect(receive, conn))
            try:
                got = await _read_into(reader, parser, answer)
            except _Unparsable as exc:
                raise UpstreamBroken(str(exc)) from None
            if not got:
                if _ends_at_close(answer.headers):  # no length, not chunked: the body ends with the connection
                    break
                raise UpstreamBroken("the upstream closed the connection in the middle of its answer")
    finally:
        if watcher is not None:
            watcher.cancel()
    # Not sent when the answer broke off: the ASGI server then ends the client's connection, so a cut
    # answer is never passed off as a whole one.
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return request_complete and answer.done and answer.keep_alive and not answer.extra


class _Unparsable(Exception):
    pass


def _feed(parser: httptools.HttpResponseParser, data: bytes) -> None:
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        raise _Unparsable("the upstream switched protocols on a plain request") from None
    except httptools.HttpParserError as exc:
        raise _Unparsable(f"the upstream's answer does not parse: {exc}") from None


async def _read_into(reader: asyncio.StreamReader, parser: httptools.HttpResponseParser, answer: _Answer) -> int:
    """Read the next piece of the answer and parse it; its size (0: the connection ended). ``_Unparsable``
    when it does not parse, or when the answer's bytes that are not body pass what it may have."""
    data = await _read(reader)
    if data:
        answer.fed += len(data)
        _feed(parser, data)
        if answer.fed - answer.body_bytes > answer.framing_bytes_allowed() and not answer.done:
            raise _Unparsable(f"the answer's head, chunk lines or trailers are longer than allowed ({MAX_HEAD} bytes)")
    return len(data)


async def _close_on_disconnect(receive: Receive, conn: _Connection) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    conn.close()  # the read waiting for more of the answer ends


async def _read(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read(READ_SIZE)
    except (ConnectionError, OSError):
        return b""


def _ends_at_close(headers: list[tuple[bytes, bytes]]) -> bool:
    names = {name.lower() for name, _ in headers}
    return b"content-length" not in names and b"transfer-encoding" not in names


async def _copy_body(writer: asyncio.StreamWriter, framing: str, receive: Receive) -> bool:
    """The client's body upstream; False when the client went away before it was whole. A body longer or
    shorter than the Content-Length it came with is refused before anything past that length is sent, so
    the upstream never reads a second request out of it."""
    chunked = framing == "chunked"
    length = None if chunked else int(framing.split(":", 1)[1])
    sent = 0
    count = metrics.PROXY_BYTES.labels("in")
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        body = message.get("body", b"")
        if length is not None and sent + len(body) > length:
            raise BodyMismatch("the request's body is longer than its Content-Length")
        if body:
            sent += len(body)
            count.inc(len(body))
            writer.write(b"%x\r\n%b\r\n" % (len(body), body) if chunked else body)
            await writer.drain()
        if not message.get("more_body", False):
            if chunked:
                writer.write(b"0\r\n\r\n")
            elif sent != length:
                raise BodyMismatch("the request's body is shorter than its Content-Length")
            return True
