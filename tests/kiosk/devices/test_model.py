"""The XFS4IoT-shaped device model: acknowledge, events, completion — and one wedged device
never stalls another."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from kiosk.devices.model import (
    Command,
    CompletionCode,
    DeviceEvent,
    DeviceService,
    Fault,
    Interface,
    ItemSettled,
    Outcome,
    event_message,
)


def test_event_message_shape() -> None:
    msg = event_message(ItemSettled("bill_validator", 3, 1000, Outcome.STACKED))
    assert msg.kind == "unsolicitedEvent" and msg.name == "CashAcceptor.ItemsSettledEvent"
    assert msg.payload == {"device": "bill_validator", "item": 3, "yen": 1000,
                           "outcome": "stacked", "reason": ""}


def test_a_wedged_device_does_not_stall_the_others() -> None:
    release = threading.Event()
    polled: list[int] = []

    def wedge(_: dict[str, Any]) -> dict[str, Any]:
        release.wait(10)  # a printer that never answers
        return {}

    def poll() -> list[DeviceEvent]:
        polled.append(1)
        return [Fault("coin_acceptor", "test")] if len(polled) == 1 else []

    async def main() -> None:
        printer = DeviceService(Interface.DOCUMENT_PRINTER, handlers={"PrintJob": wedge})
        cash = DeviceService(Interface.CASH_ACCEPTOR,
                             handlers={"CashInStart": lambda p: {"started": p["fee"]}},
                             poll=poll)
        await printer.start()
        await cash.start()
        stuck = asyncio.create_task(printer.execute(
            Command(Interface.DOCUMENT_PRINTER, "PrintJob")))
        done = await asyncio.wait_for(cash.execute(
            Command(Interface.CASH_ACCEPTOR, "CashInStart", {"fee": 300})), 5)
        assert done.kind == "completion" and done.code is CompletionCode.SUCCESS
        assert done.payload == {"started": 300}
        kinds = []
        while len(kinds) < 2:
            kinds.append((await asyncio.wait_for(cash.messages.get(), 5)).kind)
        assert set(kinds) == {"acknowledge", "unsolicitedEvent"}
        assert not stuck.done()
        unsupported = await cash.execute(Command(Interface.CASH_ACCEPTOR, "Nope"))
        assert unsupported.code is CompletionCode.UNSUPPORTED
        release.set()
        assert (await asyncio.wait_for(stuck, 5)).code is CompletionCode.SUCCESS
        await printer.stop()
        await cash.stop()

    asyncio.run(main())
