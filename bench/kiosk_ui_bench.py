"""The kiosk screen's cost: what the UI adds to each screen change, and how long a key
press takes to come back to the page as a count.

1. ``hub``: per ``Show`` command of a full issuance driven through the real session core,
   the hub's work (state built from the session, JSON, handed to 3 subscribed pages) —
   against the core's own ``IssuanceSession.handle`` for the same events, in the same
   process.
2. ``keys``: the real web server (``kiosk.ui.app.UiServer``) on 127.0.0.1, one WebSocket
   client: a PIN key press sent → the state with the new count received (the keypad's
   whole path but the browser's paint) — against a WebSocket ping/pong on the same
   connection (the transport alone).

    .venv/bin/python bench/kiosk_ui_bench.py [ROUNDS]

Prints figures; never fails for being slow.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

from kiosk.runner import Keypad
from kiosk.session import commands as C
from kiosk.session import events as E
from kiosk.session.core import IssuanceSession
from kiosk.ui.app import UiServer
from kiosk.ui.hub import WebHub, WebUi


class Desk:
    """The runner's part the hub touches, over the real core (events handled at once)."""

    def __init__(self, hub: WebHub, timing: dict[str, list[float]]) -> None:
        self.keypad = Keypad()
        self.session = IssuanceSession("Tbench", "req-bench", "kiosk-bench",
                                       lambda exp, doc: None, pin_reset=False)
        self.timing = timing
        self.ui = WebUi(hub)
        self.ui.attach(self)  # type: ignore[arg-type]

    def put(self, ev: E.Event) -> None:
        if not isinstance(ev, E.Reply) and not self.session.accepts(type(ev)):
            return
        t0 = time.perf_counter()
        cmds = self.session.handle(ev)
        self.timing["core"].append(time.perf_counter() - t0)
        for cmd in cmds:
            if isinstance(cmd, C.Show):
                t1 = time.perf_counter()
                self.ui.show(cmd)
                self.timing["hub"].append(time.perf_counter() - t1)
            elif isinstance(cmd, C.VerifyPin):
                self.keypad.take()

    def reply(self, make: Any, *args: Any) -> None:
        self.put(make(self.session.pending, *args))


def issuance(hub: WebHub, timing: dict[str, list[float]]) -> None:
    d = Desk(hub, timing)
    d.put(E.CardInserted())
    d.reply(E.CardRead, 3, "ab" * 32)
    for k in "1234":
        hub.act({"op": "key", "key": k})
    hub.act({"op": "key", "key": "ok"})
    d.reply(E.PinResult, True, 3)
    d.reply(E.Authenticated, "S1", "131016")
    offered = [E.MenuItem(doc, 200 + 50 * i, ("honseki", "scope"))
               for i, doc in enumerate(("juminhyo", "kisai-jiko", "tax", "koseki", "fuhyo"))]
    d.reply(E.MenuReceived, (*offered, E.MenuItem("inkan", 0, (), "no_inkan")))
    hub.act({"op": "choose", "item": "juminhyo"})
    hub.act({"op": "options", "options": ["honseki"]})
    hub.act({"op": "accept"})
    for y in (100, 100, 1000):
        d.put(E.CashCredited(y))
    d.reply(E.DocumentReceived, object(), "digest")
    d.reply(E.EscrowStacked, 1200)
    d.reply(E.ChangePaid, 1000)
    d.reply(E.PrintDone)
    d.put(E.CardRemoved())
    d.reply(E.PagesReleased)
    d.reply(E.Finalized)
    hub.end()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_hub(rounds: int) -> None:
    hub = WebHub()
    for _ in range(3):
        hub.subscribe()  # three pages listening (their queues are drained below)
    timing: dict[str, list[float]] = {"core": [], "hub": []}
    for _ in range(rounds):
        issuance(hub, timing)
        for q in list(hub._clients):
            while not q.empty():
                q.get_nowait()
    core, ui = timing["core"], timing["hub"]
    print(f"hub: {rounds} issuances, {len(core)} events, {len(ui)} screen changes")
    print(f"  core handle per event   p50 {statistics.median(core) * 1e6:7.1f} µs"
          f"  p99 {pct(core, 0.99) * 1e6:7.1f} µs")
    print(f"  hub per screen change   p50 {statistics.median(ui) * 1e6:7.1f} µs"
          f"  p99 {pct(ui, 0.99) * 1e6:7.1f} µs"
          f"  ratio hub/core p50 {statistics.median(ui) / statistics.median(core):.1f}")


async def bench_keys(rounds: int) -> None:
    from websockets.asyncio.client import connect

    hub = WebHub()
    server = UiServer(hub, "127.0.0.1:0")
    await server.start()
    timing: dict[str, list[float]] = {"core": [], "hub": []}
    d = Desk(hub, timing)
    d.put(E.CardInserted())
    d.reply(E.CardRead, 3, "ab" * 32)
    press: list[float] = []
    ping: list[float] = []
    try:
        async with connect(server.url.replace("http", "ws") + "ws") as ws:
            json.loads(await ws.recv())  # the current state
            for i in range(rounds):
                key = "back" if d.keypad.count == 4 else str(i % 10)
                want = d.keypad.count - 1 if key == "back" else d.keypad.count + 1
                t0 = time.perf_counter()
                await ws.send(json.dumps({"op": "key", "key": key}))
                while True:
                    st = json.loads(await ws.recv())
                    if st["pin"]["count"] == want and st["screen"] == "pin":
                        break
                press.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await (await ws.ping())
                ping.append(time.perf_counter() - t0)
    finally:
        await server.stop()
    print(f"keys: {rounds} presses over a WebSocket on 127.0.0.1")
    print(f"  press → count back      p50 {statistics.median(press) * 1e3:6.2f} ms"
          f"  p99 {pct(press, 0.99) * 1e3:6.2f} ms")
    print(f"  ping/pong (baseline)    p50 {statistics.median(ping) * 1e3:6.2f} ms"
          f"  p99 {pct(ping, 0.99) * 1e3:6.2f} ms"
          f"  ratio p50 {statistics.median(press) / statistics.median(ping):.1f}")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    bench_hub(rounds)
    asyncio.run(bench_keys(rounds * 5))


if __name__ == "__main__":
    main()
