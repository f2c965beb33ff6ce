"""The payment ledger and change-making: never overpay, record every shortfall, refuse a
second outcome for one item."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiosk.devices.cash import CashSession, LedgerError, make_change, pay_change
from kiosk.devices.model import ItemSettled, Outcome, PayoutResult

COINS = (500, 100, 50, 10)


def _best_by_brute_force(amount: int, stock: dict[int, int]) -> int:
    best = 0
    ranges = [range(min(stock[c], amount // c) + 1) for c in COINS]
    for counts in itertools.product(*ranges):
        total = sum(c * n for c, n in zip(COINS, counts, strict=True))
        if total <= amount:
            best = max(best, total)
    return best


@given(st.integers(0, 3000), st.fixed_dictionaries({c: st.integers(0, 6) for c in COINS}))
def test_make_change_pays_the_most_possible_and_never_more(amount: int,
                                                           stock: dict[int, int]) -> None:
    plan = make_change(amount, stock)
    paid = sum(c * n for c, n in plan.items())
    assert paid <= amount
    assert all(n <= stock[c] for c, n in plan.items())
    assert paid == _best_by_brute_force(amount, stock)


def test_make_change_for_a_non_canonical_set() -> None:
    # Greedy would take 40 and get stuck at 60 = 40 + 10 + 10 with no 10s; the table finds
    # 30 + 30.
    assert make_change(60, {40: 1, 30: 2, 10: 0}) == {30: 2}


@given(st.integers(0, 5000), st.fixed_dictionaries({c: st.integers(0, 10) for c in COINS}),
       st.fixed_dictionaries({c: st.integers(0, 10) for c in COINS}))
def test_pay_change_with_hoppers_that_come_up_short(amount: int, believed: dict[int, int],
                                                    actual: dict[int, int]) -> None:
    """Hoppers hold less than the kiosk believes: the payout replans from the others, never
    exceeds what is owed, and the rest is exactly the shortfall."""
    real = dict(actual)

    def dispense(coin: int, count: int) -> PayoutResult:
        paid = min(count, real[coin])
        real[coin] -= paid
        return PayoutResult(f"hopper_{coin}", coin, paid, count - paid)

    results = pay_change(amount, believed.items(), dispense)
    paid = sum(r.paid * r.coin_yen for r in results)
    assert paid <= amount
    assert paid == sum((actual[c] - real[c]) * c for c in COINS)


def test_ledger_refuses_a_second_outcome_and_balances() -> None:
    cash = CashSession(350)
    cash.apply(ItemSettled("bill_validator", 1, 1000, Outcome.STACKED))
    with pytest.raises(LedgerError, match="settled twice"):
        cash.apply(ItemSettled("bill_validator", 1, 1000, Outcome.RETURNED))
    cash.apply(ItemSettled("bill_validator", 2, 5000, Outcome.REFUND_DUE))
    cash.record_payout(PayoutResult("hopper_500", 500, 1, 0))
    cash.record_payout(PayoutResult("hopper_100", 100, 0, 1))
    s = cash.close(sold=True)
    assert (s.change_owed, s.change_paid, s.change_unpaid, s.held) == (650, 500, 150, 5000)
    assert s.refund_due == 5150 and s.balanced()


def test_cannot_sell_without_enough_credit() -> None:
    cash = CashSession(300)
    cash.apply(ItemSettled("coin_acceptor", 1, 100, Outcome.STACKED))
    with pytest.raises(LedgerError):
        cash.close(sold=True)
    assert cash.close(sold=False).change_owed == 100
