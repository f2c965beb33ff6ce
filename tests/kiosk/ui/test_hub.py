"""The hub in process, over the real session core: what the page is sent at each step,
which actions become which events, and the PIN path (digits into the keypad, only the
count out). The browser tests run the same hub inside ``cardio kiosk run``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from kiosk.runner import Keypad, KioskError
from kiosk.session import commands as C
from kiosk.session import events as E
from kiosk.session.core import IssuanceSession, State
from kiosk.ui.hub import WebHub, WebUi

PIN = "4826"


class Desk:
    """What the hub touches of a runner (``session``, ``keypad``, ``put``) with the real
    core behind it: each event is handled at once, screens go to the hub, the keypad hands
    the PIN to "the card" (``verified``) on ``VerifyPin``."""

    def __init__(self, hub: WebHub) -> None:
        self.keypad = Keypad()
        self.session = IssuanceSession("T0a1b2c", "req-00ff", "kiosk-0001",
                                       lambda exp, doc: None, pin_reset=hub.pin_reset)
        self.events: list[E.Event] = []
        self.commands: list[C.Command] = []
        self.verified: list[str] = []
        self.ui = WebUi(hub)
        self.ui.attach(self)  # type: ignore[arg-type]

    def put(self, ev: E.Event) -> None:
        self.events.append(ev)
        if not isinstance(ev, E.Reply) and not self.session.accepts(type(ev)):
            return
        for cmd in self.session.handle(ev):
            self.commands.append(cmd)
            if isinstance(cmd, C.Show):
                self.ui.show(cmd)
            elif isinstance(cmd, C.RemindCard):
                self.ui.remind(cmd)
            elif isinstance(cmd, C.VerifyPin):
                self.verified.append(self.keypad.take())

    def reply(self, make: Any, *args: Any) -> None:
        self.put(make(self.session.pending, *args))


def to_pin(hub: WebHub) -> Desk:
    d = Desk(hub)
    d.put(E.CardInserted())
    d.reply(E.CardRead, 3, "ab" * 32)
    assert hub.screen == "pin"
    return d


def to_menu(hub: WebHub) -> Desk:
    d = to_pin(hub)
    for k in PIN:
        hub.act({"op": "key", "key": k})
    hub.act({"op": "key", "key": "ok"})
    d.reply(E.PinResult, True, 3)
    d.reply(E.Authenticated, "S1", "131016")
    d.reply(E.MenuReceived, (E.MenuItem("juminhyo", 200, ("honseki", "scope")),
                             E.MenuItem("inkan", 0, (), "no_inkan")))
    assert hub.screen == "menu"
    return d


def test_the_pin_goes_to_the_keypad_and_only_its_count_to_the_page() -> None:
    hub = WebHub()
    q = hub.subscribe()
    d = to_pin(hub)
    for k in PIN + "9":  # a fifth digit is ignored, as a keypad does
        hub.act({"op": "key", "key": k})
    assert hub.state()["pin"]["count"] == 4
    hub.act({"op": "key", "key": "back"})
    assert hub.state()["pin"]["count"] == 3
    hub.act({"op": "key", "key": "clear"})
    assert hub.state()["pin"]["count"] == 0
    for k in PIN:
        hub.act({"op": "key", "key": k})
    hub.act({"op": "key", "key": "ok"})
    assert d.verified == [PIN] and d.keypad.count == 0  # handed over once, then gone
    assert d.session.state is State.PIN_VERIFYING
    sent = []
    while not q.empty():
        sent.append(q.get_nowait())
    assert sent and all(PIN not in s and "4826" not in s for s in sent)
    assert [json.loads(s)["pin"]["count"] for s in sent if json.loads(s)["screen"] == "pin"
            ][-5:] == [0, 1, 2, 3, 4]
    assert all(not isinstance(e, E.PinDigits) or e.count <= 4 for e in d.events)
    assert PIN not in repr(d.events) + repr(d.commands)


def test_keys_that_are_not_one_ascii_digit_are_refused_without_repeating_them() -> None:
    hub = WebHub()
    d = to_pin(hub)
    for bad in ("12", "a", "４", "", None, 7):
        hub.act({"op": "key", "key": bad})
    assert d.keypad.count == 0 and list(hub.errors) == ["key"] * 6
    with pytest.raises(KioskError) as err:
        d.keypad.press("x")
    assert "x" not in str(err.value).replace("one digit", "")


def test_menu_options_quote_payment_figures() -> None:
    hub = WebHub()
    d = to_menu(hub)
    st = hub.state()
    assert st["menu"] == [
        {"doc": "juminhyo", "fee": 200, "options": ["honseki", "scope"], "refusal": ""},
        {"doc": "inkan", "fee": 0, "options": [], "refusal": "no_inkan"}]
    hub.act({"op": "choose", "item": "inkan"})
    assert hub.screen == "item-refused" and hub.detail == "no_inkan"
    assert d.session.state is State.MENU
    hub.act({"op": "menu"})
    assert hub.screen == "menu"
    hub.act({"op": "choose", "item": "koseki"})  # not on this menu: ignored, no crash
    assert list(hub.errors) == ["choose"]
    hub.act({"op": "choose", "item": "juminhyo"})
    assert hub.screen == "options" and hub.state()["offered"] == ["honseki", "scope"]
    hub.act({"op": "options", "options": ["my_number"]})  # not offered: ignored
    assert hub.screen == "options"
    hub.act({"op": "options", "options": ["honseki"]})
    assert hub.screen == "copies" and d.session.state is State.OPTIONS
    assert hub.state()["options"] == ["honseki"] and hub.state()["max_copies"] == 1
    hub.act({"op": "copies", "n": 2})  # over this item's maximum (1): ignored
    assert hub.screen == "copies"
    hub.act({"op": "copies", "n": 1})
    assert hub.screen == "quote" and hub.state()["fee"] == 200
    hub.act({"op": "accept"})
    assert hub.screen == "payment"
    d.put(E.CashCredited(100))
    assert (hub.state()["credited"], hub.state()["change"]) == (100, 0)
    d.put(E.CashCredited(500))
    assert d.session.state is State.FETCHING
    assert (hub.state()["credited"], hub.state()["change"]) == (600, 400)
    hub.act({"op": "cancel"})  # not a user state any more: nothing happens
    assert d.session.state is State.FETCHING


def test_timeout_warning_and_continue() -> None:
    hub = WebHub()
    d = to_menu(hub)
    for _ in range(d.session.timeouts.warn):
        d.put(E.Tick())
    assert hub.state()["warning"] == d.session.timeouts.wipe - d.session.timeouts.warn
    assert hub.screen == "menu"  # the warning is a dialog over the screen
    hub.act({"op": "extend"})
    assert hub.state()["warning"] is None
    for _ in range(d.session.timeouts.wipe):
        d.put(E.Tick())
    assert hub.screen == "cancelled" and hub.notice == {
        "kind": "cancelled", "reason": "timeout", "amount": 0}
    assert hub.state()["take_card"] is True  # the reason stays up beside the card panel


def test_locked_and_the_end_of_a_session_back_to_start() -> None:
    async def run() -> None:
        hub = WebHub(done_seconds=0.05)
        d = Desk(hub)
        d.put(E.CardInserted())
        d.reply(E.CardRead, 0, "ab" * 32)
        assert hub.screen == "pin-locked" and hub.state()["take_card"]
        d.put(E.CardRemoved())
        assert hub.screen == "done" and hub.outcome == "refused"
        hub.end()
        assert hub.state()["in_session"] is False and hub.screen == "done"
        await asyncio.sleep(0.2)
        assert hub.screen == "start"
        hub.act({"op": "start"})
        assert hub.screen == "notice"
        hub.act({"op": "agree"})
        assert hub.screen == "setcard"
        hub.act({"op": "home"})
        assert hub.screen == "start"
    asyncio.run(run())


def test_printing_reminders_and_take_card() -> None:
    hub = WebHub()
    d = to_menu(hub)
    hub.act({"op": "choose", "item": "juminhyo"})
    hub.act({"op": "options", "options": []})
    hub.act({"op": "copies", "n": 1})
    hub.act({"op": "accept"})
    d.put(E.CashCredited(1000))
    d.reply(E.DocumentReceived, object(), "digest")
    d.reply(E.EscrowStacked, 1000)
    d.reply(E.ChangePaid, 800)
    # No page while the card is in: the card is asked for first, the reminder escalates
    # (no printer time-out runs meanwhile), and the printing shows once it is out.
    assert hub.screen == "take-card" and hub.state()["take_card"]
    assert hub.state()["remind"] == 1
    for _ in range(d.session.timeouts.remind[0]):
        d.put(E.Tick())
    assert hub.state()["remind"] == 2  # spoken from here on
    for _ in range(d.session.timeouts.printer):
        d.put(E.Tick())
    assert hub.screen == "take-card" and hub.state()["remind"] == 3
    d.put(E.CardRemoved())
    assert hub.screen == "printing" and hub.state()["remind"] == 0
    assert not hub.state()["take_card"]
    d.reply(E.PrintDone)
    d.reply(E.PagesReleased)
    d.reply(E.Finalized)
    st = hub.state()
    assert (st["screen"], st["outcome"], st["fee"], st["change"]) == ("done", "printed", 200,
                                                                     800)


def test_the_done_screen_says_the_change_still_owed_and_the_slip() -> None:
    """Review of issue 24: ¥800 of change due, the hoppers paid ¥700; after the printing a
    slip for ¥100 prints and the done screen carries the ¥100 and the slip's number."""
    hub = WebHub()
    d = to_menu(hub)
    hub.act({"op": "choose", "item": "juminhyo"})
    hub.act({"op": "options", "options": []})
    hub.act({"op": "copies", "n": 1})
    hub.act({"op": "accept"})
    d.put(E.CashCredited(1000))
    d.reply(E.DocumentReceived, object(), "digest")
    d.reply(E.EscrowStacked, 1000)
    d.reply(E.ChangePaid, 700)
    d.put(E.CardRemoved())
    d.reply(E.PrintDone)
    slip = d.commands[-1]
    assert isinstance(slip, C.PrintSlip) and (slip.yen, slip.reason) == (100, "change_short")
    d.reply(E.PrintDone)
    d.reply(E.PagesReleased)
    d.reply(E.Finalized)
    st = hub.state()
    assert (st["screen"], st["outcome"], st["change"], st["refund"], st["txn"]) == \
        ("done", "printed", 700, 100, "T0a1b2c")


def test_malformed_and_unknown_actions_are_ignored() -> None:
    hub = WebHub()
    for msg in (None, [], {"op": 3}, {"op": "__init__"}, {"op": "publish"}, "x"):
        hub.act(msg)
    assert list(hub.errors) == ["malformed", "malformed", "malformed", "unknown_op",
                          "unknown_op", "malformed"]
    assert hub.screen == "start"


def test_pin_reset_form_goes_to_the_keypad_and_only_a_kind_of_mistake_to_the_page() -> None:
    hub = WebHub(pin_reset=True)
    q = hub.subscribe()
    d = to_menu(hub)
    assert hub.state()["reset_offered"]
    hub.act({"op": "choose", "item": "pin-reset"})
    assert hub.screen == "new-password" and d.session.state is State.RESET_ENTRY
    tries = [({"reservation": "r 1", "password": "NEWPASS1", "confirm": "NEWPASS1"},
              "reservation"),
             ({"reservation": "rsv-1_a", "password": "NEWPASS1", "confirm": "NEWPASS2"},
              "mismatch"),
             ({"reservation": "rsv-1_a", "password": "abc12", "confirm": "abc12"}, "rule"),
             ({"reservation": "rsv-1_a", "password": "ONLYLETTERS", "confirm": "ONLYLETTERS"},
              "rule")]
    for form, kind in tries:
        hub.act({"op": "reset", **form})
        assert hub.state()["reset_error"] == kind
        assert not any(isinstance(e, E.SecretEntered) for e in d.events)
    hub.act({"op": "reset", "reservation": "rsv-1_a", "password": "newpass1",
             "confirm": "NEWPASS1"})  # lower case folded, as the official apps do
    assert isinstance(d.events[-1], E.SecretEntered) and hub.screen == "pin-again"
    assert d.keypad.secret() == ("NEWPASS1", "rsv-1_a")  # kept for a retry after a wrong PIN
    for k in PIN:  # the PIN again, on the keypad
        hub.act({"op": "key", "key": k})
    assert hub.state()["pin"]["count"] == 4
    sent = []
    while not q.empty():
        sent.append(q.get_nowait())
    for secret in ("NEWPASS1", "newpass1", "rsv-1_a", "NEWPASS2", PIN):
        assert all(secret not in s for s in sent)


def test_pin_reset_is_refused_when_the_kiosk_does_not_offer_it() -> None:
    hub = WebHub(pin_reset=False)
    d = to_menu(hub)
    assert not hub.state()["reset_offered"]
    hub.act({"op": "choose", "item": "pin-reset"})
    hub.act({"op": "reset", "reservation": "r", "password": "NEWPASS1", "confirm": "NEWPASS1"})
    assert hub.screen == "menu" and d.session.state is State.MENU
    assert list(hub.errors)[-2:] == ["choose", "reset"]


def test_keys_after_ok_do_not_change_the_pin_the_card_gets() -> None:
    """確定 then Backspace (or Clear) before the runner performed VerifyPin: the card still
    gets the four digits that were submitted — a try is never spent on three."""
    k = Keypad()
    for d in PIN:
        k.press(d)
    k.submit()
    assert k.backspace() == 3 and k.clear() == 0
    assert k.take() == PIN
    with pytest.raises(KioskError):
        k.take()
    k.press("1")
    k.submit()  # refused as incomplete: the entry stays on screen to be finished
    k.press("2")
    assert k.count == 2
    k.submit()
    assert k.take() == "12" and k.count == 0
    k.enter_secret("NEWPASS1", "rsv")
    k.wipe()
    with pytest.raises(KioskError):
        k.secret()


def test_notice_before_the_card_then_card_out_copies_and_back() -> None:
    """注意事項 and 同意 before a card may start a session; once used the card must leave
    before the choice (the hub shows card-out, the choice is refused meanwhile); copies
    multiply the fee up to the municipality's maximum; 戻る from the quote and from the
    copies screen."""
    hub = WebHub()
    assert not hub.accepting_card()
    hub.act({"op": "agree"})  # not on the notice: ignored
    assert hub.screen == "start" and not hub.accepting_card()
    hub.act({"op": "start"})
    assert hub.screen == "notice" and not hub.accepting_card()
    hub.act({"op": "agree"})
    assert hub.screen == "setcard" and hub.accepting_card()
    d = Desk(hub)
    d.session.card_out_after_use = True
    assert not hub.accepting_card()
    d.put(E.CardInserted())
    d.reply(E.CardRead, 3, "ab" * 32)
    for k in PIN:
        hub.act({"op": "key", "key": k})
    hub.act({"op": "key", "key": "ok"})
    d.reply(E.PinResult, True, 3)
    d.reply(E.Authenticated, "S1", "131016", "千代田区")
    d.reply(E.MenuReceived, (E.MenuItem("juminhyo", 200, ("honseki",), max_copies=3),))
    st = hub.state()
    assert (hub.screen, st["take_card"], st["municipality"]) == ("card-out", True, "千代田区")
    hub.act({"op": "choose", "item": "juminhyo"})  # the card is in: refused
    assert d.session.state is State.CARD_OUT and "choose" in hub.errors
    d.put(E.CardRemoved())
    assert hub.screen == "menu" and hub.state()["take_card"] is False
    hub.act({"op": "choose", "item": "juminhyo"})
    hub.act({"op": "options", "options": ["honseki"]})
    assert hub.screen == "copies" and hub.state()["max_copies"] == 3
    hub.act({"op": "copies", "back": True})
    assert hub.screen == "options" and d.session.state is State.OPTIONS
    hub.act({"op": "options", "options": []})
    hub.act({"op": "copies", "n": 4})  # over the maximum: ignored
    hub.act({"op": "copies", "n": 3})
    st = hub.state()
    assert (hub.screen, st["fee"], st["copies"], st["unit_fee"]) == ("quote", 600, 3, 200)
    hub.act({"op": "back"})
    assert hub.screen == "options" and d.session.fee == 0
    hub.act({"op": "options", "options": ["honseki"]})
    hub.act({"op": "copies", "n": 2})
    assert (hub.screen, hub.state()["fee"]) == ("quote", 400)
    hub.act({"op": "accept"})
    assert hub.screen == "payment"
    # no hoppers here: a ¥500 coin (¥100 of change for ¥400) is not offered
    assert hub.state()["accepted"]["coins"] == [10, 50, 100]


def test_the_payment_screen_offers_only_coins_whose_change_can_be_paid() -> None:
    """Review of issue 24: every coin was listed (and taken) whatever the hoppers held. With
    ¥200 of change at most, a ¥500 coin for a ¥200 fee (¥300 of change) is left off; once
    ¥100 is in, ¥100 of change would be payable but ¥400 not."""
    from types import SimpleNamespace

    from kiosk.ui.hub import accepted_money

    runner = SimpleNamespace(cash=SimpleNamespace(stock={500: 0, 100: 0, 50: 2, 10: 10}))
    assert accepted_money(runner, 200, 0) == {"coins": [10, 50, 100], "notes": []}
    rich = SimpleNamespace(cash=SimpleNamespace(stock={500: 1, 100: 4, 50: 1, 10: 5}))
    assert accepted_money(rich, 200, 0) == {"coins": [10, 50, 100, 500], "notes": [1000]}


def test_the_municipalities_set_their_own_limit_of_copies() -> None:
    """The emulated municipalities' menus carry different maxima (通数), and the kiosk caps
    any at MAX_COPIES."""
    from emulators.issuance.population import MUNICIPALITIES
    from kiosk.session.core import MAX_COPIES

    limits = {m.name: m.settings.max_copies for m in MUNICIPALITIES}
    assert limits["千代田区"] == 5 and limits["高松市"] == 2 and limits["横浜市"] == 3
    assert max(limits.values()) <= MAX_COPIES


def test_a_card_left_in_the_slot_after_a_session_holds_the_start_screen() -> None:
    """Review of issue 24: the next customer's start screen waited silently with the last
    card in the slot. While it is there the screen says so and start/同意 are refused."""
    hub = WebHub()
    hub.card_left(True)
    assert hub.screen == "card-left" and hub.state()["screen"] == "card-left"
    hub.act({"op": "start"})
    hub.act({"op": "agree"})
    assert hub.screen == "card-left" and not hub.accepting_card()
    assert list(hub.errors) == ["start", "agree"]
    hub.card_left(False)
    assert hub.screen == "start"
    hub.act({"op": "start"})
    assert hub.screen == "notice"
