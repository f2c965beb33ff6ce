"""JCM ID-003 bill validator (紙幣識別機): framing, the host's poll/escrow state machine, and a
thin pyserial adapter.

Wire facts (``reference/kiosk-domain.md`` §4.2, A.4): 9600 bps 8E1; a frame is
``SYNC 0xFC, LNG, CMD, DATA…, CRC`` where LNG counts the whole frame (5 bytes with no data)
and the CRC is CRC-16/KERMIT (reflected 0x8408, init 0) sent low byte first. The host drives
everything: it sends STATUS REQUEST (0x11) and the unit answers with its state; operation
commands (RESET, STACK-1, RETURN, HOLD …) are answered by ACK (0x50); setting commands
(0xC0…) are echoed back; the host answers VEND VALID (0x15) with ACK and nothing more.

Money rule (why the core looks the way it does): a note becomes *credit* only at VEND VALID
(or, if that report was lost, when the unit says the note is in the stacker) and only for a
note this host saw in escrow and told to stack — so a repeated VEND VALID, a corrupted frame
that happens to pass the CRC, or a reset can never credit twice. Every note seen in escrow
ends in exactly one :class:`~kiosk.devices.model.Outcome`.

The escrow codes and inhibit bits for yen (``ESCROW_YEN``, ``INHIBIT_BIT``) are the one
place a unit's country table lives; a real unit's table comes with its software version.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kiosk.devices.errors import DeviceError, DeviceTimeout, DeviceValueError
from kiosk.devices.model import (
    CommunicationLost,
    CommunicationRestored,
    DeviceEvent,
    Fault,
    ItemEscrowed,
    ItemRejected,
    ItemSettled,
    Outcome,
)

SYNC = 0xFC
MIN_FRAME = 5
MAX_FRAME = 255  # LNG is one byte


def crc16_kermit(data: bytes, crc: int = 0) -> int:
    """CRC-16/KERMIT (poly 0x1021 reflected = 0x8408, init 0, no final xor)."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


class Cmd(enum.IntEnum):
    """Host → unit commands."""

    STATUS_REQUEST = 0x11
    ACK = 0x50
    RESET = 0x40
    STACK_1 = 0x41
    STACK_2 = 0x42
    RETURN = 0x43
    HOLD = 0x44
    WAIT = 0x45
    SET_DENOMINATION = 0xC0  # 2 bytes: bit set = denomination inhibited
    SET_SECURITY = 0xC1
    SET_INHIBIT = 0xC3  # 1 byte: 0 accept, 1 inhibit all
    SET_DIRECTION = 0xC4
    SET_OPTIONAL = 0xC5
    GET_VERSION = 0x88


class Status(enum.IntEnum):
    """Unit → host status codes (the reply to STATUS REQUEST)."""

    IDLING = 0x11
    ACCEPTING = 0x12
    ESCROW = 0x13
    STACKING = 0x14
    VEND_VALID = 0x15
    STACKED = 0x16
    REJECTING = 0x17
    RETURNING = 0x18
    HOLDING = 0x19
    DISABLED = 0x1A
    INITIALIZE = 0x1B
    POWER_UP = 0x40
    POWER_UP_BILL_IN_ACCEPTOR = 0x41
    POWER_UP_BILL_IN_STACKER = 0x42
    STACKER_FULL = 0x43
    STACKER_OPEN = 0x44
    JAM_IN_ACCEPTOR = 0x45
    JAM_IN_STACKER = 0x46
    PAUSE = 0x47
    CHEATED = 0x48
    FAILURE = 0x49
    COMMUNICATION_ERROR = 0x4A
    INVALID_COMMAND = 0x4B
    ACK = 0x50


REJECT_REASONS: dict[int, str] = {
    0x71: "insertion error",
    0x72: "magnetic pattern error",
    0x73: "residual bill in head",
    0x74: "calibration/magnification error",
    0x75: "conveying error",
    0x76: "denomination discrimination error",
    0x77: "photo pattern error",
    0x78: "photo level error",
    0x79: "return by inhibit",
    0x7A: "operation error",
    0x7C: "length error",
    0x7D: "photo pattern error 2",
    0x7E: "true bill feature error",
}

#: Escrow denomination code → yen (our JPY table; one place per fact).
ESCROW_YEN: dict[int, int] = {0x61: 1000, 0x62: 2000, 0x63: 5000, 0x64: 10000}
YEN_ESCROW: dict[int, int] = {v: k for k, v in ESCROW_YEN.items()}
#: Bit in the 2-byte SET_DENOMINATION mask that inhibits a denomination.
INHIBIT_BIT: dict[int, int] = {1000: 0, 2000: 1, 5000: 2, 10000: 3}

_ERROR_KINDS: dict[int, str] = {
    Status.STACKER_FULL: "cassette-full",
    Status.STACKER_OPEN: "cassette-open",
    Status.JAM_IN_ACCEPTOR: "jam",
    Status.JAM_IN_STACKER: "jam",
    Status.PAUSE: "pause",
    Status.CHEATED: "cheat",
    Status.FAILURE: "failure",
}


def encode_frame(cmd: int, data: bytes = b"") -> bytes:
    """One complete frame: SYNC, LNG, CMD, DATA, CRC (low byte first)."""
    length = MIN_FRAME + len(data)
    if length > MAX_FRAME:
        raise DeviceValueError(f"ID-003 frame of {length} bytes exceeds {MAX_FRAME}")
    body = bytes([SYNC, length, cmd]) + data
    crc = crc16_kermit(body)
    return body + bytes([crc & 0xFF, crc >> 8])


@dataclass(frozen=True)
class Frame:
    cmd: int
    data: bytes = b""

    def encode(self) -> bytes:
        return encode_frame(self.cmd, self.data)


class FrameDecoder:
    """Bytes in, frames out. Never raises: garbage is skipped one byte at a time until a
    SYNC starts a frame whose CRC holds, and counted in :attr:`errors`."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.errors = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        buf = self._buf
        while buf:
            if buf[0] != SYNC:
                i = buf.find(SYNC)
                del buf[: len(buf) if i < 0 else i]
                self.errors += 1
                continue
            if len(buf) < 2:
                break
            length = buf[1]
            if length < MIN_FRAME:
                del buf[0]
                self.errors += 1
                continue
            if len(buf) < length:
                break
            frame = bytes(buf[:length])
            crc = frame[-2] | frame[-1] << 8
            if crc16_kermit(frame[:-2]) != crc:
                del buf[0]
                self.errors += 1
                continue
            del buf[:length]
            out.append(Frame(frame[2], frame[3:-2]))
        return out

    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def clear(self) -> None:
        self._buf.clear()


# -- the host's state machine ---------------------------------------------------------------


class Expect(enum.Enum):
    """What answer a request waits for."""

    STATUS = "status"
    ACK = "ack"
    ECHO = "echo"
    NOTHING = "nothing"


@dataclass(frozen=True)
class Request:
    frame: Frame
    expect: Expect

    def encode(self) -> bytes:
        return self.frame.encode()


@dataclass
class _Bill:
    item: int
    yen: int
    stack_sent: bool = False
    return_sent: bool = False
    stacking: bool = False
    returning: bool = False
    escrow_polls: int = 0  # polls held in escrow (awaiting decide)
    stuck_polls: int = 0  # polls still in escrow after STACK/RETURN was acknowledged
    decision: bool | None = None
    outcome: Outcome | None = None


#: Polls with a note still in escrow after the unit acknowledged STACK/RETURN before the host
#: declares it stuck.
STUCK_POLLS = 8
#: Status polls between HOLD commands while a note is held in escrow.
HOLD_EVERY = 20
#: Consecutive unanswered requests before the host reports communication lost.
LOST_AFTER = 3


class Id003Host:
    """The host side of ID-003 as a pure object: :meth:`next_request` says what to send,
    :meth:`on_reply` takes the unit's answer (or ``None`` for none/garbled) and returns
    device events. ``accept(yen)`` decides for a note in escrow: True stack, False return,
    None hold it there until :meth:`decide` (the reference's advice: keep the note that
    completes a payment in escrow until the issuance commits, so a failure hands it back
    rather than making a refund). ``enabled`` says whether the unit takes notes at all."""

    device = "bill_validator"

    def __init__(self, accept: Callable[[int], bool | None] | None = None,
                 denominations: Iterable[int] = (1000, 2000, 5000, 10000)) -> None:
        self.accept: Callable[[int], bool | None] = accept or (lambda yen: True)
        self.denominations = frozenset(denominations)
        self.enabled = False
        self._ops: deque[Request] = deque()
        self._bill: _Bill | None = None
        self._items = 0
        self._misses = 0
        self.online = True
        self.status: int | None = None
        self._last_fault: int | None = None
        self._reset_sent = False
        self._configure()

    # -- what the caller asks ----------------------------------------------------------------
    def set_enabled(self, enabled: bool) -> None:
        """Accept notes (True) or inhibit the unit (False); sent on the next request."""
        if enabled != self.enabled:
            self.enabled = enabled
            self._queue(Request(Frame(Cmd.SET_INHIBIT, bytes([0 if enabled else 1])),
                                Expect.ECHO))

    @property
    def bill_in_flight(self) -> bool:
        """A note was seen in escrow and has no outcome yet."""
        return self._bill is not None and self._bill.outcome is None

    @property
    def items_seen(self) -> int:
        """Notes seen in escrow so far (item numbers are 1, 2, …): a caller that records
        this at a session's start knows which items arrived before it."""
        return self._items

    @property
    def held_item(self) -> int:
        """Item number of the note held in escrow awaiting :meth:`decide` (0 if none)."""
        return self._bill.item if self.held_yen and self._bill is not None else 0

    @property
    def held_yen(self) -> int:
        """Yen of a note held in escrow awaiting :meth:`decide` (0 if none)."""
        bill = self._bill
        if (bill is None or bill.outcome is not None or bill.stack_sent or bill.return_sent
                or bill.decision is not None):
            return 0
        return bill.yen

    def decide(self, stack: bool) -> None:
        """Stack (True) or hand back (False) the note held in escrow; applied at the next
        poll. Without a held note this does nothing."""
        if self.held_yen:
            assert self._bill is not None
            self._bill.decision = stack

    @property
    def configured(self) -> bool:
        """Every queued setting and operation was acknowledged."""
        return not self._ops

    @property
    def idle(self) -> bool:
        """Nothing in flight, nothing queued, and the unit reported a resting state."""
        return (not self.bill_in_flight and not self._ops
                and self.status in (Status.IDLING, Status.DISABLED))

    # -- the protocol ----------------------------------------------------------------------
    def next_request(self) -> Request:
        if self._ops:
            return self._ops[0]
        return Request(Frame(Cmd.STATUS_REQUEST), Expect.STATUS)

    def on_reply(self, request: Request, reply: Frame | None) -> list[DeviceEvent]:
        events: list[DeviceEvent] = []
        if request.expect is Expect.NOTHING:
            self._pop(request)
            return events
        good = reply is not None and self._answers(request, reply)
        if not good:
            self._misses += 1
            if self._misses >= LOST_AFTER and self.online:
                self.online = False
                events.append(CommunicationLost(self.device))
            if reply is not None and reply.cmd == Status.INVALID_COMMAND:
                self._pop(request)  # the unit refused it; do not retry forever
            return events
        assert reply is not None
        self._misses = 0
        if not self.online:
            self.online = True
            events.append(CommunicationRestored(self.device))
        if request.expect is Expect.STATUS:
            events += self._on_status(reply)
        else:
            self._pop(request)
            if request.frame.cmd == Cmd.RESET:
                self._reset_sent = False
                self._configure()
        return events

    # -- internals ---------------------------------------------------------------------------
    def _answers(self, request: Request, reply: Frame) -> bool:
        if request.expect is Expect.STATUS:
            try:
                Status(reply.cmd)
            except ValueError:
                return False
            return reply.cmd not in (Status.ACK, Status.INVALID_COMMAND,
                                     Status.COMMUNICATION_ERROR)
        if request.expect is Expect.ACK:
            return reply.cmd == Status.ACK and not reply.data
        return reply == request.frame  # settings are echoed

    def _queue(self, request: Request, first: bool = False) -> None:
        if request in self._ops:
            return
        if first:
            self._ops.appendleft(request)
        else:
            self._ops.append(request)

    def _pop(self, request: Request) -> None:
        if self._ops and self._ops[0] == request:
            self._ops.popleft()

    def _configure(self) -> None:
        mask = 0
        for yen, bit in INHIBIT_BIT.items():
            if yen not in self.denominations:
                mask |= 1 << bit
        self._queue(Request(Frame(Cmd.SET_DENOMINATION, bytes([mask & 0xFF, mask >> 8])),
                            Expect.ECHO))
        self._queue(Request(Frame(Cmd.SET_INHIBIT, bytes([0 if self.enabled else 1])),
                            Expect.ECHO))

    def _reset(self) -> None:
        if not self._reset_sent:
            self._reset_sent = True
            self._ops.clear()
            self._queue(Request(Frame(Cmd.RESET), Expect.ACK))

    def _settle(self, outcome: Outcome, reason: str = "") -> list[DeviceEvent]:
        bill = self._bill
        if bill is None or bill.outcome is not None:
            return []
        bill.outcome = outcome
        return [ItemSettled(self.device, bill.item, bill.yen, outcome, reason)]

    def _on_status(self, reply: Frame) -> list[DeviceEvent]:
        status = Status(reply.cmd)
        previous, self.status = self.status, status
        events: list[DeviceEvent] = []
        if status not in _ERROR_KINDS:
            self._last_fault = None
        bill = self._bill if self.bill_in_flight else None
        if status in (Status.IDLING, Status.DISABLED, Status.ACCEPTING):
            if bill is not None:
                # At rest with a note we never saw stacked: the unit handed it back (it
                # cannot stack without our ACK of VEND VALID), whether we asked it to or a
                # held note's escrow timed out.
                events += self._settle(Outcome.RETURNED)
            if status == Status.IDLING and not self.enabled:
                self._queue(Request(Frame(Cmd.SET_INHIBIT, b"\x01"), Expect.ECHO))
            elif status == Status.DISABLED and self.enabled:
                self._queue(Request(Frame(Cmd.SET_INHIBIT, b"\x00"), Expect.ECHO))
        elif status == Status.ESCROW:
            code = reply.data[0] if reply.data else -1
            if bill is not None and (bill.stack_sent or bill.return_sent) and (
                    ESCROW_YEN.get(code, 0) != bill.yen):
                # A different note in escrow: ours left without our seeing it go, and it
                # cannot have been stacked (VEND VALID waits for our ACK), so it went back.
                events += self._settle(Outcome.RETURNED)
                bill = None
            if bill is None:
                self._items += 1
                yen = ESCROW_YEN.get(code, 0)
                self._bill = bill = _Bill(self._items, yen)
                if yen:
                    events.append(ItemEscrowed(self.device, bill.item, yen))
            if not bill.stack_sent and not bill.return_sent:
                valid = bool(bill.yen) and bill.yen in self.denominations
                choice = (bill.decision if bill.decision is not None
                          else self.accept(bill.yen)) if valid else False
                if choice is None:
                    # Held until decide(), asked again at every poll; a unit returns a note
                    # left in escrow too long, so HOLD is repeated to keep it there.
                    bill.escrow_polls += 1
                    if bill.escrow_polls % HOLD_EVERY == 0:
                        self._queue(Request(Frame(Cmd.HOLD), Expect.ACK))
                elif choice:
                    bill.stack_sent = True
                    self._queue(Request(Frame(Cmd.STACK_1), Expect.ACK))
                else:
                    bill.return_sent = True
                    self._queue(Request(Frame(Cmd.RETURN), Expect.ACK))
            else:
                bill.stuck_polls += 1
                if bill.stuck_polls >= STUCK_POLLS:
                    events.append(Fault(self.device, "stuck-in-escrow",
                                        f"¥{bill.yen} did not leave escrow"))
                    events += self._settle(Outcome.REFUND_DUE, "stuck in escrow")
                    self._reset()
        elif status == Status.STACKING:
            if bill is not None:
                bill.stacking = True
        elif status in (Status.VEND_VALID, Status.STACKED):
            if status == Status.VEND_VALID:
                self._queue(Request(Frame(Cmd.ACK), Expect.NOTHING), first=True)
            if bill is not None and bill.stack_sent:
                events += self._settle(Outcome.STACKED)
            elif bill is None and status == Status.VEND_VALID and self._bill is None:
                events.append(Fault(self.device, "vend-valid-unknown",
                                    "VEND VALID for a note never seen in escrow"))
        elif status == Status.REJECTING:
            # Reported once per note: the unit stays in REJECTING for several polls.
            if previous != Status.REJECTING:
                code = reply.data[0] if reply.data else 0
                events.append(ItemRejected(self.device,
                                           REJECT_REASONS.get(code, f"0x{code:02X}")))
        elif status == Status.RETURNING:
            if bill is not None:
                bill.returning = True
        elif status in (Status.POWER_UP, Status.POWER_UP_BILL_IN_ACCEPTOR,
                        Status.POWER_UP_BILL_IN_STACKER):
            if status == Status.POWER_UP_BILL_IN_STACKER:
                if bill is not None:
                    events += self._settle(Outcome.STACKED, "stacked at power-up")
                elif self._bill is None or self._bill.outcome is not Outcome.STACKED:
                    events.append(Fault(self.device, "unknown-bill-stacked",
                                        "a note of unknown value went to the stacker"))
            elif bill is not None:
                events += self._settle(Outcome.RETURNED, "returned at power-up")
            events.append(Fault(self.device, "power-up", status.name.lower()))
            self._reset()
        elif status in _ERROR_KINDS:
            if status != self._last_fault:
                self._last_fault = status
                events.append(Fault(self.device, _ERROR_KINDS[status], status.name.lower()))
            if bill is not None:
                if status == Status.CHEATED:
                    events += self._settle(Outcome.RETURNED, "cheat: note pulled back")
                elif status != Status.STACKER_FULL:
                    events += self._settle(Outcome.REFUND_DUE, status.name.lower())
            if status != Status.STACKER_FULL:
                self._reset()
        return events


# -- the thin adapter ---------------------------------------------------------------------


class Id003Driver:
    """The host core on a real serial line (pyserial, 9600 8E1)."""

    def __init__(self, port: str, host: Id003Host | None = None, *,
                 timeout: float = 0.2, baudrate: int = 9600) -> None:
        import serial  # the adapter's one dependency; the core needs none

        from kiosk.devices.portlock import open_serial

        self.port = port
        self.host = host or Id003Host()
        self.timeout = timeout
        # Held by this controller alone (lock file + TIOCEXCL): a second controller is
        # refused before it sends a byte (portlock.PortInUse, exit 22).
        self._port = open_serial(port, "bill validator", baudrate=baudrate,
                                 bytesize=serial.EIGHTBITS, parity=serial.PARITY_EVEN,
                                 stopbits=serial.STOPBITS_ONE, timeout=timeout)
        self._serial = self._port.serial
        self._decoder = FrameDecoder()

    def close(self) -> None:
        self._port.close()

    def __enter__(self) -> Id003Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def step(self) -> list[DeviceEvent]:
        """One request and its answer."""
        request = self.host.next_request()
        try:
            self._serial.reset_input_buffer()  # a duplicated or late frame must not answer
            self._decoder.clear()
            self._serial.write(request.encode())
            reply = None if request.expect is Expect.NOTHING else self._read_frame()
        except OSError:  # the line itself failed (unplugged adapter): no answer, retry
            time.sleep(self.timeout)
            reply = None
        return self.host.on_reply(request, reply)

    def version(self) -> str:
        """The unit's version string (GET_VERSION). It also proves a unit is there: on a
        line that echoes (a loop-back plug, a ccTalk bus) the status request comes back as
        IDLING (both are ``0x11``) and the settings as their own acknowledgement, but the
        version request comes back without the version."""
        request = Frame(Cmd.GET_VERSION)
        for _ in range(3):
            try:
                self._serial.reset_input_buffer()
                self._decoder.clear()
                self._serial.write(request.encode())
                reply = self._read_frame()
            except OSError:
                reply = None
            if reply is not None and reply.cmd == Cmd.GET_VERSION and reply.data:
                return reply.data.decode("ascii", errors="replace")
            if reply == request:
                raise DeviceError(f"no bill validator on {self.port}: the line echoes what"
                                  " is sent (a loop-back, or the ccTalk bus?)")
        raise DeviceTimeout(f"bill validator on {self.port}: no answer to GET_VERSION")

    def _read_frame(self) -> Frame | None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            chunk = self._serial.read(max(1, self._serial.in_waiting))
            if chunk:
                frames = self._decoder.feed(chunk)
                if frames:
                    return frames[0]
        return None

    def run_until(self, predicate: Callable[[], bool], *, timeout: float = 5.0,
                  sink: Callable[[DeviceEvent], None] | None = None) -> list[DeviceEvent]:
        """Step until ``predicate()`` holds; raise :class:`DeviceTimeout` otherwise."""
        events: list[DeviceEvent] = []
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise DeviceTimeout(f"bill validator on {self.port}: no progress in "
                                    f"{timeout:.1f} s (status {self.host.status})")
            for event in self.step():
                events.append(event)
                if sink is not None:
                    sink(event)
        return events
