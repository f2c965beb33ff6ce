"""ccTalk coin acceptor and payout hoppers (硬貨投入口・釣銭払出): framing, the credit-buffer and
payout state machines, and a thin pyserial adapter.

Wire facts (``reference/kiosk-domain.md`` §4.2, A.4): 9600 8N1 on one wire shared by every
device, so the host reads back its own bytes (the *echo*) before the answer. A packet is
``[dest][len][src][header][data…][checksum]`` whose bytes sum to 0 mod 256; a reply has
header 0. Addresses: host 1, coin acceptor 2, hoppers 3 and up (one per coin).

Why the credit logic is built this way: an acceptor keeps its last five events in a buffer
with an *event counter* (0 after power-up, then 1…255, 1…). The host credits only the events
between the counter it last accepted and the new one, so repeating a poll or reopening the
line never credits twice; a jump of more than five, or a counter back at 0, means events were
lost and is reported (as :class:`~kiosk.devices.model.Fault`), never guessed at. A credit is
believed only when two consecutive replies agree and the new buffer is the old one shifted —
an 8-bit checksum lets one garbled reply in 256 through, two identical garbled replies that
also fit the shift practically never.

Payout (``dispense hopper coins``, header 167, the unencrypted variant) is made exactly-once
by the hopper's own event counter: the host reads it before dispensing and, if the answer to
the dispense is lost, reads it again instead of sending the command twice. The paid and
unpaid counts come from the hopper's status (header 166), never from the host's arithmetic.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kiosk.devices.errors import DeviceFault, DeviceTimeout, DeviceValueError
from kiosk.devices.model import (
    CommunicationLost,
    CommunicationRestored,
    DeviceEvent,
    Fault,
    ItemRejected,
    ItemSettled,
    Outcome,
    PayoutResult,
)

HOST = 1
ACCEPTOR = 2
FIRST_HOPPER = 3
MAX_DATA = 254  # a block is at most 259 bytes: 5 of framing around the data


class Header(enum.IntEnum):
    REPLY = 0
    RESET = 1
    NAK = 5
    BUSY = 6
    REQUEST_HOPPER_STATUS = 166
    DISPENSE_HOPPER_COINS = 167
    ENABLE_HOPPER = 164
    EMERGENCY_STOP = 172
    REQUEST_PAYOUT_STATUS = 217
    MODIFY_MASTER_INHIBIT = 228
    READ_BUFFERED_CREDIT = 229
    MODIFY_INHIBIT_STATUS = 231
    REQUEST_EQUIPMENT_CATEGORY = 245
    ADDRESS_POLL = 253
    SIMPLE_POLL = 254


#: Error codes in a credit buffer (result A = 0, result B = code): the coin went back.
CREDIT_ERRORS: dict[int, str] = {
    0: "null event",
    1: "reject coin",
    2: "inhibited coin",
    5: "validation timeout",
    8: "second close coin",
    14: "coin return mechanism activated",
    20: "string fraud",
    254: "coin return lever pressed",
}

#: Coin code (1…16, its bit in the inhibit mask is code − 1) → yen. One place per fact.
COIN_YEN: dict[int, int] = {1: 10, 2: 50, 3: 100, 4: 500}
YEN_COIN: dict[int, int] = {v: k for k, v in COIN_YEN.items()}


def checksum(data: bytes) -> int:
    """The byte that makes the packet sum to 0 mod 256."""
    return (-sum(data)) & 0xFF


def encode_packet(dest: int, src: int, header: int, data: bytes = b"") -> bytes:
    if len(data) > MAX_DATA:
        raise DeviceValueError(f"ccTalk data of {len(data)} bytes exceeds {MAX_DATA}")
    body = bytes([dest, len(data), src, header]) + data
    return body + bytes([checksum(body)])


@dataclass(frozen=True)
class Packet:
    dest: int
    src: int
    header: int
    data: bytes = b""

    def encode(self) -> bytes:
        return encode_packet(self.dest, self.src, self.header, self.data)


class PacketDecoder:
    """Bytes in, packets out; never raises. A bad checksum drops one byte and rescans."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.errors = 0

    def feed(self, data: bytes) -> list[Packet]:
        self._buf += data
        buf = self._buf
        out: list[Packet] = []
        while len(buf) >= 5:
            if buf[1] > MAX_DATA:
                del buf[0]
                self.errors += 1
                continue
            size = 5 + buf[1]
            if len(buf) < size:
                break
            if sum(buf[:size]) & 0xFF:
                del buf[0]
                self.errors += 1
                continue
            out.append(Packet(buf[0], buf[2], buf[3], bytes(buf[4:size - 1])))
            del buf[:size]
        return out

    def clear(self) -> None:
        self._buf.clear()


def next_counter(counter: int) -> int:
    """The event counter after ``counter``: 0 only after power-up, then 1…255, 1, …"""
    return 1 if counter >= 255 else counter + 1


def counter_distance(old: int, new: int) -> int:
    """Events between two counter readings (``old`` ≠ 0 ≠ ``new``), accounting for the
    wrap from 255 to 1."""
    return (new - old) % 255


# -- credit buffer -------------------------------------------------------------------------


@dataclass(frozen=True)
class CreditBuffer:
    counter: int
    results: tuple[tuple[int, int], ...]  # newest first, five (A, B) pairs

    @classmethod
    def parse(cls, data: bytes) -> CreditBuffer | None:
        if len(data) != 11:
            return None
        pairs = tuple((data[1 + 2 * i], data[2 + 2 * i]) for i in range(5))
        return cls(data[0], pairs)


class CreditTracker:
    """The host's view of one acceptor's event buffer (pure). Feed it every parsed buffer;
    it returns the settled coins and faults, each event once."""

    device = "coin_acceptor"

    def __init__(self, coin_yen: dict[int, int] | None = None) -> None:
        self.coin_yen = coin_yen or COIN_YEN
        self.last: CreditBuffer | None = None  # the last buffer accepted
        self._candidate: CreditBuffer | None = None  # a moved buffer awaiting its second read
        self._items = 0
        self.lost = 0

    @property
    def awaiting_confirmation(self) -> bool:
        """A moved buffer was read once; the next reading must agree before it counts."""
        return self._candidate is not None

    def on_buffer(self, buf: CreditBuffer) -> list[DeviceEvent]:
        last = self.last
        if last is None:
            # The first reading only sets the baseline: what is already in the buffer was
            # credited by whoever read it before (a reconnect never credits twice).
            self.last = buf
            return []
        if buf == last:
            self._candidate = None
            return []
        if buf.counter == 0:
            # A restart clears the buffer; anything else with counter 0 is garble. Like a
            # credit, a restart is believed on the second agreeing reading.
            if any(a or b for a, b in buf.results) or self._candidate != buf:
                self._candidate = buf if not any(a or b for a, b in buf.results) else None
                return []
            self.last, self._candidate = buf, None
            return [Fault(self.device, "counter-reset",
                          f"acceptor restarted after event {last.counter}: "
                          "unread credits, if any, were lost")]
        # After a restart (last counter 0) counting begins again at 1.
        distance = buf.counter if last.counter == 0 else counter_distance(last.counter,
                                                                           buf.counter)
        shifted = distance > 5 or buf.results[distance:] == last.results[:5 - distance]
        if distance == 0 or not shifted:
            return []  # same counter, different content, or not a shift: garbled, ignore
        if self._candidate != buf:
            self._candidate = buf  # believe it when the next reading agrees
            return []
        self._candidate = None
        events: list[DeviceEvent] = []
        if distance > 5:
            self.lost += distance - 5
            events.append(Fault(self.device, "events-lost",
                                f"{distance - 5} coin events lost between counters "
                                f"{last.counter} and {buf.counter}"))
        for a, b in reversed(buf.results[:min(distance, 5)]):
            if a == 0:
                if b:
                    events.append(ItemRejected(self.device, CREDIT_ERRORS.get(b, f"error {b}")))
                continue
            yen = self.coin_yen.get(a)
            if yen is None:
                events.append(Fault(self.device, "unknown-coin", f"coin code {a}"))
                continue
            self._items += 1
            events.append(ItemSettled(self.device, self._items, yen, Outcome.STACKED))
        self.last = buf
        return events


# -- hopper --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HopperStatus:
    counter: int
    remaining: int  # coins of the current dispense still to pay
    paid: int  # coins paid by the last dispense
    unpaid: int  # coins the last dispense could not pay

    @classmethod
    def parse(cls, data: bytes) -> HopperStatus | None:
        if len(data) != 4:
            return None
        return cls(*data)


# -- the thin adapter ----------------------------------------------------------------------


class CcTalkBus:
    """One ccTalk bus on a serial line (pyserial, 9600 8N1), with the echo stripped and every
    transaction retried a bounded number of times."""

    def __init__(self, port: str, *, timeout: float = 0.1, retries: int = 3,
                 baudrate: int = 9600) -> None:
        from kiosk.devices.portlock import open_serial

        self.port = port
        self.timeout = timeout
        self.retries = retries
        # One controller per bus (lock file + TIOCEXCL): see kiosk.devices.portlock.
        self._port = open_serial(port, "ccTalk bus", baudrate=baudrate, timeout=timeout)
        self._serial = self._port.serial
        self._decoder = PacketDecoder()
        self.failures = 0  # transactions that got no valid answer

    def close(self) -> None:
        self._port.close()

    def transact(self, dest: int, header: int, data: bytes = b"") -> Packet | None:
        """Send once; return the reply, or None when it did not come back intact."""
        try:
            return self._transact(dest, header, data)
        except OSError:  # the line itself failed: like no answer
            time.sleep(self.timeout)
            return None

    def _transact(self, dest: int, header: int, data: bytes) -> Packet | None:
        request = encode_packet(dest, HOST, header, data)
        self._serial.reset_input_buffer()
        self._decoder.clear()
        self._serial.write(request)
        deadline = time.monotonic() + self.timeout
        echo_seen = False
        while time.monotonic() < deadline:
            chunk = self._serial.read(max(1, self._serial.in_waiting))
            if not chunk:
                continue
            for packet in self._decoder.feed(chunk):
                if not echo_seen:
                    if packet.encode() != request:
                        return None  # collision or garble on the wire
                    echo_seen = True
                    continue
                if packet.dest == HOST and packet.src == dest and packet.header in (
                        Header.REPLY, Header.NAK, Header.BUSY):
                    return packet
                return None
        return None

    def call(self, dest: int, header: int, data: bytes = b"") -> Packet:
        """:meth:`transact` with retries, for idempotent requests only."""
        for _ in range(self.retries):
            reply = self.transact(dest, header, data)
            if reply is not None and reply.header == Header.REPLY:
                return reply
        self.failures += 1
        raise DeviceTimeout(f"ccTalk device {dest} on {self.port}: no valid answer to "
                            f"header {header}")


class CoinAcceptorDriver:
    """A ccTalk coin acceptor: enable/inhibit, and poll the credit buffer."""

    device = "coin_acceptor"

    def __init__(self, bus: CcTalkBus, address: int = ACCEPTOR,
                 tracker: CreditTracker | None = None) -> None:
        self.bus = bus
        self.address = address
        self.tracker = tracker or CreditTracker()
        self.online = True
        self._misses = 0

    def set_enabled(self, enabled: bool, coins: Sequence[int] = (10, 50, 100, 500)) -> None:
        """Enable the coins (or inhibit all). A tracker without a baseline takes it first,
        while the acceptor is still inhibited: a coin taken before the baseline would be
        mistaken for an old event and never credited."""
        if enabled and self.tracker.last is None:
            while self.tracker.last is None:
                reply = self.bus.call(self.address, Header.READ_BUFFERED_CREDIT)
                buf = CreditBuffer.parse(reply.data)
                if buf is None:
                    raise DeviceTimeout(f"coin acceptor {self.address}: malformed buffer")
                self.tracker.on_buffer(buf)
        mask = 0
        if enabled:
            for yen in coins:
                mask |= 1 << (YEN_COIN[yen] - 1)
        self.bus.call(self.address, Header.MODIFY_INHIBIT_STATUS,
                      bytes([mask & 0xFF, mask >> 8]))
        self.bus.call(self.address, Header.MODIFY_MASTER_INHIBIT, bytes([1 if enabled else 0]))

    def poll(self) -> list[DeviceEvent]:
        """Read the buffer (twice when it moved: see the module docstring)."""
        events: list[DeviceEvent] = []
        for _ in range(3):
            reply = self.bus.transact(self.address, Header.READ_BUFFERED_CREDIT)
            buf = CreditBuffer.parse(reply.data) if reply is not None else None
            if buf is None:
                self._misses += 1
                if self._misses >= 3 and self.online:
                    self.online = False
                    events.append(CommunicationLost(self.device))
                continue
            self._misses = 0
            if not self.online:
                self.online = True
                events.append(CommunicationRestored(self.device))
            events += self.tracker.on_buffer(buf)
            if not self.tracker.awaiting_confirmation:
                break
        return events


class HopperDriver:
    """A ccTalk payout hopper holding one coin value."""

    def __init__(self, bus: CcTalkBus, address: int, coin_yen: int) -> None:
        self.bus = bus
        self.address = address
        self.coin_yen = coin_yen
        self.device = f"hopper_{coin_yen}"

    def status(self) -> HopperStatus:
        for _ in range(self.bus.retries):
            reply = self.bus.call(self.address, Header.REQUEST_HOPPER_STATUS)
            status = HopperStatus.parse(reply.data)
            if status is not None:
                return status
        raise DeviceTimeout(f"hopper {self.address}: malformed status")

    def status_until(self, deadline: float) -> HopperStatus:
        """The status, asked again until ``deadline``: mid-payout the line may drop for a
        while; the hopper keeps counting, so keep asking rather than guess what it paid
        (recovery asks the same way)."""
        while True:
            try:
                return self.status()
            except DeviceTimeout:
                if time.monotonic() > deadline:
                    raise

    def dispense(self, count: int, *, timeout: float = 30.0,
                 poll: float = 0.005) -> PayoutResult:
        """Pay ``count`` coins exactly once; the result is what the hopper counted."""
        if not 0 < count <= 255:
            raise DeviceValueError("a dispense is 1…255 coins")
        deadline = time.monotonic() + timeout
        before = self.status_until(deadline)
        self.bus.call(self.address, Header.ENABLE_HOPPER, bytes([0xA5]))
        expected = next_counter(before.counter)
        sent = 0
        status = before
        while status.counter == before.counter:
            if sent >= self.bus.retries or time.monotonic() > deadline:
                raise DeviceTimeout(f"hopper {self.address} did not take the dispense")
            self.bus.transact(self.address, Header.DISPENSE_HOPPER_COINS, bytes([count]))
            sent += 1
            # The counter, not the reply, says whether the hopper took it.
            status = self.status_until(deadline)
        if status.counter != expected:
            raise DeviceFault(f"hopper {self.address}: event counter jumped from "
                              f"{before.counter} to {status.counter} (double dispense?)")
        while status.remaining:
            if time.monotonic() > deadline:
                raise DeviceTimeout(f"hopper {self.address}: payout did not finish")
            time.sleep(poll)
            status = self.status_until(deadline)
        return PayoutResult(self.device, self.coin_yen, status.paid, status.unpaid)


def poll_until(poll: Callable[[], list[DeviceEvent]], predicate: Callable[[], bool], *,
               timeout: float) -> list[DeviceEvent]:
    """Call ``poll`` until ``predicate()``; :class:`DeviceTimeout` after ``timeout``."""
    events: list[DeviceEvent] = []
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise DeviceTimeout("ccTalk device made no progress")
        events += poll()
    return events
