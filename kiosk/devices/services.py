"""The three kiosk devices as XFS4IoT-shaped services: ``CashAcceptor``, ``DocumentPrinter``
and ``CardSlot``, each a :class:`~kiosk.devices.model.DeviceService` on its own thread.

This is the layer the kiosk controller (the next issue) drives: it sends commands and reads
acknowledgements, events and completions, and never touches a serial port. Each service owns
its adapters; a printer that hangs in an HTTP call stalls only the printer's thread.

Cash acceptance policy (why): a note is stacked only while the fee is not yet covered; the
note that covers it is *held in escrow* until ``CashInEnd`` (the issuance committed: stack
it) or ``CashInRollback`` (printing failed: hand the very note back) — the reference's
cleanest answer to "paid but not printed". Once the fee is covered acceptance is switched
off and a further note is handed back. A rollback gives back everything: the held note
itself, the rest as coins from the hoppers (what they cannot pay becomes refund due).
"""

from __future__ import annotations

import base64
import dataclasses
import queue
import time
from collections.abc import Callable
from typing import Any

from kiosk.devices.cash import CashSession, pay_change
from kiosk.devices.cctalk import CoinAcceptorDriver, HopperDriver
from kiosk.devices.errors import DeviceError, DeviceTimeout
from kiosk.devices.id003 import Id003Driver, Status
from kiosk.devices.ipp import IppPrinter
from kiosk.devices.model import DeviceEvent, DeviceService, Interface


class CashAcceptor:
    """Bills (ID-003), coins (ccTalk) and change (ccTalk hoppers) behind one service."""

    def __init__(self, bill: Id003Driver | None, coins: CoinAcceptorDriver | None,
                 hoppers: dict[int, HopperDriver], *, believed_stock: int = 100,
                 settle_timeout: float = 15.0, hold_last_note: bool = True) -> None:
        self.bill = bill
        self.coins = coins
        self.hoppers = hoppers
        self.believed_stock = believed_stock
        self.settle_timeout = settle_timeout
        self.hold_last_note = hold_last_note
        self.session: CashSession | None = None
        self._accepting = False

    def service(self) -> DeviceService:
        return DeviceService(Interface.CASH_ACCEPTOR, poll=self.poll, handlers={
            "CashInStart": self.cash_in_start,
            "CashInEnd": self.cash_in_end,
            "CashInRollback": lambda _p: self.cash_in_end({"sold": False}),
            "Status": self.status,
        })

    def _set_accepting(self, on: bool) -> None:
        if on == self._accepting:
            return
        self._accepting = on
        if self.bill is not None:
            self.bill.host.set_enabled(on)
        if self.coins is not None:
            self.coins.set_enabled(on)

    def cash_in_start(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.session is not None and not self.session.closed:
            raise DeviceError("a cash-in is already open; end or roll it back first")
        fee = int(payload["fee"])
        session = CashSession(fee)
        self.session = session
        if self.bill is not None:
            def accept(yen: int) -> bool | None:
                if session.credited >= session.price:
                    return False
                if self.hold_last_note and session.credited + yen >= session.price:
                    return None  # this note completes the payment: hold it until commit
                return True

            self.bill.host.accept = accept
        self._set_accepting(True)
        return {"fee": fee}

    def poll(self) -> list[DeviceEvent]:
        events: list[DeviceEvent] = []
        if self.bill is not None:
            events += self.bill.step()
        if self.coins is not None:
            events += self.coins.poll()
        if self.session is not None and not self.session.closed:
            for event in events:
                self.session.apply(event)
            if self.covered >= self.session.price:
                self._set_accepting(False)
        return events

    @property
    def held(self) -> int:
        """Yen of the note held in escrow (0 if none)."""
        return self.bill.host.held_yen if self.bill is not None else 0

    @property
    def covered(self) -> int:
        """Credited plus the note held in escrow: what the customer has put in so far."""
        return (self.session.credited if self.session is not None else 0) + self.held

    def _settle(self) -> list[str]:
        """Drive the devices until nothing is in flight (bounded)."""
        problems: list[str] = []
        deadline = time.monotonic() + self.settle_timeout
        quiet = 0
        while quiet < 4:
            if time.monotonic() > deadline:
                problems.append("devices did not settle: an item may still be in the path")
                break
            got = self.poll()
            bill_busy = self.bill is not None and not (
                self.bill.host.idle and self.bill.host.status in (Status.IDLING,
                                                                  Status.DISABLED))
            coin_busy = self.coins is not None and self.coins.tracker.awaiting_confirmation
            quiet = 0 if got or bill_busy or coin_busy else quiet + 1
        return problems

    def cash_in_end(self, payload: dict[str, Any]) -> dict[str, Any]:
        session = self.session
        if session is None or session.closed:
            raise DeviceError("no cash-in is open")
        self._set_accepting(False)
        want = bool(payload.get("sold", True))
        if self.bill is not None and self.held:
            # Commit: stack the held note if the sale needs it; rollback: hand it back.
            self.bill.host.decide(want and session.credited < session.price)
        problems = self._settle()
        sold = want and session.paid_enough
        owed = session.change_owed(sold)

        def dispense(coin: int, count: int) -> Any:
            return self.hoppers[coin].dispense(count)

        try:
            for result in pay_change(owed, [(c, self.believed_stock) for c in self.hoppers],
                                     dispense):
                session.record_payout(result)
        except DeviceTimeout as exc:
            problems.append(f"payout stopped: {exc}")
        settlement = session.close(sold=sold)
        return {**dataclasses.asdict(settlement), "refund_due": settlement.refund_due,
                "problems": problems}

    def status(self, _payload: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"accepting": self._accepting}
        if self.bill is not None:
            st = self.bill.host.status
            out["bill_validator"] = Status(st).name.lower() if st is not None else None
            out["bill_online"] = self.bill.host.online
        if self.session is not None:
            out["credited"] = self.session.credited
            out["held"] = self.held
        return out


class DocumentPrinter:
    """An IPP Everywhere printer behind the service interface."""

    def __init__(self, printer: IppPrinter, *, job_timeout: float = 120.0) -> None:
        self.printer = printer
        self.job_timeout = job_timeout

    def service(self) -> DeviceService:
        return DeviceService(Interface.DOCUMENT_PRINTER, handlers={
            "PrintJob": self.print_job, "Status": self.status})

    def print_job(self, payload: dict[str, Any]) -> dict[str, Any]:
        document = payload["document"]
        if isinstance(document, str):  # JSON transports carry it base64-encoded
            document = base64.b64decode(document)
        result = self.printer.print_document(bytes(document), name=str(
            payload.get("name", "certificate")), timeout=self.job_timeout)
        return {"job_id": result.job_id, "state": result.state.name.lower(),
                "warnings": [f.kind for f in result.events]}

    def status(self, _payload: dict[str, Any]) -> dict[str, Any]:
        st = self.printer.status()
        return {"state": st.state, "reasons": st.reasons, "faults": [f.kind for f in st.faults]}


class CardSlotService:
    """Card inserted/removed as unsolicited events; ``start`` takes the watcher factory so
    the service does not care whether PC/SC or something else reports the card."""

    def __init__(self, start: Callable[[Callable[[DeviceEvent], None]], object]) -> None:
        self._events: queue.Queue[DeviceEvent] = queue.Queue()
        self._start = start
        self._started = False

    def service(self) -> DeviceService:
        return DeviceService(Interface.CARD_SLOT, handlers={}, poll=self.poll)

    def poll(self) -> list[DeviceEvent]:
        if not self._started:
            self._started = True
            self._start(self._events.put)
        out: list[DeviceEvent] = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out
