"""The proxy's fast path (api/proxy_forward.py) against a raw upstream that answers exactly the bytes a test
scripts, as a notebook's own server could: pooled connections, framing, broken and malformed answers, and a
client that leaves in the middle of a download."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI

from nbfleet.api import proxy_forward
from nbfleet.api.proxy import ProxyRefusal, ProxyTarget, install_notebook_proxy
from nbfleet.api.proxy_forward import ConnectionPool

from ..threaded_server import ServerThread

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class RawUpstream:
    """A TCP server on 127.0.0.1; ``answer(request_head, body, conn)`` writes what it likes to ``conn``, and
    returns False to close the connection afterwards. Records connections and requests."""

    def __init__(self, answer: Callable[[bytes, bytes, socket.socket], bool]):
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.closed_by_peer = threading.Event()
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        buffer = b""
        with conn:
            while True:
                try:
                    while b"\r\n\r\n" not in buffer:
                        data = conn.recv(65536)
                        if not data:
                            self.closed_by_peer.set()
                            return
                        buffer += data
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    body = b""
                    lower = head.lower()
                    if b"content-length:" in lower:
                        n = int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                        while len(buffer) < n:
                            buffer += conn.recv(65536)
                        body, buffer = buffer[:n], buffer[n:]
                    elif b"transfer-encoding: chunked" in lower:
                        while not buffer.endswith(b"0\r\n\r\n"):
                            buffer += conn.recv(65536)
                        body, buffer = _dechunk(buffer), b""
                    self.requests.append((head, body))
                    if not self.answer(head, body, conn):
                        return
                except OSError:
                    self.closed_by_peer.set()
                    return

    def close(self) -> None:
        self._stop = True
        self.listener.close()


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, data = data.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2 :]


@pytest.fixture
def through() -> Iterator[Callable[[Callable], tuple[str, RawUpstream]]]:
    """``through(answer)`` → (the proxy's URL for that upstream, the upstream)."""
    upstreams: list[RawUpstream] = []
    routes: dict[str, ProxyTarget] = {}

    async def resolve(notebook_id: str):
        return routes.get(notebook_id) or ProxyRefusal(404, "ModelArts.6309", "The instance does not exist.")

    app = FastAPI()
    install_notebook_proxy(app, resolve)
    with ServerThread(app) as server:

        def make(answer: Callable) -> tuple[str, RawUpstream]:
            upstream = RawUpstream(answer)
            upstreams.append(upstream)
            name = f"raw{len(upstreams)}"
            routes[name] = ProxyTarget("127.0.0.1", upstream.port)
            return f"http://127.0.0.1:{server.port}/notebooks/{name}/", upstream

        yield make
    for upstream in upstreams:
        upstream.close()


def answering(payload: bytes, keep: bool = True):
    def answer(head: bytes, body: bytes, conn: socket.socket) -> bool:
        conn.sendall(payload)
        return keep

    return answer


def test_requests_share_one_pooled_connection(through):
    url, upstream = through(answering(OK))
    with httpx.Client(trust_env=False) as client:
        for _ in range(20):
            assert client.get(url + "api/status").text == "ok"
    assert upstream.connections == 1 and len(upstream.requests) == 20


def test_a_connection_the_upstream_closed_while_idle_is_replaced_for_a_get(through):
    # Answers, then closes without saying so (no "Connection: close"): the pooled connection is dead.
    url, upstream = through(answering(OK, keep=False))
    with httpx.Client(trust_env=False) as client:
        for _ in range(5):
            response = client.get(url + "x")
            assert response.status_code == 200 and response.text == "ok"
            time.sleep(0.05)  # the close reaches the proxy's idle connection
    assert upstream.connections == 5


def test_request_framing_is_the_proxys_own(through):
    url, upstream = through(answering(OK))
    with httpx.Client(trust_env=False) as client:
        client.post(url + "len", content=b"0123456789", headers={"Expect": "100-continue"})
        client.put(url + "chunked", content=iter([b"abc", b"defg"]))  # no length: chunked
        client.get(url + "none")
    (len_head, len_body), (chunk_head, chunk_body), (none_head, none_body) = upstream.requests
    assert b"content-length: 10" in len_head.lower() and len_body == b"0123456789"
    assert b"expect" not in len_head.lower() and b"transfer-encoding" not in len_head.lower()
    assert b"transfer-encoding: chunked" in chunk_head.lower() and chunk_body == b"abcdefg"
    assert b"content-length" not in chunk_head.lower()
    lowered = none_head.lower()
    assert b"content-length" not in lowered and b"transfer-encoding" not in lowered and none_body == b""
    assert none_head.startswith(b"GET /notebooks/raw1/none HTTP/1.1\r\n")


def test_an_answer_cut_off_is_never_passed_off_as_whole(through):
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000
    url, _ = through(answering(cut, keep=False))
    with httpx.Client(trust_env=False) as client, pytest.raises(httpx.RemoteProtocolError):
        client.get(url + "cut").read()


def test_an_answer_that_does_not_parse_is_a_502(through):
    url, _ = through(answering(b"SSH-2.0-OpenSSH\r\n\r\n", keep=False))
    with httpx.Client(trust_env=False) as client:
        response = client.get(url + "garbage")
    assert response.status_code == 502 and response.json()["error_code"] == "ModelArts.6102"


def test_an_answer_ending_with_the_connection_is_whole(through):
    url, _ = through(answering(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"y" * 300000, keep=False))
    with httpx.Client(trust_env=False) as client:
        response = client.get(url + "until-close")
    assert response.status_code == 200 and response.content == b"y" * 300000


def test_chunked_answers_and_their_headers_pass(through):
    chunked = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1; Path=/notebooks/raw1/\r\n"
        b"Set-Cookie: b=2; Path=/notebooks/raw1/\r\nServer: upstream\r\nX-Kept: yes\r\n\r\n"
        b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    )
    url, _ = through(answering(chunked))
    with httpx.Client(trust_env=False) as client:
        response = client.get(url + "chunks")
    assert response.status_code == 201 and response.content == b"abcdefg"
    assert response.headers["x-kept"] == "yes" and response.headers.get("server") != "upstream"
    assert [c.split(";")[0] for c in response.headers.get_list("set-cookie")] == ["a=1", "b=2"]


def test_a_client_leaving_a_download_ends_the_upstream_connection(through):
    def endless(head: bytes, body: bytes, conn: socket.socket) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(600):  # at most 30 s of a slow stream
            conn.sendall(b"400\r\n" + b"z" * 1024 + b"\r\n")
            time.sleep(0.05)
        return False

    url, upstream = through(endless)
    with httpx.Client(trust_env=False) as client, client.stream("GET", url + "stream") as response:
        assert next(response.iter_bytes())  # the stream has begun
    # The client has gone: the proxy stops reading, and the upstream's writes fail soon after.
    assert upstream.closed_by_peer.wait(10)


def test_head_requests_pass(through):
    url, upstream = through(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n"))
    with httpx.Client(trust_env=False) as client:
        response = client.head(url + "file")
    assert response.status_code == 200 and response.headers["content-length"] == "12345"
    assert upstream.requests[0][0].startswith(b"HEAD ")


def test_an_endless_answer_head_is_cut_off_with_a_502(through):
    """A notebook's server is the tenant's: a head that never ends must not grow in nbfleet's memory."""

    def flood(head: bytes, body: bytes, conn: socket.socket) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(2000):  # up to ~4 MiB of headers, never the blank line
            conn.sendall(b"X-Filler: " + b"f" * 2000 + b"\r\n")
        return False

    url, upstream = through(flood)
    with httpx.Client(trust_env=False, timeout=30) as client:
        response = client.get(url + "flood")
    assert response.status_code == 502 and response.json()["error_code"] == "ModelArts.6102"
    assert upstream.closed_by_peer.wait(10)  # nbfleet hung up instead of reading on


def test_the_pool_keeps_nothing_for_an_upstream_with_no_idle_connection():
    """Instances come and go: the pool must not keep an entry per upstream it ever reached."""
    upstream = RawUpstream(answering(OK))

    async def scenario() -> None:
        pool = ConnectionPool(2.0)
        conn, reused = await pool.acquire(None, "127.0.0.1", upstream.port)
        assert not reused
        pool.release(None, "127.0.0.1", upstream.port, conn)
        assert len(pool._idle) == 1
        conn.close()  # closed while idle
        await asyncio.sleep(0.05)
        fresh, reused = await pool.acquire(None, "127.0.0.1", upstream.port)
        assert not reused and pool._idle == {}
        fresh.close()
        pool.close()

    try:
        asyncio.run(scenario())
    finally:
        upstream.close()


def test_endless_trailers_after_a_chunked_body_are_cut_off(through):
    def trailers(head: bytes, body: bytes, conn: socket.socket) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n")
        for _ in range(2000):  # ~4 MiB of trailer lines, never the blank line
            conn.sendall(b"X-Trailer: " + b"t" * 2000 + b"\r\n")
        return False

    url, upstream = through(trailers)
    with httpx.Client(trust_env=False, timeout=30) as client, pytest.raises(httpx.RemoteProtocolError):
        client.get(url + "trailers").read()
    assert upstream.closed_by_peer.wait(10)


def test_an_interim_answer_is_skipped_and_the_connection_stays_in_step(through):
    early_hints = b"HTTP/1.1 103 Early Hints\r\nLink: </x.css>; rel=preload\r\n\r\n"
    url, upstream = through(answering(early_hints + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
    with httpx.Client(trust_env=False) as client:
        for _ in range(3):
            response = client.get(url + "hinted")
            assert response.status_code == 200 and response.text == "hello"
    assert upstream.connections == 1


def test_a_request_that_may_have_been_acted_on_is_never_sent_twice(through):
    answers = iter([OK, b"garbage that is not HTTP\r\n\r\n"])

    def once_then_garbage(head: bytes, body: bytes, conn: socket.socket) -> bool:
        conn.sendall(next(answers))
        return True

    url, upstream = through(once_then_garbage)
    with httpx.Client(trust_env=False) as client:
        assert client.get(url + "first").text == "ok"
        response = client.delete(url + "kernels/k1")  # on the pooled connection: an answer that does not parse
    assert response.status_code == 502
    assert [head.split(b" ", 1)[0] for head, _ in upstream.requests] == [b"GET", b"DELETE"]


def test_a_body_longer_or_shorter_than_its_length_never_reaches_the_upstream_whole():
    class Writer:
        def __init__(self) -> None:
            self.sent = b""

        def write(self, data: bytes) -> None:
            self.sent += data

        async def drain(self) -> None:
            return None

    def receiving(*parts: bytes):
        messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]

        async def receive() -> dict:
            return messages.pop(0)

        return receive

    longer, shorter = Writer(), Writer()
    with pytest.raises(proxy_forward.BodyMismatch):
        asyncio.run(proxy_forward._copy_body(longer, "length:5", receiving(b"abc", b"defGET / HTTP/1.1\r\n")))
    assert longer.sent == b"abc"
    with pytest.raises(proxy_forward.BodyMismatch):
        asyncio.run(proxy_forward._copy_body(shorter, "length:5", receiving(b"ab", b"")))
