"""The money of one payment (入金・釣銭): a ledger where every inserted bill and coin ends in
exactly one place, and change-making that never pays more than is owed.

Why a ledger of its own, apart from the device cores: the cores know what *a device* said;
the ledger knows what *the customer* is owed. It refuses a second outcome for one item (the
bug an integrator fears most is a note stacked twice), and closing it yields the one
identity the kiosk is audited on::

    inserted = stacked + returned + held (refund due)
    stacked  = price (if sold) + change paid + change unpaid (refund due)

``refund_due`` is therefore the yen staff owe the customer: held notes plus unpaid change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cardio.errors import CardioError
from kiosk.devices.errors import DeviceValueError
from kiosk.devices.model import (
    DeviceEvent,
    Fault,
    ItemSettled,
    Outcome,
    PayoutResult,
)


class LedgerError(CardioError):
    """The devices reported something the money rules forbid (e.g. two outcomes for one
    item); the payment must stop for an attendant."""

    exit_code = 24


@dataclass
class Settlement:
    """The closed books of one payment."""

    price: int
    sold: bool
    stacked: int
    returned: int
    held: int
    change_owed: int
    change_paid: int
    change_unpaid: int
    faults: list[str] = field(default_factory=list)

    @property
    def refund_due(self) -> int:
        return self.held + self.change_unpaid

    def balanced(self) -> bool:
        """The kiosk's identity: what it kept is exactly the price (if sold), and everything
        else went back or is recorded as owed."""
        kept = self.stacked - self.change_paid - self.change_unpaid
        return kept == (self.price if self.sold else 0) and self.change_paid <= self.change_owed


class CashSession:
    """One payment: feed it every device event; ask it what change is owed; close it."""

    def __init__(self, price: int) -> None:
        if price < 0:
            raise DeviceValueError("price must be ≥ 0")
        self.price = price
        self._outcomes: dict[tuple[str, int], tuple[int, Outcome]] = {}
        self.change_paid = 0
        self.change_unpaid = 0
        self.faults: list[str] = []
        self.closed = False

    def apply(self, event: DeviceEvent) -> None:
        if isinstance(event, ItemSettled):
            key = (event.device, event.item)
            if key in self._outcomes:
                raise LedgerError(f"{event.device} item {event.item} settled twice "
                                  f"({self._outcomes[key][1].value}, then "
                                  f"{event.outcome.value})")
            self._outcomes[key] = (event.yen, event.outcome)
        elif isinstance(event, Fault):
            self.faults.append(f"{event.device}: {event.kind} {event.detail}".strip())

    def total(self, outcome: Outcome) -> int:
        return sum(yen for yen, o in self._outcomes.values() if o is outcome)

    @property
    def credited(self) -> int:
        return self.total(Outcome.STACKED)

    @property
    def paid_enough(self) -> bool:
        return self.credited >= self.price

    def change_owed(self, sold: bool) -> int:
        return self.credited - (self.price if sold else 0)

    def record_payout(self, result: PayoutResult) -> None:
        self.change_paid += result.paid * result.coin_yen

    def close(self, sold: bool) -> Settlement:
        """Close the books; the unpaid change becomes refund due."""
        if sold and not self.paid_enough:
            raise LedgerError(f"cannot sell for ¥{self.price}: only ¥{self.credited} credited")
        owed = self.change_owed(sold)
        if self.change_paid > owed:
            raise LedgerError(f"change paid ¥{self.change_paid} exceeds ¥{owed} owed")
        self.change_unpaid = owed - self.change_paid
        self.closed = True
        return Settlement(self.price, sold, self.credited, self.total(Outcome.RETURNED),
                          self.total(Outcome.REFUND_DUE), owed, self.change_paid,
                          self.change_unpaid, list(self.faults))


def can_change(amount: int, stock: dict[int, int]) -> bool:
    """Whether ``stock`` pays ``amount`` of change exactly (nothing to pay: yes)."""
    if amount <= 0:
        return True
    return sum(c * n for c, n in make_change(amount, stock).items()) == amount


def make_change(amount: int, stock: dict[int, int]) -> dict[int, int]:
    """Coins (value → count) paying as much of ``amount`` as ``stock`` allows without ever
    exceeding it: exact when possible, otherwise the largest payable sum. A bounded
    coin-reachability table in units of the coins' gcd (O(amount × coins)), because greedy
    is only right for coin sets with the divisibility property — yen has it, a future
    hopper set might not."""
    # Largest coin first: a sum reachable with big coins is never redone with small ones,
    # so the plan uses few coins (hoppers are slow; customers dislike a fistful of ¥10).
    coins = sorted((c for c, n in stock.items() if 0 < c <= amount and n > 0), reverse=True)
    if amount <= 0 or not coins:
        return {}
    unit = math.gcd(*coins)
    total = amount // unit
    inf = 1 << 30
    count = [inf] * (total + 1)  # coins reaching t with the coins so far (inf: unreachable)
    count[0] = 0
    takes: list[list[int]] = []
    for coin in coins:
        step, limit = coin // unit, stock[coin]
        used = [0] * (total + 1)
        for t in range(step, total + 1):
            prev = t - step
            # Only fill sums not reachable yet: reaching t without this coin (used 0) keeps
            # the most room for the chain above it (the classic bounded-coins table).
            if count[t] == inf and count[prev] < inf and used[prev] < limit:
                count[t] = count[prev] + 1
                used[t] = used[prev] + 1
        takes.append(used)
    t = max(i for i in range(total + 1) if count[i] < inf)
    plan: dict[int, int] = {}
    for coin, used in zip(reversed(coins), reversed(takes), strict=True):
        if used[t]:
            plan[coin] = used[t]
            t -= used[t] * (coin // unit)
    return plan


def pay_change(amount: int, hoppers: Iterable[tuple[int, int]],
               dispense: Callable[[int, int], PayoutResult]) -> list[PayoutResult]:
    """Pay ``amount`` from hoppers given as (coin yen, believed stock), calling
    ``dispense(coin_yen, count)``. A hopper that comes up short is taken as empty and the
    rest is planned again from the others, so the total paid never exceeds ``amount`` and
    what is missing is exactly ``amount − Σ paid`` (the caller records it as refund due)."""
    stock = dict(hoppers)
    results: list[PayoutResult] = []
    remaining = amount
    while remaining > 0:
        plan = make_change(remaining, stock)
        if not plan:
            break
        short = False
        for coin in sorted(plan, reverse=True):
            count = min(plan[coin], remaining // coin)
            while count > 0:
                chunk = min(count, 255)
                result = dispense(coin, chunk)
                results.append(result)
                paid = min(result.paid, chunk)
                remaining -= paid * coin
                stock[coin] = max(0, stock[coin] - paid)
                count -= chunk
                if result.unpaid or paid < chunk:
                    stock[coin] = 0
                    short = True
                    break
            if short:
                break
        if not short:
            break
    return results
