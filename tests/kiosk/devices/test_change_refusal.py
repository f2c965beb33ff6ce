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


def test_a_coin_whose_change_cannot_be_paid_is_refused_by_the_acceptor() -> None:
    """Review of issue 24: coins were always taken. With ¥200 of change at most (two ¥50,
    ten ¥10) a ¥500 coin for a ¥200 fee owes ¥300: the acceptor inhibits it (the coin comes
    back), while a ¥100 coin is taken; once ¥100 is in, the ¥500 (change ¥400) stays
    refused and two more ¥100 complete the fee."""
    _unit, coins, cash, lines = _cash_rig()
    assert cash.bill is not None
    try:
        _poll_until(cash, lambda: cash.bill is not None and cash.bill.host.idle)
        cash.cash_in_start({"fee": 200, "change_stock": {500: 0, 100: 0, 50: 2, 10: 10}})
        coins.insert(500)
        _poll_until(cash, lambda: coins.acceptor.returned == [500])
        assert cash.covered == 0
        coins.insert(100)
        _poll_until(cash, lambda: cash.covered == 100)
        coins.insert(500)  # ¥400 of change: still not payable
        _poll_until(cash, lambda: coins.acceptor.returned == [500, 500])
        coins.insert(100)
        _poll_until(cash, lambda: cash.covered >= 200)
        end = cash.cash_in_end({"sold": True})
    finally:
        cash.bill.close()
        for line in lines:
            line.close()
    assert coins.acceptor.cashbox == [100, 100] and end["refund_due"] == 0


def test_a_coin_whose_change_the_stock_pays_is_taken() -> None:
    _unit, coins, cash, lines = _cash_rig()
    assert cash.bill is not None
    try:
        _poll_until(cash, lambda: cash.bill is not None and cash.bill.host.idle)
        cash.cash_in_start({"fee": 200, "change_stock": {500: 0, 100: 3, 50: 0, 10: 0}})
        coins.insert(500)  # ¥300 of change: three ¥100 pay it
        _poll_until(cash, lambda: cash.covered == 500)
        end = cash.cash_in_end({"sold": True})
    finally:
        cash.bill.close()
        for line in lines:
            line.close()
    assert coins.acceptor.cashbox == [500] and coins.acceptor.returned == []
    assert (end["change_paid"], end["refund_due"]) == (300, 0)
