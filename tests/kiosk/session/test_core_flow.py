"""The resident's flow of issue 24 in the core: the card-out interlock (once used, the card
must leave before the choice), the municipality's name, copies (通数) with the fee
multiplied and bounded, 戻る from the quote, the amount a cancel returns. In-process."""

from __future__ import annotations

import pytest

from kiosk.session import commands as C
from kiosk.session import events as E
from kiosk.session.core import MAX_COPIES, IssuanceSession, SessionProtocolError, State
from tests.kiosk.session.test_core import CERT, DOC, T, ok_check


class Drive:
    def __init__(self, **kw: object) -> None:
        self.s = IssuanceSession("txn", "req", "kiosk", ok_check, timeouts=T,  # type: ignore[arg-type]
                                 **kw)
        self.log: list[C.Command] = []

    def __call__(self, ev: E.Event) -> list[C.Command]:
        out = self.s.handle(ev)
        self.log.extend(out)
        return out

    def key(self, kind: type[C.Command]) -> str:
        return [c for c in self.log if isinstance(c, kind)][-1].key

    def screens(self) -> list[str]:
        return [c.screen.value for c in self.log if isinstance(c, C.Show)]

    def used(self, max_copies: int = 3) -> None:
        """Card in, PIN right, authenticated, menu loaded: the card has been used."""
        self(E.CardInserted())
        self(E.CardRead(self.key(C.ReadCard), 3, CERT))
        for n in range(1, 5):
            self(E.PinDigits(n))
        self(E.PinSubmitted())
        self(E.PinResult(self.key(C.VerifyPin), True, 3))
        self(E.Authenticated(self.key(C.Authenticate), "sess", "141003", "横浜市"))
        self(E.MenuReceived(self.key(C.LoadMenu), (
            E.MenuItem("juminhyo", 300, ("honseki",), max_copies=max_copies),
            E.MenuItem("inkan", 300, ()))))


def test_card_out_right_after_use_and_nothing_goes_on_while_it_is_in() -> None:
    d = Drive(pin_reset=False, card_out_after_use=True)
    d.used()
    assert d.s.state is State.CARD_OUT and d.screens()[-1] == "card-out"
    assert [c.level for c in d.log if isinstance(c, C.RemindCard)] == [1]
    assert d.s.municipality_name == "横浜市"
    # the choice is not offered, and forcing it is refused without a change
    assert not d.s.accepts(E.Choose) and not d.s.accepts(E.OptionsConfirmed)
    with pytest.raises(SessionProtocolError):
        d(E.Choose("juminhyo"))
    assert d.s.state is State.CARD_OUT
    for _ in range(T.remind[1]):  # reminded, escalating, while it stays
        d(E.Tick())
    assert [c.level for c in d.log if isinstance(c, C.RemindCard)] == [1, 2, 3]
    d(E.CardRemoved())
    assert d.s.state is State.MENU and d.screens()[-1] == "menu"
    # from here the card is never asked for again: paid, printed, released, done
    d(E.Choose("juminhyo"))
    d(E.OptionsConfirmed(("honseki",), copies=2))
    d(E.QuoteAccepted())
    d(E.CashCredited(1000))
    d(E.DocumentReceived(d.key(C.RequestDocument), DOC, "aa" * 32))
    d(E.EscrowStacked(d.key(C.StackEscrow), 1000))
    d(E.ChangePaid(d.key(C.PayChange), 400))
    printed = [c for c in d.log if isinstance(c, C.PrintDocument)]
    assert [p.copies for p in printed] == [2]
    assert d.screens()[-1] == "printing"
    d(E.PrintDone(d.key(C.PrintDocument)))
    assert d.s.state is State.RELEASING  # no card reminder after printing: it is out
    d(E.PagesReleased(d.key(C.ReleasePages)))
    d(E.Finalized(d.key(C.Finalize)))
    assert d.s.state is State.DONE and d.s.fee == 600 and d.s.change_paid == 400
    assert "take-card" not in d.screens()


def test_card_left_in_at_card_out_times_out_and_is_still_reminded() -> None:
    d = Drive(pin_reset=False, card_out_after_use=True)
    d.used()
    for _ in range(T.wipe):
        d(E.Tick())
    assert d.s.state is State.AWAIT_CARD_REMOVAL and d.s.reason == "timeout"
    d(E.CardRemoved())
    assert d.s.state in (State.FINALIZING, State.DONE)


def test_cancel_at_card_out() -> None:
    d = Drive(pin_reset=False, card_out_after_use=True)
    d.used()
    d(E.Cancel())
    assert d.s.state is State.AWAIT_CARD_REMOVAL and d.s.reason == "user_cancel"


def test_with_the_pin_reset_on_the_menu_the_card_goes_after_a_certificate_is_chosen() -> None:
    d = Drive(pin_reset=True, card_out_after_use=True)
    d.used()
    assert d.s.state is State.MENU  # the reset is redeemed on the card: it stays for now
    d(E.Choose("juminhyo"))
    assert d.s.state is State.CARD_OUT
    d(E.CardRemoved())
    assert d.s.state is State.OPTIONS and d.screens()[-1] == "options"


def test_card_taken_while_the_menu_loads_is_not_a_cancel() -> None:
    d = Drive(pin_reset=False, card_out_after_use=True)
    d(E.CardInserted())
    d(E.CardRead(d.key(C.ReadCard), 3, CERT))
    for n in range(1, 5):
        d(E.PinDigits(n))
    d(E.PinSubmitted())
    d(E.PinResult(d.key(C.VerifyPin), True, 3))
    d(E.Authenticated(d.key(C.Authenticate), "sess", "141003", "横浜市"))
    d(E.CardRemoved())
    assert d.s.state is State.LOADING_MENU
    d(E.MenuReceived(d.key(C.LoadMenu), (E.MenuItem("juminhyo", 300),)))
    assert d.s.state is State.MENU


def test_without_the_interlock_the_old_flow_is_kept() -> None:
    d = Drive(pin_reset=False)
    d.used()
    assert d.s.state is State.MENU


def test_copies_multiply_the_fee_and_are_bounded() -> None:
    d = Drive(pin_reset=False, card_out_after_use=True)
    d.used(max_copies=3)
    d(E.CardRemoved())
    d(E.Choose("juminhyo"))
    for bad in (0, 4, -1):
        with pytest.raises(SessionProtocolError):
            d(E.OptionsConfirmed((), copies=bad))
        assert d.s.state is State.OPTIONS
    d(E.OptionsConfirmed((), copies=3))
    assert d.s.fee == 900 and d.log[-1] == C.Show(d.log[-1].key, C.Screen.QUOTE,
                                                   "juminhyo", 900)
    # a municipality's maximum above the kiosk's own is cut to it
    e = Drive(pin_reset=False)
    e.used(max_copies=50)
    e(E.Choose("juminhyo"))
    with pytest.raises(SessionProtocolError):
        e(E.OptionsConfirmed((), copies=MAX_COPIES + 1))
    e(E.OptionsConfirmed((), copies=MAX_COPIES))
    assert e.s.fee == 300 * MAX_COPIES
    # no maximum given: one copy
    f = Drive(pin_reset=False)
    f.used(max_copies=1)
    f(E.Choose("inkan"))
    with pytest.raises(SessionProtocolError):
        f(E.OptionsConfirmed((), copies=2))


def test_back_from_the_quote_to_the_options() -> None:
    d = Drive(pin_reset=False)
    d.used()
    d(E.Choose("juminhyo"))
    d(E.OptionsConfirmed(("honseki",), copies=2))
    assert d.s.state is State.QUOTE
    d(E.QuoteBack())
    assert d.s.state is State.OPTIONS and d.s.fee == 0 and d.screens()[-1] == "options"
    d(E.OptionsConfirmed((), copies=1))
    assert d.s.state is State.QUOTE and d.s.fee == 300 and d.s.options == ()
    assert not any(isinstance(c, C.StartCashIn) for c in d.log)


def test_cancel_says_how_much_goes_back() -> None:
    d = Drive(pin_reset=False)
    d.used()
    d(E.Choose("juminhyo"))
    d(E.OptionsConfirmed((), copies=2))
    d(E.QuoteAccepted())
    d(E.CashCredited(100))
    d(E.CashCredited(50))
    d(E.Cancel())
    shown = [c for c in d.log if isinstance(c, C.Show) and c.screen is C.Screen.CANCELLED]
    assert [(c.detail, c.amount) for c in shown] == [("user_cancel", 150)]
    assert [c.yen for c in d.log if isinstance(c, C.ReturnEscrow)] == [150]


def test_change_the_hoppers_could_not_pay_is_owed_on_a_slip_after_the_printing() -> None:
    """Review of issue 24: ¥500 in for a ¥200 fee, the hoppers paid ¥200 of the ¥300 change
    and the session printed and ended with ¥100 owed and no slip. Now the certificate still
    prints, then a slip for the ¥100 (reason change_short), then the pages are released."""
    from tests.kiosk.session.test_core import Drive as Flat

    d = Flat()
    d.to_fetching(1000)
    d(E.DocumentReceived(d.key(C.RequestDocument), DOC, "aa" * 32))
    d(E.EscrowStacked(d.key(C.StackEscrow), 1000))
    d(E.ChangePaid(d.key(C.PayChange), 600))  # ¥700 due, ¥100 short
    d(E.CardRemoved())
    d(E.PrintDone(d.key(C.PrintDocument)))
    assert d.s.state is State.SLIP_PRINTING
    slip = d.log[-1]
    assert isinstance(slip, C.PrintSlip) and (slip.yen, slip.reason) == (100, "change_short")
    d(E.PrintFailed(slip.key, "media-empty"))  # the slip failed: the certificate still goes out
    assert d.s.state is State.RELEASING
    d(E.PagesReleased(d.key(C.ReleasePages)))
    d(E.Finalized(d.key(C.Finalize)))
    assert d.s.state is State.DONE and d.s.outcome.value == "printed"
    assert (d.s.refund, d.s.reason) == (100, "change_short")
    assert [c.outcome for c in d.log if isinstance(c, C.Finalize)] == ["printed"]


def test_cash_after_the_payment_is_owed_on_a_slip() -> None:
    """A coin credited after the payment was taken (in flight past the inhibit) is owed and
    goes on a slip too, never only into the books."""
    from tests.kiosk.session.test_core import Drive as Flat

    d = Flat()
    d.to_fetching(300)
    d(E.DocumentReceived(d.key(C.RequestDocument), DOC, "aa" * 32))
    d(E.EscrowStacked(d.key(C.StackEscrow), 300))
    d(E.CashCredited(100))  # late coin while printing
    d(E.CardRemoved())
    d(E.PrintDone(d.key(C.PrintDocument)))
    slip = d.log[-1]
    assert isinstance(slip, C.PrintSlip)
    assert (slip.yen, slip.reason) == (100, "cash_after_payment")


def test_a_card_put_back_after_card_out_is_asked_out_again_before_the_end() -> None:
    """Review of issue 24: after card-out, a card put back in the slot was ignored; the
    session printed and ended with the card in. Now: in the menu the interlock closes again
    (card-out, then the menu); put back during the payment it is reminded and taking it
    again cancels nothing; the printing asks for it and the session holds until it is out."""
    d = Drive(pin_reset=False, card_out_after_use=True)
    d.used()
    d(E.CardRemoved())
    assert d.s.state is State.MENU
    d(E.CardInserted())  # back in, in the menu
    assert d.s.state is State.CARD_OUT and d.s.card_present
    assert not d.s.accepts(E.Choose)
    d(E.CardRemoved())
    assert d.s.state is State.MENU
    d(E.Choose("juminhyo"))
    d(E.OptionsConfirmed(("honseki",)))
    d(E.QuoteAccepted())
    d(E.CardInserted())  # back in, during the payment: reminded
    assert d.s.state is State.PAYMENT and isinstance(d.log[-1], C.RemindCard)
    d(E.CardRemoved())  # out again: the payment goes on, nothing is cancelled
    assert d.s.state is State.PAYMENT and d.s.outcome is None
    d(E.CardInserted())  # and back once more, for good
    d(E.CashCredited(300))
    d(E.DocumentReceived(d.key(C.RequestDocument), DOC, "aa" * 32))
    d(E.EscrowStacked(d.key(C.StackEscrow), 300))
    assert d.s.state is State.PRINTING and d.screens()[-1] == "take-card"
    d(E.PrintDone(d.key(C.PrintDocument)))
    assert d.s.state is State.AWAIT_CARD_REMOVAL  # never done with the card in the slot
    d(E.CardRemoved())
    d(E.PagesReleased(d.key(C.ReleasePages)))
    d(E.Finalized(d.key(C.Finalize)))
    assert d.s.state is State.DONE and not d.s.card_present


def test_a_card_put_back_while_printing_brings_the_reminder_back() -> None:
    d = Drive(pin_reset=False, card_out_after_use=True)
    d.used()
    d(E.CardRemoved())
    d(E.Choose("juminhyo"))
    d(E.OptionsConfirmed(()))
    d(E.QuoteAccepted())
    d(E.CashCredited(300))
    d(E.DocumentReceived(d.key(C.RequestDocument), DOC, "aa" * 32))
    d(E.EscrowStacked(d.key(C.StackEscrow), 300))
    assert d.screens()[-1] == "printing"
    d(E.CardInserted())
    assert d.screens()[-1] == "take-card" and isinstance(d.log[-1], C.RemindCard)
    d(E.PrintDone(d.key(C.PrintDocument)))
    assert d.s.state is State.AWAIT_CARD_REMOVAL
