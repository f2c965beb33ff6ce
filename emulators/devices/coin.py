"""An emulated ccTalk bus: a coin acceptor (address 2) and payout hoppers (3…, one per coin),
each with its own state, sharing one line that echoes every byte the host sends.

The devices reuse only the packet codec of :mod:`kiosk.devices.cctalk`; their behaviour is
written here from the device's side. The acceptor takes at most one coin per
``coin_polls`` credit polls (a real one validates 2–3 coins a second while the host polls
every 100 ms or so), which is what keeps its five-event buffer from overflowing in normal
use. Hoppers pay one coin per ``coin_period`` seconds, computed lazily when asked, so no
thread ticks behind the test's back.

Physical truth for the tests: :attr:`CoinAcceptor.cashbox`, :attr:`CoinAcceptor.returned`,
and :attr:`Hopper.paid_total`.

Faults: ``corrupt`` / ``duplicate`` (the next reply on the bus), ``disconnect`` (half the next
reply, then the devices are deaf for N packets; the echo stays, as it is electrical),
``power_cycle`` (the acceptor restarts: counter 0, unread events gone, inhibited),
``lose_events`` (N coins pass while the host is not looking: the counter jumps by N),
``counter`` (set the acceptor's counter, to exercise the wrap), ``hopper_empty`` (a hopper
runs dry now or after N more coins).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from emulators.devices.errors import UnknownFault
from kiosk.devices.cctalk import (
    COIN_YEN,
    HOST,
    YEN_COIN,
    Header,
    Packet,
    PacketDecoder,
    encode_packet,
    next_counter,
)

FAULTS = ("corrupt", "duplicate", "disconnect", "power_cycle", "lose_events", "counter",
          "hopper_empty")

#: Hopper addresses and the coin each holds (¥500, ¥100, ¥50, ¥10).
HOPPERS: dict[int, int] = {3: 500, 4: 100, 5: 50, 6: 10}


@dataclass
class CoinAcceptor:
    address: int = 2
    coin_polls: int = 3
    counter: int = 0
    results: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)] * 5)
    master_enabled: bool = False
    inhibit_mask: int = 0  # bit set = coin enabled (ccTalk's sense of "inhibit status")
    queue: deque[int] = field(default_factory=deque)
    cashbox: list[int] = field(default_factory=list)
    returned: list[int] = field(default_factory=list)
    _since: int = 99

    def _event(self, a: int, b: int) -> None:
        self.counter = next_counter(self.counter)
        self.results = [(a, b), *self.results[:4]]

    def poll_tick(self) -> None:
        self._since += 1
        if not self.queue or self._since < self.coin_polls:
            return
        self._since = 0
        yen = self.queue.popleft()
        code = YEN_COIN.get(yen)
        if code is None:
            self.returned.append(yen)
            self._event(0, 1)  # reject coin
        elif not self.master_enabled or not self.inhibit_mask >> (code - 1) & 1:
            self.returned.append(yen)
            self._event(0, 2)  # inhibited coin
        else:
            self.cashbox.append(yen)
            self._event(code, 1)

    def handle(self, p: Packet) -> bytes | None:
        h = p.header
        if h == Header.SIMPLE_POLL:
            return b""
        if h == Header.REQUEST_EQUIPMENT_CATEGORY:
            return b"Coin Acceptor"
        if h == Header.READ_BUFFERED_CREDIT:
            self.poll_tick()
            return bytes([self.counter, *(x for pair in self.results for x in pair)])
        if h == Header.MODIFY_INHIBIT_STATUS and len(p.data) == 2:
            self.inhibit_mask = p.data[0] | p.data[1] << 8
            return b""
        if h == Header.MODIFY_MASTER_INHIBIT and len(p.data) == 1:
            self.master_enabled = bool(p.data[0] & 1)
            return b""
        if h == Header.RESET:
            self.power_cycle()
            return b""
        return None  # no reply: unknown header

    def power_cycle(self) -> None:
        self.counter = 0
        self.results = [(0, 0)] * 5
        self.master_enabled = False
        self.inhibit_mask = 0


@dataclass
class Hopper:
    address: int
    coin_yen: int
    stock: int = 200
    coin_period: float = 0.002
    counter: int = 0
    enabled: bool = False
    remaining: int = 0
    paid: int = 0
    unpaid: int = 0
    paid_total: int = 0
    empty_after: int | None = None
    _started: float = 0.0
    _at_start: int = 0
    _asked: int = 0

    def _advance(self) -> None:
        if not self.remaining:
            return
        due = self._asked
        if self.coin_period:
            due = min(due, int((time.monotonic() - self._started) / self.coin_period))
        while self.paid < due:
            if self.stock <= 0 or self.empty_after == 0:
                self.unpaid += self.remaining
                self.remaining = 0
                return
            self.stock -= 1
            if self.empty_after is not None:
                self.empty_after -= 1
            self.paid += 1
            self.paid_total += 1
            self.remaining -= 1
            if not self.remaining:
                return

    def handle(self, p: Packet) -> bytes | None:
        self._advance()
        h = p.header
        if h == Header.SIMPLE_POLL:
            return b""
        if h == Header.REQUEST_EQUIPMENT_CATEGORY:
            return b"Payout"
        if h == Header.ENABLE_HOPPER and p.data == b"\xa5":
            self.enabled = True
            return b""
        if h == Header.DISPENSE_HOPPER_COINS and len(p.data) == 1:
            if not self.enabled or self.remaining:
                return None  # not enabled or busy: a hopper ignores it
            self.enabled = False
            self.counter = next_counter(self.counter)
            self._asked = p.data[0]
            self.remaining, self.paid, self.unpaid = p.data[0], 0, 0
            self._started = time.monotonic()
            self._advance()
            return bytes([p.data[0]])
        if h == Header.REQUEST_HOPPER_STATUS:
            return bytes([self.counter, self.remaining, self.paid, self.unpaid])
        if h == Header.EMERGENCY_STOP:
            left = self.remaining
            self.unpaid += left
            self.remaining = 0
            return bytes([left])
        if h == Header.REQUEST_PAYOUT_STATUS:
            return bytes([1 if self.stock == 0 else 0])
        return None


class CcTalkBusEmulator:
    """The bus: every byte from the host is echoed, then the addressed device answers."""

    def __init__(self, hoppers: dict[int, int] | None = None, *, stock: int = 200,
                 coin_period: float = 0.002) -> None:
        self.acceptor = CoinAcceptor()
        self.hoppers = {addr: Hopper(addr, yen, stock=stock, coin_period=coin_period)
                        for addr, yen in (hoppers or HOPPERS).items()}
        self._decoder = PacketDecoder()
        self._lock = threading.Lock()
        self.deaf = 0
        self._half = False
        self.corrupt = 0
        self.duplicate = 0
        self.packets = 0

    # -- the customer and the test -------------------------------------------------------
    def insert(self, yen: int) -> None:
        with self._lock:
            self.acceptor.queue.append(yen)

    def hopper(self, coin_yen: int) -> Hopper:
        return next(h for h in self.hoppers.values() if h.coin_yen == coin_yen)

    def arm(self, fault: str, count: int = 1, **kw: Any) -> None:
        with self._lock:
            if fault == "corrupt":
                self.corrupt += count
            elif fault == "duplicate":
                self.duplicate += count
            elif fault == "disconnect":
                self._half = True
                self.deaf = int(kw.get("packets", 6))
            elif fault == "power_cycle":
                self.acceptor.power_cycle()
            elif fault == "lose_events":
                for _ in range(count):
                    self.acceptor.cashbox.append(100)
                    self.acceptor._event(YEN_COIN[100], 1)
            elif fault == "counter":
                self.acceptor.counter = int(kw["value"])
            elif fault == "hopper_empty":
                hopper = self.hopper(int(kw.get("coin", 100)))
                hopper.empty_after = int(kw.get("after", 0))
            else:
                raise UnknownFault(f"unknown ccTalk fault {fault!r}; one of {FAULTS}")

    def unsettled(self) -> int:
        with self._lock:
            return sum(self.acceptor.queue)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            a = self.acceptor
            return {"counter": a.counter, "queue": list(a.queue), "cashbox": list(a.cashbox),
                    "returned": list(a.returned), "master_enabled": a.master_enabled,
                    "hoppers": {h.coin_yen: {"stock": h.stock, "paid_total": h.paid_total,
                                             "counter": h.counter}
                                for h in self.hoppers.values()}}

    # -- the line ------------------------------------------------------------------------
    def receive(self, data: bytes) -> bytes:
        with self._lock:
            out = bytes(data)  # the echo
            for packet in self._decoder.feed(data):
                out += self._answer(packet)
            return out

    def _answer(self, packet: Packet) -> bytes:
        self.packets += 1
        if packet.src != HOST:
            return b""
        if self.deaf and not self._half:
            self.deaf -= 1
            return b""
        device: CoinAcceptor | Hopper | None = (
            self.acceptor if packet.dest == self.acceptor.address
            else self.hoppers.get(packet.dest))
        if device is None:
            return b""
        data = device.handle(packet)
        if data is None:
            return b""
        raw = encode_packet(HOST, packet.dest, Header.REPLY, data)
        if self._half:
            self._half = False
            return raw[: len(raw) // 2]
        if self.corrupt:
            self.corrupt -= 1
            return raw[:-1] + bytes([raw[-1] ^ 0x33])
        if self.duplicate:
            self.duplicate -= 1
            return raw + raw
        return raw


__all__ = ["COIN_YEN", "FAULTS", "HOPPERS", "CcTalkBusEmulator", "CoinAcceptor", "Hopper"]
