"""The XFS4IoT-shaped services driving the emulated devices over ptys: a whole cash-in with
change, while a printer that never answers stalls nobody but itself."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

from emulators.devices.bill import BillValidator
from emulators.devices.coin import CcTalkBusEmulator
from emulators.devices.ptyline import PtyLine
from kiosk.devices.cctalk import CcTalkBus, CoinAcceptorDriver, HopperDriver
from kiosk.devices.id003 import Id003Driver, Status
from kiosk.devices.ipp import IppPrinter
from kiosk.devices.model import (
    Command,
    CompletionCode,
    DeviceService,
    Interface,
    ItemSettled,
    Message,
    Outcome,
)
from kiosk.devices.services import CashAcceptor, DocumentPrinter


async def _wait_for(service: DeviceService, name: str, timeout: float = 10) -> Message:
    while True:
        msg = await asyncio.wait_for(service.messages.get(), timeout)
        if msg.name == name:
            return msg


def test_cash_in_with_change_while_the_printer_is_wedged() -> None:
    unit = BillValidator()
    coins = CcTalkBusEmulator(stock=20, coin_period=0.001)
    lines = [PtyLine(unit.receive, "bill").start(), PtyLine(coins.receive, "coin").start()]
    bus = CcTalkBus(lines[1].path, timeout=0.05, retries=10)
    cash = CashAcceptor(Id003Driver(lines[0].path, timeout=0.05), CoinAcceptorDriver(bus),
                        {h.coin_yen: HopperDriver(bus, a, h.coin_yen)
                         for a, h in coins.hoppers.items()}, believed_stock=20)
    wedge = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    port = wedge.getsockname()[1]
    printer = DocumentPrinter(IppPrinter(f"ipp://127.0.0.1:{port}/ipp/print", timeout=30))

    async def main() -> dict[str, Any]:
        cash_svc, print_svc = cash.service(), printer.service()
        await cash_svc.start()
        await print_svc.start()
        stuck = asyncio.create_task(print_svc.execute(Command(
            Interface.DOCUMENT_PRINTER, "PrintJob", {"document": b"%PDF-1.7\n"})))
        started = await cash_svc.execute(Command(Interface.CASH_ACCEPTOR, "CashInStart",
                                                 {"fee": 350}))
        assert started.code is CompletionCode.SUCCESS
        unit.insert(1000)
        held = await _wait_for(cash_svc, "CashAcceptor.InsertItemsEvent")
        assert held.payload["yen"] == 1000  # covers the fee: held in escrow until the end
        unit.insert(5000)  # the fee is covered: this note must come back
        end = await cash_svc.execute(Command(Interface.CASH_ACCEPTOR, "CashInEnd",
                                             {"sold": True}))
        assert end.code is CompletionCode.SUCCESS, end.payload
        assert not stuck.done()  # the printer is still hanging, and nobody waited for it
        wedge.close()
        await cash_svc.stop()
        await print_svc.stop()
        return end.payload

    try:
        result = asyncio.run(main())
    finally:
        for line in lines:
            line.close()
    assert (result["stacked"], result["change_owed"], result["change_paid"]) == (1000, 650, 650)
    assert result["change_unpaid"] == 0 and result["problems"] == []
    assert unit.cassette == [1000]  # the 5000 was refused (handed back or never taken)
    paid = {h.coin_yen: h.paid_total for h in coins.hoppers.values()}
    assert paid == {500: 1, 100: 1, 50: 1, 10: 0}


def _cash_rig() -> tuple[BillValidator, CcTalkBusEmulator, CashAcceptor, list[PtyLine]]:
    unit = BillValidator()
    coins = CcTalkBusEmulator(stock=20, coin_period=0.001)
    lines = [PtyLine(unit.receive, "bill").start(), PtyLine(coins.receive, "coin").start()]
    bus = CcTalkBus(lines[1].path, timeout=0.05, retries=10)
    cash = CashAcceptor(Id003Driver(lines[0].path, timeout=0.05), CoinAcceptorDriver(bus),
                        {h.coin_yen: HopperDriver(bus, a, h.coin_yen)
                         for a, h in coins.hoppers.items()}, believed_stock=20)
    return unit, coins, cash, lines


def _held_then(commit: bool) -> tuple[BillValidator, dict[str, Any]]:
    unit, coins, cash, lines = _cash_rig()

    async def main() -> dict[str, Any]:
        svc = cash.service()
        await svc.start()
        await svc.execute(Command(Interface.CASH_ACCEPTOR, "CashInStart", {"fee": 300}))
        coins.insert(100)
        await _wait_for(svc, "CashAcceptor.ItemsSettledEvent")
        unit.insert(1000)  # completes the payment: held in escrow, not stacked
        escrowed = await _wait_for(svc, "CashAcceptor.InsertItemsEvent")
        assert escrowed.payload["yen"] == 1000
        status = await svc.execute(Command(Interface.CASH_ACCEPTOR, "Status"))
        assert (status.payload["credited"], status.payload["held"]) == (100, 1000)
        assert unit.cassette == []
        name = "CashInEnd" if commit else "CashInRollback"
        end = await svc.execute(Command(Interface.CASH_ACCEPTOR, name, {"sold": True}))
        await svc.stop()
        assert end.code is CompletionCode.SUCCESS, end.payload
        return end.payload

    try:
        return unit, asyncio.run(main())
    finally:
        for line in lines:
            line.close()


def test_the_note_completing_the_payment_is_stacked_on_commit() -> None:
    unit, result = _held_then(commit=True)
    assert unit.cassette == [1000] and result["sold"]
    assert (result["change_owed"], result["change_paid"]) == (800, 800)


def test_rollback_hands_back_the_held_note_itself() -> None:
    unit, result = _held_then(commit=False)
    assert unit.cassette == [] and unit.returned == [1000] and not result["sold"]
    assert (result["returned"], result["change_owed"], result["change_paid"]) == (1000, 100,
                                                                                  100)


def _poll_until(cash: CashAcceptor, predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the devices made no progress"
        cash.poll()


def _note_in_escrow(unit: BillValidator, yen: int) -> None:
    """A note sitting in the validator's escrow between sessions (a unit that took it while
    it should not have, or one found there at power-up)."""
    with unit._lock:
        unit.bill, unit.state, unit.escrowed = yen, Status.ESCROW, True


def test_a_stale_note_in_escrow_at_session_start_is_returned_not_credited() -> None:
    """At session start nothing that arrived before it counts: a note already in escrow is
    handed back and reported as a stray (the adapter journals it), and the customer's
    payment is what the customer inserted — the acceptor credited it as theirs (issue 22)."""
    unit, _coins, cash, lines = _cash_rig()
    assert cash.bill is not None
    try:
        _poll_until(cash, lambda: cash.bill is not None and cash.bill.host.idle)
        _note_in_escrow(unit, 5000)
        cash.cash_in_start({"fee": 300})
        assert cash.covered == 0
        unit.insert(1000)  # the customer's note
        _poll_until(cash, lambda: cash.covered >= 300)
        assert cash.covered == 1000
        end = cash.cash_in_end({"sold": True})
    finally:
        cash.bill.close()
        for line in lines:
            line.close()
    assert (end["stacked"], end["change_owed"]) == (1000, 700)
    assert unit.cassette == [1000] and unit.returned == [5000]
    assert [(e.yen, e.outcome) for e in cash.strays if isinstance(e, ItemSettled)] == [
        (5000, Outcome.RETURNED)]


def test_between_sessions_a_note_is_handed_back_and_kept_for_no_one() -> None:
    """No session open: whatever the validator sees goes back (before, the host's default
    stacked it — money in the cassette that no session records)."""
    unit, _coins, cash, lines = _cash_rig()
    assert cash.bill is not None
    try:
        _poll_until(cash, lambda: cash.bill is not None and cash.bill.host.idle)
        _note_in_escrow(unit, 10000)
        _poll_until(cash, lambda: unit.unsettled() == 0 and cash.bill is not None
                    and cash.bill.host.idle)
    finally:
        cash.bill.close()
        for line in lines:
            line.close()
    assert unit.cassette == [] and unit.returned == [10000]
    assert [(e.yen, e.outcome) for e in cash.strays if isinstance(e, ItemSettled)] == [
        (10000, Outcome.RETURNED)]
