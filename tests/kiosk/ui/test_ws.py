"""Hostile input on the kiosk screen's WebSocket (issue 22, item 11): a real client
(``websockets``) against the real UI server on 127.0.0.1. What the page never sends is
either refused and counted, with the connection kept, or answered by a clean close frame
with a code saying why — never a traceback, never a connection dropped without a close."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from kiosk.ui.app import UiServer
from kiosk.ui.hub import WebHub

Client = Any  # websockets.asyncio.client.ClientConnection


class Records(logging.Handler):
    """Every line the UI server logs (uvicorn's loggers do not propagate to the root, so
    pytest's caplog would not see its tracebacks)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.exc_info]

    def lines(self, word: str) -> list[str]:
        return [r.getMessage() for r in self.records if word in r.getMessage()]


@asynccontextmanager
async def serving(log: Records) -> AsyncIterator[tuple[WebHub, Callable[[], Any]]]:
    """A hub and its UI server on an ephemeral loopback port; ``connect()`` opens a page's
    connection (the page's own origin) and reads the first state. What the server logs
    goes to ``log`` (attached after the server configured its logging)."""
    from websockets.asyncio.client import connect

    hub = WebHub(lang="en")
    server = UiServer(hub, "127.0.0.1:0")
    loggers = [logging.getLogger(n) for n in ("uvicorn", "kiosk.ui")]
    for logger in loggers:
        logger.addHandler(log)
    await server.start()
    url = server.url.replace("http://", "ws://") + "ws"

    @asynccontextmanager
    async def page() -> AsyncIterator[Client]:
        async with connect(url, origin=server.url.rstrip("/")) as ws:  # type: ignore[arg-type]
            assert json.loads(await ws.recv())["screen"] == "start"
            yield ws

    try:
        yield hub, page
    finally:
        await server.stop()
        for logger in loggers:
            logger.removeHandler(log)


async def closed_with(ws: Client) -> int | None:
    """Wait for the server's close; the code it sent (None: no close frame came)."""
    from websockets.exceptions import ConnectionClosed

    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    return info.value.rcvd.code if info.value.rcvd is not None else None


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


def test_a_binary_frame_is_closed_with_1003_and_one_log_line() -> None:
    """Before: ``receive_text`` raised KeyError('text') and the connection was dropped
    without a close frame (and uvicorn logged a traceback)."""
    log = Records()

    async def go() -> None:
        async with serving(log) as (_hub, page):
            async with page() as ws:
                await ws.send(b"\x00\x01binary")
                assert await closed_with(ws) == 1003
            # The hub and the server carry on: the next page is served.
            async with page() as ws:
                await ws.send(json.dumps({"op": "start"}))
                assert json.loads(await ws.recv())["screen"] == "notice"
    run(go)
    assert log.tracebacks() == []
    lines = log.lines("binary")
    assert len(lines) == 1 and "1003" in lines[0], [r.getMessage() for r in log.records]


@pytest.mark.parametrize("text", [
    "not json",
    "",
    "[]",
    "1",
    '"op"',
    "null",
    '{"op": 5}',
    '{"op": ["start"]}',
    '{"op": "no-such-op"}',
    '{"op": "key", "key": {"k": 1}}',
    "NaN",
    '{"op": "start"' ,
    "[" * 2000 + "]" * 2000,                         # deeper than the JSON parser recurses
    '{"":' * 800 + "1" + "}" * 800,
])
def test_text_the_page_never_sends_is_refused_and_the_page_stays(text: str) -> None:
    """Not JSON, JSON of the wrong shape, nesting deep enough to exhaust the parser's
    recursion: refused (counted as malformed or unknown), the connection stays and the next
    good action works. Before, deep nesting raised RecursionError out of the handler."""
    log = Records()

    async def go() -> None:
        async with serving(log) as (hub, page):
            async with page() as ws:
                await ws.send(text)
                await ws.send(json.dumps({"op": "start"}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["screen"] == "notice"
            assert len(hub.errors) == 1 and hub.errors[0] in ("malformed", "unknown_op", "key")
    run(go)
    assert log.tracebacks() == [] and log.records == []


@pytest.mark.parametrize("kind, code", [
    ("huge", 1009),            # more than the 4 KiB any page message needs
    ("fragmented", 1009),      # the same, in 1 KiB fragments
    ("bad-utf8", 1007),        # a text frame that is not UTF-8
])
def test_frames_past_the_protocol_s_limits_get_a_close_frame(kind: str, code: int) -> None:
    log = Records()

    async def go() -> None:
        async with serving(log) as (hub, page):
            async with page() as ws:
                if kind == "huge":
                    await ws.send("x" * 1_000_000)
                elif kind == "fragmented":
                    await ws.send(["y" * 1024] * 64)
                else:
                    await ws.send(b'{"op": "\xff\xfe"}', text=True)
                assert await closed_with(ws) == code
            assert list(hub.errors) == [] and hub.screen == "start"
    run(go)
    assert log.tracebacks() == [] and len(log.records) <= 1  # uvicorn's line for bad UTF-8


@pytest.mark.parametrize("kind, code, word", [("binary", 1003, "binary"),
                                               ("bad-utf8", 1007, "UTF-8")])
def test_a_flood_of_refused_frames_logs_one_line_not_one_per_try(
        kind: str, code: int, word: str) -> None:
    """Anyone on the machine can reconnect and send a binary (or non-UTF-8) message again
    and again: each connection is closed with its code, the log gets a line now and then
    (here: once in 30 tries), never a traceback. uvicorn logged a traceback for every
    non-UTF-8 text message."""
    log = Records()

    async def go() -> None:
        async with serving(log) as (_hub, page):
            for _ in range(30):
                async with page() as ws:
                    await ws.send(b"\xff", text=kind == "bad-utf8")
                    assert await closed_with(ws) == code
    run(go)
    assert len(log.lines(word)) == 1 and log.tracebacks() == [], [
        r.getMessage() for r in log.records]
