"""``DeviceRecoveryPort.pay_change``: what recovery pays of a change payout it finds
unanswered, decided from the hoppers' ccTalk event counters against the intents the cash
adapter made durable before paying. The end-to-end path (real drivers over ptys, the
emulated hoppers, SIGKILL) is ``test_runner_crash.py``; here the counter cases it cannot
reach on purpose — two dispenses on one hopper, a recovery that itself crashed, a hopper
that does not answer — with a hopper that keeps a ccTalk hopper's counter and status
(``REQUEST_HOPPER_STATUS``: event counter, coins of the last dispense)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kiosk.devices.cctalk import HopperStatus, next_counter
from kiosk.devices.errors import DeviceTimeout
from kiosk.devices.model import PayoutResult
from kiosk.runner import CashAdapter, DeviceRecoveryPort, PayoutIntents
from kiosk.session.journal import Journal


class CountingHopper:
    """A hopper's counters: the event counter steps once per dispense it takes; status
    reports the coins of the last dispense; ``silent`` makes it stop answering."""

    def __init__(self, coin: int, counter: int = 7) -> None:
        self.coin_yen, self.counter, self.last, self.coins, self.silent = coin, counter, 0, 0, False

    def status(self) -> HopperStatus:
        if self.silent:
            raise DeviceTimeout("hopper: no answer")
        return HopperStatus(self.counter, 0, self.last, 0)

    def status_until(self, deadline: float) -> HopperStatus:
        return self.status()

    def dispense(self, count: int) -> PayoutResult:
        self.counter, self.last = next_counter(self.counter), count
        self.coins += count
        return PayoutResult(f"hopper_{self.coin_yen}", self.coin_yen, count, 0)


def port_for(tmp: Path, *hoppers: CountingHopper) -> tuple[DeviceRecoveryPort, CashAdapter]:
    journal = Journal(tmp / "journal.db")
    cash = CashAdapter({})  # no serial devices: the hoppers below stand for the bus
    cash.hoppers = {h.coin_yen: h for h in hoppers}  # type: ignore[misc]
    cash.stock = {h.coin_yen: 10_000 for h in hoppers}
    cash.intents = PayoutIntents(journal.path)
    return DeviceRecoveryPort(journal, cash, None), cash


def paid(*hoppers: Any) -> int:
    return sum(h.coins * h.coin_yen for h in hoppers)


def test_a_payout_that_never_began_is_paid_once(tmp_path: Path) -> None:
    h = CountingHopper(100)
    port, _ = port_for(tmp_path, h)
    assert port.pay_change("T1:pay", 300) == 300 and paid(h) == 300
    assert port.pay_change("T1:pay", 300) == 300 and paid(h) == 300  # asked again: nothing more


def test_what_the_hopper_paid_before_the_crash_is_not_paid_again(tmp_path: Path) -> None:
    h = CountingHopper(500)
    port, cash = port_for(tmp_path, h)
    cash.intents.record("T2:pay", {500: h.counter})  # type: ignore[union-attr]
    h.dispense(1)  # paid 500 of 1000, then the kiosk died
    assert port.pay_change("T2:pay", 1000) == 1000 and paid(h) == 1000
    # The first recovery died before it settled; the second one must not pay again.
    assert port.pay_change("T2:pay", 1000) == 1000 and paid(h) == 1000


def test_two_dispenses_on_one_hopper_cannot_be_told_and_stay_owed(tmp_path: Path) -> None:
    h = CountingHopper(10)
    port, cash = port_for(tmp_path, h)
    assert cash.pay(3000, "T3:pay") == 3000  # 300 coins: dispenses of 255 and 45
    assert paid(h) == 3000
    # Crash before the reply: the counter moved twice, its status tells only the last
    # dispense — recovery pays nothing more (the rest is owed with a slip, never twice).
    got = port.pay_change("T3:pay", 3000)
    assert paid(h) == 3000 and got <= 3000
    assert any("cannot tell" in a for a in port.actions)


def test_a_silent_hopper_leaves_the_change_owed_and_recovery_goes_on(tmp_path: Path) -> None:
    h = CountingHopper(100)
    port, cash = port_for(tmp_path, h)
    cash.intents.record("T4:pay", {100: h.counter})  # type: ignore[union-attr]
    h.dispense(3)
    h.silent = True
    assert port.pay_change("T4:pay", 300) == 0 and paid(h) == 300


def _paid_then_crashed(tmp: Path, damage: str) -> tuple[Path, CountingHopper, int]:
    """A session whose ¥800 change the hoppers paid under its key before the kiosk died
    (the ChangePaid reply never journalled), then the journal damaged with ``damage``."""
    import sqlite3

    from tests.kiosk.test_runner_cli import crashed_at_change

    path = tmp / "journal.db"
    with Journal(path) as j:
        crashed_at_change(j, "Tchange")
        key = j._db.execute("SELECT key FROM commands WHERE kind='paychange'").fetchone()[0]
    h = CountingHopper(100)
    port, cash = port_for(tmp, h)
    assert cash.pay(800, key=key) == 800 and paid(h) == 800
    assert cash.intents is not None
    cash.intents.close()
    port.journal.close()
    if damage:
        db = sqlite3.connect(path)
        db.execute(damage)
        db.commit()
        db.close()
    return path, h, 800


@pytest.mark.parametrize("damage", [
    "DELETE FROM payout_intents",
    "DROP TABLE payout_intents",
    "UPDATE payout_intents SET counter=counter+10",
])
def test_a_payout_whose_intent_was_damaged_is_left_for_staff(tmp_path: Path,
                                                             damage: str) -> None:
    """Review of issue 22, finding 2: with the intent rows deleted (or the table dropped)
    recovery read "never began" and paid the ¥800 again; with a counter edited it owed
    back change the customer had. The payout's command row says the intent was written,
    so its absence or change is damage: nothing is paid, the session is left for staff
    (exit 24)."""
    from kiosk.session.journal import LEFT_FOR_STAFF, JournalDamaged, refuse_left_for_staff

    path, h, before = _paid_then_crashed(tmp_path, damage)
    journal = Journal(path)
    cash = CashAdapter({})
    cash.hoppers = {100: h}  # type: ignore[dict-item]
    cash.stock = {100: 10_000}
    cash.intents = PayoutIntents(path)  # as kiosk recover opens it: the table comes back
    results = journal.recover(DeviceRecoveryPort(journal, cash, None))
    assert [r.outcome for r in results] == [LEFT_FOR_STAFF], results
    assert "payout" in results[0].problem
    assert paid(h) == before  # not a coin more
    with pytest.raises(JournalDamaged) as e:
        refuse_left_for_staff(results)
    assert e.value.exit_code == 24


def test_an_undamaged_paid_payout_is_not_paid_again(tmp_path: Path) -> None:
    path, h, before = _paid_then_crashed(tmp_path, "")
    journal = Journal(path)
    cash = CashAdapter({})
    cash.hoppers = {100: h}  # type: ignore[dict-item]
    cash.stock = {100: 10_000}
    cash.intents = PayoutIntents(path)
    results = journal.recover(DeviceRecoveryPort(journal, cash, None))
    assert results[0].outcome != "left_for_staff" and paid(h) == before
    assert journal.ledger().change_out == 800 and journal.ledger().balanced
