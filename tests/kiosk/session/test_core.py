"""The session core, edge by edge: ordering rules, refusals, time-outs, the card interlock,
the PIN rules and the table's own consistency. In-process, no journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiosk.session import commands as C
from kiosk.session import events as E
from kiosk.session.core import (
    TABLE,
    ExpectedBinding,
    IssuanceSession,
    Outcome,
    SessionProtocolError,
    State,
    Timeouts,
    describe_table,
)

CERT = "ab" * 32
DOC = object()  # opaque to the core
T = Timeouts(warn=3, wipe=5, card=2, center=2, cash=2, printer=2, remind=(2, 4))


def ok_check(expected: ExpectedBinding, document: object) -> str | None:
    return None if document is DOC else "binding_mismatch"


class Drive:
    """Feeds a session and remembers every command, answering replies by kind."""

    def __init__(self, check=ok_check, **kw: object) -> None:  # type: ignore[no-untyped-def]
        self.s = IssuanceSession("txn", "req", "kiosk", check, timeouts=T, **kw)  # type: ignore[arg-type]
        self.log: list[C.Command] = []

    def __call__(self, ev: E.Event) -> list[C.Command]:
        out = self.s.handle(ev)
        self.log.extend(out)
        return out

    def key(self, kind: type[C.Command]) -> str:
        return [c for c in self.log if isinstance(c, kind)][-1].key

    def kinds(self) -> list[str]:
        return [type(c).__name__ for c in self.log if not isinstance(c, (C.Show,))]

    def to_menu(self) -> None:
        self(E.CardInserted())
        self(E.CardRead(self.key(C.ReadCard), 3, CERT))
        for n in range(1, 5):
            self(E.PinDigits(n))
        self(E.PinSubmitted())
        self(E.PinResult(self.key(C.VerifyPin), True, 3))
        self(E.Authenticated(self.key(C.Authenticate), "sess", "141003"))
        self(E.MenuReceived(self.key(C.LoadMenu), (
            E.MenuItem("juminhyo", 300, ("honseki",)),
            E.MenuItem("koseki", 450, (), "outside_hours"))))
        assert self.s.state is State.MENU

    def to_payment(self) -> None:
        self.to_menu()
        self(E.Choose("juminhyo"))
        self(E.OptionsConfirmed(("honseki",)))
        self(E.QuoteAccepted())
        assert self.s.state is State.PAYMENT

    def to_fetching(self, *coins: int) -> None:
        self.to_payment()
        for y in coins or (1000,):
            self(E.CashCredited(y))
        assert self.s.state is State.FETCHING


def test_happy_path_orders_money_paper_and_card() -> None:
    d = Drive()
    d.to_fetching(100, 500, 1000)  # mixed coins and bills, overpaid by 1300
    assert d.s.escrow == 1600
    d(E.DocumentReceived(d.key(C.RequestDocument), DOC, "aa" * 32))
    assert d.s.state is State.STACKING
    d(E.EscrowStacked(d.key(C.StackEscrow), 1600))
    assert d.s.state is State.PAYING_CHANGE
    assert next(c for c in d.log if isinstance(c, C.PayChange)).yen == 1300
    d(E.ChangePaid(d.key(C.PayChange), 1300))
    assert d.s.state is State.PRINTING
    print_cmd = next(c for c in d.log if isinstance(c, C.PrintDocument))
    assert print_cmd.document is DOC and "DOC" not in repr(print_cmd)
    d(E.PrintDone(d.key(C.PrintDocument)))
    assert d.s.state is State.AWAIT_CARD_REMOVAL  # pages held: the card is still in
    assert not any(isinstance(c, C.ReleasePages) for c in d.log)
    d(E.CardRemoved())
    assert d.s.state is State.RELEASING
    d(E.PagesReleased(d.key(C.ReleasePages)))
    d(E.Finalized(d.key(C.Finalize)))
    assert d.s.state is State.DONE and d.s.outcome is Outcome.PRINTED
    k = d.kinds()
    # the order that protects people and money
    assert k.index("RequestDocument") < k.index("StackEscrow") < k.index("PayChange") \
        < k.index("PrintDocument") < k.index("ReleasePages") < k.index("Finalize")
    assert [c.outcome for c in d.log if isinstance(c, C.Finalize)] == ["printed"]
    assert k[-1] == "Wipe"
    keys = [c.key for c in d.log]
    assert len(keys) == len(set(keys))  # every command has its own idempotency key


def test_card_removed_while_printing_releases_as_soon_as_printed() -> None:
    d = Drive()
    d.to_fetching(300)
    d(E.DocumentReceived(d.key(C.RequestDocument), DOC, "aa" * 32))
    d(E.EscrowStacked(d.key(C.StackEscrow), 300))
    assert d.s.state is State.PRINTING  # exact payment: no change step
    d(E.CardRemoved())
    assert d.s.state is State.PRINTING
    d(E.PrintDone(d.key(C.PrintDocument)))
    assert d.s.state is State.RELEASING


def test_unexpected_event_is_a_protocol_error_and_changes_nothing() -> None:
    d = Drive()
    with pytest.raises(SessionProtocolError, match="not allowed in state idle"):
        d(E.QuoteAccepted())
    d.to_payment()
    snap = d.s.snapshot()
    with pytest.raises(SessionProtocolError):
        d(E.PrintDone("txn:1:printdocument"))
    assert d.s.snapshot() == snap


def test_a_reply_to_another_command_is_refused() -> None:
    d = Drive()
    d(E.CardInserted())
    with pytest.raises(SessionProtocolError, match="awaits"):
        d(E.CardRead("other:1:readcard", 3, CERT))


def test_foreign_binding_never_takes_money_or_prints() -> None:
    d = Drive()
    d.to_fetching(500)
    d(E.DocumentReceived(d.key(C.RequestDocument), object(), "bb" * 32))
    incident = [c for c in d.log if isinstance(c, C.ReportIncident)]
    assert incident and incident[0].kind == "binding_mismatch"
    assert d.s.state is State.RETURNING_ESCROW
    d(E.EscrowReturned(d.key(C.ReturnEscrow), 500))
    assert d.s.state is State.AWAIT_CARD_REMOVAL
    d(E.CardRemoved())
    d(E.Finalized(d.key(C.Finalize)))
    assert d.s.outcome is Outcome.REFUSED and d.s.reason == "binding_mismatch"
    assert not any(isinstance(c, (C.StackEscrow, C.PrintDocument)) for c in d.log)


def test_a_binding_check_that_raises_is_a_refusal() -> None:
    def broken(expected: ExpectedBinding, document: object) -> str | None:
        raise ValueError("boom")

    d = Drive(check=broken)
    d.to_fetching(500)
    d(E.DocumentReceived(d.key(C.RequestDocument), DOC, "aa" * 32))
    assert d.s.reason == "binding_check_error"
    assert not any(isinstance(c, C.StackEscrow) for c in d.log)


def test_print_failure_after_stacking_prints_a_slip_and_owes_the_fee() -> None:
    d = Drive()
    d.to_fetching(1000)
    d(E.DocumentReceived(d.key(C.RequestDocument), DOC, "aa" * 32))
    d(E.EscrowStacked(d.key(C.StackEscrow), 1000))
    d(E.ChangePaid(d.key(C.PayChange), 700))
    d(E.PrintFailed(d.key(C.PrintDocument), "media-jam"))
    slip = next(c for c in d.log if isinstance(c, C.PrintSlip))
    assert (slip.txn, slip.yen, slip.reason) == ("txn", 300, "print_failed:media-jam")
    d(E.PrintDone(slip.key))
    assert d.s.state is State.AWAIT_CARD_REMOVAL
    d(E.CardRemoved())
    d(E.PagesReleased(d.key(C.ReleasePages)))
    d(E.Finalized(d.key(C.Finalize)))
    assert d.s.outcome is Outcome.FAILED_REFUND_DUE and d.s.refund == 300
    assert [c.outcome for c in d.log if isinstance(c, C.Finalize)] == ["failed"]
    assert d.s.cash_in == d.s.change_paid + d.s.refund


def test_change_shortfall_is_owed_and_the_document_still_prints() -> None:
    d = Drive()
    d.to_fetching(5000)
    d(E.DocumentReceived(d.key(C.RequestDocument), DOC, "aa" * 32))
    d(E.EscrowStacked(d.key(C.StackEscrow), 5000))
    d(E.ChangePaid(d.key(C.PayChange), 4000))  # hopper ran dry
    assert d.s.refund == 700 and d.s.state is State.PRINTING


def test_card_pulled_during_payment_returns_the_escrow() -> None:
    d = Drive()
    d.to_payment()
    d(E.CashCredited(100))
    d(E.CardRemoved())
    assert d.s.state is State.RETURNING_ESCROW
    d(E.EscrowReturned(d.key(C.ReturnEscrow), 100))
    d(E.Finalized(d.key(C.Finalize)))
    assert d.s.outcome is Outcome.CANCELLED and d.s.reason == "card_removed"
    assert "EndCashIn" in d.kinds()


def test_a_stuck_return_becomes_a_refund_with_a_slip() -> None:
    d = Drive()
    d.to_payment()
    d(E.CashCredited(100))
    d(E.CashCredited(50))
    d(E.Cancel())
    d(E.EscrowReturned(d.key(C.ReturnEscrow), 50))  # a coin stuck in the path
    assert d.s.cash_in == 100 and d.s.refund == 100
    assert d.s.state is State.SLIP_PRINTING


def test_timeout_warns_then_wipes_and_returns_the_escrow() -> None:
    d = Drive()
    d.to_payment()
    d(E.CashCredited(100))
    for _ in range(T.warn):
        d(E.Tick())
    assert d.log[-1] == C.Show(d.log[-1].key, C.Screen.TIMEOUT_WARNING, "", T.wipe - T.warn)
    d(E.Extend())  # the user answered: the clock starts again
    for _ in range(T.wipe - 1):
        d(E.Tick())
    assert d.s.state is State.PAYMENT
    d(E.Tick())
    assert d.s.state is State.RETURNING_ESCROW and d.s.reason == "timeout"
    assert "Wipe" in d.kinds() and d.s.menu == {} and d.s.item is None


def test_the_card_holds_the_session_however_long_it_takes() -> None:
    d = Drive()
    d.to_menu()
    d(E.Cancel())
    assert d.s.state is State.AWAIT_CARD_REMOVAL
    for _ in range(10_000):
        d(E.Tick())
    assert d.s.state is State.AWAIT_CARD_REMOVAL
    levels = [c.level for c in d.log if isinstance(c, C.RemindCard)]
    assert levels == [1, 2, 3]  # escalating: visual, spoken, louder
    d(E.CardRemoved())
    d(E.Finalized(d.key(C.Finalize)))
    assert d.s.state is State.DONE


def test_a_locked_pin_is_never_tried() -> None:
    d = Drive()
    d(E.CardInserted())
    d(E.CardRead(d.key(C.ReadCard), 0, CERT))
    assert d.s.reason == "pin_locked" and d.s.state is State.AWAIT_CARD_REMOVAL
    assert "VerifyPin" not in d.kinds()


def test_three_wrong_pins_lock_and_stop() -> None:
    d = Drive()
    d(E.CardInserted())
    d(E.CardRead(d.key(C.ReadCard), 3, CERT))
    for left in (2, 1, 0):
        d(E.PinDigits(4))
        d(E.PinSubmitted())
        d(E.PinResult(d.key(C.VerifyPin), False, left))
    assert d.kinds().count("VerifyPin") == 3
    assert d.s.state is State.AWAIT_CARD_REMOVAL and d.s.reason == "pin_locked"
    with pytest.raises(SessionProtocolError):
        d(E.PinSubmitted())


def test_an_incomplete_pin_never_reaches_the_card() -> None:
    d = Drive()
    d(E.CardInserted())
    d(E.CardRead(d.key(C.ReadCard), 1, CERT))
    d(E.PinDigits(3))
    d(E.PinSubmitted())
    assert "VerifyPin" not in d.kinds() and d.s.state is State.PIN_ENTRY


def test_a_refused_menu_item_shows_its_reason_and_stays() -> None:
    d = Drive()
    d.to_menu()
    d(E.Choose("koseki"))
    assert d.s.state is State.MENU
    assert d.log[-1] == C.Show(d.log[-1].key, C.Screen.REFUSED, "outside_hours", 0)
    with pytest.raises(SessionProtocolError):
        d(E.Choose("inkan"))  # not on this menu


def test_pin_reset_path() -> None:
    d = Drive()
    d.to_menu()
    d(E.Choose("pin-reset"))
    d(E.SecretEntered())
    d(E.PinDigits(4))
    d(E.PinSubmitted())
    d(E.PinResult(d.key(C.RedeemPinReset), False, 2))  # wrong PIN on re-entry
    assert d.s.state is State.RESET_PIN_ENTRY
    d(E.PinDigits(4))
    d(E.PinSubmitted())
    d(E.PinResetDone(d.key(C.RedeemPinReset)))
    d(E.CardRemoved())
    d(E.Finalized(d.key(C.Finalize)))
    assert d.s.outcome is Outcome.PIN_RESET
    assert "StartCashIn" not in d.kinds()


def test_a_late_answer_to_an_abandoned_call_is_absorbed() -> None:
    d = Drive()
    d.to_fetching(500)
    fetch = d.key(C.RequestDocument)
    for _ in range(T.center):
        d(E.Tick())
    assert d.s.reason == "center_unavailable" and d.s.state is State.RETURNING_ESCROW
    assert d(E.DocumentReceived(fetch, DOC, "aa" * 32)) == []
    assert d.s.state is State.RETURNING_ESCROW


def test_money_is_never_guessed_on_a_device_timeout() -> None:
    d = Drive()
    d.to_fetching(500)
    d(E.DocumentReceived(d.key(C.RequestDocument), DOC, "aa" * 32))
    for _ in range(100):
        d(E.Tick())
    assert d.s.state is State.STACKING and d.s.cash_in == 0
    assert [c.screen for c in d.log if isinstance(c, C.Show)][-1] is C.Screen.CALL_STAFF
    d(E.EscrowStacked(d.key(C.StackEscrow), 500))
    assert d.s.cash_in == 500


def test_finalize_unacknowledged_is_owed() -> None:
    d = Drive()
    d.to_menu()
    d(E.Cancel())
    d(E.CardRemoved())
    for _ in range(T.center):
        d(E.Tick())
    assert d.s.state is State.DONE and d.s.finalize_owed


def test_no_pin_value_can_enter_the_core() -> None:
    # The events that concern the PIN carry counts only, by construction.
    for cls in (E.PinDigits, E.PinSubmitted, E.SecretEntered, E.PinResult):
        names = set(cls.__dataclass_fields__)
        assert not names & {"pin", "value", "digits", "secret"}, cls


def test_table_is_complete() -> None:
    assert set(TABLE) == set(State)
    for state, row in TABLE.items():
        if state in (State.IDLE, State.DONE):
            continue
        assert E.Tick in row and E.CardRemoved in row, state  # time-out and removal edges
        for edge in row.values():
            assert hasattr(IssuanceSession, edge.handler)


def test_the_document_shows_the_table() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "kiosk-session.md").read_text()
    assert describe_table() in doc
