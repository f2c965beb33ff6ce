"""The runner's cash adapter (``kiosk.runner.CashAdapter``) on the emulated validator and
ccTalk bus over real ptys: money that arrived before a session is never that session's
(issue 22, item 9). The issue's case: a ¥5,000 note inserted while the validator was
inhibited between sessions stayed queued and became the next person's ``paid: 5000``."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from emulators.devices.bill import BillValidator
from emulators.devices.coin import CcTalkBusEmulator
from emulators.devices.ptyline import PtyLine
from kiosk.devices.id003 import Status
from kiosk.runner import CashAdapter


@dataclass
class Rig:
    unit: BillValidator
    coins: CcTalkBusEmulator
    config: dict[str, Any]
    journal: Path


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setenv("CARDIO_LOCK_DIR", str(tmp_path))
    unit = BillValidator()
    coins = CcTalkBusEmulator(stock=50, coin_period=0.001)
    lines = [PtyLine(unit.receive, "bill").start(), PtyLine(coins.receive, "coin").start()]
    config = {"bill_validator": {"port": lines[0].path},
              "coin_acceptor": {"port": lines[1].path},
              "hopper": [{"address": a, "coin": h.coin_yen} for a, h in coins.hoppers.items()]}
    try:
        yield Rig(unit, coins, config, tmp_path / "journal.db")
    finally:
        for line in lines:
            line.close()


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "no progress"
        await asyncio.sleep(0.01)


def _before_the_session(unit: BillValidator, how: str) -> None:
    if how == "inserted-while-inhibited":
        unit.insert(5000)
    else:  # "in-escrow": a unit found holding a note (power-up, or one that took it anyway)
        with unit._lock:
            unit.bill, unit.state, unit.escrowed = 5000, Status.ESCROW, True


@pytest.mark.parametrize("how", ["inserted-while-inhibited", "in-escrow"])
def test_money_from_before_the_session_is_handed_back_journalled_never_credited(
        rig: Rig, how: str) -> None:
    credits: list[int] = []

    async def main() -> dict[str, Any]:
        cash = CashAdapter(rig.config, journal=rig.journal)
        cash.on_credit = credits.append
        await cash.start()
        try:
            # The kiosk idles between customers: the validator is inhibited.
            await _until(lambda: rig.unit.state == Status.DISABLED)
            _before_the_session(rig.unit, how)
            await cash.call(lambda: cash.start_cash_in(300), 10)  # the next customer
            rig.unit.insert(1000)
            await _until(lambda: sum(credits) >= 300)
            end: dict[str, Any] = await cash.call(lambda: cash.end(True), 30)
            with contextlib.suppress(AssertionError):  # (the assertions below say what)
                await _until(lambda: rig.unit.unsettled() == 0, timeout=3)
            return end
        finally:
            cash.stop()

    end = asyncio.run(main())
    assert credits == [1000]  # the customer's paid: their own note, not the 5000
    assert end["stacked"] == 1000 and rig.unit.cassette == [1000]
    assert 5000 in rig.unit.returned + rig.unit.rejected  # back to whoever inserted it
    with sqlite3.connect(rig.journal) as db:
        rows = db.execute("SELECT yen, outcome, reason FROM cash_strays").fetchall()
    assert rows == ([(0, "rejected", "return by inhibit")] if how == "inserted-while-inhibited"
                    else [(5000, "returned", "")])
