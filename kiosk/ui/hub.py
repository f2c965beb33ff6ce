"""What the kiosk's screen shows, and what the person's actions do.

One :class:`WebHub` lives as long as ``cardio kiosk run``; each session gets a
:class:`WebUi` (the runner's :class:`~kiosk.runner.Ui` seam) that feeds the hub the core's
``Show``/``RemindCard`` commands. The hub turns them, together with what the page needs
from ``runner.session`` (menu with fees and refusals, chosen item and options, fee,
credited amount, change, reminder level, time-out warning), into one JSON *state* that
every connected page receives; the page renders it in its language.

Actions come back as small JSON objects (``{"op": "choose", "item": "juminhyo"}``) and
become ``runner.put(E.…)`` events — checked first against what the session accepts now,
because an event the core's table does not list for the state would end the session with
a protocol error (a stale tap from a slow page must not do that).

The PIN: the page sends one key at a time (digit, ``back``, ``clear``, ``ok``); digits go
into the runner's :class:`~kiosk.runner.Keypad` and only the *count* goes into the state
(the page draws ●●●●). No state, log line or error message carries a digit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cardio.errors import CardioError
from kiosk.runner import Runner, Ui
from kiosk.session import commands as C
from kiosk.session import events as E
from kiosk.session.core import MAX_COPIES, State

JST = dt.timezone(dt.timedelta(hours=9))

__all__ = ["MESSAGES", "WebHub", "WebUi", "catalogue_languages", "load_catalogue"]

MESSAGES = Path(__file__).parent / "messages"

#: The 利用者証明用 PIN is exactly 4 digits; the keypad takes no fifth.
PIN_DIGITS = 4

#: Between sessions: the hub's own screens — the start, 注意事項 (what will happen; 同意
#: before the card) and "set your card", the only one on which a card starts a session.
START, NOTICE, SETCARD = "start", "notice", "setcard"
#: The start screen while the last session's card is still in the slot: no start until the
#: card is taken (review of issue 24: the next customer found the previous card there).
CARD_LEFT = "card-left"

#: How long "set your card" waits for a card before the start screen comes back.
SETCARD_SECONDS = 90.0

#: Screens that end a session without a document: they stay up, with the card panel,
#: until the card leaves.
_NOTICES = frozenset({C.Screen.REFUSED, C.Screen.CANCELLED, C.Screen.NOT_ISSUED})

#: What the page may ask for (``{"op": …}``).
_OPS = frozenset({"start", "agree", "home", "key", "choose", "menu", "options", "copies",
                  "back", "accept", "cancel", "extend", "reset"})

#: Where the keypad takes digits: the PIN, and the PIN again to redeem a PIN reset.
_KEYPAD_STATES = frozenset({State.PIN_ENTRY, State.RESET_PIN_ENTRY})

#: A facepin reservation number as the page may send it (ids the service makes are short
#: URL-safe tokens); anything else is refused before it reaches the keypad.
RESERVATION_MAX = 64


#: Notes a Japanese bill validator takes, and the coins of the acceptor.
NOTES = (1000, 2000, 5000, 10000)
COINS = (10, 50, 100, 500)


def tax_years(today: dt.date | None = None) -> dict[str, int]:
    """The income years the tax certificate's two choices name (``last``: last calendar
    year's income, ``before_last``: the year before), as the municipalities issue them."""
    year = (today or dt.datetime.now(JST).date()).year
    return {"last": year - 1, "before_last": year - 2}


def accepted_money(runner: Any, fee: int, escrow: int) -> dict[str, list[int]]:
    """What the payment screen says it takes: the coins and notes whose change the hoppers
    can pay from their stock now (the acceptor hands any other note back and inhibits any
    other coin)."""
    from kiosk.devices.cash import can_change

    stock = dict(getattr(getattr(runner, "cash", None), "stock", {}) or {})
    coins = [c for c in COINS if can_change(escrow + c - fee, stock)]
    notes = [n for n in NOTES if can_change(escrow + n - fee, stock)]
    return {"coins": coins, "notes": notes}


def catalogue_languages() -> list[str]:
    """Every language with a catalogue (``messages/LANG.json``)."""
    return sorted(p.stem for p in MESSAGES.glob("*.json"))


def load_catalogue(lang: str) -> dict[str, str]:
    """One catalogue: a flat mapping of message keys to text (``{name}`` placeholders)."""
    if lang not in catalogue_languages():
        raise UiConfigError(f"no message catalogue for language {lang!r} (have "
                            f"{', '.join(catalogue_languages())})")
    data = json.loads((MESSAGES / f"{lang}.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UiConfigError(f"the {lang} catalogue is not a flat mapping of strings")
    return data


class UiConfigError(CardioError):
    """The ``[web]`` section asks for something the UI cannot do."""

    exit_code = 2


class WebHub:
    """The screen's state and its subscribers (one queue per connected page)."""

    def __init__(self, *, lang: str = "ja", pin_reset: bool = False,
                 done_seconds: float = 8.0) -> None:
        load_catalogue(lang)  # a typo in the config is refused at start, not on screen
        self.lang = lang
        self.pin_reset = pin_reset
        self.done_seconds = done_seconds
        self.runner: Runner | None = None
        self.screen = START
        self.left = False  # the slot holds a card no session is using
        self.detail = ""
        self.amount = 0
        self.notice: dict[str, Any] | None = None
        self.take_card = False
        self.remind = 0
        self.warning: int | None = None
        self.outcome = ""
        self.change = 0
        self.refund = 0
        self.fee = 0
        self.txn = ""
        self.chosen = ""
        self.reset_error = ""  # why the new password was not taken (a code, never a value)
        #: The options chosen, while the copies screen (hub-only; the core is in OPTIONS)
        #: asks how many.
        self.pending_options: tuple[str, ...] | None = None
        self.seq = 0
        self._clients: set[asyncio.Queue[str]] = set()
        self._home: asyncio.TimerHandle | None = None
        # Actions refused (kinds only), for tests and logs: the last few hundred, so a
        # flooding page cannot grow the kiosk's memory.
        self.errors: collections.deque[str] = collections.deque(maxlen=256)

    # -- sessions ---------------------------------------------------------------------------

    def begin(self, runner: Runner) -> None:
        """A card was seen: the session's screens take over."""
        self._cancel_home()
        self.runner = runner
        self.notice, self.take_card, self.remind, self.warning = None, False, 0, None
        self.outcome, self.change, self.refund, self.fee, self.txn = "", 0, 0, 0, ""
        self.chosen, self.reset_error = "", ""
        self.pending_options = None

    def accepting_card(self) -> bool:
        """Whether a card in the slot may start a session now: only once the person has
        read 注意事項 and agreed (the set-card screen)."""
        return self.runner is None and self.screen == SETCARD

    def end(self) -> None:
        """The session is over: keep its last screen (done) up for ``done_seconds``, then the
        start screen. Figures the done screen shows are copied out first; the session
        object (and everything it knew) is dropped."""
        runner, self.runner = self.runner, None
        s = runner.session if runner else None
        if s is not None:
            self.change, self.refund, self.fee = s.change_paid, s.refund, s.fee
        self.remind, self.warning, self.take_card = 0, None, False
        self.publish()
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
            self._home = loop.call_later(self.done_seconds, self.home)

    def card_left(self, left: bool) -> None:
        """The slot holds a card between sessions (``True``) or is empty again: the start
        screen says so and refuses to start until it is taken."""
        self.left = left
        if self.runner is None and self.screen in (START, CARD_LEFT):
            self.home()

    def home(self) -> None:
        self._cancel_home()
        if self.runner is None:
            self.screen = CARD_LEFT if self.left else START
            self.detail, self.amount, self.notice = "", 0, None
            self.outcome, self.chosen, self.txn = "", "", ""  # nothing of the last customer
            self.fee = self.change = self.refund = 0
            self.publish()

    def _cancel_home(self) -> None:
        if self._home is not None:
            self._home.cancel()
            self._home = None

    # -- from the core ----------------------------------------------------------------------

    def show(self, cmd: C.Show) -> None:
        s = self.runner.session if self.runner else None
        if cmd.screen is C.Screen.TIMEOUT_WARNING:
            self.warning = cmd.amount
            self.publish()
            return
        self.warning = None
        self.reset_error = ""
        self.pending_options = None
        screen = cmd.screen.value
        if cmd.screen is C.Screen.REFUSED and s is not None and s.state is State.MENU:
            screen = "item-refused"  # the menu refused one item; the menu stays
        elif cmd.screen in _NOTICES:
            kind = "pin-locked" if cmd.detail == "pin_locked" else screen
            self.notice = {"kind": kind, "reason": cmd.detail, "amount": cmd.amount}
            screen = kind
            if cmd.screen is C.Screen.NOT_ISSUED and s is not None:
                self.txn = s.txn  # the 未交付 slip's number: the customer quotes it
        elif cmd.screen in (C.Screen.TAKE_CARD, C.Screen.CARD_OUT):
            self.take_card = True
            if self.notice is not None:
                screen = self.notice["kind"]  # the reason stays up beside the card panel
        elif cmd.screen is C.Screen.DONE:
            self.outcome = cmd.detail
            self.take_card = False
            if s is not None and s.refund > 0:
                self.txn = s.txn  # money owed on a slip: its number, the customer quotes it
        elif cmd.screen in (C.Screen.TAKE_PAGES, C.Screen.MENU, C.Screen.OPTIONS):
            self.take_card = False
        self.screen, self.detail, self.amount = screen, cmd.detail, cmd.amount
        self.publish()

    def remind_card(self, cmd: C.RemindCard) -> None:
        self.remind = cmd.level
        self.publish()

    # -- the state the page renders ---------------------------------------------------------

    def state(self) -> dict[str, Any]:
        r = self.runner
        s = r.session if r else None
        st: dict[str, Any] = {
            "v": self.seq, "screen": self.screen, "detail": self.detail, "amount": self.amount,
            "lang": self.lang, "in_session": s is not None, "pin_reset": self.pin_reset,
            "notice": self.notice, "take_card": self.take_card, "warning": self.warning,
            "outcome": self.outcome, "txn": self.txn, "chosen": self.chosen,
            "remind": 0, "pin": {"count": 0, "max": PIN_DIGITS, "tries_left": -1},
            "reset_offered": False, "reset_error": self.reset_error,
            "menu": [], "item": "", "offered": [], "options": [], "fee": self.fee,
            "credited": 0, "change": self.change, "refund": self.refund,
            "municipality": "", "copies": 1, "max_copies": 1, "unit_fee": 0,
            "tax_years": tax_years(), "accepted": {"coins": [], "notes": []},
        }
        if s is not None and r is not None:
            st["remind"] = self.remind if s.card_present else 0
            st["take_card"] = self.take_card and s.card_present
            st["pin"] = {"count": r.keypad.count if s.state in _KEYPAD_STATES else 0,
                         "max": PIN_DIGITS, "tries_left": s.tries_left}
            st["reset_offered"] = self.pin_reset and s.pin_reset_offered
            st["menu"] = [{"doc": i.doc_type, "fee": i.fee, "options": list(i.options),
                           "refusal": i.refusal} for i in s.menu.values()]
            st["municipality"] = s.municipality_name
            if s.item is not None:
                st["item"], st["offered"] = s.item.doc_type, list(s.item.options)
                st["unit_fee"] = s.item.fee
                st["max_copies"] = max(1, min(s.item.max_copies, MAX_COPIES))
            st["options"] = list(s.options)
            st["copies"] = s.copies
            if self.pending_options is not None:
                st["options"] = list(self.pending_options)
            if s.fee:
                st["accepted"] = accepted_money(r, s.fee, s.escrow)
            st["fee"] = s.fee
            credited = s.escrow + s.stacked
            st["credited"] = credited
            st["change"] = s.change_paid or (max(0, credited - s.fee) if s.fee else 0)
            st["refund"] = s.refund
        return st

    def publish(self) -> None:
        self.seq += 1
        text = json.dumps(self.state(), ensure_ascii=False)
        for q in list(self._clients):
            if q.full():  # a page that lags: each state is whole, so the oldest go first
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(text)

    def subscribe(self) -> asyncio.Queue[str]:
        q: asyncio.Queue[str] = asyncio.Queue(maxsize=256)
        q.put_nowait(json.dumps(self.state(), ensure_ascii=False))
        self._clients.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[str]) -> None:
        self._clients.discard(q)

    # -- from the person --------------------------------------------------------------------

    def act(self, msg: object) -> None:
        """One action from the page. Anything malformed or not allowed now is ignored (and
        counted by kind): the page may lag behind the state by a frame."""
        if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
            self.errors.append("malformed")
            return
        op = msg["op"]
        handler: Callable[[dict[str, Any]], bool] | None = \
            getattr(self, "_op_" + op, None) if op in _OPS else None
        if handler is None or not handler(msg):
            self.errors.append(op if handler is not None else "unknown_op")

    def _session(self) -> tuple[Runner, Any] | None:
        r = self.runner
        if r is None or r.session is None:
            return None
        return r, r.session

    def _put(self, event: E.Event) -> bool:
        rs = self._session()
        if rs is None or not rs[1].accepts(type(event)):
            return False
        rs[0].put(event)
        return True

    def _op_start(self, msg: dict[str, Any]) -> bool:
        """From the start screen to 注意事項 (the notice the person agrees to)."""
        if self.runner is not None or self.left:
            return False
        self._cancel_home()
        self.screen, self.detail, self.amount, self.notice, self.outcome = \
            NOTICE, "", 0, None, ""
        self.publish()
        with contextlib.suppress(RuntimeError):  # nobody read on: start again
            self._home = asyncio.get_running_loop().call_later(SETCARD_SECONDS, self.home)
        return True

    def _op_agree(self, msg: dict[str, Any]) -> bool:
        """同意 on 注意事項: now, and only now, a card starts a session."""
        if self.runner is not None or self.screen != NOTICE or self.left:
            return False
        self._cancel_home()
        self.screen, self.detail, self.amount, self.notice, self.outcome = \
            SETCARD, "", 0, None, ""
        self.publish()
        with contextlib.suppress(RuntimeError):  # nobody came with a card: start again
            self._home = asyncio.get_running_loop().call_later(SETCARD_SECONDS, self.home)
        return True

    def _op_home(self, msg: dict[str, Any]) -> bool:
        if self.runner is not None:
            return False
        self.home()
        return True

    def _op_key(self, msg: dict[str, Any]) -> bool:
        rs = self._session()
        key = msg.get("key")
        if rs is None or rs[1].state not in _KEYPAD_STATES or not isinstance(key, str):
            return False
        r = rs[0]
        if key == "ok":
            r.keypad.submit()  # later keys must not change the PIN the card will get
            r.put(E.PinSubmitted())
            return True
        if key == "back":
            count = r.keypad.backspace()
        elif key == "clear":
            count = r.keypad.clear()
        elif len(key) == 1 and key.isdigit() and key.isascii():
            count = r.keypad.press(key)
        else:
            return False  # never repeated: it might be a digit typed somewhere odd
        r.put(E.PinDigits(count))
        return True

    def _op_choose(self, msg: dict[str, Any]) -> bool:
        rs = self._session()
        item = msg.get("item")
        if rs is None or rs[1].state is not State.MENU or not isinstance(item, str) \
                or not (item in rs[1].menu or (item == "pin-reset" and self.pin_reset
                                               and rs[1].pin_reset_offered)):
            return False
        self.chosen = item
        rs[0].put(E.Choose(item))
        return True

    def _op_menu(self, msg: dict[str, Any]) -> bool:
        """Back from an item's refusal to the menu (the core stayed in the menu)."""
        rs = self._session()
        if rs is None or rs[1].state is not State.MENU or self.screen != "item-refused":
            return False
        self.screen, self.detail = C.Screen.MENU.value, ""
        self.publish()
        return True

    def _op_options(self, msg: dict[str, Any]) -> bool:
        rs = self._session()
        opts = msg.get("options", [])
        if rs is None or rs[1].state is not State.OPTIONS or rs[1].item is None or \
                not isinstance(opts, list) or not all(isinstance(o, str) for o in opts) or \
                not set(opts) <= set(rs[1].item.options):
            return False
        # Next: how many copies (通数) — a screen of the hub's; the core waits in OPTIONS.
        self.pending_options = tuple(sorted(set(opts)))
        self.screen, self.detail = "copies", rs[1].item.doc_type
        self.publish()
        return True

    def _op_copies(self, msg: dict[str, Any]) -> bool:
        """The copies chosen (``n``), or ``back`` to the options."""
        rs = self._session()
        if rs is None or rs[1].state is not State.OPTIONS or rs[1].item is None or \
                self.pending_options is None or self.screen != "copies":
            return False
        if msg.get("back") is True:
            self.pending_options = None
            self.screen = C.Screen.OPTIONS.value
            self.publish()
            return True
        n = msg.get("n")
        most = max(1, min(rs[1].item.max_copies, MAX_COPIES))
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= most:
            return False
        rs[0].put(E.OptionsConfirmed(self.pending_options, copies=n))
        return True

    def _op_back(self, msg: dict[str, Any]) -> bool:
        """戻る on the quote: back to the options (nothing paid yet)."""
        return self._put(E.QuoteBack())

    def _op_reset(self, msg: dict[str, Any]) -> bool:
        """The new signature password (typed twice) and the facepin reservation number:
        checked here, then held by the keypad — the core hears only ``SecretEntered``. A
        mistake is shown by its kind (mismatch, rule, reservation), never by its value."""
        rs = self._session()
        if rs is None or rs[1].state is not State.RESET_ENTRY:
            return False
        from cardio.identity import InvalidValue, validate_sign_password

        password, confirm, reservation = (msg.get(k) for k in
                                          ("password", "confirm", "reservation"))
        if not all(isinstance(v, str) for v in (password, confirm, reservation)):
            return False
        assert isinstance(password, str) and isinstance(confirm, str)
        assert isinstance(reservation, str)
        reservation = reservation.strip()
        error = ""
        if not reservation or len(reservation) > RESERVATION_MAX or not all(
                c.isascii() and (c.isalnum() or c in "-_") for c in reservation):
            error = "reservation"
        elif password.upper() != confirm.upper():
            error = "mismatch"
        else:
            try:
                value = validate_sign_password(password).decode("ascii")
            except InvalidValue:
                error = "rule"
        if error:
            self.reset_error = error
            self.publish()
            return True
        self.reset_error = ""
        rs[0].keypad.enter_secret(value, reservation)
        rs[0].put(E.SecretEntered())
        return True

    def _op_accept(self, msg: dict[str, Any]) -> bool:
        return self._put(E.QuoteAccepted())

    def _op_cancel(self, msg: dict[str, Any]) -> bool:
        return self._put(E.Cancel())

    def _op_extend(self, msg: dict[str, Any]) -> bool:
        if not self._put(E.Extend()):
            return False
        self.warning = None
        self.publish()
        return True


class WebUi(Ui):
    """The runner's UI seam for one session: every screen to the hub (and, through
    ``echo``, as the JSON line ``kiosk run`` has always printed)."""

    def __init__(self, hub: WebHub, echo: Callable[[dict[str, Any]], None] | None = None
                 ) -> None:
        self.hub = hub
        self.echo = echo

    def attach(self, runner: Runner) -> None:
        super().attach(runner)
        runner.keypad.max_digits = PIN_DIGITS
        self.hub.begin(runner)

    def show(self, cmd: C.Show) -> None:
        if self.echo is not None:
            self.echo({"event": "screen", "screen": cmd.screen.value, "detail": cmd.detail,
                       "amount": cmd.amount})
        self.hub.show(cmd)

    def remind(self, cmd: C.RemindCard) -> None:
        self.hub.remind_card(cmd)
