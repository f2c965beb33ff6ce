"""A note whose change the hoppers cannot pay is handed back before it is taken (issue 24):
the emulated bill validator over a pty, the acceptor told the hoppers' stock."""

from __future__ import annotations

from kiosk.devices.cash import can_change
from tests.kiosk.devices.test_services import _cash_rig, _poll_until


def test_can_change() -> None:
    assert can_change(0, {}) and can_change(-10, {})
    assert can_change(800, {500: 1, 100: 3})
    assert not can_change(800, {500: 1, 100: 2})
    assert not can_change(9800, {500: 0, 100: 50, 50: 0, 10: 0})
    assert can_change(9800, {500: 19, 100: 3})


def test_a_note_that_cannot_be_changed_goes_back_and_a_smaller_one_is_taken() -> None:
    unit, _coins, cash, lines = _cash_rig()
    assert cash.bill is not None
    try:
        _poll_until(cash, lambda: cash.bill is not None and cash.bill.host.idle)
        # ¥200 to pay; the hoppers hold ¥800 of change at most (one 500, three 100)
        cash.cash_in_start({"fee": 200, "change_stock": {500: 1, 100: 3, 50: 0, 10: 0}})
        unit.insert(10000)  # 9,800 change: cannot be paid — handed back, nothing credited
        _poll_until(cash, lambda: unit.returned == [10000] and cash.bill is not None
                    and cash.bill.host.idle)
        assert cash.covered == 0
        unit.insert(1000)  # 800 change: payable — taken
        _poll_until(cash, lambda: cash.covered >= 200)
        assert cash.covered == 1000
        end = cash.cash_in_end({"sold": True})
    finally:
        cash.bill.close()
        for line in lines:
            line.close()
    assert unit.cassette == [1000] and unit.returned == [10000]
    assert end["stacked"] == 1000
