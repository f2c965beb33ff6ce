"""An emulated JCM ID-003 bill validator: the unit's own state machine (it *plays* the
device), reusing only the framing codec of :mod:`kiosk.devices.id003`.

The mechanism advances one step per STATUS REQUEST, not by wall clock, so a test sees the
same sequence every run however loaded the machine is. Where each note physically is lives
in :attr:`BillValidator.cassette`, :attr:`returned`, :attr:`held` and :attr:`rejected` —
the truth a test compares the host's ledger against.

Faults (armed by :meth:`arm`, each applying once unless said otherwise): ``reject`` (the next
note is refused), ``jam`` (the next note jams in the stacker), ``stuck`` (the next note stays
in escrow whatever the host says), ``cheat`` (the next note is pulled back while being stacked),
``disconnect`` (half the next answer, then silence for N requests), ``corrupt`` (the next
answer has a bad CRC), ``duplicate`` (the next answer is sent twice), ``power_cycle``
(now: the unit is off for N requests, then powers up with whatever was in its path),
``cassette_full`` (the cassette reports full until :meth:`empty_cassette`).

Inhibit is honoured as a real unit honours it: a note inserted while INHIBIT is set, or
still waiting in the slot when it is set, is rejected ("return by inhibit", 0x79) and never
stacked — it does not wait for the next acceptance.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from emulators.devices.errors import UnknownFault
from kiosk.devices.id003 import (
    ESCROW_YEN,
    INHIBIT_BIT,
    YEN_ESCROW,
    Cmd,
    Frame,
    FrameDecoder,
    Status,
    encode_frame,
)

FAULTS = ("reject", "jam", "stuck", "cheat", "disconnect", "corrupt", "duplicate",
          "power_cycle", "cassette_full")


@dataclass
class _Armed:
    reject: int = 0
    jam: int = 0
    stuck: int = 0
    cheat: int = 0
    corrupt: int = 0
    duplicate: int = 0


@dataclass
class BillValidator:
    """The unit: :meth:`receive` takes the host's bytes and returns the unit's answer."""

    capacity: int = 500
    off_polls: int = 3
    state: Status = Status.POWER_UP
    inhibited: bool = True
    denomination_mask: int = 0
    bill: int | None = None  # yen of the note in the mechanism
    bill_stuck: bool = False
    queue: deque[int] = field(default_factory=deque)  # notes the customer is feeding
    #: Notes inserted while the unit was inhibited: a real unit refuses them there and then
    #: (they go back through REJECTING, "return by inhibit"), whatever the host says next.
    refused: deque[int] = field(default_factory=deque)
    cassette: list[int] = field(default_factory=list)
    returned: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    silent: int = 0
    polls: int = 0
    full: bool = False  # the cassette sensor says full (until emptied)
    escrowed: bool = False  # the note in the path was validated and reported
    #: Status requests a moving note spends in each state (a real transport takes about a
    #: second per step while the host polls every 100–200 ms; a host must never rely on
    #: seeing every intermediate state exactly once).
    dwell: dict[Status, int] = field(default_factory=lambda: {
        Status.ACCEPTING: 2, Status.RETURNING: 2, Status.REJECTING: 2, Status.STACKING: 2})

    def __post_init__(self) -> None:
        self._decoder = FrameDecoder()
        self._armed = _Armed()
        self._lock = threading.Lock()
        self._reject_reason = 0x76
        self._dwelling: Status | None = None
        self._dwelt = 0

    # -- the customer and the test -------------------------------------------------------
    def insert(self, yen: int) -> None:
        """A customer feeds a note. While INHIBIT is set the unit does not take it in: it is
        rejected at once (never queued for the next acceptance: that would credit it to
        whoever comes next, the defect of issue 22)."""
        with self._lock:
            (self.refused if self.inhibited else self.queue).append(yen)

    def arm(self, fault: str, count: int = 1, **kw: Any) -> None:
        with self._lock:
            if fault == "power_cycle":
                self._power_cycle(int(kw.get("polls", self.off_polls)))
            elif fault == "disconnect":
                self.silent = -int(kw.get("polls", 6))  # negative: half a frame first
            elif fault == "cassette_full":
                self.full = True
            elif fault in vars(self._armed):
                setattr(self._armed, fault, getattr(self._armed, fault) + count)
                if fault == "reject":
                    self._reject_reason = int(kw.get("reason", 0x76))
            else:
                raise UnknownFault(f"unknown bill validator fault {fault!r}; one of {FAULTS}")

    def empty_cassette(self) -> list[int]:
        with self._lock:
            out, self.cassette = self.cassette, []
            self.full = False
            return out

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"state": self.state.name, "bill": self.bill, "queue": list(self.queue),
                    "refused": list(self.refused),
                    "cassette": list(self.cassette), "returned": list(self.returned),
                    "held": list(self.held), "rejected": list(self.rejected),
                    "inhibited": self.inhibited}

    def unsettled(self) -> int:
        """Yen inserted by the customer and not yet in a final place."""
        with self._lock:
            return sum(self.queue) + sum(self.refused) + (self.bill or 0)

    # -- the line ------------------------------------------------------------------------
    def receive(self, data: bytes) -> bytes:
        with self._lock:
            out = b""
            for frame in self._decoder.feed(data):
                out += self._answer(frame)
            return out

    def _answer(self, frame: Frame) -> bytes:
        if self.silent > 0:
            self.silent -= 1  # off or disconnected: the host's frame is lost
            return b""
        reply = self._handle(frame)
        if reply is None:
            return b""
        raw = reply.encode()
        if self.silent < 0:  # disconnect mid-frame: half of this answer, then nothing
            self.silent = -self.silent
            return raw[: len(raw) // 2]
        if self._armed.corrupt:
            self._armed.corrupt -= 1
            return raw[:-1] + bytes([raw[-1] ^ 0x5A])
        if self._armed.duplicate:
            self._armed.duplicate -= 1
            return raw + raw
        return raw

    def _handle(self, frame: Frame) -> Frame | None:
        cmd = frame.cmd
        if cmd == Cmd.STATUS_REQUEST:
            self.polls += 1
            self._tick()
            return self._status_frame()
        if cmd == Cmd.ACK:
            if self.state == Status.VEND_VALID and self.bill is not None:
                self.cassette.append(self.bill)
                self.bill = None
                self.state = Status.STACKED
            return None  # the unit does not answer the host's ACK
        if cmd == Cmd.RESET:
            self._reset()
            return Frame(Status.ACK)
        if cmd in (Cmd.SET_DENOMINATION, Cmd.SET_INHIBIT, Cmd.SET_SECURITY,
                   Cmd.SET_DIRECTION, Cmd.SET_OPTIONAL):
            if cmd == Cmd.SET_DENOMINATION and len(frame.data) == 2:
                self.denomination_mask = frame.data[0] | frame.data[1] << 8
            elif cmd == Cmd.SET_INHIBIT and len(frame.data) == 1:
                self.inhibited = bool(frame.data[0])
            return frame  # settings are echoed
        if cmd in (Cmd.STACK_1, Cmd.STACK_2):
            if self.state == Status.ESCROW:
                if not self.bill_stuck:
                    self.state = Status.STACKING
                return Frame(Status.ACK)
            if self.state in (Status.STACKING, Status.VEND_VALID, Status.STACKED):
                return Frame(Status.ACK)  # a repeated command: already under way
            return Frame(Status.INVALID_COMMAND)
        if cmd == Cmd.RETURN:
            if self.state == Status.ESCROW:
                if not self.bill_stuck:
                    self.state = Status.RETURNING
                return Frame(Status.ACK)
            if self.state == Status.RETURNING:
                return Frame(Status.ACK)
            return Frame(Status.INVALID_COMMAND)
        if cmd in (Cmd.HOLD, Cmd.WAIT):
            return Frame(Status.ACK) if self.state == Status.ESCROW else Frame(
                Status.INVALID_COMMAND)
        if cmd == Cmd.GET_VERSION:
            return Frame(Cmd.GET_VERSION, b"cardio-emu ID-003 JPY")
        return Frame(Status.INVALID_COMMAND)

    def _status_frame(self) -> Frame:
        if self.state == Status.ESCROW and self.bill is not None:
            return Frame(Status.ESCROW, bytes([YEN_ESCROW[self.bill]]))
        if self.state == Status.REJECTING:
            return Frame(Status.REJECTING, bytes([self._reject_reason]))
        if self.state == Status.FAILURE:
            return Frame(Status.FAILURE, b"\xa2")
        return Frame(self.state)

    def _is_full(self) -> bool:
        return self.full or len(self.cassette) >= self.capacity

    def _denomination_enabled(self, yen: int) -> bool:
        bit = INHIBIT_BIT.get(yen)
        return bit is not None and not self.denomination_mask >> bit & 1

    def _tick(self) -> None:
        """One step of the mechanism, taken at each status request."""
        s = self.state
        if s != self._dwelling:
            self._dwelling, self._dwelt = s, 0
        self._dwelt += 1
        if self._dwelt < self.dwell.get(s, 1):
            return
        if s in (Status.DISABLED, Status.IDLING) and (
                self.refused or (self.inhibited and self.queue)):
            # At rest and inhibited (or holding a note fed while inhibited): the note in the
            # slot goes back through the reject path, as a real unit does it.
            self.bill = (self.refused or self.queue).popleft()
            self.escrowed = False
            self._reject_reason = 0x79  # return by inhibit
            self.state = Status.REJECTING
        elif s == Status.DISABLED and not self.inhibited:
            self.state = Status.IDLING
        elif s == Status.IDLING:
            if self.inhibited:
                self.state = Status.DISABLED
            elif self._is_full():
                self.state = Status.STACKER_FULL
            elif self.queue:
                self.bill = self.queue.popleft()
                self.escrowed = False
                self.state = Status.ACCEPTING
        elif s == Status.ACCEPTING:
            assert self.bill is not None
            if self._armed.reject or self.bill not in YEN_ESCROW or not (
                    self._denomination_enabled(self.bill)):
                if self._armed.reject:
                    self._armed.reject -= 1
                    self._reject_reason = self._reject_reason or 0x76
                else:
                    self._reject_reason = 0x79 if self.bill in YEN_ESCROW else 0x76
                self.state = Status.REJECTING
            else:
                if self._armed.stuck:
                    self._armed.stuck -= 1
                    self.bill_stuck = True
                self.state = Status.ESCROW
                self.escrowed = True
        elif s == Status.REJECTING:
            assert self.bill is not None
            self.rejected.append(self.bill)
            self.bill = None
            self.state = Status.DISABLED if self.inhibited else Status.IDLING
        elif s == Status.STACKING:
            assert self.bill is not None
            if self._armed.cheat:
                self._armed.cheat -= 1
                self.returned.append(self.bill)  # pulled back on its string
                self.bill = None
                self.state = Status.CHEATED
            elif self._armed.jam:
                self._armed.jam -= 1
                self.held.append(self.bill)
                self.bill = None
                self.state = Status.JAM_IN_STACKER
            else:
                self.state = Status.VEND_VALID
        elif s == Status.STACKED:
            self.state = (Status.STACKER_FULL if self._is_full()
                          else Status.IDLING)
        elif s == Status.RETURNING:
            assert self.bill is not None
            self.returned.append(self.bill)
            self.bill = None
            self.state = Status.IDLING
        elif s == Status.STACKER_FULL and not self._is_full():
            self.state = Status.IDLING
        elif s == Status.INITIALIZE:
            self.state = Status.DISABLED if self.inhibited else Status.IDLING

    def _power_cycle(self, polls: int) -> None:
        if self.bill is not None and not self.bill_stuck:
            in_stacker = self.state in (Status.STACKING, Status.VEND_VALID)
            self.state = (Status.POWER_UP_BILL_IN_STACKER if in_stacker
                          else Status.POWER_UP_BILL_IN_ACCEPTOR)
        else:
            self.state = Status.POWER_UP
        self.inhibited = True
        self.silent = polls

    def _reset(self) -> None:
        """RESET: finish what was in the path (a note in the stacker is stacked, one in the
        acceptor handed back, a stuck or jammed one stays held), then initialise."""
        if self.bill is not None:
            if self.bill_stuck:
                self.held.append(self.bill)
            elif self.state in (Status.POWER_UP_BILL_IN_STACKER, Status.STACKING,
                                Status.VEND_VALID):
                self.cassette.append(self.bill)
            elif not self.escrowed:
                self.rejected.append(self.bill)  # never validated: back like a reject
            else:
                self.returned.append(self.bill)
        self.bill = None
        self.bill_stuck = False
        self.inhibited = True
        self.state = Status.INITIALIZE


__all__ = ["ESCROW_YEN", "FAULTS", "BillValidator", "encode_frame"]
