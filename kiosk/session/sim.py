"""A deterministic simulated world around the real session core and the real journal: a person
at the kiosk, the card, the cash devices, the printer and the center — for property tests,
the crash-at-every-point driver and the bench.

Nothing here replaces the code under test: :class:`~kiosk.session.core.IssuanceSession` and
:class:`~kiosk.session.journal.Journal` run unchanged; this module plays the *outside*. Every
decision (what the user does next, whether a device faults) comes from a :class:`Chooser`,
so a run is reproducible from its choices and a property-test engine can drive and shrink it
(choice 0 is always the happy path). The world keeps the physical truth — where every yen
is, what the printer really put out, whether the card was in the slot — independently of
the kiosk's books, so the invariants compare two accounts instead of one with itself.

Device commands are idempotent by key, as the adapters must be: performing a key again
returns its first result; this is also the :class:`~kiosk.session.journal.RecoveryPort`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from kiosk.session import commands as C
from kiosk.session import events as E
from kiosk.session.core import (
    ExpectedBinding,
    InvariantViolation,
    IssuanceSession,
    Outcome,
    State,
    Timeouts,
)
from kiosk.session.journal import Journal

__all__ = ["Chooser", "SimDocument", "SimKiosk", "Violation", "World", "letters",
           "pin_token"]

DENOMINATIONS = (10, 50, 100, 500, 1000, 2000, 5000, 10000)
DOC_TYPES = ("juminhyo", "kisai-jiko", "inkan", "tax", "koseki", "fuhyo")
#: Short time-outs so simulated waits cost few events (the logic is the same at any scale).
SIM_TIMEOUTS = Timeouts(warn=4, wipe=7, card=5, center=5, cash=3, printer=6, remind=(2, 5))


class Violation(InvariantViolation):
    """An invariant broke in a simulated run (money, documents, PIN handling across
    sessions — the simulator's checks beside the session's own)."""


def letters(n: int, width: int = 6) -> str:
    """An id made of letters only (so a 4-digit PIN can never hide in it by chance)."""
    out = ""
    for _ in range(width):
        n, r = divmod(n, 26)
        out = chr(ord("a") + r) + out
    return out


def pin_token(pin: str) -> re.Pattern[str]:
    """The PIN as a token: not inside a longer run of hex digits (a digest may contain any
    four digits by chance; a leaked PIN stands on its own)."""
    return re.compile(rf"(?<![0-9a-fA-F]){re.escape(pin)}(?![0-9a-fA-F])")


class Chooser:
    """Decisions from a list of numbers (drawn by hypothesis, or scripted), then from a
    seeded stream for at most ``budget`` more decisions.

    ``chaos`` and ``faults`` are percentages: a decision leaves the happy path when its number
    mod 100 falls below them. Once the numbers run out every decision is the happy one, so
    every run ends.
    """

    def __init__(self, numbers: list[int] | None = None, chaos: int = 0, faults: int = 0,
                 *, seed: int | None = None, budget: int = 400) -> None:
        self._it: Iterator[int] = iter(numbers or [])
        self.chaos, self.faults = chaos, faults
        self._rng = random.Random(seed) if seed is not None else None
        self._budget = budget

    def _next(self) -> int | None:
        v = next(self._it, None)
        if v is None and self._rng is not None and self._budget > 0:
            self._budget -= 1
            v = self._rng.randrange(1 << 16)
        return v

    def pick(self, n: int) -> int:
        """0 (happy) or, with probability ``chaos``, one of 1..n-1. Exhausted: always 0."""
        v = self._next()
        if v is None or n <= 1 or v % 100 >= self.chaos:
            return 0
        return 1 + (v // 100) % (n - 1)

    def fault(self, kinds: int) -> int:
        """0 (no fault) or, with probability ``faults``, one of 1..kinds."""
        v = self._next()
        if v is None or kinds <= 0 or v % 100 >= self.faults:
            return 0
        return 1 + (v // 100) % kinds

    def number(self, n: int) -> int:
        v = self._next()
        return v % n if v is not None and n > 0 else 0


@dataclass(frozen=True)
class SimDocument:
    """What the simulated center returns: a binding and some personal content."""

    request_id: str
    session_id: str
    kiosk_id: str
    cert_sha256: str
    municipality_code: str
    doc_type: str
    holder: str  # personal data: must never reach the journal

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def sim_binding_check(expected: ExpectedBinding, document: object) -> str | None:
    """The simulated world's stand-in for issue 10's pure check: every binding field equal."""
    if not isinstance(document, SimDocument):
        return "bad_document"
    for name in ("request_id", "session_id", "kiosk_id", "cert_sha256",
                 "municipality_code", "doc_type"):
        if getattr(document, name) != getattr(expected, name):
            return "binding_mismatch"
    return None


@dataclass
class World:
    """The physical and remote truth, JSON-serialisable (the crash driver persists it)."""

    pin: str = "7391"
    tries: int = 3
    card_present: bool = False
    reservation: bool = True
    verify_when_locked: int = 0
    keypad: str = ""  # what the keypad adapter holds (the world side of the PIN)
    secret_held: bool = False
    inserted: int = 0
    returned: int = 0
    escrow: int = 0
    cashbox: int = 0
    hopper: int = 1_000_000
    change_paid: int = 0
    printed: dict[str, int] = field(default_factory=dict)  # txn → documents printed
    foreign_printed: int = 0
    slips: dict[str, int] = field(default_factory=dict)  # txn → refund on its slip
    output_held: list[str] = field(default_factory=list)  # txns with pages in the tray
    released: list[str] = field(default_factory=list)
    released_with_card: int = 0
    jobs: dict[str, str] = field(default_factory=dict)  # key → printed|failed|hung|cancelled
    job_txn: dict[str, str] = field(default_factory=dict)
    finalized: dict[str, str] = field(default_factory=dict)  # request_id → outcome
    incidents: int = 0
    results: dict[str, list[Any]] = field(default_factory=dict)  # key → first reply
    txn: str = ""
    request_id: str = ""
    session_no: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> World:
        return cls(**json.loads(text))

    # -- the RecoveryPort ------------------------------------------------------------------

    def return_escrow(self, key: str) -> tuple[int, int]:
        if key not in self.results:
            amount, self.escrow = self.escrow, 0
            self.returned += amount
            self.results[key] = [amount, 0]
        r = self.results[key]
        return int(r[0]), int(r[1])

    def stack_escrow(self, key: str) -> int:
        if key not in self.results:
            amount, self.escrow = self.escrow, 0
            self.cashbox += amount
            self.results[key] = [amount]
        return int(self.results[key][0])

    def pay_change(self, key: str, yen: int) -> int:
        if key not in self.results:
            paid = min(yen, self.hopper - self.hopper % 10)  # its smallest coin is ¥10
            self.hopper -= paid
            self.change_paid += paid
            self.results[key] = [paid]
        return int(self.results[key][0])

    def settle_print(self, key: str) -> bool:
        status = self.jobs.get(key)
        if status == "printed":
            return True
        if status is not None:
            self.jobs[key] = "cancelled" if status == "hung" else status
        return False

    def print_slip(self, key: str, txn: str, yen: int, reason: str) -> bool:
        if key not in self.results:
            self.slips[txn] = yen
            self.output_held.append(txn)
            self.results[key] = [1]
        return bool(self.results[key][0])

    def card_in_slot(self) -> bool:
        return self.card_present

    def release_pages(self, key: str) -> None:
        if key in self.results:
            return
        if self.card_present:
            self.released_with_card += 1
        self.released.extend(self.output_held)
        self.output_held.clear()
        self.results[key] = [1]

    # -- devices and center performing the core's commands -----------------------------------

    def perform(self, cmd: C.Command, ch: Chooser, cert: str) -> list[E.Event]:
        """Act on ``cmd`` (at most once per key); the replies to deliver (none: a hang)."""
        if cmd.key in self.results and cmd.expects_reply:
            return []  # already performed; the first reply was already queued
        handler: Callable[[Any, Chooser, str], list[E.Event]] | None = getattr(
            self, "_do_" + type(cmd).__name__.lower(), None)
        return handler(cmd, ch, cert) if handler else []

    def _mark(self, cmd: C.Command, *vals: Any) -> None:
        self.results[cmd.key] = list(vals)

    def _do_readcard(self, cmd: C.ReadCard, ch: Chooser, cert: str) -> list[E.Event]:
        self._mark(cmd, 1)
        f = ch.fault(2)
        if f == 1 or not self.card_present:
            return [E.CardFailed(cmd.key, "mute")]
        if f == 2:
            return []
        return [E.CardRead(cmd.key, self.tries, cert)]

    def _card_verify(self, key: str) -> E.Event:
        pin, self.keypad = self.keypad, ""  # the adapter drops the PIN once sent
        if not self.card_present:
            return E.CardFailed(key, "removed")
        if self.tries == 0:
            self.verify_when_locked += 1
            return E.PinResult(key, False, 0)
        if pin == self.pin:
            self.tries = 3
            return E.PinResult(key, True, 3)
        self.tries -= 1
        return E.PinResult(key, False, self.tries)

    def _do_verifypin(self, cmd: C.VerifyPin, ch: Chooser, cert: str) -> list[E.Event]:
        self._mark(cmd, 1)
        if ch.fault(4) == 1:
            self.keypad = ""
            return [E.CardFailed(cmd.key, "6F00")]
        return [self._card_verify(cmd.key)]

    def _do_redeempinreset(self, cmd: C.RedeemPinReset, ch: Chooser,
                           cert: str) -> list[E.Event]:
        self._mark(cmd, 1)
        r = self._card_verify(cmd.key)
        secret, self.secret_held = self.secret_held, False
        if not isinstance(r, E.PinResult) or not r.verified:
            return [r]
        if ch.fault(4) == 1:
            return [E.ServerUnavailable(cmd.key)]
        if not self.reservation or not secret:
            return [E.PinResetRefused(cmd.key, "no_reservation")]
        self.reservation = False
        return [E.PinResetDone(cmd.key)]

    def _do_authenticate(self, cmd: C.Authenticate, ch: Chooser, cert: str) -> list[E.Event]:
        self._mark(cmd, 1)
        f = ch.fault(6)
        if f == 1:
            return [E.ServerUnavailable(cmd.key)]
        if f == 2:
            return [E.ServerRefused(cmd.key, "certificate_revoked")]
        if f == 3:
            return []
        return [E.Authenticated(cmd.key, "s" + letters(self.session_no), "141003")]

    def _do_loadmenu(self, cmd: C.LoadMenu, ch: Chooser, cert: str) -> list[E.Event]:
        self._mark(cmd, 1)
        f = ch.fault(6)
        if f == 1:
            return [E.ServerUnavailable(cmd.key)]
        items = []
        for i, t in enumerate(DOC_TYPES):
            fee = (200, 250, 300, 350, 450, 120)[(i + ch.number(6)) % 6]
            refusal = "outside_hours" if t == "koseki" and f == 2 else ""
            items.append(E.MenuItem(t, fee, ("honseki", "setainushi") if i == 0 else (),
                                    refusal))
        return [E.MenuReceived(cmd.key, tuple(items))]

    def _do_requestdocument(self, cmd: C.RequestDocument, ch: Chooser,
                            cert: str) -> list[E.Event]:
        self._mark(cmd, 1)
        f = ch.fault(7)
        if f == 1:
            return [E.ServerUnavailable(cmd.key)]
        if f == 2:
            return [E.ServerRefused(cmd.key, "support_measure")]
        if f == 3:
            return []
        doc = SimDocument(cmd.request_id, cmd.session_id, "kiosk-aa", cert, "141003",
                          cmd.doc_type, "山田　花子")
        if f == 4:  # the Yokohama/Takamatsu pattern: someone else's document
            doc = SimDocument("r" + letters(self.session_no + 7777), cmd.session_id,
                              "kiosk-aa", "ab" * 32, "141003", cmd.doc_type, "佐藤　一郎")
        if f == 5:
            doc = SimDocument(cmd.request_id, cmd.session_id, "kiosk-aa", "cd" * 32,
                              "141003", cmd.doc_type, "佐藤　一郎")
        return [E.DocumentReceived(cmd.key, doc, doc.digest)]

    def _do_reportincident(self, cmd: C.ReportIncident, ch: Chooser,
                           cert: str) -> list[E.Event]:
        self._mark(cmd, 1)
        self.incidents += 1
        return []

    def _do_finalize(self, cmd: C.Finalize, ch: Chooser, cert: str) -> list[E.Event]:
        f = ch.fault(5)
        if f == 1:
            self._mark(cmd, 0)
            return [E.ServerUnavailable(cmd.key)]
        self._mark(cmd, 1)
        self.finalized.setdefault(cmd.request_id, cmd.outcome)
        return [] if f == 2 else [E.Finalized(cmd.key)]

    def _do_stackescrow(self, cmd: C.StackEscrow, ch: Chooser, cert: str) -> list[E.Event]:
        return [E.EscrowStacked(cmd.key, self.stack_escrow(cmd.key))]

    def _do_returnescrow(self, cmd: C.ReturnEscrow, ch: Chooser, cert: str) -> list[E.Event]:
        f = ch.fault(6)
        if f == 1:  # the whole escrow stuck: the machine holds it
            held, self.escrow = self.escrow, 0
            self.cashbox += held
            self.results[cmd.key] = [0, held]
            return [E.EscrowReturned(cmd.key, 0)]
        if f == 2 and self.escrow > 0:  # a bill (or the coins) stuck in the path
            held = min(self.escrow, 1000)
            returned = self.escrow - held
            self.cashbox += held
            self.returned += returned
            self.escrow = 0
            self.results[cmd.key] = [returned, held]
            return [E.EscrowReturned(cmd.key, returned)]
        returned, _held = self.return_escrow(cmd.key)
        return [E.EscrowReturned(cmd.key, returned)]

    def _do_paychange(self, cmd: C.PayChange, ch: Chooser, cert: str) -> list[E.Event]:
        f = ch.fault(6)
        if f == 1:  # hopper empty / jammed at once: nothing paid
            self.results[cmd.key] = [0]
            return [E.ChangePaid(cmd.key, 0)]
        if f == 2:  # hopper jams half way
            half = (cmd.yen // 2) // 10 * 10
            paid = min(half, self.hopper - self.hopper % 10)
            self.hopper -= paid
            self.change_paid += paid
            self.results[cmd.key] = [paid]
            return [E.ChangePaid(cmd.key, paid)]
        return [E.ChangePaid(cmd.key, self.pay_change(cmd.key, cmd.yen))]

    def _do_printdocument(self, cmd: C.PrintDocument, ch: Chooser,
                          cert: str) -> list[E.Event]:
        self._mark(cmd, 1)
        self.job_txn[cmd.key] = self.txn
        doc = cmd.document
        if not isinstance(doc, SimDocument) or doc.request_id != self.request_id \
                or doc.cert_sha256 != cert:
            self.foreign_printed += 1
        f = ch.fault(6)
        if f == 1:
            self.jobs[cmd.key] = "failed"
            return [E.PrintFailed(cmd.key, "media-jam")]
        if f == 2:
            self.jobs[cmd.key] = "failed"
            return [E.PrintFailed(cmd.key, "media-empty")]
        if f == 3:  # the adapter's own deadline: job cancelled, reported failed
            self.jobs[cmd.key] = "cancelled"
            return [E.PrintFailed(cmd.key, "timeout")]
        self.jobs[cmd.key] = "printed"
        self.printed[self.txn] = self.printed.get(self.txn, 0) + 1
        self.output_held.append(self.txn)
        return [E.PrintDone(cmd.key)]

    def _do_printslip(self, cmd: C.PrintSlip, ch: Chooser, cert: str) -> list[E.Event]:
        if ch.fault(5) == 1:
            self.results[cmd.key] = [0]
            return [E.PrintFailed(cmd.key, "media-empty")]
        self.print_slip(cmd.key, cmd.txn, cmd.yen, cmd.reason)
        return [E.PrintDone(cmd.key)]

    def _do_releasepages(self, cmd: C.ReleasePages, ch: Chooser, cert: str) -> list[E.Event]:
        self.release_pages(cmd.key)
        return [E.PagesReleased(cmd.key)]

    def _do_wipe(self, cmd: C.Wipe, ch: Chooser, cert: str) -> list[E.Event]:
        self.keypad, self.secret_held = "", False
        return []


@dataclass
class SessionRecord:
    """What one simulated session did, for the invariant checks."""

    txn: str
    request_id: str
    outcome: str
    events: int
    texts: list[str] = field(default_factory=list)


class SimKiosk:
    """Runs sessions of the real core and journal against a :class:`World`."""

    def __init__(self, journal: Journal, world: World | None = None, *,
                 timeouts: Timeouts = SIM_TIMEOUTS, record_texts: bool = False,
                 on_step: Callable[[str], None] | None = None) -> None:
        self.journal, self.world = journal, world or World()
        self.timeouts = timeouts
        self.record_texts = record_texts
        self.on_step = on_step or (lambda _where: None)
        self._wrong_left = 0

    def new_session(self) -> IssuanceSession:
        w = self.world
        w.session_no += 1
        w.txn, w.request_id = "t" + letters(w.session_no), "r" + letters(w.session_no)
        return IssuanceSession(w.txn, w.request_id, "kiosk-aa", sim_binding_check,
                               timeouts=self.timeouts)

    def run(self, ch: Chooser, *, wrong_pins: int = 0, max_events: int = 3000
            ) -> SessionRecord:
        """One session from card insertion to ``DONE``; raises :class:`Violation`.
        ``wrong_pins``: how many wrong PINs the person types before the right one."""
        w = self.world
        self._wrong_left = wrong_pins
        if w.tries == 0 and ch.number(3) == 0:
            w.tries = 3  # the resident had the PIN reset at the office since
        w.reservation = ch.number(3) != 0  # made a facepin reservation on the phone
        s = self.new_session()
        cert = hashlib.sha256(b"cert" + w.txn.encode()).hexdigest()
        rec = SessionRecord(w.txn, w.request_id, "", 0)
        queue: list[E.Event] = []
        w.card_present = True
        self._feed(s, [E.CardInserted()], queue, ch, cert, rec)
        while s.state is not State.DONE:
            if rec.events > max_events:
                raise Violation(f"session {w.txn} did not end in {max_events} events "
                                f"(state {s.state.value})")
            self._feed(s, self._next_gesture(s, queue, ch), queue, ch, cert, rec)
        if w.card_present:
            raise Violation(f"session {w.txn} ended with the card in the slot")
        if w.keypad or w.secret_held:
            raise Violation(f"session {w.txn} ended with a secret still held")
        rec.outcome = s.outcome.value if s.outcome else ""
        return rec

    # -- the person and the clock ----------------------------------------------------------

    def _next_gesture(self, s: IssuanceSession, queue: list[E.Event],
                      ch: Chooser) -> list[E.Event]:
        """What happens next: the happy choice (a pending reply, or the user doing the
        expected thing) or, by chance, anything else a person or a device could do now."""
        w = self.world
        if queue:
            happy: Gesture = lambda: [queue.pop(0)]  # noqa: E731
        else:
            happy = self._happy_user(s, ch)
        alts: list[Gesture] = [lambda: [E.Tick()]]
        # Ending gestures (pulling the card, cancelling, walking away) are drawn less often
        # than mistakes, so that runs also get deep into the flow.
        ending = ch.number(6) == 0
        if ending and w.card_present and s.state is not State.IDLE:
            alts.append(self._pull_card)
        alts += self._other_user(s, ch, ending)
        if len(queue) > 1:
            alts.append(lambda: [queue.pop(-1)])  # replies out of order
        choice = ch.pick(1 + len(alts))
        return happy() if choice == 0 else alts[choice - 1]()

    def _pull_card(self) -> list[E.Event]:
        self.world.card_present = False
        return [E.CardRemoved()]

    def _happy_user(self, s: IssuanceSession, ch: Chooser) -> Gesture:
        w, st = self.world, s.state
        if st in (State.PIN_ENTRY, State.RESET_PIN_ENTRY):
            if self._wrong_left > 0:
                self._wrong_left -= 1
                wrong = f"{(int(w.pin) + 1 + ch.number(9998)) % 10000:04d}"
                return lambda: self._type_pin(wrong)
            return lambda: self._type_pin(w.pin)
        if st is State.MENU:
            avail = [t for t, i in s.menu.items() if not i.refusal]
            pick = avail[ch.number(len(avail))] if avail else "pin-reset"
            return lambda: [E.Choose(pick)]
        if st is State.OPTIONS:
            assert s.item is not None
            opts = tuple(o for o in s.item.options if ch.number(2))
            return lambda: [E.OptionsConfirmed(opts)]
        if st is State.QUOTE:
            return lambda: [E.QuoteAccepted()]
        if st is State.PAYMENT:
            return lambda: self._insert(DENOMINATIONS[3 + ch.number(5)])
        if st is State.RESET_ENTRY:
            return self._enter_secret
        if st is State.AWAIT_CARD_REMOVAL and w.card_present:
            return self._pull_card
        return lambda: [E.Tick()]

    def _other_user(self, s: IssuanceSession, ch: Chooser, ending: bool) -> list[Gesture]:
        w, st = self.world, s.state
        out: list[Gesture] = []
        if s.accepts(E.Cancel):
            out.append(lambda: [E.Extend()])
            out.append(lambda: [E.Tick()] * self.timeouts.warn)  # hesitated
            if ending:
                out.append(lambda: [E.Cancel()])
                out.append(lambda: [E.Tick()] * self.timeouts.wipe)  # walked away
        if st in (State.PIN_ENTRY, State.RESET_PIN_ENTRY):
            wrong = f"{(int(w.pin) + 1 + ch.number(9998)) % 10000:04d}"
            out.append(lambda: self._type_pin(wrong))
            out.append(lambda: self._type_pin(w.pin[:3]))
        if st is State.MENU:
            refused = [t for t, i in s.menu.items() if i.refusal]
            if refused:
                out.append(lambda: [E.Choose(refused[0])])
            out.append(lambda: [E.Choose("pin-reset")])
        if st is State.PAYMENT:
            for d in DENOMINATIONS:
                out.append(lambda d=d: self._insert(d))  # type: ignore[misc]
        return out

    def _type_pin(self, pin: str) -> list[E.Event]:
        self.world.keypad = pin  # the adapter holds the digits; the core hears only counts
        return [*(E.PinDigits(n) for n in range(1, len(pin) + 1)), E.PinSubmitted()]

    def _enter_secret(self) -> list[E.Event]:
        self.world.secret_held = True
        return [E.SecretEntered()]

    def _insert(self, yen: int) -> list[E.Event]:
        w = self.world
        w.inserted += yen
        w.escrow += yen
        return [E.CashCredited(yen, f"i{w.inserted}")]

    def _feed(self, s: IssuanceSession, gesture: list[E.Event], queue: list[E.Event],
              ch: Chooser, cert: str, rec: SessionRecord) -> None:
        for e in gesture:
            if not isinstance(e, E.Reply) and not s.accepts(type(e)):
                if isinstance(e, E.CashCredited):  # the slot is shut: the coin falls back
                    self.world.inserted -= e.yen
                    self.world.escrow -= e.yen
                if isinstance(e, E.PinSubmitted | E.PinDigits):
                    self.world.keypad = ""
                continue
            rec.events += 1
            if self.record_texts:
                rec.texts.append(repr(e))
            self.on_step("event")
            cmds = self.journal.step(s, e)
            self.on_step("journalled")
            for c in cmds:
                if self.record_texts:
                    rec.texts.append(repr(c))
                replies = self.world.perform(c, ch, cert)
                if c.physical or c.expects_reply:
                    self.on_step(f"performed:{type(c).__name__}")
                queue.extend(replies)


Gesture = Callable[[], list[E.Event]]


def check_books(journal: Journal, world: World, records: list[SessionRecord],
                pin: str) -> None:
    """The invariants over everything run so far; raises :class:`Violation`."""
    led = journal.ledger()
    if not led.balanced:
        raise Violation(f"books do not balance: {led.as_dict()}")
    if world.inserted != world.returned + led.cash_in:
        raise Violation(f"cash: inserted {world.inserted} ≠ returned {world.returned} + "
                        f"taken {led.cash_in}")
    if world.cashbox - world.change_paid != led.cash_in - led.change_out:
        raise Violation(f"cash box {world.cashbox}-{world.change_paid} ≠ books "
                        f"{led.cash_in}-{led.change_out}")
    if world.change_paid != led.change_out:
        raise Violation(f"change paid {world.change_paid} ≠ books {led.change_out}")
    if any(n > 1 for n in world.printed.values()):
        raise Violation(f"a document printed twice: {world.printed}")
    if sum(world.printed.values()) != led.documents_printed:
        raise Violation(f"printer put out {sum(world.printed.values())} documents, books say "
                        f"{led.documents_printed}")
    if world.foreign_printed:
        raise Violation("a document bound to another session was sent to the printer")
    if world.released_with_card:
        raise Violation("pages were released while a card was in the slot")
    if world.verify_when_locked:
        raise Violation("a locked PIN was tried again")
    tok = pin_token(pin)
    for r in records:
        for t in r.texts:
            if tok.search(t):
                raise Violation(f"the PIN appears in an event or command: {t[:80]}")
    rows = journal._db.execute(
        "SELECT txn, request_id, session_id, printed, fee, refund, fee_refunded, stacked,"
        " outcome, finalize_outcome, finalize_done FROM sessions WHERE closed=1").fetchall()
    for (txn, rid, sid, printed, fee, refund, fee_refunded, stacked, outcome, fin,
         fin_done) in rows:
        if stacked and not printed:
            if not fee_refunded or refund < min(fee, stacked):
                raise Violation(f"{txn}: paid, not printed, no refund recorded")
            if outcome != Outcome.FAILED_REFUND_DUE.value:
                raise Violation(f"{txn}: paid, not printed, outcome {outcome}")
            if txn not in world.slips and not journal._db.execute(
                    "SELECT 1 FROM commands WHERE txn=? AND kind='printslip'",
                    (txn,)).fetchone():
                raise Violation(f"{txn}: paid, not printed, and no 未交付 slip attempted")
        if printed and world.printed.get(txn) != 1:
            raise Violation(f"{txn}: books say printed, printer says {world.printed.get(txn)}")
        if sid:
            center = world.finalized.get(rid)
            if fin_done and center != fin:
                raise Violation(f"{txn}: center finalized {center!r}, kiosk says {fin!r}")
            if not fin_done and center is not None and center != fin:
                raise Violation(f"{txn}: center finalized {center!r}, kiosk owes {fin!r}")


def journal_bytes_free_of(journal: Journal, pin: str, personal: list[str]) -> None:
    """No PIN token and no personal string anywhere in the journal's files."""
    journal._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    tok = pin_token(pin).pattern.encode()
    for path in (journal.path, journal.path.with_name(journal.path.name + "-wal")):
        if not path.exists():
            continue
        data = path.read_bytes()
        if re.search(tok, data):
            raise Violation(f"the PIN appears in {path.name}")
        for p in personal:
            if p.encode("utf-8") in data:
                raise Violation(f"personal data {p!r} appears in {path.name}")
