"""The ID-003 driver against the emulated validator over a real pty: every fault, and where
the money ends up — in the host's books and physically, yen for yen."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from emulators.devices.bill import BillValidator
from emulators.devices.ptyline import PtyLine
from kiosk.devices.cash import CashSession
from kiosk.devices.id003 import Id003Driver, Id003Host, Status
from kiosk.devices.model import (
    CommunicationLost,
    CommunicationRestored,
    DeviceEvent,
    Fault,
    ItemRejected,
    ItemSettled,
    Outcome,
)


@dataclass
class Rig:
    unit: BillValidator
    driver: Id003Driver
    cash: CashSession
    events: list[DeviceEvent]

    @property
    def host(self) -> Id003Host:
        return self.driver.host

    def sink(self, event: DeviceEvent) -> None:
        self.events.append(event)
        self.cash.apply(event)

    def settle(self, timeout: float = 10.0) -> None:
        """Run until the customer's notes are all in a final place and the unit rests."""
        self.driver.run_until(
            lambda: (self.unit.unsettled() == 0 and self.host.idle
                     and self.unit.state in (Status.IDLING, Status.STACKER_FULL)),
            timeout=timeout, sink=self.sink)

    def settled(self) -> list[tuple[int, Outcome]]:
        return [(e.yen, e.outcome) for e in self.events if isinstance(e, ItemSettled)]

    def books_match_the_machine(self) -> None:
        assert self.cash.total(Outcome.STACKED) == sum(self.unit.cassette)
        assert self.cash.total(Outcome.RETURNED) == sum(self.unit.returned)
        assert self.cash.total(Outcome.REFUND_DUE) == sum(self.unit.held)


@pytest.fixture
def rig() -> Iterator[Rig]:
    unit = BillValidator()
    line = PtyLine(unit.receive, "bill").start()
    driver = Id003Driver(line.path, timeout=0.05)
    r = Rig(unit, driver, CashSession(0), [])
    driver.host.set_enabled(True)
    r.settle()
    try:
        yield r
    finally:
        driver.close()
        line.close()


def test_a_note_is_stacked_and_credited_once(rig: Rig) -> None:
    rig.unit.insert(1000)
    rig.settle()
    assert rig.settled() == [(1000, Outcome.STACKED)]
    rig.books_match_the_machine()


def test_inhibited_denomination_goes_back(rig: Rig) -> None:
    rig.host.denominations = frozenset({1000})
    rig.host._configure()
    rig.unit.insert(10000)
    rig.settle()
    assert rig.unit.rejected == [10000] and rig.settled() == []
    assert any(isinstance(e, ItemRejected) for e in rig.events)


@pytest.mark.parametrize(("fault", "outcome"), [
    ("reject", None),
    ("jam", Outcome.REFUND_DUE),
    ("stuck", Outcome.REFUND_DUE),
    ("cheat", Outcome.RETURNED),
    ("corrupt", Outcome.STACKED),
    ("duplicate", Outcome.STACKED),
    ("disconnect", Outcome.STACKED),
])
def test_fault_money_outcome(rig: Rig, fault: str, outcome: Outcome | None) -> None:
    rig.unit.arm(fault)
    rig.unit.insert(5000)
    rig.settle()
    assert rig.settled() == ([(5000, outcome)] if outcome else [])
    if outcome is None:
        assert rig.unit.rejected == [5000]
    rig.books_match_the_machine()
    # and the unit still works afterwards
    rig.unit.insert(1000)
    rig.settle()
    assert rig.settled()[-1] == (1000, Outcome.STACKED)
    rig.books_match_the_machine()


@pytest.mark.parametrize(("steps", "outcome", "reported"), [
    (3, Outcome.RETURNED, "power_up_bill_in_acceptor"),  # note in escrow/accepting
    (6, Outcome.STACKED, "power_up_bill_in_stacker"),  # note being stacked
])
def test_power_cycle_mid_transaction(rig: Rig, steps: int, outcome: Outcome,
                                     reported: str) -> None:
    rig.unit.insert(2000)
    while rig.unit.state not in ((Status.ESCROW,) if outcome is Outcome.RETURNED
                                 else (Status.STACKING,)):
        for e in rig.driver.step():
            rig.sink(e)
    rig.unit.arm("power_cycle")
    rig.settle()
    assert rig.settled() == [(2000, outcome)]
    assert any(isinstance(e, Fault) and e.detail == reported for e in rig.events)
    rig.books_match_the_machine()


def test_communication_loss_and_recovery(rig: Rig) -> None:
    rig.unit.arm("disconnect", polls=12)
    rig.unit.insert(10000)
    rig.settle()
    kinds = [type(e) for e in rig.events]
    assert CommunicationLost in kinds and CommunicationRestored in kinds
    assert kinds.index(CommunicationLost) < kinds.index(CommunicationRestored)
    assert rig.settled() == [(10000, Outcome.STACKED)]
    rig.books_match_the_machine()


def test_cassette_full_stops_taking_notes(rig: Rig) -> None:
    rig.unit.insert(1000)
    rig.settle()
    rig.unit.arm("cassette_full")
    rig.unit.insert(1000)
    for _ in range(10):
        for e in rig.driver.step():
            rig.sink(e)
    assert rig.unit.state == Status.STACKER_FULL
    assert any(isinstance(e, Fault) and e.kind == "cassette-full" for e in rig.events)
    assert list(rig.unit.queue) == [1000]  # still in the slot, not taken
    rig.unit.empty_cassette()
    rig.settle()
    assert rig.settled()[-1] == (1000, Outcome.STACKED)


def test_reopening_the_port_mid_note_does_not_credit_twice(rig: Rig) -> None:
    rig.unit.insert(1000)
    while rig.unit.state != Status.VEND_VALID:
        for e in rig.driver.step():
            rig.sink(e)
    for e in rig.driver.step():  # VEND VALID seen and credited; its ACK still to come
        rig.sink(e)
    port = rig.driver.port
    rig.driver.close()
    rig.driver = Id003Driver(port, rig.host, timeout=0.05)  # same host state, new line
    rig.settle()
    assert rig.settled() == [(1000, Outcome.STACKED)]
    rig.books_match_the_machine()


def _settle_inhibited(rig: Rig) -> None:
    """Run until every note is in a final place and the inhibited unit rests (DISABLED)."""
    rig.driver.run_until(
        lambda: (rig.unit.unsettled() == 0 and rig.host.idle
                 and rig.unit.state == Status.DISABLED), timeout=10, sink=rig.sink)


@pytest.mark.parametrize("enable_at_once", [False, True])
def test_a_note_inserted_while_inhibited_is_rejected_never_credited(
        rig: Rig, enable_at_once: bool) -> None:
    """A real ID-003 unit refuses a note while INHIBIT is set: it goes back at once through
    the reject path (status REJECTING, "return by inhibit"), nothing stacked. The emulator
    kept it queued, and the next customer's acceptance took it as theirs (issue 22). With
    ``enable_at_once`` acceptance opens before the unit is even polled again: the note was
    refused when it was inserted, so it stays refused."""
    rig.host.set_enabled(False)
    _settle_inhibited(rig)
    rig.unit.insert(5000)
    if not enable_at_once:
        _settle_inhibited(rig)
        assert rig.unit.rejected == [5000] and not rig.unit.queue
    rig.host.set_enabled(True)
    rig.settle()
    assert rig.unit.rejected == [5000] and rig.unit.cassette == []
    assert [e.reason for e in rig.events if isinstance(e, ItemRejected)] == [
        "return by inhibit"]
    assert rig.settled() == [] and rig.cash.credited == 0
    rig.unit.insert(1000)  # the next note, inserted while accepting, is taken as usual
    rig.settle()
    assert rig.settled() == [(1000, Outcome.STACKED)]
    rig.books_match_the_machine()


def test_a_note_waiting_in_the_slot_is_rejected_when_the_unit_is_inhibited(rig: Rig) -> None:
    """A note fed while the unit was accepting but not yet taken in (another one was in the
    path) is pushed back once acceptance is switched off, not kept for later."""
    rig.unit.insert(1000)
    rig.unit.insert(2000)
    while rig.unit.state != Status.ESCROW:
        for e in rig.driver.step():
            rig.sink(e)
    rig.host.set_enabled(False)
    _settle_inhibited(rig)
    assert rig.settled() == [(1000, Outcome.STACKED)]
    assert rig.unit.rejected == [2000] and not rig.unit.queue
    rig.books_match_the_machine()
