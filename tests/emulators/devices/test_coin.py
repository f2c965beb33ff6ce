"""The ccTalk drivers against the emulated bus over a real pty: credits exactly once through
every fault, change paid exactly as the hopper counted it, shortfalls recorded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from emulators.devices.coin import CcTalkBusEmulator
from emulators.devices.ptyline import PtyLine
from kiosk.devices.cash import CashSession, pay_change
from kiosk.devices.cctalk import CcTalkBus, CoinAcceptorDriver, HopperDriver
from kiosk.devices.model import DeviceEvent, Fault, ItemSettled, Outcome, PayoutResult


@dataclass
class Rig:
    emu: CcTalkBusEmulator
    line: PtyLine
    bus: CcTalkBus
    acceptor: CoinAcceptorDriver
    hoppers: dict[int, HopperDriver]
    events: list[DeviceEvent] = field(default_factory=list)

    def poll_until_settled(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 6:  # the buffer unchanged over several readings
            assert time.monotonic() < deadline, "coin acceptor did not settle"
            got = self.acceptor.poll()
            self.events += got
            busy = self.emu.unsettled() or self.acceptor.tracker.awaiting_confirmation
            quiet = 0 if got or busy else quiet + 1

    def credited(self) -> list[int]:
        return [e.yen for e in self.events if isinstance(e, ItemSettled)]

    def faults(self) -> list[str]:
        return [e.kind for e in self.events if isinstance(e, Fault)]

    def dispense(self, coin: int, count: int) -> PayoutResult:
        return self.hoppers[coin].dispense(count)


@pytest.fixture
def rig() -> Iterator[Rig]:
    emu = CcTalkBusEmulator(stock=50, coin_period=0.001)
    line = PtyLine(emu.receive, "coin").start()
    bus = CcTalkBus(line.path, timeout=0.05, retries=10)
    r = Rig(emu, line, bus, CoinAcceptorDriver(bus),
            {h.coin_yen: HopperDriver(bus, a, h.coin_yen) for a, h in emu.hoppers.items()})
    r.acceptor.set_enabled(True)
    r.poll_until_settled()
    try:
        yield r
    finally:
        bus.close()
        line.close()


def test_coins_are_credited_once_and_inhibited_ones_go_back(rig: Rig) -> None:
    for yen in (100, 500, 10, 5):
        rig.emu.insert(yen)
    rig.poll_until_settled()
    assert rig.credited() == [100, 500, 10]
    assert rig.emu.acceptor.returned == [5]
    rig.acceptor.set_enabled(False)
    rig.emu.insert(100)
    rig.poll_until_settled()
    assert rig.credited() == [100, 500, 10] and rig.emu.acceptor.returned == [5, 100]


@pytest.mark.parametrize("fault", ["corrupt", "duplicate", "disconnect"])
def test_line_faults_never_lose_or_double_a_credit(rig: Rig, fault: str) -> None:
    for i, yen in enumerate((100, 50, 500, 10, 100, 100)):
        if i % 2 == 0:
            rig.emu.arm(fault)
        rig.emu.insert(yen)
    rig.poll_until_settled()
    assert rig.credited() == [100, 50, 500, 10, 100, 100]
    assert sum(rig.credited()) == sum(rig.emu.acceptor.cashbox)


def test_a_dead_line_is_reported_and_its_coins_credited_on_recovery(rig: Rig) -> None:
    rig.emu.arm("disconnect", packets=12)
    rig.emu.insert(500)
    rig.poll_until_settled()
    kinds = [type(e).__name__ for e in rig.events]
    assert kinds.index("CommunicationLost") < kinds.index("CommunicationRestored")
    assert rig.credited() == [500]


def test_reconnect_never_credits_twice(rig: Rig) -> None:
    rig.emu.insert(500)
    rig.poll_until_settled()
    tracker = rig.acceptor.tracker
    rig.bus.close()
    rig.bus = CcTalkBus(rig.line.path, timeout=0.05, retries=10)  # the cable was replugged
    rig.acceptor = CoinAcceptorDriver(rig.bus, tracker=tracker)
    rig.poll_until_settled()
    rig.emu.insert(100)
    rig.poll_until_settled()
    assert rig.credited() == [500, 100]


def test_counter_wrap_and_lost_events_are_detected(rig: Rig) -> None:
    rig.emu.insert(10)
    rig.poll_until_settled()
    rig.emu.arm("counter", value=254)  # jump near the wrap: 4 events "lost"
    rig.poll_until_settled()
    assert "events-lost" in rig.faults()
    before = len(rig.credited())
    for yen in (50, 100, 500):  # 255, 1, 2: across the wrap
        rig.emu.insert(yen)
    rig.poll_until_settled()
    assert rig.credited()[before:] == [50, 100, 500]
    rig.emu.arm("lose_events", count=8)
    rig.poll_until_settled()
    assert rig.faults().count("events-lost") == 2
    assert rig.acceptor.tracker.lost > 0


def test_power_cycle_of_the_acceptor_is_reported(rig: Rig) -> None:
    rig.emu.insert(100)
    rig.poll_until_settled()
    rig.emu.arm("power_cycle")
    rig.poll_until_settled()
    assert "counter-reset" in rig.faults()
    rig.acceptor.set_enabled(True)  # a restarted acceptor comes back inhibited
    rig.emu.insert(500)
    rig.poll_until_settled()
    assert rig.credited() == [100, 500]


def test_change_is_paid_exactly_as_the_hoppers_count(rig: Rig) -> None:
    cash = CashSession(270)
    for yen in (500, 100):
        rig.emu.insert(yen)
    rig.poll_until_settled()
    for e in rig.events:
        cash.apply(e)
    results = pay_change(cash.change_owed(True), [(500, 50), (100, 50), (50, 50), (10, 50)],
                         rig.dispense)
    for r in results:
        cash.record_payout(r)
    s = cash.close(sold=True)
    assert (s.change_owed, s.change_paid, s.change_unpaid) == (330, 330, 0)
    paid = {h.coin_yen: h.paid_total for h in rig.emu.hoppers.values()}
    assert paid == {500: 0, 100: 3, 50: 0, 10: 3}
    assert s.balanced()


def test_hopper_empty_mid_payout_replans_and_records_the_shortfall(rig: Rig) -> None:
    rig.emu.arm("hopper_empty", coin=100, after=2)  # ¥100 hopper runs dry after 2 coins
    rig.emu.hopper(10).stock = 4
    rig.emu.hopper(50).stock = 1
    results = pay_change(480, [(500, 50), (100, 50), (50, 50), (10, 50)], rig.dispense)
    paid = sum(r.paid * r.coin_yen for r in results)
    # 2×¥100 then the ¥100 hopper is empty: one ¥50 and four ¥10 are all that is left.
    assert paid == 200 + 50 + 40
    assert (results[0].coin_yen, results[0].paid, results[0].unpaid) == (100, 2, 2)
    physical = sum(h.paid_total * h.coin_yen for h in rig.emu.hoppers.values())
    assert physical == paid
    cash = CashSession(20)
    cash.apply(ItemSettled("coin_acceptor", 1, 500, Outcome.STACKED))
    for r in results:
        cash.record_payout(r)
    s = cash.close(sold=True)
    assert s.change_unpaid == 480 - 290 and s.refund_due == 190 and s.balanced()


@pytest.mark.parametrize("fault", ["corrupt", "duplicate", "disconnect"])
def test_a_lost_dispense_answer_never_pays_twice(rig: Rig, fault: str) -> None:
    hopper = rig.hoppers[100]
    hopper.status()
    if fault == "disconnect":
        rig.emu.arm(fault, packets=3)
    else:
        rig.emu.arm(fault, count=3)
    result = hopper.dispense(7)
    assert (result.paid, result.unpaid) == (7, 0)
    assert rig.emu.hopper(100).paid_total == 7 and rig.emu.hopper(100).counter == 1
