"""A lean asyncio HTTP/1.1 client: one keep-alive connection, requests written in one
``send``, responses parsed with Content-Length or chunked framing — for the load
generator's simulated kiosks, and (as :class:`RevocationFetcher`) for the center's OCSP
and CRL fetches on its event loop.

Why not httpx here: a load generator that shares two cores with the services it measures
must be cheap, and httpx spends about a millisecond of CPU per request in its URL, header,
cookie and connection-pool layers — as much as the center spends serving the request. Load
tools are lean for the same reason. The real kiosk keeps httpx (TLS, proxies, timeouts
per phase); this client speaks plain ``http://`` on loopback and offers only what
:class:`~kiosk.center_client.CenterClient` uses: ``post(path, content=, headers=)`` giving
an object with ``status_code`` and ``content``, and ``aclose()``. Failures are raised as
httpx's transport errors, so the client's callers treat both alike.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from cardio.pki import HTTP_TIMEOUT, IDLE_REUSE, RevocationSourceError, split_http_url

__all__ = ["REVOCATION_CONNECTIONS", "Http11Client", "Reply", "RevocationFetcher"]

MAX_HEAD = 16 * 1024
MAX_BODY = 8 * 1024 * 1024


@dataclass
class Reply:
    status_code: int
    content: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Http11Client:
    """Requests to one ``http://host:port`` origin, one at a time, over a kept-alive
    connection (a new one per request with ``keepalive=False``)."""

    def __init__(self, base_url: str, *, timeout: float = 120.0, keepalive: bool = True,
                 max_body: int = MAX_BODY) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise httpx.UnsupportedProtocol(f"only http://host[:port] origins are supported:"
                                            f" {base_url!r}")
        self.host, self.port = url.hostname, url.port or 80
        self._authority = f"{self.host}:{self.port}".encode()
        self.timeout = timeout
        self.keepalive = keepalive
        self.max_body = max_body
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """A connection is open (kept alive from the last request)."""
        return self._conn is not None

    async def __aenter__(self) -> Http11Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn[1].close()

    async def post(self, url: str, *, content: bytes,
                   headers: Mapping[str, str] | None = None) -> Reply:
        return await self.request("POST", url, content, headers)

    async def get(self, path: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        return await self.request("GET", path, b"", headers)

    async def request(self, method: str, path: str, content: bytes = b"",
                      headers: Mapping[str, str] | None = None, *,
                      max_body: int | None = None) -> Reply:
        if not path.startswith("/") or any(c in path for c in "\r\n "):
            raise httpx.UnsupportedProtocol(f"not an origin-form path: {path!r}")
        head = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self._authority,
                b"Content-Length: " + str(len(content)).encode()]
        if not self.keepalive:
            head.append(b"Connection: close")
        for k, v in (headers or {}).items():
            if "\r" in k or "\n" in k or "\r" in v or "\n" in v or ":" in k:
                raise httpx.LocalProtocolError(f"invalid header {k!r}")
            if k.lower() not in ("host", "content-length", "connection"):
                head.append(f"{k}: {v}".encode())
        data = b"\r\n".join(head) + b"\r\n\r\n" + content
        async with self._lock:
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._exchange(data, self.max_body if max_body is None
                                                else max_body)
            except TimeoutError:
                await self.aclose()
                raise httpx.ReadTimeout(f"no answer within {self.timeout} s") from None
            except BaseException:
                await self.aclose()
                raise

    async def _exchange(self, data: bytes, max_body: int) -> Reply:
        reused = self._conn is not None
        try:
            return await self._once(data, max_body)
        except _StaleConnection:
            # The server closed a kept-alive connection (its idle timeout) before any
            # answer: sent once more on a new connection. (Had the server read it after
            # all, a center refuses the copy as a replayed kiosk nonce; an OCSP query has
            # no side effects.)
            if not reused:
                raise httpx.RemoteProtocolError("the server closed the connection without"
                                                " answering") from None
        try:
            return await self._once(data, max_body)
        except _StaleConnection:
            raise httpx.RemoteProtocolError("the server closed the new connection without"
                                            " answering") from None

    async def _once(self, data: bytes, max_body: int) -> Reply:
        if self._conn is None:
            try:
                self._conn = await asyncio.open_connection(self.host, self.port,
                                                           limit=MAX_HEAD)
            except OSError as e:
                raise httpx.ConnectError(f"{self.host}:{self.port}: {e}") from None
        reader, writer = self._conn
        try:
            writer.write(data)
            await writer.drain()
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            await self.aclose()
            if not e.partial:
                raise _StaleConnection from None
            raise httpx.RemoteProtocolError("the answer ended inside its head") from None
        except asyncio.LimitOverrunError:
            await self.aclose()
            raise httpx.RemoteProtocolError("answer head too large") from None
        except (ConnectionResetError, BrokenPipeError):
            await self.aclose()
            raise _StaleConnection from None
        except OSError as e:
            await self.aclose()
            raise httpx.ReadError(str(e)) from None
        if len(raw) > MAX_HEAD:
            await self.aclose()
            raise httpx.RemoteProtocolError("answer head too large")
        status, headers = _parse_head(raw)
        try:
            body = (b"" if status in (204, 304)
                    else await self._body(reader, headers, max_body))
        except asyncio.IncompleteReadError:
            await self.aclose()
            raise httpx.RemoteProtocolError("the answer ended inside its body") from None
        except asyncio.LimitOverrunError:
            await self.aclose()
            raise httpx.RemoteProtocolError("chunk line too long") from None
        except OSError as e:
            await self.aclose()
            raise httpx.ReadError(str(e)) from None
        if not self.keepalive or headers.get("connection", "").lower() == "close":
            await self.aclose()
        return Reply(status, body, headers)

    async def _body(self, reader: asyncio.StreamReader, headers: dict[str, str],
                    max_body: int) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            size = 0
            while True:
                line = await reader.readuntil(b"\r\n")
                try:
                    n = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise httpx.RemoteProtocolError("malformed chunk size") from None
                if n == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                        pass
                    return b"".join(chunks)
                size += n
                if size > max_body:
                    raise httpx.RemoteProtocolError(f"answer larger than {max_body} bytes")
                chunks.append(await reader.readexactly(n))
                if await reader.readexactly(2) != b"\r\n":
                    raise httpx.RemoteProtocolError("malformed chunk")
        length = headers.get("content-length")
        if length is None:
            # Delimited by close (HTTP/1.0 style): read to the end, bounded.
            body = await reader.read(max_body + 1)
            rest = body
            while rest and len(body) <= max_body:
                rest = await reader.read(max_body + 1 - len(body))
                body += rest
            if len(body) > max_body:
                raise httpx.RemoteProtocolError(f"answer larger than {max_body} bytes")
            headers["connection"] = "close"
            return body
        if not length.isdigit():
            raise httpx.RemoteProtocolError(f"malformed Content-Length {length!r}")
        if int(length) > max_body:
            raise httpx.RemoteProtocolError(f"answer larger than {max_body} bytes")
        return await reader.readexactly(int(length))


REVOCATION_CONNECTIONS = 8
"""Connections a :class:`RevocationFetcher` opens to one responder at once (its checks
queue for one beyond that, within the fetch's time limit)."""


class RevocationFetcher:
    """A :data:`cardio.pki.AsyncFetcher` for an asyncio service that checks revocation on
    every request (the center's grant decisions): OCSP and CRL fetched on the event loop
    over kept-alive connections, at most ``per_origin`` per responder (a request waits for
    one rather than opening more), bounded in time and size; every failure is a
    :class:`~cardio.pki.RevocationSourceError`, which the validation turns into the next
    source or ``unknown``."""

    def __init__(self, *, per_origin: int = REVOCATION_CONNECTIONS,
                 timeout: float = HTTP_TIMEOUT) -> None:
        self.per_origin = per_origin
        self.timeout = timeout
        self._idle: dict[tuple[str, int], list[tuple[Http11Client, float]]] = {}
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = {}

    async def __call__(self, url: str, body: bytes | None, content_type: str,
                       limit: int) -> bytes:
        origin, target = split_http_url(url)
        slots = self._slots.setdefault(origin, asyncio.Semaphore(self.per_origin))
        try:
            async with asyncio.timeout(self.timeout):
                await slots.acquire()
        except TimeoutError:
            raise RevocationSourceError(f"{url}: no connection free within {self.timeout} s"
                                        ) from None
        try:
            idle = self._idle.setdefault(origin, [])
            client = None
            while idle and client is None:
                client, since = idle.pop()
                if time.monotonic() - since > IDLE_REUSE:
                    await client.aclose()
                    client = None
            if client is None:
                client = Http11Client(f"http://{origin[0]}:{origin[1]}", timeout=self.timeout)
            headers = {"Content-Type": content_type} if body is not None else {}
            try:
                reply = await client.request("POST" if body is not None else "GET", target,
                                             body or b"", headers, max_body=limit)
            except httpx.HTTPError as exc:
                await client.aclose()
                raise RevocationSourceError(f"{url}: {exc}") from None
            if client.connected:  # kept alive: reused by the next check
                idle.append((client, time.monotonic()))
        finally:
            slots.release()
        if reply.status_code != 200:
            raise RevocationSourceError(f"{url}: HTTP {reply.status_code}")
        return reply.content

    async def aclose(self) -> None:
        clients = [c for idle in self._idle.values() for c, _ in idle]
        self._idle.clear()
        for c in clients:
            await c.aclose()


class _StaleConnection(Exception):
    """The connection was closed before any byte of an answer arrived."""


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}")
        key = name.decode("latin-1").lower()
        if key in headers and key in ("content-length", "transfer-encoding"):
            raise httpx.RemoteProtocolError(f"repeated {key}")
        headers[key] = value.strip().decode("latin-1")
    status = int(parts[1])
    if status < 200:  # 1xx interim answers are not expected from the center
        raise httpx.RemoteProtocolError(f"unexpected interim status {status}")
    return status, headers
