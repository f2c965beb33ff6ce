"""Behaviour of the lean HTTP/1.1 client (:mod:`emulators.issuance.http11`) against real
sockets on 127.0.0.1.

The client replaces httpx on two hot paths (the load generator's simulated kiosks and the
center's OCSP/CRL fetches), so it must keep httpx's contract where its callers rely on it:
well-formed requests on a kept-alive connection, every response framing a server may use
(Content-Length, chunked, delimited by close, no body), one safe retry when an idle
kept-alive connection was closed by the server, and every failure raised as an httpx
exception (or, for :class:`RevocationFetcher`, as :class:`cardio.pki.RevocationSourceError`),
leaving the client usable afterwards.

Each test starts an asyncio TCP server on port 0 that answers with scripted raw bytes and
records the connections, the raw requests and the peak number of simultaneous
connections, so the tests assert what actually crosses the wire. Every test is bounded by
:data:`TEST_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import httpx
import pytest

from cardio.pki import RevocationSourceError
from emulators.issuance.http11 import Http11Client, Reply, RevocationFetcher

T = TypeVar("T")

TEST_TIMEOUT = 5.0
"""Upper bound for one test's coroutine: a hanging client fails the test, not the run."""


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(TEST_TIMEOUT):
            return await coro_fn()

    return asyncio.run(bounded())


def ok(body: bytes = b"", *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    """A Content-Length framed answer."""
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


@dataclass
class Step:
    """The server's answer to one request (requests are numbered across connections):
    wait ``delay`` seconds, write ``data``, then close the connection if ``close``."""

    data: bytes = b""
    close: bool = False
    delay: float = 0.0


@dataclass
class Server:
    """A scripted HTTP/1.1 server on 127.0.0.1. Request ``i`` gets ``steps[i]`` (the last
    step repeats). With ``silent`` it reads requests and never answers."""

    steps: Sequence[Step] = (Step(ok(b"ok")),)
    silent: bool = False
    connections: int = 0
    active: int = 0
    max_active: int = 0
    requests: list[bytes] = field(default_factory=list)
    request_conn: list[int] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self._writers.append(writer)
        try:
            while (req := await read_request(reader)) is not None:
                index = len(self.requests)
                self.requests.append(req)
                self.request_conn.append(conn)
                if self.silent:
                    await reader.read()  # until the client gives up and closes
                    return
                step = self.steps[min(index, len(self.steps) - 1)]
                if step.delay:
                    await asyncio.sleep(step.delay)
                writer.write(step.data)
                await writer.drain()
                if step.close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.active -= 1
            writer.close()
            self.closed.set()


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One raw request (head and Content-Length body), or None at the end of the stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


def refused_port() -> socket.socket:
    """A bound socket that does not listen: connecting to its port is refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


async def assert_usable(client: Http11Client, srv: Server) -> None:
    """After an error, the next request opens a new connection and succeeds."""
    before = srv.connections
    reply = await client.get("/again")
    assert (reply.status_code, reply.content) == (200, b"again")
    assert srv.connections == before + 1


# -- requests on the wire, keep-alive ---------------------------------------------------------


def test_two_posts_share_one_connection_with_proper_requests() -> None:
    async def main() -> None:
        async with Server([Step(ok(b"first")), Step(ok(b"second"))]) as srv:
            async with Http11Client(srv.url, timeout=2) as client:
                r1 = await client.post("/a", content=b"hello",
                                       headers={"X-Kiosk": "k1", "Content-Type": "app/x"})
                assert client.connected
                r2 = await client.post("/b/c", content=b"", headers={
                    "Host": "evil.example", "content-length": "99", "Connection": "close",
                    "X-Other": "v"})
            assert isinstance(r1, Reply)
            assert (r1.status_code, r1.content, r2.content) == (200, b"first", b"second")
            assert r1.headers["content-length"] == "5"
            assert srv.connections == 1
            assert srv.request_conn == [1, 1]
            host = f"Host: 127.0.0.1:{srv.port}".encode()
            assert srv.requests[0] == (b"POST /a HTTP/1.1\r\n" + host + b"\r\n"
                                       b"Content-Length: 5\r\nX-Kiosk: k1\r\n"
                                       b"Content-Type: app/x\r\n\r\nhello")
            assert srv.requests[1] == (b"POST /b/c HTTP/1.1\r\n" + host + b"\r\n"
                                       b"Content-Length: 0\r\nX-Other: v\r\n\r\n")

    run(main)


def test_get_sends_no_body_and_default_port_is_80() -> None:
    async def main() -> None:
        assert Http11Client("http://example.invalid").port == 80
        async with Server([Step(ok(b"x"))]) as srv, Http11Client(srv.url) as client:
            reply = await client.get("/p?q=1")
            assert reply.content == b"x"
            assert srv.requests[0].startswith(b"GET /p?q=1 HTTP/1.1\r\n")
            assert srv.requests[0].endswith(b"Content-Length: 0\r\n\r\n")

    run(main)


def test_keepalive_false_sends_connection_close_and_reconnects() -> None:
    async def main() -> None:
        async with Server([Step(ok(b"1")), Step(ok(b"2"))]) as srv:
            async with Http11Client(srv.url, keepalive=False) as client:
                assert (await client.post("/x", content=b"a")).content == b"1"
                assert not client.connected
                assert (await client.post("/x", content=b"b")).content == b"2"
            assert srv.connections == 2
            assert srv.request_conn == [1, 2]
            for req in srv.requests:
                head = req.split(b"\r\n\r\n")[0].split(b"\r\n")
                assert head.count(b"Connection: close") == 1

    run(main)


def test_server_connection_close_header_closes_then_reconnects() -> None:
    async def main() -> None:
        steps = [Step(ok(b"1", extra=b"Connection: close\r\n"), close=True), Step(ok(b"2"))]
        async with Server(steps) as srv, Http11Client(srv.url) as client:
            assert (await client.get("/")).content == b"1"
            assert not client.connected
            assert (await client.get("/")).content == b"2"
            assert srv.connections == 2

    run(main)


# -- response framing -------------------------------------------------------------------------


def test_chunked_body_with_several_chunks_and_trailer() -> None:
    async def main() -> None:
        body = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n"
                b"0\r\nX-Trailer: t\r\n\r\n")
        async with Server([Step(body), Step(ok(b"next"))]) as srv:
            async with Http11Client(srv.url) as client:
                reply = await client.get("/")
                assert (reply.status_code, reply.content) == (200, b"hello, world")
                assert client.connected
                # the trailer was consumed: the next answer parses on the same connection
                assert (await client.get("/")).content == b"next"
            assert srv.connections == 1

    run(main)


def test_body_delimited_by_close_then_reconnects() -> None:
    async def main() -> None:
        steps = [Step(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
                      close=True), Step(ok(b"fresh"))]
        async with Server(steps) as srv, Http11Client(srv.url) as client:
            reply = await client.get("/")
            assert (reply.status_code, reply.content) == (200, b"until the end")
            assert not client.connected
            assert (await client.get("/")).content == b"fresh"
            assert srv.request_conn == [1, 2]

    run(main)


def test_204_without_body_keeps_connection() -> None:
    async def main() -> None:
        steps = [Step(b"HTTP/1.1 204 No Content\r\n\r\n"), Step(ok(b"after"))]
        async with Server(steps) as srv, Http11Client(srv.url) as client:
            reply = await client.post("/", content=b"x")
            assert (reply.status_code, reply.content) == (204, b"")
            assert (await client.get("/")).content == b"after"
            assert srv.connections == 1

    run(main)


def test_non_200_status_is_returned_not_raised() -> None:
    async def main() -> None:
        async with Server([Step(ok(b"nope", status="503 Service Unavailable"))]) as srv, \
                Http11Client(srv.url) as client:
            reply = await client.get("/")
            assert (reply.status_code, reply.content) == (503, b"nope")

    run(main)


# -- stale kept-alive connections -------------------------------------------------------------


def test_stale_kept_alive_connection_is_retried_once_on_a_new_one() -> None:
    async def main() -> None:
        # answer 1 keeps the connection alive (no Connection: close), then the server closes
        steps = [Step(ok(b"1"), close=True), Step(ok(b"2"))]
        async with Server(steps) as srv, Http11Client(srv.url, timeout=2) as client:
            assert (await client.post("/", content=b"a")).content == b"1"
            assert client.connected
            await srv.closed.wait()
            await asyncio.sleep(0.05)
            reply = await client.post("/", content=b"b")
            assert reply.content == b"2"
            assert srv.connections == 2
            assert srv.request_conn == [1, 2]
            assert srv.requests[1].endswith(b"\r\n\r\nb")

    run(main)


def test_fresh_connection_closed_without_answer_raises_once() -> None:
    async def main() -> None:
        steps = [Step(b"", close=True), Step(ok(b"again"))]
        async with Server(steps) as srv, Http11Client(srv.url, timeout=2) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post("/", content=b"a")
            assert srv.connections == 1  # no retry on a fresh connection
            assert not client.connected
            await assert_usable(client, srv)

    run(main)


def test_stale_retry_on_fresh_connection_closed_without_answer_raises_httpx() -> None:
    async def main() -> None:
        steps = [Step(ok(b"1"), close=True), Step(b"", close=True)]
        async with Server(steps) as srv, Http11Client(srv.url, timeout=2) as client:
            assert (await client.get("/")).content == b"1"
            await srv.closed.wait()
            await asyncio.sleep(0.05)
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/")
            assert srv.connections == 2  # exactly one retry

    run(main)


# -- errors are httpx exceptions, and the client stays usable ---------------------------------


def test_connection_refused_is_connect_error() -> None:
    async def main() -> None:
        with refused_port() as s:
            port = s.getsockname()[1]
            async with Http11Client(f"http://127.0.0.1:{port}", timeout=2) as client:
                with pytest.raises(httpx.ConnectError):
                    await client.get("/")
                assert not client.connected

    run(main)


@pytest.mark.parametrize("answer", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
], ids=["garbage", "status-not-digits", "http2", "header-no-colon", "repeated-length",
        "negative-length", "interim-1xx", "bad-chunk-size"])
def test_malformed_answer_is_remote_protocol_error(answer: bytes) -> None:
    async def main() -> None:
        async with Server([Step(answer), Step(ok(b"again"))]) as srv, \
                Http11Client(srv.url, timeout=2) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/")
            assert not client.connected
            await assert_usable(client, srv)

    run(main)


@pytest.mark.parametrize("answer", [
    ok(b"x" * 101),
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"40\r\n" + b"x" * 64 + b"\r\n40\r\n" + b"y" * 64 + b"\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n" + b"z" * 101,
], ids=["content-length", "chunked", "close-delimited"])
def test_body_over_max_body_is_remote_protocol_error(answer: bytes) -> None:
    async def main() -> None:
        steps = [Step(answer, close=True), Step(ok(b"again"))]
        async with Server(steps) as srv, \
                Http11Client(srv.url, timeout=2, max_body=100) as client:
            with pytest.raises(httpx.RemoteProtocolError, match="larger than 100"):
                await client.get("/")
            await assert_usable(client, srv)

    run(main)


def test_body_exactly_max_body_is_accepted() -> None:
    async def main() -> None:
        async with Server([Step(ok(b"x" * 100))]) as srv, \
                Http11Client(srv.url, max_body=100) as client:
            assert len((await client.get("/")).content) == 100

    run(main)


def test_per_request_max_body_overrides_the_client_limit() -> None:
    async def main() -> None:
        async with Server([Step(ok(b"x" * 50)), Step(ok(b"again"))]) as srv, \
                Http11Client(srv.url, timeout=2) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.request("GET", "/", max_body=10)
            await assert_usable(client, srv)

    run(main)


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    b"HTTP/1.1 200 OK\r\nContent-Le",
], ids=["content-length", "chunked", "inside-head"])
def test_answer_ending_early_is_remote_protocol_error(answer: bytes) -> None:
    async def main() -> None:
        steps = [Step(answer, close=True), Step(ok(b"again"))]
        async with Server(steps) as srv, Http11Client(srv.url, timeout=2) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/")
            assert srv.connections == 1  # a partial answer is never retried
            await assert_usable(client, srv)

    run(main)


def test_server_that_never_answers_is_read_timeout() -> None:
    async def main() -> None:
        async with Server(silent=True) as srv, Http11Client(srv.url, timeout=0.3) as client:
            start = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/")
            elapsed = time.monotonic() - start
            assert 0.25 <= elapsed < 1.0
            assert not client.connected
            assert len(srv.requests) == 1
            srv.silent = False
            srv.steps = [Step(ok(b"again"))]
            await assert_usable(client, srv)

    run(main)


@pytest.mark.parametrize("headers", [
    {"X-Evil": "a\r\nb"},
    {"X-Evil": "a\nInjected: 1"},
    {"X-Evil\r\nInjected": "1"},
    {"X-Evil: 1\r\nInjected": "1"},
], ids=["crlf-value", "lf-value", "crlf-name", "colon-name"])
def test_header_injection_is_local_protocol_error_nothing_sent(headers: dict[str, str]) -> None:
    async def main() -> None:
        async with Server([Step(ok(b"again"))]) as srv, Http11Client(srv.url) as client:
            with pytest.raises(httpx.LocalProtocolError):
                await client.post("/", content=b"x", headers=headers)
            await asyncio.sleep(0.05)
            assert srv.connections == 0
            assert srv.requests == []
            await assert_usable(client, srv)

    run(main)


@pytest.mark.parametrize("path", ["no-slash", "/a b", "/a\r\nX: y", "http://h/x"])
def test_bad_path_is_rejected_before_sending(path: str) -> None:
    async def main() -> None:
        async with Server() as srv, Http11Client(srv.url) as client:
            with pytest.raises(httpx.UnsupportedProtocol):
                await client.get(path)
            await asyncio.sleep(0.05)
            assert srv.connections == 0

    run(main)


@pytest.mark.parametrize("url", ["https://127.0.0.1:8443", "ftp://127.0.0.1", "http://",
                                 "127.0.0.1:80"])
def test_non_http_base_url_is_refused_at_construction(url: str) -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        Http11Client(url)


def test_error_mid_keepalive_then_recovers_on_new_connection() -> None:
    async def main() -> None:
        steps = [Step(ok(b"1")), Step(b"HTTP/1.1 xx\r\n\r\n"), Step(ok(b"again"))]
        async with Server(steps) as srv, Http11Client(srv.url, timeout=2) as client:
            assert (await client.get("/")).content == b"1"
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/")
            await assert_usable(client, srv)
            assert srv.request_conn == [1, 1, 2]

    run(main)


# -- RevocationFetcher ------------------------------------------------------------------------


def test_fetcher_returns_body_and_sends_post_with_content_type() -> None:
    async def main() -> None:
        async with Server([Step(ok(b"ocsp-answer")), Step(ok(b"crl"))]) as srv:
            fetch = RevocationFetcher(timeout=2)
            try:
                got = await fetch(srv.url + "/ocsp", b"req", "application/ocsp-request", 1000)
                assert got == b"ocsp-answer"
                got = await fetch(srv.url + "/ca.crl?v=2", None, "", 1000)
                assert got == b"crl"
            finally:
                await fetch.aclose()
            assert srv.requests[0].startswith(b"POST /ocsp HTTP/1.1\r\n")
            assert b"\r\nContent-Type: application/ocsp-request\r\n" in srv.requests[0]
            assert srv.requests[0].endswith(b"\r\n\r\nreq")
            assert srv.requests[1].startswith(b"GET /ca.crl?v=2 HTTP/1.1\r\n")
            assert b"Content-Type" not in srv.requests[1]

    run(main)


@pytest.mark.parametrize("status", ["404 Not Found", "500 Internal Server Error",
                                    "204 No Content"])
def test_fetcher_non_200_is_revocation_source_error(status: str) -> None:
    async def main() -> None:
        answer = (b"HTTP/1.1 204 No Content\r\n\r\n" if status.startswith("204")
                  else ok(b"err", status=status))
        async with Server([Step(answer)]) as srv:
            fetch = RevocationFetcher(timeout=2)
            try:
                with pytest.raises(RevocationSourceError, match=status[:3]):
                    await fetch(srv.url + "/crl", None, "", 1000)
            finally:
                await fetch.aclose()

    run(main)


@pytest.mark.parametrize("answer", [
    ok(b"x" * 11),
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n" + b"x" * 11 + b"\r\n0\r\n\r\n",
], ids=["content-length", "chunked"])
def test_fetcher_body_over_limit_is_revocation_source_error(answer: bytes) -> None:
    async def main() -> None:
        async with Server([Step(answer), Step(ok(b"x" * 10))]) as srv:
            fetch = RevocationFetcher(timeout=2)
            try:
                with pytest.raises(RevocationSourceError):
                    await fetch(srv.url + "/crl", None, "", 10)
                assert await fetch(srv.url + "/crl", None, "", 10) == b"x" * 10
            finally:
                await fetch.aclose()

    run(main)


def test_fetcher_https_url_is_refused_without_connecting() -> None:
    async def main() -> None:
        async with Server() as srv:
            fetch = RevocationFetcher(timeout=2)
            try:
                with pytest.raises(RevocationSourceError):
                    await fetch(f"https://127.0.0.1:{srv.port}/ocsp", b"r", "x", 1000)
                with pytest.raises(RevocationSourceError):
                    await fetch("http://127.0.0.1:notaport/crl", None, "", 1000)
            finally:
                await fetch.aclose()
            await asyncio.sleep(0.05)
            assert srv.connections == 0

    run(main)


def test_fetcher_connection_refused_is_revocation_source_error() -> None:
    async def main() -> None:
        with refused_port() as s:
            fetch = RevocationFetcher(timeout=2)
            try:
                with pytest.raises(RevocationSourceError):
                    await fetch(f"http://127.0.0.1:{s.getsockname()[1]}/crl", None, "", 100)
            finally:
                await fetch.aclose()

    run(main)


def test_fetcher_timeout_is_revocation_source_error() -> None:
    async def main() -> None:
        async with Server(silent=True) as srv:
            fetch = RevocationFetcher(timeout=0.3)
            try:
                with pytest.raises(RevocationSourceError):
                    await fetch(srv.url + "/crl", None, "", 100)
            finally:
                await fetch.aclose()

    run(main)


def test_fetcher_stale_then_closed_again_is_revocation_source_error() -> None:
    async def main() -> None:
        steps = [Step(ok(b"1"), close=True), Step(b"", close=True)]
        async with Server(steps) as srv:
            fetch = RevocationFetcher(timeout=2)
            try:
                assert await fetch(srv.url + "/crl", None, "", 100) == b"1"
                await srv.closed.wait()
                await asyncio.sleep(0.05)
                with pytest.raises(RevocationSourceError):
                    await fetch(srv.url + "/crl", None, "", 100)
            finally:
                await fetch.aclose()

    run(main)


def test_fetcher_bounds_connections_per_origin() -> None:
    async def main() -> None:
        async with Server([Step(ok(b"answer"), delay=0.05)]) as srv:
            fetch = RevocationFetcher(per_origin=2, timeout=2)
            try:
                results = await asyncio.gather(*(
                    fetch(srv.url + f"/ocsp/{i}", b"q", "application/ocsp-request", 100)
                    for i in range(6)))
            finally:
                await fetch.aclose()
            assert results == [b"answer"] * 6
            assert len(srv.requests) == 6
            assert srv.max_active <= 2
            assert srv.connections == 2  # waiting requests reuse the two connections

    run(main)


def test_fetcher_reuses_connection_across_sequential_calls() -> None:
    async def main() -> None:
        async with Server([Step(ok(b"a")), Step(ok(b"b")), Step(ok(b"c"))]) as srv:
            fetch = RevocationFetcher(timeout=2)
            try:
                got = [await fetch(srv.url + "/crl", None, "", 100) for _ in range(3)]
            finally:
                await fetch.aclose()
            assert got == [b"a", b"b", b"c"]
            assert srv.connections == 1
            assert srv.request_conn == [1, 1, 1]

    run(main)
