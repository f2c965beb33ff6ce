"""The issuance session (コンビニ交付の一取引) as one sans-IO state machine.

Everything that affects the state machine lives in this file, in :data:`TABLE`: for each
state, the events it accepts, the method that handles each, and the states that method may
lead to. An event the table does not list for the current state raises
:class:`SessionProtocolError` — it is never "handled somewhere". There is no I/O, no clock,
no randomness: events in (:mod:`~kiosk.session.events`), commands out
(:mod:`~kiosk.session.commands`), time as :class:`~kiosk.session.events.Tick` events.

The rules that protect people and money, and where they are enforced:

* the PIN never enters the core (only digit counts), and a PIN whose card counter is 0 is
  never verified again (:meth:`IssuanceSession._verify_pin` refuses to emit the command);
* escrow is stacked only after the document arrived *and* the injected binding check
  accepted it (``FETCHING`` → ``STACKING``); a mismatch reports an incident, returns the
  escrow and nothing prints;
* change is paid (``PAYING_CHANGE``) before the document is sent to the printer;
* any failure once money is stacked ends in a 未交付 slip and a refund due;
* printed pages are released (``RELEASING``) only after :class:`CardRemoved`, and the session
  cannot reach ``DONE`` while the card is in the slot (``AWAIT_CARD_REMOVAL`` reminds, with
  escalating level, for as long as it takes);
* with ``card_out_after_use`` (the real kiosks' interlock, §1.3: 「マイナンバーカードの使用後には、
  マイナンバーカードの取り外しをしないと先の操作に進めない」), once the card has been used —
  PIN verified, center authenticated, menu loaded — the session waits in ``CARD_OUT`` and
  goes on to the document choice only after :class:`CardRemoved`: nothing after that needs
  the card, so it cannot be left behind;
* a time-out warns, then wipes: escrow returned, buffers dropped.

One reply is awaited at a time (``_pending``). When an abort abandons a non-physical command
(a center call, a card read), its late reply is absorbed without effect; physical commands
(stack, return, change, print, release) are never abandoned — their state waits for them or
for its time-out, whose assumption is stated where it is handled.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cardio.errors import EXIT_INTERNAL, CardioError
from kiosk.session import commands as C
from kiosk.session import events as E

__all__ = [
    "MAX_COPIES",
    "MAX_FEE",
    "TABLE",
    "BindingCheck",
    "ExpectedBinding",
    "InvariantViolation",
    "IssuanceSession",
    "Outcome",
    "SessionProtocolError",
    "Snapshot",
    "State",
    "Timeouts",
]

#: The highest fee a kiosk takes for one document (yen). The costliest certificate a
#: コンビニ交付 kiosk issues is a 除籍/改製原戸籍 copy at ¥750; one session buys one document.
#: A menu line above it (or not a positive multiple of 10 yen) is refused at the menu like
#: a refused item: no session takes in more than the journal can vouch for
#: (:data:`kiosk.session.journal_check.MAX_SESSION_YEN` is derived from it).
MAX_FEE = 1_000

#: The most copies (通数) of one document a session buys, whatever a municipality allows:
#: with :data:`MAX_FEE` it bounds a session's fee at ¥5,000, inside the journal's
#: :data:`kiosk.session.journal_check.MAX_SESSION_YEN` (fee + one ¥10,000 note + coins in
#: flight ≤ ¥20,000).
MAX_COPIES = 5


class SessionProtocolError(CardioError):
    """An event the state table does not allow in the current state (a bug in an adapter, a
    duplicated or foreign reply). The session is unchanged."""

    exit_code = 1


class InvariantViolation(CardioError, AssertionError):
    """The session broke one of its own invariants (a bug in the controller, never the
    user's input): the kiosk must stop and be serviced. Checked on every transition, not
    only under ``python -O`` like a bare ``assert``."""

    exit_code = EXIT_INTERNAL


class State(enum.StrEnum):
    IDLE = "idle"
    READING_CARD = "reading-card"
    PIN_ENTRY = "pin-entry"
    PIN_VERIFYING = "pin-verifying"
    AUTHENTICATING = "authenticating"
    LOADING_MENU = "loading-menu"
    CARD_OUT = "card-out"  # the card has been used: the session waits for its removal
    MENU = "menu"
    OPTIONS = "options"
    QUOTE = "quote"
    PAYMENT = "payment"
    FETCHING = "fetching"  # document requested; the binding check runs on its arrival
    STACKING = "stacking"
    PAYING_CHANGE = "paying-change"
    PRINTING = "printing"
    RESET_ENTRY = "reset-entry"  # PIN-reset path: the new signature password
    RESET_PIN_ENTRY = "reset-pin-entry"  # PIN-reset path: the auth PIN, for the card
    REDEEMING = "redeeming"
    RETURNING_ESCROW = "returning-escrow"
    SLIP_PRINTING = "slip-printing"
    AWAIT_CARD_REMOVAL = "await-card-removal"
    RELEASING = "releasing"
    FINALIZING = "finalizing"
    DONE = "done"


class Outcome(enum.StrEnum):
    PRINTED = "printed"
    REFUSED = "refused"
    CANCELLED = "cancelled"
    FAILED_REFUND_DUE = "failed_refund_due"
    PIN_RESET = "pin_reset"


#: The center's finalize vocabulary for each kiosk outcome.
CENTER_OUTCOME = {Outcome.PRINTED: "printed", Outcome.FAILED_REFUND_DUE: "failed"}


@dataclass(frozen=True)
class Timeouts:
    """Seconds (ticks). User states warn at ``warn`` and wipe at ``wipe`` (WCAG 2.2.1: ≥ 20 s
    to answer the warning); device and server waits give up at their own limit."""

    warn: int = 30
    wipe: int = 50
    card: int = 15
    center: int = 30
    cash: int = 20
    printer: int = 240
    #: Seconds after which the card reminder escalates to level 2, 3.
    remind: tuple[int, int] = (10, 30)


@dataclass(frozen=True)
class ExpectedBinding:
    """What the kiosk itself knows about its session, for the binding check (the fields of
    issue 10's ``ExpectedSession``)."""

    request_id: str
    session_id: str
    kiosk_id: str
    cert_sha256: str
    municipality_code: str
    doc_type: str


BindingCheck = Callable[[ExpectedBinding, object], str | None]
"""The injected binding check: ``None`` if the document is bound to exactly this session,
else a reason code (``binding_mismatch``, ``bad_signature``…). An exception counts as a
refusal (fail closed)."""


@dataclass(frozen=True)
class Snapshot:
    """The journal's view of a session: ids, amounts, states, digests — nothing personal."""

    txn: str
    request_id: str
    session_id: str
    state: State
    fee: int
    escrow: int
    cash_in: int
    stacked: int
    change_due: int
    change_paid: int
    refund: int
    fee_refunded: bool
    printed: bool
    card_present: bool
    outcome: str
    reason: str
    doc_digest: str
    finalize_owed: bool


_USER_STATES = frozenset({State.PIN_ENTRY, State.MENU, State.OPTIONS, State.QUOTE,
                          State.PAYMENT, State.RESET_ENTRY, State.RESET_PIN_ENTRY})
_PRE_STACK = frozenset({State.READING_CARD, State.PIN_ENTRY, State.PIN_VERIFYING,
                        State.AUTHENTICATING, State.LOADING_MENU, State.CARD_OUT,
                        State.MENU, State.OPTIONS,
                        State.QUOTE, State.PAYMENT, State.FETCHING, State.RESET_ENTRY,
                        State.RESET_PIN_ENTRY, State.REDEEMING})
_ENDING = frozenset({State.RETURNING_ESCROW, State.SLIP_PRINTING, State.AWAIT_CARD_REMOVAL,
                     State.RELEASING, State.FINALIZING, State.DONE})


@dataclass(frozen=True)
class Edge:
    """One row of the table: the handler (a method name) and where it may lead."""

    handler: str
    targets: frozenset[State]


def _e(handler: str, *targets: State) -> Edge:
    return Edge(handler, frozenset(targets))


_ABORT = (State.RETURNING_ESCROW, State.AWAIT_CARD_REMOVAL, State.FINALIZING, State.DONE)
#: After a print (or a slip): a slip for money owed, the card, the pages, the center.
_AFTER_PRINT = (State.SLIP_PRINTING, State.RELEASING, State.AWAIT_CARD_REMOVAL,
                State.FINALIZING, State.DONE)


def _build_table() -> dict[State, dict[type[E.Event], Edge]]:
    S = State
    t: dict[State, dict[type[E.Event], Edge]] = {
        S.IDLE: {E.CardInserted: _e("_on_card_inserted", S.READING_CARD)},
        S.READING_CARD: {
            E.CardRead: _e("_on_card_read", S.PIN_ENTRY, *_ABORT),
            E.CardFailed: _e("_on_card_failed", *_ABORT),
        },
        S.PIN_ENTRY: {
            E.PinDigits: _e("_on_pin_digits", S.PIN_ENTRY),
            E.PinSubmitted: _e("_on_pin_submitted", S.PIN_ENTRY, S.PIN_VERIFYING),
        },
        S.PIN_VERIFYING: {
            E.PinResult: _e("_on_pin_result", S.PIN_ENTRY, S.AUTHENTICATING, *_ABORT),
            E.CardFailed: _e("_on_card_failed", *_ABORT),
        },
        S.AUTHENTICATING: {
            E.Authenticated: _e("_on_authenticated", S.LOADING_MENU),
            E.ServerRefused: _e("_on_server_refused", *_ABORT),
            E.ServerUnavailable: _e("_on_server_unavailable", *_ABORT),
            E.CardFailed: _e("_on_card_failed", *_ABORT),
        },
        S.LOADING_MENU: {
            E.MenuReceived: _e("_on_menu", S.MENU, S.CARD_OUT, *_ABORT),
            E.ServerRefused: _e("_on_server_refused", *_ABORT),
            E.ServerUnavailable: _e("_on_server_unavailable", *_ABORT),
        },
        S.CARD_OUT: {E.CardRemoved: _e("_on_card_removed", S.MENU, S.OPTIONS)},
        S.MENU: {E.Choose: _e("_on_choose", S.MENU, S.OPTIONS, S.CARD_OUT, S.RESET_ENTRY)},
        S.OPTIONS: {E.OptionsConfirmed: _e("_on_options", S.QUOTE)},
        S.QUOTE: {E.QuoteAccepted: _e("_on_quote_accepted", S.PAYMENT, S.FETCHING),
                  E.QuoteBack: _e("_on_quote_back", S.OPTIONS)},
        S.PAYMENT: {E.DeviceFault: _e("_on_payment_fault", S.PAYMENT, *_ABORT)},
        S.FETCHING: {
            E.DocumentReceived: _e("_on_document", S.STACKING, *_ABORT),
            E.ServerRefused: _e("_on_server_refused", *_ABORT),
            E.ServerUnavailable: _e("_on_server_unavailable", *_ABORT),
        },
        S.STACKING: {E.EscrowStacked: _e("_on_stacked", S.PAYING_CHANGE, S.PRINTING,
                                         S.SLIP_PRINTING)},
        S.PAYING_CHANGE: {E.ChangePaid: _e("_on_change_paid", S.PRINTING)},
        S.PRINTING: {
            E.PrintDone: _e("_on_print_done", *_AFTER_PRINT),
            E.PrintFailed: _e("_on_print_failed", S.SLIP_PRINTING),
        },
        S.RESET_ENTRY: {E.SecretEntered: _e("_on_secret_entered", S.RESET_PIN_ENTRY)},
        S.RESET_PIN_ENTRY: {
            E.PinDigits: _e("_on_pin_digits", S.RESET_PIN_ENTRY),
            E.PinSubmitted: _e("_on_pin_submitted", S.RESET_PIN_ENTRY, S.REDEEMING),
        },
        S.REDEEMING: {
            E.PinResetDone: _e("_on_reset_done", *_ABORT),
            E.PinResetRefused: _e("_on_reset_refused", *_ABORT),
            E.PinResult: _e("_on_pin_result", S.RESET_PIN_ENTRY, *_ABORT),
            E.CardFailed: _e("_on_card_failed", *_ABORT),
            E.ServerUnavailable: _e("_on_server_unavailable", *_ABORT),
        },
        S.RETURNING_ESCROW: {E.EscrowReturned: _e("_on_returned", S.SLIP_PRINTING,
                                                  *_ABORT)},
        S.SLIP_PRINTING: {
            E.PrintDone: _e("_on_slip_done", *_AFTER_PRINT),
            E.PrintFailed: _e("_on_slip_done", *_AFTER_PRINT),
        },
        S.AWAIT_CARD_REMOVAL: {},
        S.RELEASING: {E.PagesReleased: _e("_on_released", S.SLIP_PRINTING, S.FINALIZING,
                                          S.DONE)},
        S.FINALIZING: {
            E.Finalized: _e("_on_finalized", S.DONE),
            E.ServerUnavailable: _e("_on_finalize_failed", S.DONE),
            E.ServerRefused: _e("_on_finalize_failed", S.DONE),
        },
        S.DONE: {},
    }
    # Edges every live state has — kept here, in the one table.
    for state, row in t.items():
        if state in (S.IDLE, S.DONE):
            continue
        row[E.Tick] = _e("_on_tick", state, S.SLIP_PRINTING, S.PRINTING, *_ABORT,
                         *_AFTER_PRINT)
        row.setdefault(E.CardRemoved, _e("_on_card_removed", state, S.RELEASING,
                                         S.SLIP_PRINTING, *_ABORT))
        row.setdefault(E.CashCredited, _e("_on_credit", state, S.FETCHING))
        row.setdefault(E.CardInserted, _e("_on_card_back", state, S.CARD_OUT))
        row.setdefault(E.DeviceFault, _e("_on_fault_noted", state))
        if state in _USER_STATES or state is S.CARD_OUT:
            row[E.Cancel] = _e("_on_cancel", *_ABORT)
            row[E.Extend] = _e("_on_extend", state)
    return t


#: The whole state machine: ``TABLE[state][event type]`` → handler and allowed targets.
TABLE: dict[State, dict[type[E.Event], Edge]] = _build_table()


class IssuanceSession:
    """One card's session at the kiosk, from insertion to ``DONE``; a new object per card.

    ``txn`` is the kiosk's transaction id (also the 未交付 slip number), ``request_id`` the
    id carried end to end through the center; both come from the runner, which owns
    randomness. ``binding_check`` is the pure kiosk-side check of issue 10, adapted.
    """

    def __init__(self, txn: str, request_id: str, kiosk_id: str, binding_check: BindingCheck,
                 *, timeouts: Timeouts | None = None, pin_reset: bool = True,
                 card_out_after_use: bool = False) -> None:
        self.txn, self.request_id, self.kiosk_id = txn, request_id, kiosk_id
        self._check = binding_check
        self.timeouts = timeouts or Timeouts()
        self.pin_reset_offered = pin_reset
        #: The interlock: after its use the card must leave before the session goes on.
        self.card_out_after_use = card_out_after_use
        self._after_card_out = State.MENU
        #: The card left after its use (the interlock opened): from then on the session
        #: needs it no more, and a card put back is only reminded away, never a cancel.
        self._used_out = False
        self.state = State.IDLE
        self._n = 0
        self._pending = ""  # key of the awaited reply
        self._pending_kind: type[C.Command] | None = None
        self._abandoned: set[str] = set()
        self._ticks = 0
        self._warned = False
        self._remind_level = 0
        # what the session knows
        self.card_present = False
        self.tries_left = -1
        self._cert_sha256 = ""
        self.session_id = ""
        self.municipality = ""
        self.municipality_name = ""
        self.copies = 1
        self.menu: dict[str, E.MenuItem] = {}
        self.item: E.MenuItem | None = None
        self.options: tuple[str, ...] = ()
        self.digits = 0
        self._document: object | None = None
        self.doc_digest = ""
        # money (yen)
        self.fee = 0
        self.escrow = 0
        self.cash_in = 0
        self.stacked = 0
        self.change_due = 0
        self.change_paid = 0
        self.refund = 0
        self.fee_refunded = False
        self.stack_issued = False
        self.printed = False
        self.release_due = False
        self.slip_due = False
        self.finalize_owed = False
        self.outcome: Outcome | None = None
        self.reason = ""

    # -- the one entry point ---------------------------------------------------------------

    def accepts(self, event_type: type[E.Event]) -> bool:
        """Whether the table has an edge for ``event_type`` now (the UI offers only those)."""
        return event_type in TABLE[self.state]

    def handle(self, event: E.Event) -> list[C.Command]:
        """Apply ``event``; return the commands to perform, in order."""
        if isinstance(event, E.Reply) and event.key in self._abandoned:
            self._abandoned.discard(event.key)
            return []  # the late answer of an abandoned card/center call: no effect
        edge = TABLE[self.state].get(type(event))
        if edge is None:
            raise SessionProtocolError(
                f"event {type(event).__name__} is not allowed in state {self.state.value}")
        if isinstance(event, E.Reply) and event.key != self._pending:
            raise SessionProtocolError(
                f"{type(event).__name__} answers {event.key!r}, but state "
                f"{self.state.value} awaits {self._pending or 'no reply'!r}")
        before = self.state
        out: list[C.Command] = []
        handler: Callable[[Any, list[C.Command]], None] = getattr(self, edge.handler)
        handler(event, out)
        if self.state not in edge.targets:  # the table is the contract; a handler bug is loud
            raise InvariantViolation(f"{edge.handler} led {before.value} to {self.state.value}")
        if self.state is not before:
            self._ticks, self._warned = 0, False
        return out

    def snapshot(self) -> Snapshot:
        return Snapshot(
            txn=self.txn, request_id=self.request_id, session_id=self.session_id,
            state=self.state, fee=self.fee, escrow=self.escrow, cash_in=self.cash_in,
            stacked=self.stacked, change_due=self.change_due, change_paid=self.change_paid,
            refund=self.refund, fee_refunded=self.fee_refunded, printed=self.printed,
            card_present=self.card_present, outcome=self.outcome.value if self.outcome else "",
            reason=self.reason, doc_digest=self.doc_digest, finalize_owed=self.finalize_owed)

    @property
    def pending(self) -> str:
        return self._pending

    # -- helpers ---------------------------------------------------------------------------

    def _cmd(self, out: list[C.Command], cls: type[C.Command], **kw: Any) -> C.Command:
        self._n += 1
        name = cls.__name__.lower()
        cmd = cls(key=f"{self.txn}:{self._n}:{name}", **kw)
        if cls.expects_reply:
            if self._pending:
                raise InvariantViolation(f"{name} issued while {self._pending} is pending")
            self._pending, self._pending_kind = cmd.key, cls
        out.append(cmd)
        return cmd

    def _show(self, out: list[C.Command], screen: C.Screen, detail: str = "",
              amount: int = 0) -> None:
        self._cmd(out, C.Show, screen=screen, detail=detail, amount=amount)

    def _answered(self) -> None:
        self._pending, self._pending_kind = "", None

    def _go(self, state: State) -> None:
        self.state = state

    def _verify_pin(self, out: list[C.Command], cls: type[C.Command]) -> None:
        if self.tries_left == 0:  # defence in depth: the table never gets here with 0
            raise InvariantViolation("a locked PIN must never be verified again")
        self.digits = 0
        self._cmd(out, cls)

    def _wipe(self, out: list[C.Command]) -> None:
        self._document = None
        self.menu, self.item, self._cert_sha256 = {}, None, ""
        self._cmd(out, C.Wipe)

    # -- ending: one routine decides the next step of every path out ------------------------

    def _abort(self, out: list[C.Command], outcome: Outcome, reason: str) -> None:
        """Leave the main flow before any money was stacked."""
        if self._pending and self._pending_kind is not None and \
                not self._pending_kind.physical:
            self._abandoned.add(self._pending)
            self._answered()
        if self.outcome is None:
            self.outcome, self.reason = outcome, reason
        screen = {Outcome.REFUSED: C.Screen.REFUSED,
                  Outcome.CANCELLED: C.Screen.CANCELLED}.get(outcome, C.Screen.REFUSED)
        self._show(out, screen, reason, self.escrow)  # what goes back, for the screen to say
        if self.state is State.PAYMENT:
            self._cmd(out, C.EndCashIn)
        self._wipe(out)
        self._advance_ending(out)

    def _advance_ending(self, out: list[C.Command]) -> None:
        """Next step out: return escrow → 未交付 slip → card removal → release → finalize."""
        if self.escrow > 0 and not self.stack_issued:
            self._cmd(out, C.ReturnEscrow, yen=self.escrow)
            self._go(State.RETURNING_ESCROW)
        elif self.slip_due:
            self.slip_due = False
            self._cmd(out, C.PrintSlip, txn=self.txn, yen=self.refund, reason=self.reason)
            self._go(State.SLIP_PRINTING)
        elif self.card_present:
            self._show(out, C.Screen.TAKE_CARD)
            self._remind_level = 1
            self._cmd(out, C.RemindCard, level=1)
            self._go(State.AWAIT_CARD_REMOVAL)
        elif self.release_due:
            self.release_due = False
            self._cmd(out, C.ReleasePages)
            self._go(State.RELEASING)
        elif self.session_id:
            assert self.outcome is not None
            self._cmd(out, C.Finalize, request_id=self.request_id, session_id=self.session_id,
                      outcome=CENTER_OUTCOME.get(self.outcome, "cancelled"))
            self._go(State.FINALIZING)
        else:
            self._finish(out)

    def _finish(self, out: list[C.Command]) -> None:
        self._wipe(out)
        self._show(out, C.Screen.DONE, self.outcome.value if self.outcome else "")
        self._go(State.DONE)

    def _fail_after_stack(self, out: list[C.Command], reason: str) -> None:
        """Money is in the box and no document will print: refund the fee, 未交付 slip."""
        self.outcome, self.reason = Outcome.FAILED_REFUND_DUE, reason
        if not self.fee_refunded:
            self.refund += min(self.fee, self.stacked)
            self.fee_refunded = True
        self._show(out, C.Screen.NOT_ISSUED, reason, self.refund)
        self._document = None
        self.slip_due = True
        self._advance_ending(out)

    # -- handlers (named in TABLE) ---------------------------------------------------------

    def _on_card_inserted(self, ev: E.CardInserted, out: list[C.Command]) -> None:
        self.card_present = True
        self._show(out, C.Screen.READING)
        self._cmd(out, C.ReadCard)
        self._go(State.READING_CARD)

    def _on_card_read(self, ev: E.CardRead, out: list[C.Command]) -> None:
        self._answered()
        self.tries_left, self._cert_sha256 = ev.tries_left, ev.cert_sha256
        if ev.tries_left <= 0:
            self._abort(out, Outcome.REFUSED, "pin_locked")
            return
        self._show(out, C.Screen.PIN, amount=ev.tries_left)
        self._go(State.PIN_ENTRY)

    def _on_card_failed(self, ev: E.CardFailed, out: list[C.Command]) -> None:
        self._answered()
        self._abort(out, Outcome.REFUSED, "card_error")

    def _on_pin_digits(self, ev: E.PinDigits, out: list[C.Command]) -> None:
        self.digits = max(0, min(ev.count, 16))
        self._ticks = 0
        self._show(out, C.Screen.PIN if self.state is State.PIN_ENTRY else C.Screen.PIN_AGAIN,
                   amount=self.digits)

    def _on_pin_submitted(self, ev: E.PinSubmitted, out: list[C.Command]) -> None:
        if self.digits != 4:  # the 利用者証明用 PIN is exactly 4 digits: never waste a try
            self._show(out, C.Screen.PIN_INCOMPLETE, amount=self.digits)
            return
        self._show(out, C.Screen.WORKING)
        if self.state is State.PIN_ENTRY:
            self._verify_pin(out, C.VerifyPin)
            self._go(State.PIN_VERIFYING)
        else:
            self._verify_pin(out, C.RedeemPinReset)
            self._go(State.REDEEMING)

    def _on_pin_result(self, ev: E.PinResult, out: list[C.Command]) -> None:
        self._answered()
        self.tries_left = ev.tries_left
        if ev.verified and self.state is State.PIN_VERIFYING:
            self._cmd(out, C.Authenticate, request_id=self.request_id)
            self._go(State.AUTHENTICATING)
        elif ev.verified or ev.tries_left <= 0:
            # verified but the reset failed later cannot reach here; 0 tries: locked, no retry
            self._abort(out, Outcome.REFUSED, "pin_locked")
        else:
            self._show(out, C.Screen.PIN_WRONG, amount=ev.tries_left)
            self._go(State.PIN_ENTRY if self.state is State.PIN_VERIFYING
                     else State.RESET_PIN_ENTRY)

    def _on_authenticated(self, ev: E.Authenticated, out: list[C.Command]) -> None:
        self._answered()
        self.session_id, self.municipality = ev.session_id, ev.municipality_code
        self.municipality_name = ev.municipality_name
        self._cmd(out, C.LoadMenu, request_id=self.request_id, session_id=self.session_id)
        self._go(State.LOADING_MENU)

    def _on_server_refused(self, ev: E.ServerRefused, out: list[C.Command]) -> None:
        self._answered()
        self._abort(out, Outcome.REFUSED, ev.reason or "refused")

    def _on_server_unavailable(self, ev: E.ServerUnavailable, out: list[C.Command]) -> None:
        self._answered()
        self._abort(out, Outcome.REFUSED, "center_unavailable")

    def _on_menu(self, ev: E.MenuReceived, out: list[C.Command]) -> None:
        self._answered()
        self.menu = {i.doc_type: i for i in ev.items}
        if not self.pin_reset_offered and not any(not i.refusal for i in ev.items):
            reasons = [i.refusal for i in ev.items if i.refusal]
            self._abort(out, Outcome.REFUSED, reasons[0] if reasons else "nothing_available")
            return
        # The PIN reset needs the card again (it is redeemed on it): with the reset on the
        # menu the card stays until a certificate is chosen.
        if self.card_out_after_use and self.card_present and not self.pin_reset_offered:
            self._card_out(out, State.MENU)
            return
        self._show(out, C.Screen.MENU)
        self._go(State.MENU)

    def _card_out(self, out: list[C.Command], then: State) -> None:
        self._after_card_out = then
        self._show(out, C.Screen.CARD_OUT)
        self._remind_level = 1
        self._cmd(out, C.RemindCard, level=1)
        self._go(State.CARD_OUT)

    def _on_choose(self, ev: E.Choose, out: list[C.Command]) -> None:
        self._ticks = 0
        if ev.item == "pin-reset" and self.pin_reset_offered:
            self._show(out, C.Screen.NEW_PASSWORD)
            self._go(State.RESET_ENTRY)
            return
        item = self.menu.get(ev.item)
        if item is None:
            raise SessionProtocolError(f"{ev.item!r} is not on this session's menu")
        if item.refusal:
            self._show(out, C.Screen.REFUSED, item.refusal)  # stays in the menu
            return
        if not (0 < item.fee <= MAX_FEE and item.fee % 10 == 0):
            self._show(out, C.Screen.REFUSED, "fee_out_of_range")  # stays in the menu
            return
        self.item = item
        if self.card_out_after_use and self.card_present:
            self._card_out(out, State.OPTIONS)
            return
        self._show(out, C.Screen.OPTIONS, item.doc_type)
        self._go(State.OPTIONS)

    def _on_options(self, ev: E.OptionsConfirmed, out: list[C.Command]) -> None:
        assert self.item is not None
        unknown = set(ev.options) - set(self.item.options)
        if unknown:
            raise SessionProtocolError(f"options not offered: {sorted(unknown)}")
        most = min(max(self.item.max_copies, 1), MAX_COPIES)
        if not 1 <= ev.copies <= most:
            raise SessionProtocolError(f"{ev.copies} copies asked; 1 to {most} are allowed")
        self.options = tuple(sorted(ev.options))
        self.copies = ev.copies
        self.fee = self.item.fee * ev.copies
        self._show(out, C.Screen.QUOTE, self.item.doc_type, self.fee)
        self._go(State.QUOTE)

    def _on_quote_back(self, ev: E.QuoteBack, out: list[C.Command]) -> None:
        assert self.item is not None
        self.fee = 0
        self._show(out, C.Screen.OPTIONS, self.item.doc_type)
        self._go(State.OPTIONS)

    def _on_quote_accepted(self, ev: E.QuoteAccepted, out: list[C.Command]) -> None:
        self._cmd(out, C.StartCashIn, fee=self.fee)
        self._show(out, C.Screen.PAYMENT, amount=self.escrow)
        self._go(State.PAYMENT)
        self._maybe_paid(out)

    def _maybe_paid(self, out: list[C.Command]) -> None:
        if self.state is State.PAYMENT and self.escrow >= self.fee:
            assert self.item is not None
            self._cmd(out, C.EndCashIn)
            self._show(out, C.Screen.WORKING)
            self._cmd(out, C.RequestDocument, request_id=self.request_id,
                      session_id=self.session_id, doc_type=self.item.doc_type,
                      options=self.options)
            self._go(State.FETCHING)

    def _on_credit(self, ev: E.CashCredited, out: list[C.Command]) -> None:
        if ev.yen <= 0:
            raise SessionProtocolError("a credit must be a positive amount")
        if self.state in _PRE_STACK and not self.stack_issued:
            self.escrow += ev.yen  # returnable: stacked with the payment or handed back
            self._ticks = 0
            if self.state is State.PAYMENT:
                self._show(out, C.Screen.PAYMENT, amount=self.escrow)
                self._maybe_paid(out)
        else:
            # Cash that arrived after the payment was taken (a coin in flight, a device that
            # ignored the inhibit): it is in the machine now; owe it back, on a slip.
            self.cash_in += ev.yen
            self.refund += ev.yen
            if self.state is not State.FINALIZING:  # a slip still comes before the end
                self.slip_due = True
                if self.outcome is not None:
                    self.reason = self.reason or "cash_after_payment"

    def _on_payment_fault(self, ev: E.DeviceFault, out: list[C.Command]) -> None:
        if ev.device == "cash":
            self._abort(out, Outcome.REFUSED, f"device_fault:{ev.kind}")

    def _on_fault_noted(self, ev: E.DeviceFault, out: list[C.Command]) -> None:
        """An unsolicited fault outside payment changes nothing by itself: a pending command's
        reply or its time-out carries the consequence."""

    def _on_document(self, ev: E.DocumentReceived, out: list[C.Command]) -> None:
        self._answered()
        assert self.item is not None
        expected = ExpectedBinding(self.request_id, self.session_id, self.kiosk_id,
                                   self._cert_sha256, self.municipality, self.item.doc_type)
        try:
            verdict = self._check(expected, ev.document)
        except Exception:  # the check failing is a refusal, never a pass
            verdict = "binding_check_error"
        if verdict is not None:
            self._cmd(out, C.ReportIncident, request_id=self.request_id,
                      session_id=self.session_id, kind=verdict)
            self._abort(out, Outcome.REFUSED, verdict)
            return
        self._document, self.doc_digest = ev.document, ev.digest
        self.stack_issued = True
        self._cmd(out, C.StackEscrow, yen=self.escrow)
        self._go(State.STACKING)

    def _on_stacked(self, ev: E.EscrowStacked, out: list[C.Command]) -> None:
        self._answered()
        self._stacked(out, ev.yen)

    def _stacked(self, out: list[C.Command], yen: int) -> None:
        self.stacked, self.cash_in, self.escrow = yen, self.cash_in + yen, 0
        if yen < self.fee:  # the devices counted less than the fee: never print unpaid
            self.fee_refunded = True
            self.refund += yen
            self.outcome, self.reason = Outcome.FAILED_REFUND_DUE, "payment_short"
            self._show(out, C.Screen.NOT_ISSUED, self.reason, self.refund)
            self._document = None
            self.slip_due = True
            self._advance_ending(out)
            return
        self.change_due = yen - self.fee
        if self.change_due > 0:
            self._cmd(out, C.PayChange, yen=self.change_due)
            self._go(State.PAYING_CHANGE)
        else:
            self._start_print(out)

    def _on_change_paid(self, ev: E.ChangePaid, out: list[C.Command]) -> None:
        self._answered()
        self._change(out, min(ev.yen, self.change_due))

    def _change(self, out: list[C.Command], paid: int) -> None:
        self.change_paid = paid
        if paid < self.change_due:  # hopper empty: what it could not pay is owed
            self.refund += self.change_due - paid
            # Never a silent shortfall: the owed change goes on a slip after the printing
            # (the certificate is still issued; the slip is the customer's proof). Its
            # reason is set with the outcome (the journal holds no reason without one).
            self.slip_due = True
        self._start_print(out)

    def _start_print(self, out: list[C.Command]) -> None:
        self._cmd(out, C.PrintDocument, document=self._document, digest=self.doc_digest,
                  copies=self.copies)
        self._document = None  # the printer adapter holds it until the job ends
        if self.card_present:
            # No page comes out while the card is in the slot (a printer's job starts once
            # it is out): the person is asked for the card first, then sees the printing.
            self._show(out, C.Screen.TAKE_CARD)
            self._remind_level = 1
            self._cmd(out, C.RemindCard, level=1)
        else:
            self._show(out, C.Screen.PRINTING)
        self._go(State.PRINTING)

    def _on_print_done(self, ev: E.PrintDone, out: list[C.Command]) -> None:
        self._answered()
        self.printed = True
        # Printed, and money still owed (change the hoppers could not pay, cash after the
        # payment): the slip that follows names why.
        self.outcome = Outcome.PRINTED
        self.reason = "" if not self.slip_due else \
            "change_short" if self.change_paid < self.change_due else "cash_after_payment"
        self.release_due = True
        self._wipe(out)
        self._advance_ending(out)

    def _on_print_failed(self, ev: E.PrintFailed, out: list[C.Command]) -> None:
        self._answered()
        self._fail_after_stack(out, f"print_failed:{ev.reason}")

    def _on_secret_entered(self, ev: E.SecretEntered, out: list[C.Command]) -> None:
        self.digits = 0
        self._show(out, C.Screen.PIN_AGAIN, amount=0)
        self._go(State.RESET_PIN_ENTRY)

    def _on_reset_done(self, ev: E.PinResetDone, out: list[C.Command]) -> None:
        self._answered()
        self.outcome = Outcome.PIN_RESET
        self._wipe(out)
        self._advance_ending(out)

    def _on_reset_refused(self, ev: E.PinResetRefused, out: list[C.Command]) -> None:
        self._answered()
        self._abort(out, Outcome.REFUSED, ev.reason or "reset_refused")

    def _on_returned(self, ev: E.EscrowReturned, out: list[C.Command]) -> None:
        self._answered()
        self._returned(out, min(ev.yen, self.escrow))

    def _returned(self, out: list[C.Command], returned: int) -> None:
        held = self.escrow - returned
        self.escrow = 0
        if held > 0:  # an item stuck in the path: the machine holds it, staff owe it back
            self.cash_in += held
            self.refund += held
            self.reason = self.reason or "escrow_stuck"
            self.slip_due = True
        self._advance_ending(out)

    def _on_slip_done(self, ev: E.PrintDone | E.PrintFailed, out: list[C.Command]) -> None:
        self._answered()
        # A certificate printed before the slip is still to be released, whatever the slip.
        self.release_due = self.release_due or isinstance(ev, E.PrintDone)
        self._advance_ending(out)

    def _on_released(self, ev: E.PagesReleased, out: list[C.Command]) -> None:
        self._answered()
        self._show(out, C.Screen.TAKE_PAGES)
        self._advance_ending(out)

    def _on_finalized(self, ev: E.Finalized, out: list[C.Command]) -> None:
        self._answered()
        self._finish(out)

    def _on_finalize_failed(self, ev: E.ServerUnavailable | E.ServerRefused,
                            out: list[C.Command]) -> None:
        self._answered()
        self.finalize_owed = True  # the journal keeps it owed; the runner retries later
        self._finish(out)

    def _on_cancel(self, ev: E.Cancel, out: list[C.Command]) -> None:
        self._abort(out, Outcome.CANCELLED, "user_cancel")

    def _on_extend(self, ev: E.Extend, out: list[C.Command]) -> None:
        self._ticks, self._warned = 0, False

    def _on_card_back(self, ev: E.CardInserted, out: list[C.Command]) -> None:
        """The card put back in the slot during a session (a resident who thinks it is
        needed again — review of issue 24: it was ignored and left behind). It is asked out
        again before the session can end: in the menu or options the interlock closes
        again; elsewhere the reminder comes back (the printing waits for it, the ending
        holds in AWAIT_CARD_REMOVAL)."""
        if self.card_present:
            return  # the slot said so already
        self.card_present = True
        if self.state in (State.MENU, State.OPTIONS) and self.card_out_after_use:
            self._card_out(out, self.state)
            return
        self._remind_level = 1
        if self.state is State.PRINTING:
            self._show(out, C.Screen.TAKE_CARD)
        self._cmd(out, C.RemindCard, level=1)

    def _on_card_removed(self, ev: E.CardRemoved, out: list[C.Command]) -> None:
        if not self.card_present:
            raise SessionProtocolError("card removed twice")
        self.card_present = False
        if self.state is State.CARD_OUT:
            self._used_out = True
            # The interlock opens: the card is out, the person goes on to choose.
            self._remind_level = 0
            if self._after_card_out is State.OPTIONS and self.item is not None:
                self._show(out, C.Screen.OPTIONS, self.item.doc_type)
            else:
                self._show(out, C.Screen.MENU)
            self._go(self._after_card_out)
        elif self.state is State.LOADING_MENU and self.card_out_after_use:
            self._used_out = True  # used already (authenticated): taken a moment early
        elif self.state in _PRE_STACK and self._used_out:
            self._remind_level = 0  # a card put back after its use is out again: go on
        elif self.state in _PRE_STACK:
            self._abort(out, Outcome.CANCELLED, "card_removed")
        elif self.state is State.AWAIT_CARD_REMOVAL:
            self._remind_level = 0
            self._advance_ending(out)
        elif self.state is State.PRINTING:
            # A certificate's job goes to a printer only once the card is out (the runner
            # waits for it): the printer's time limit runs from here.
            self._ticks = 0
            self._remind_level = 0
            self._show(out, C.Screen.PRINTING)
        # stacking, change, returning, slip: the card leaving is what we want

    def _on_tick(self, ev: E.Tick, out: list[C.Command]) -> None:
        self._ticks += 1
        s, t = self.state, self.timeouts
        if s in _USER_STATES:
            if self._ticks >= t.wipe:
                self._abort(out, Outcome.CANCELLED, "timeout")
            elif self._ticks >= t.warn and not self._warned:
                self._warned = True
                self._show(out, C.Screen.TIMEOUT_WARNING, amount=t.wipe - self._ticks)
            return
        if s is State.CARD_OUT:
            # Reminded, escalating, while the card stays; a person who walked away with
            # the card in the slot is timed out like any idle screen (the ending keeps
            # reminding until the card is taken).
            if self._ticks >= t.wipe:
                self._abort(out, Outcome.CANCELLED, "timeout")
                return
            level = 1 + sum(self._ticks >= r for r in t.remind)
            if level > self._remind_level:
                self._remind_level = level
                self._cmd(out, C.RemindCard, level=level)
            return
        if s is State.AWAIT_CARD_REMOVAL:
            # Held here for as long as the card stays: the session never ends on a card.
            level = 1 + sum(self._ticks >= r for r in t.remind)
            if level > self._remind_level:
                self._remind_level = level
                self._cmd(out, C.RemindCard, level=level)
            return
        limit = {State.READING_CARD: t.card, State.PIN_VERIFYING: t.card,
                 State.REDEEMING: t.center, State.AUTHENTICATING: t.center,
                 State.LOADING_MENU: t.center, State.FETCHING: t.center,
                 State.FINALIZING: t.center, State.STACKING: t.cash,
                 State.PAYING_CHANGE: t.cash, State.RETURNING_ESCROW: t.cash,
                 State.PRINTING: t.printer, State.SLIP_PRINTING: t.printer,
                 State.RELEASING: t.printer}[s]
        if s is State.PRINTING and self.card_present:
            level = 1 + sum(self._ticks >= r for r in t.remind)
            if level > self._remind_level:
                self._remind_level = level
                self._cmd(out, C.RemindCard, level=level)
            return  # a printer's job starts once the card is out; until then, reminders
        if self._ticks < limit:
            return
        self._timeout(out)

    def _timeout(self, out: list[C.Command]) -> None:
        """A device or server did not answer in time.

        Card and center calls are abandoned (their late answer is absorbed) and the session
        aborts — before any money was taken, so the escrow goes back. Money and paper are
        never guessed: a stack, return, payout, print or release keeps waiting for its
        answer — the adapters guarantee one (success, partial, or failure with the device's
        own account), and a restart's recovery re-asks under the same key — while the screen
        asks the user to call staff. A finalize the center did not acknowledge stays owed.
        """
        s = self.state
        if s in _PRE_STACK:
            self._abort(out, Outcome.REFUSED,
                        "card_unresponsive" if s in (State.READING_CARD, State.PIN_VERIFYING)
                        else "center_unavailable")
        elif s is State.FINALIZING:
            self._abandoned.add(self._pending)
            self._answered()
            self.finalize_owed = True
            self._finish(out)
        elif not self._warned:
            self._warned = True
            self._show(out, C.Screen.CALL_STAFF, s.value)


def describe_table() -> str:
    """The table as Markdown (``docs/kiosk-session.md`` embeds it; a test keeps them equal)."""
    lines = ["| state | event | handler | may lead to |", "|---|---|---|---|"]
    for state, row in TABLE.items():
        for ev, edge in row.items():
            targets = ", ".join(sorted(t.value for t in edge.targets))
            lines.append(f"| `{state.value}` | `{ev.__name__}` | `{edge.handler}` | "
                         f"{targets} |")
    return "\n".join(lines)
