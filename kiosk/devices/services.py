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

Nothing that arrived before a session counts for it (issue 22: a note inserted between
sessions became the next customer's payment). Between sessions every note is handed back;
``CashInStart`` first brings the validator to rest — a note still in escrow goes back — and
only then opens acceptance; a bill item the validator reported before the session began is
never the session's, whenever its outcome arrives. What settles or is refused outside a
session is kept in :attr:`CashAcceptor.strays` for the kiosk to journal.
"""

from __future__ import annotations

import base64
import dataclasses
import queue
import time
from collections.abc import Callable
from typing import Any

from kiosk.devices.cash import CashSession, can_change, pay_change
from kiosk.devices.cctalk import YEN_COIN, CoinAcceptorDriver, HopperDriver
from kiosk.devices.errors import DeviceError, DeviceTimeout
from kiosk.devices.id003 import Id003Driver, Status
from kiosk.devices.ipp import IppPrinter
from kiosk.devices.model import (
    DeviceEvent,
    DeviceService,
    Interface,
    ItemEscrowed,
    ItemRejected,
    ItemSettled,
)

#: Validator states with a note on the move: a sweep waits until none of them is reported.
_MOVING = frozenset({Status.ACCEPTING, Status.ESCROW, Status.STACKING, Status.VEND_VALID,
                     Status.STACKED, Status.REJECTING, Status.RETURNING, Status.HOLDING})


#: Every coin the acceptor knows, smallest first.
COINS: tuple[int, ...] = tuple(sorted(YEN_COIN))


def hand_back(_yen: int) -> bool | None:
    """The validator's escrow decision while no session is open: hand the note back."""
    return False


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
        #: Items that settled or were refused outside a session (or before it began):
        #: nobody's payment; the caller journals them and empties the list.
        self.strays: list[DeviceEvent] = []
        self._bill_floor = 0  # bill items numbered up to this arrived before the session
        #: The hoppers' stock the open session was told (``None``: unknown, take anything).
        self._stock: dict[int, int] | None = None
        self._coin_set: tuple[int, ...] | None = None  # the coins the acceptor takes now
        if bill is not None:
            bill.host.accept = hand_back

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
            self._coin_set = self._payable_coins() if on else None
            self.coins.set_enabled(on, self._coin_set or ())

    def _payable_coins(self) -> tuple[int, ...]:
        """The coins whose change the hoppers can pay now (every coin when the stock is not
        known): the same rule as for notes. A coin cannot be held in escrow, so the one whose
        change is short is inhibited before it comes, not handed back after (issue 24: a
        ¥500 coin for a ¥200 fee with only ¥200 of change in the hoppers was taken and
        ¥100 was owed silently)."""
        session, stock = self.session, self._stock
        if session is None or stock is None:
            return COINS
        return tuple(c for c in COINS if can_change(session.credited + self.held + c
                                                    - session.price, stock))

    def _refresh_coins(self) -> None:
        """Re-inhibit coins after a credit: what is payable shrinks as the credit grows."""
        if self.coins is None or not self._accepting:
            return
        want = self._payable_coins()
        if want != self._coin_set:
            self._coin_set = want
            self.coins.set_enabled(True, want)

    def cash_in_start(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.session is not None and not self.session.closed:
            raise DeviceError("a cash-in is already open; end or roll it back first")
        fee = int(payload["fee"])
        # The hoppers' stock (coin → count), when the caller knows it: a note whose change
        # the hoppers cannot pay is handed back before it is taken (a ¥10,000 note for a
        # ¥200 fee with the ¥500 hopper empty would leave change owed, not paid).
        stock = payload.get("change_stock")
        self._sweep()
        session = CashSession(fee)
        self.session = session
        self._stock = {int(c): int(n) for c, n in stock.items()} if stock is not None else None
        if self.bill is not None:
            def accept(yen: int) -> bool | None:
                if session.credited >= session.price:
                    return False
                if stock is not None and not can_change(session.credited + yen
                                                        - session.price, stock):
                    return False
                if self.hold_last_note and session.credited + yen >= session.price:
                    return None  # this note completes the payment: hold it until commit
                return True

            self.bill.host.accept = accept
        self._set_accepting(True)
        self._until_accepting()
        return {"fee": fee}

    def _sweep(self) -> None:
        """Before a session: drive the validator to rest with every note refused — one held
        in escrow or on its way goes back (recorded in :attr:`strays`) — and remember how
        many items it has reported, so that none of them is ever this session's. A validator
        that cannot be brought to rest refuses the cash-in (:class:`DeviceError`): a note of
        unknown origin is in its path. One that does not answer at all is passed over (it
        cannot escrow anything while silent; the coins still work)."""
        if self.bill is None:
            return
        host = self.bill.host
        host.accept = hand_back
        host.decide(False)
        deadline = time.monotonic() + self.settle_timeout
        quiet = 0
        while quiet < 2:
            got = self.poll()
            if not host.online:
                break
            moving = host.bill_in_flight or host.status is None or host.status in _MOVING
            quiet = 0 if got or moving else quiet + 1
            if time.monotonic() > deadline:
                if moving:
                    raise DeviceError("a note from before this session is still in the bill"
                                      " validator's path; staff must clear it")
                break
        self._bill_floor = host.items_seen

    def _until_accepting(self) -> None:
        """Return once the validator has acknowledged acceptance (bounded): a note inserted
        while it is still inhibited is refused by the unit, and the screen must not ask
        for money before the unit takes it."""
        if self.bill is None:
            return
        host = self.bill.host
        deadline = time.monotonic() + self.settle_timeout
        while not host.configured and host.online and time.monotonic() < deadline:
            self.poll()

    def _counts(self, event: DeviceEvent) -> bool:
        """Whether ``event`` belongs to the open session: a bill item first reported before
        the session began (numbered up to the floor) is not the customer's."""
        if isinstance(event, ItemEscrowed | ItemSettled) and self.bill is not None \
                and event.device == self.bill.host.device:
            return event.item > self._bill_floor
        return True

    def poll(self) -> list[DeviceEvent]:
        events: list[DeviceEvent] = []
        if self.bill is not None:
            events += self.bill.step()
        if self.coins is not None:
            events += self.coins.poll()
        session = self.session if self.session is not None and not self.session.closed \
            else None
        for event in events:
            if session is not None and self._counts(event):
                session.apply(event)
            elif isinstance(event, ItemSettled | ItemRejected):
                self.strays.append(event)
        if session is not None and self.covered >= session.price:
            self._set_accepting(False)
        elif session is not None and events:
            self._refresh_coins()
        return events

    @property
    def held(self) -> int:
        """Yen of the note held in escrow for this session (0 if none)."""
        if self.bill is None or self.bill.host.held_item <= self._bill_floor:
            return 0
        return self.bill.host.held_yen

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
        if self.bill is not None:
            self.bill.host.accept = hand_back  # until the next session, every note goes back
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
