"""The kiosk runner: the asyncio adapter between the sans-IO issuance session
(:mod:`kiosk.session.core`) and the real parts — the card (``cardio`` over PC/SC or any
registered reader scheme), the center (:class:`~kiosk.center_client.CenterClient`), the cash
devices (ID-003 bills, ccTalk coins and hoppers, through
:class:`~kiosk.devices.services.CashAcceptor`), the printer (IPP; or, in the device lab, an
emulated output tray), the keypad/UI and a 1 Hz timer.

What it guarantees (``docs/kiosk-session.md``, "What the runner must provide"):

* every event goes through :meth:`Journal.step` and the commands it returns are performed
  only after the commit, in order;
* every command that expects a reply gets one: each adapter call runs under its own
  deadline and any failure (exception, device fault, time-out) becomes the reply event —
  a card or center failure is ``CardFailed``/``ServerUnavailable``, a print failure
  ``PrintFailed``; only money whose fate a device cannot tell is left unanswered, so the
  core shows CALL_STAFF and recovery settles it (never guessed);
* the keypad holds the PIN and drops it on ``VerifyPin`` and ``Wipe``: the PIN goes to the
  card and nowhere else (no event, no journal row, no log line carries it);
* no page comes out while the card is in the slot: a certificate's print job is sent to
  the printer only after the card's removal, and the certificate is never written to the
  kiosk's disk; the emulated tray holds its files (``TRAY/.held``) until ``ReleasePages``,
  which the core issues only after the card left the slot.

The :class:`Ui` is the seam for the next issue's screens; :class:`HeadlessUi` is the scripted
customer of ``cardio kiosk issue``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cardio.errors import CardioError, UsageError
from kiosk.center_client import CenterClient, CenterUnavailable, IssuanceRefused
from kiosk.devices.errors import DeviceConfigError
from kiosk.documents.model import Document
from kiosk.protocol.binding import BadDocumentSignature, BindingMismatch, ExpectedSession
from kiosk.protocol.binding import check_binding as protocol_check_binding
from kiosk.protocol.credentials import KioskCredentials
from kiosk.protocol.messages import IssuedDocument, SessionOpened
from kiosk.session import commands as C
from kiosk.session import events as E
from kiosk.session.core import ExpectedBinding, IssuanceSession, State, Timeouts
from kiosk.session.journal import Journal, refuse_left_for_staff
from kiosk.session.ports import ConservativePort, release_held
from kiosk.tray import make_tray_dir, write_tray_file

__all__ = ["CardAdapter", "CashAdapter", "HeadlessUi", "Keypad", "KioskError",
           "PrinterAdapter", "Runner", "SessionResult", "Ui", "find_credentials"]


class KioskError(CardioError):
    """The runner could not complete (a configuration it cannot use, a session that did not
    end within its bound: the journal keeps it open for ``cardio kiosk recover``)."""

    exit_code = 25


# -- the keypad: the only holder of the PIN ---------------------------------------------------


class Keypad:
    """Holds what the customer typed until the card needs it. The value is never part of an
    event, a command, a log line or an exception; :meth:`take` hands it over once.

    On the PIN-reset path it also holds the new value (:meth:`enter_secret`, typed and
    confirmed on the screen) and the facepin reservation number the person brought; both
    go to :func:`facepin.client.redeem` and are dropped with the PIN."""

    def __init__(self, max_digits: int = 16) -> None:
        self._value: str | None = None
        self._submitted: str | None = None
        self._secret: str | None = None
        self.reservation: str | None = None
        self.max_digits = max_digits

    def enter(self, value: str) -> int:
        self._value = value
        return len(value)

    # One key at a time, as a touch keypad or a physical keyboard sends them: the caller
    # learns only the count (what the screen may show as ●●●●), never the digits.

    def press(self, key: str) -> int:
        """Append one digit (``0``–``9``); beyond ``max_digits`` the press is ignored, as a
        real keypad ignores a fifth digit. A key that is not one digit is refused without
        repeating it (it might be part of a PIN typed in the wrong place)."""
        if len(key) != 1 or key not in "0123456789":
            raise KioskError("a keypad key must be one digit 0-9")
        value = self._value or ""
        if len(value) < self.max_digits:
            value += key
        self._value = value
        return len(value)

    def backspace(self) -> int:
        value = (self._value or "")[:-1]
        self._value = value or None
        return len(value)

    def clear(self) -> int:
        self._value = None
        return 0

    @property
    def count(self) -> int:
        return len(self._value or "")

    def submit(self) -> None:
        """確定 pressed: the PIN as it stands now is the one the card will get; keys pressed
        before the card has it (a Backspace right after 確定) edit the entry on screen, not
        the submitted one. (When the core refuses the entry as incomplete, the screen keeps
        it for the person to finish, and the next 確定 submits again.)"""
        self._submitted = self._value

    def take(self) -> str:
        value = self._submitted if self._submitted is not None else self._value
        self._submitted = self._value = None
        if value is None:
            raise KioskError("the keypad holds no PIN")
        return value

    def enter_secret(self, value: str, reservation: str) -> None:
        self._secret, self.reservation = value, reservation

    def secret(self) -> tuple[str, str]:
        """The new value and the reservation number. Kept until the reset is done
        (:meth:`drop_secret`) or the session ends (:meth:`wipe`): after a wrong PIN the
        person types the PIN again, not the new password."""
        if self._secret is None or not self.reservation:
            raise KioskError("the keypad holds no new value or reservation number")
        return self._secret, self.reservation

    def drop_secret(self) -> None:
        self._secret = self.reservation = None

    def wipe(self) -> None:
        self._value = self._submitted = self._secret = self.reservation = None


# -- card -------------------------------------------------------------------------------------


class CardAdapter:
    """The card through ``cardio``: retry counter and certificate, VERIFY with the keypad's
    PIN, the 利用者証明用 signature over the center's nonce. Blocking calls run on a worker
    thread, one at a time (a card is a serial device).

    The card phase spends the fewest APDUs the card allows (every one is a radio round trip
    on a contactless reader): SELECT, the counter, the certificate (one READ BINARY where
    extended length works), VERIFY, the signature. The certificate read before the PIN is
    the one sent with the signature (a card swapped in between signs with a key that
    certificate does not hold, and the center refuses the pair); after a VERIFY the card
    accepted, the counter is the credential's full count, so it is not read again."""

    def __init__(self, reader: str, keypad: Keypad, *, redeem_timeout: float = 10.0) -> None:
        self.reader_spec = reader
        self.keypad = keypad
        self.redeem_timeout = redeem_timeout  # < Timeouts.center: see redeem()
        self._card: Any = None
        self._jpki: Any = None
        self._cert: bytes | None = None
        self._lock = asyncio.Lock()

    def _open(self) -> Any:
        if self._jpki is None:
            from cardio.card import MyNumberCard
            from cardio.jpki import JpkiApplication
            from cardio.readers import open_reader

            reader = open_reader(self.reader_spec)
            self._card = MyNumberCard(reader.transport)
            self._card.begin_session()
            self._jpki = JpkiApplication(self._card)
        return self._jpki

    def close(self) -> None:
        if self._card is not None:
            with contextlib.suppress(Exception):
                self._card.close()
        self._card = self._jpki = self._cert = None

    def _certificate(self, app: Any) -> bytes:
        """The auth certificate, read once per card connection."""
        if self._cert is None:
            self._cert = app.certificate_der("auth")
        return self._cert

    async def _call(self, fn: Callable[[], Any]) -> Any:
        async with self._lock:
            return await asyncio.to_thread(fn)

    async def read(self, key: str) -> E.Event:
        def read() -> E.Event:
            app = self._open()
            tries = app.tries_left("auth")
            cert = self._certificate(app)
            # A card that does not tell its counter is verified (the core never verifies
            # at 0, and the card itself refuses when blocked).
            return E.CardRead(key, tries if tries is not None else 3,
                              hashlib.sha256(cert).hexdigest())
        try:
            event: E.Event = await self._call(read)
            return event
        except CardioError as e:
            return E.CardFailed(key, type(e).__name__)

    async def verify(self, key: str) -> E.Event:
        from cardio.apdu.errors import PinBlocked, VerificationFailed

        pin = self.keypad.take()  # dropped from the keypad before the card sees it

        def verify() -> E.Event:
            app = self._open()
            try:
                app.verify_pin("auth", pin)
            except PinBlocked:
                return E.PinResult(key, False, 0)
            except VerificationFailed as e:
                return E.PinResult(key, False, int(e.tries_left or 0))
            from cardio.constants import Credential

            # A VERIFY the card accepted restores the full count: no APDU to learn it.
            return E.PinResult(key, True, Credential.AUTH.default_tries)
        try:
            event: E.Event = await self._call(verify)
            return event
        except CardioError as e:
            return E.CardFailed(key, type(e).__name__)

    async def redeem(self, key: str, facepin_url: str, target: str) -> E.Event:
        """The PIN-reset redemption (``docs/pin-reset-protocol.md``): the keypad's known
        credential (the auth PIN, to reset the signature password), the new value and the
        reservation number go to :func:`facepin.client.redeem`, which verifies the card,
        has the service authorise the reset over a fresh card challenge and sends it to
        the card. A wrong PIN is the card's answer (tries left; never retried here), a
        refusal is the service's reason code, a network failure is the service being
        unavailable."""
        import httpx

        from cardio.apdu.errors import PinBlocked, VerificationFailed
        from facepin.client import ServiceRefused, redeem

        known = self.keypad.take()
        new_value, reservation = self.keypad.secret()

        def run() -> E.Event:
            self._open()
            # One HTTP exchange, bounded well inside the core's wait for this reply: a
            # reset must not land on the card after the screen said it failed.
            with httpx.Client(base_url=facepin_url, timeout=self.redeem_timeout,
                              trust_env=False) as http:
                try:
                    redeem(facepin_url, self._card, reservation, known, new_value,
                           target=target, http=http)
                except PinBlocked:
                    return E.PinResult(key, False, 0)
                except VerificationFailed as e:
                    return E.PinResult(key, False, int(e.tries_left or 0))
                except ServiceRefused as e:
                    return E.PinResetRefused(key, e.code)
                except httpx.HTTPError:
                    return E.ServerUnavailable(key)
            self.keypad.drop_secret()
            return E.PinResetDone(key)
        try:
            event: E.Event = await self._call(run)
            return event
        except CardioError as e:  # an invalid new value is refused before the card sees it
            return E.PinResetRefused(key, type(e).__name__)

    async def cert_and_sign(self, nonce: bytes) -> tuple[bytes, bytes]:
        def sign() -> tuple[bytes, bytes]:
            app = self._open()
            return self._certificate(app), app.sign("auth", nonce)
        result: tuple[bytes, bytes] = await self._call(sign)
        return result


# -- center -----------------------------------------------------------------------------------


@dataclass
class Fetched:
    """The center's answer, opaque to the core: the binding check fills ``document``."""

    issued: IssuedDocument = field(repr=False)
    document: Document | None = field(default=None, repr=False)
    fee: int = 0


def page_seal_of(issued: IssuedDocument, document: Document) -> tuple[bytes, bytes]:
    """The page's 2D-code seal and スクランブル画像 key, as the municipality sent them (issue
    12's COSE seal, which ``cardio doc verify`` checks offline). The seal is not covered by
    the binding signature, so it is decoded here and must seal this very content (its
    SHA-256 digest) — else :class:`~kiosk.documents.seal.SealFormatError`. A center that
    sends no seal (protocol ``cardio-issuance/1`` before seals) gets the municipality's
    binding signature in the code instead: the page prints, but offline verification says
    ``no_seal``/``unreadable``."""
    from kiosk.documents.seal import SealClaims, SealFormatError, decode_cose

    signed = issued.signed
    if not signed.seal:
        signature = base64.b64decode(signed.signature)
        return signature, hashlib.sha256(signature).digest()
    try:
        raw = base64.b64decode(signed.seal, validate=True)
        key = bytes.fromhex(signed.scramble_key)
    except ValueError:
        raise SealFormatError("the page seal or scramble key is not base64/hex") from None
    claims = SealClaims.from_cbor(decode_cose(raw).payload)
    if claims.digest != hashlib.sha256(document.canonical_bytes()).digest() or len(key) != 32:
        raise SealFormatError("the page seal does not seal this document")
    return raw, key


def signed_digest(issued: IssuedDocument) -> str:
    body = json.dumps(issued.signed.document, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def binding_check(creds: KioskCredentials) -> Callable[[ExpectedBinding, object], str | None]:
    """``kiosk.protocol``'s check adapted to the core's ``(ExpectedBinding, document)``."""

    def check(exp: ExpectedBinding, document: object) -> str | None:
        if not isinstance(document, Fetched):
            return "bad_document"
        try:
            document.document = protocol_check_binding(ExpectedSession(
                exp.request_id, exp.session_id, exp.kiosk_id, exp.cert_sha256,
                exp.municipality_code, exp.doc_type), document.issued.signed,
                creds.municipality_keys)
        except BindingMismatch:
            return "binding_mismatch"
        except BadDocumentSignature:
            return "bad_signature"
        return None
    return check


# -- cash -------------------------------------------------------------------------------------


class CashAdapter:
    """The cash devices behind one worker thread (they share nothing with the card or the
    printer, so a wedged serial line stalls only money). The acceptor runs without hoppers:
    stacking and paying change are two journalled steps, as the core orders them."""

    def __init__(self, config: dict[str, Any], *, settle_timeout: float = 8.0,
                 journal: str | Path | None = None) -> None:
        from kiosk.devices.cctalk import CcTalkBus, CoinAcceptorDriver, HopperDriver
        from kiosk.devices.id003 import Id003Driver
        from kiosk.devices.services import CashAcceptor

        bill = config.get("bill_validator")
        coin = config.get("coin_acceptor")
        # Both ports are taken (lock file + TIOCEXCL, kiosk.devices.portlock) before any
        # byte is sent: a second controller on these devices stops here, naming the
        # holder's PID (exit 22), before recovery or a session could move money.
        self.bill = Id003Driver(bill["port"], timeout=0.05) if bill else None
        try:
            self.bus = CcTalkBus(coin["port"], timeout=0.05, retries=10) if coin else None
        except BaseException:
            if self.bill is not None:
                self.bill.close()
            raise
        coins = CoinAcceptorDriver(self.bus, int(coin.get("address", 2))) if self.bus and coin \
            else None
        self.hoppers = {int(h["coin"]): HopperDriver(self.bus, int(h["address"]), int(h["coin"]))
                        for h in config.get("hopper", [])} if self.bus else {}
        self.stock = {c: int(h.get("stock", 100)) for c, h in
                      ((int(h["coin"]), h) for h in config.get("hopper", []))}
        self.acceptor = CashAcceptor(self.bill, coins, {}, settle_timeout=settle_timeout)
        self._covered = 0
        self.on_credit: Callable[[int], None] = lambda _yen: None
        self.on_fault: Callable[[str], None] = lambda _kind: None
        self._jobs: asyncio.Queue[Any] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cmds: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._cmd_lock = threading.Lock()
        self.results: dict[str, int] = {}  # key -> yen: idempotent by key
        self.intents = PayoutIntents(journal) if journal is not None and self.hoppers else None
        # Notes (and coins) that settled or were refused outside a session: handed back, or
        # in the machine for no one — journalled, never a customer's payment (issue 22).
        self.strays: list[dict[str, Any]] = []
        self._stray_log = StrayCash(journal) if journal is not None else None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="kiosk-cash", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(Exception):
            if self.bill is not None:
                self.bill.close()
        with contextlib.suppress(Exception):
            if self.bus is not None:
                self.bus.close()
        if self.intents is not None:
            self.intents.close()
        if self._stray_log is not None:
            with contextlib.suppress(Exception):  # what the last polls saw, on record too
                self._record_strays()
            self._stray_log.close()

    def _record_strays(self) -> None:
        """Journal what the acceptor saw outside a session (worker thread)."""
        from kiosk.devices.model import ItemRejected, ItemSettled

        events, self.acceptor.strays = self.acceptor.strays, []
        for ev in events:
            if isinstance(ev, ItemSettled):
                row = {"device": ev.device, "item": ev.item, "yen": ev.yen,
                       "outcome": ev.outcome.value, "reason": ev.reason}
            elif isinstance(ev, ItemRejected):  # the unit does not say the note's value
                row = {"device": ev.device, "item": 0, "yen": 0, "outcome": "rejected",
                       "reason": ev.reason}
            else:
                continue
            self.strays.append(row)
            if self._stray_log is not None:
                self._stray_log.record(row)

    def _post(self, fn: Callable[[], None]) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(fn)

    def _run(self) -> None:
        from kiosk.devices.model import Fault

        while not self._stop.is_set():
            with self._cmd_lock:
                cmds, self._cmds = self._cmds, []
            for fn, fut in cmds:
                try:
                    res, exc = fn(), None
                except Exception as e:  # the reply carries it
                    res, exc = None, e
                self._post(functools.partial(_resolve, fut, res, exc))
            try:
                events = self.acceptor.poll()
            except Exception as e:
                events = [Fault("cash", "poll-error", type(e).__name__)]
                self._stop.wait(0.05)
            for ev in events:
                if isinstance(ev, Fault):
                    self._post(functools.partial(self.on_fault, ev.kind))
            if self.acceptor.strays:
                try:
                    self._record_strays()
                except Exception:  # the journal failed: no money is taken meanwhile
                    self._post(functools.partial(self.on_fault, "journal"))
            self._credit()
            self._stop.wait(0.01)

    def _credit(self) -> None:
        s = self.acceptor.session
        if s is None or s.closed:
            return
        covered = self.acceptor.covered
        if covered > self._covered:
            delta, self._covered = covered - self._covered, covered
            self._post(lambda: self.on_credit(delta))

    async def call(self, fn: Callable[[], Any], timeout: float) -> Any:
        assert self._loop is not None
        fut: asyncio.Future[Any] = self._loop.create_future()
        with self._cmd_lock:
            self._cmds.append((fn, fut))
        return await asyncio.wait_for(fut, timeout)

    # the blocking steps (worker thread)

    def start_cash_in(self, fee: int) -> None:
        self._covered = 0
        # The hoppers' stock goes with it: a note whose change they cannot pay goes back.
        self.acceptor.cash_in_start({"fee": fee, "change_stock": {
            c: self.stock.get(c, 0) for c in self.hoppers}})

    def end(self, sold: bool) -> dict[str, Any]:
        if self.acceptor.session is None or self.acceptor.session.closed:
            return {"stacked": 0, "returned": 0, "held": 0, "problems": []}
        return self.acceptor.cash_in_end({"sold": sold})

    def pay(self, yen: int, key: str = "") -> int:
        """Pay ``yen`` from the hoppers; with ``key`` (and a journal for intents) each
        hopper's event counter is made durable first, so that recovery can ask the hoppers
        what this payout already paid (:meth:`paid_under`) instead of paying it twice."""
        from kiosk.devices.cash import pay_change
        from kiosk.devices.errors import DeviceError

        paid = 0
        if key and self.intents is not None and self.hoppers and yen > 0:
            try:
                self.intents.record(key, {c: h.status().counter
                                          for c, h in self.hoppers.items()})
            except DeviceError:
                return 0  # a hopper that cannot say its counter does not pay: owed
        try:
            for r in pay_change(yen, [(c, self.stock.get(c, 100)) for c in self.hoppers],
                                lambda coin, n: self.hoppers[coin].dispense(n)):
                paid += r.paid * r.coin_yen
                self.stock[r.coin_yen] = max(0, self.stock.get(r.coin_yen, 0) - r.paid)
        except DeviceError:
            pass  # what was not paid is owed (the reply says how much was)
        return min(paid, yen)


    def paid_under(self, key: str) -> int | None:
        """What a payout under ``key`` paid, as the hoppers count it: for each hopper, its
        event counter one past the journalled one means it took the dispense and its status
        says how many coins it paid (waiting while it still pays); the same counter means it
        never did. ``None`` when no intent was journalled (the payout never began) or a
        counter moved further than one dispense (recovery cannot tell: the caller decides)."""
        from kiosk.devices.cctalk import counter_distance
        from kiosk.devices.errors import DeviceError

        before = self.intents.get(key) if self.intents is not None else None
        if not before:
            return None
        paid = 0
        for coin, counter in before.items():
            hopper = self.hoppers.get(coin)
            if hopper is None:
                return None
            deadline = time.monotonic() + 30
            try:
                status = hopper.status_until(deadline)
                while status.remaining and time.monotonic() < deadline:
                    time.sleep(0.01)
                    status = hopper.status_until(deadline)
            except DeviceError:
                return None  # a silent hopper cannot tell: the caller leaves it owed
            if status.remaining:
                return None
            moved = 0 if status.counter == counter else counter_distance(counter, status.counter)
            if moved == 1:
                paid += status.paid * coin
            elif moved != 0:
                return None
        return paid

    def paid_found(self, key: str) -> int | None:
        """:meth:`paid_under`, remembered: the first recovery that could tell writes it
        down (fsynced) before paying the rest, so a recovery after a crash of that recovery
        does not read counters the rest's payout has moved on."""
        if self.intents is None:
            return None
        known = self.intents.found(key)
        if known is None:
            known = self.paid_under(key)
            if known is not None:
                self.intents.note_found(key, known)
        return known

    def has_intent(self, key: str) -> bool:
        return self.intents is not None and bool(self.intents.get(key))

    def sweep_escrow(self, stack: bool) -> int:
        """Recovery, before the worker starts: drive the bill validator to rest; a note it
        still holds in escrow (a crashed session's) is stacked or handed back. Returns the
        note's yen (0: none was there). Without this the next customer's session would be
        credited with it."""
        from kiosk.devices.model import ItemSettled, Outcome
        from kiosk.devices.services import hand_back

        if self.bill is None:
            return 0
        host = self.bill.host
        host.accept = lambda _yen: stack
        want = Outcome.STACKED if stack else Outcome.RETURNED
        try:
            events = self.bill.run_until(lambda: host.idle and host.configured, timeout=15.0)
        finally:
            host.accept = hand_back  # no session is open: a later note goes back
        return sum(e.yen for e in events if isinstance(e, ItemSettled) and e.outcome is want)


class StrayCash:
    """Notes and coins the cash devices settled or refused while no session was open (or
    that were in their path before one began), in their own table of the kiosk's journal
    file: a note handed back between sessions is on record, and one the machine kept for no
    session is money staff can account for — never a customer's payment."""

    def __init__(self, path: str | Path) -> None:
        import sqlite3

        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS cash_strays (seq INTEGER PRIMARY KEY"
                         " AUTOINCREMENT, at TEXT NOT NULL, device TEXT NOT NULL,"
                         " item INTEGER NOT NULL, yen INTEGER NOT NULL, outcome TEXT NOT NULL,"
                         " reason TEXT NOT NULL)")
        self._lock = threading.Lock()

    def record(self, row: dict[str, Any]) -> None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._lock:
            self._db.execute("INSERT INTO cash_strays (at, device, item, yen, outcome, reason)"
                             " VALUES (?, ?, ?, ?, ?, ?)", (at, row["device"], row["item"],
                                                            row["yen"], row["outcome"],
                                                            row["reason"]))

    def close(self) -> None:
        self._db.close()


class PayoutIntents:
    """Each hopper's event counter before a keyed payout, durable (its own table in the
    kiosk's journal file, fsynced) before any coin moves — the one fact recovery needs to
    ask the hoppers what the payout did. Written from the cash worker thread."""

    def __init__(self, path: str | Path) -> None:
        import sqlite3

        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS payout_intents (key TEXT NOT NULL,"
                         " coin INTEGER NOT NULL, counter INTEGER NOT NULL,"
                         " PRIMARY KEY (key, coin))")
        # What recovery found a payout had paid: the counters say it only until the hopper
        # takes its next dispense, so a later recovery reads it here.
        self._db.execute("CREATE TABLE IF NOT EXISTS payout_found (key TEXT PRIMARY KEY,"
                         " yen INTEGER NOT NULL)")
        self._lock = threading.Lock()

    def _mark(self, key: str, field: str, value: int) -> None:
        """Note in the payout's command row (the journal's own, whose rows are checked for
        deletion) that this intent or finding was written, inside the same transaction:
        an intent that later goes missing or changes is damage, never "not begun"
        (:func:`kiosk.session.journal_check.intent_check`)."""
        base = key.split("/", 1)[0]
        row = self._db.execute("SELECT detail FROM commands WHERE key=?", (base,)).fetchone()
        if row is None:
            return
        detail = json.loads(row[0])
        detail.setdefault(field, {})[key] = value
        self._db.execute("UPDATE commands SET detail=? WHERE key=?",
                         (json.dumps(detail, sort_keys=True, ensure_ascii=True), base))

    def record(self, key: str, counters: dict[int, int]) -> None:
        from kiosk.session.journal_check import intent_check

        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._db.execute("SELECT 1 FROM payout_intents WHERE key=?",
                                    (key,)).fetchone() is None:
                    self._db.executemany("INSERT INTO payout_intents VALUES (?, ?, ?)",
                                         [(key, c, n) for c, n in counters.items()])
                    self._mark(key, "payout_intents", intent_check(key, counters))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get(self, key: str) -> dict[int, int]:
        with self._lock:
            return {int(c): int(n) for c, n in self._db.execute(
                "SELECT coin, counter FROM payout_intents WHERE key=?", (key,))}

    def found(self, key: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT yen FROM payout_found WHERE key=?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def note_found(self, key: str, yen: int) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._db.execute("SELECT 1 FROM payout_found WHERE key=?",
                                    (key,)).fetchone() is None:
                    self._db.execute("INSERT INTO payout_found VALUES (?, ?)", (key, yen))
                    self._mark(key, "payout_found", yen)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


class DeviceRecoveryPort(ConservativePort):
    """Recovery that asks the cash devices before it falls back on the conservative rule
    (:class:`~kiosk.session.ports.ConservativePort`): a note still in the validator's escrow
    is stacked or handed back as the journal asked, and counts as confirmed; a change payout
    pays only what the hoppers' counters say it has not paid yet."""

    def __init__(self, journal: Journal, cash: CashAdapter, out: Path | None,
                 card_present: Callable[[], bool] | None = None,
                 printer: str | None = None) -> None:
        super().__init__(journal, out=out, card_present=card_present, printer=printer)
        self.cash = cash

    def return_escrow(self, key: str) -> tuple[int, int]:
        note = self.cash.sweep_escrow(stack=False)
        if not note:
            return super().return_escrow(key)
        # Whether the note's credit reached the journal before the crash is not known (the
        # validator reports the note, not whether the kiosk counted it), so it is not taken
        # off what is owed: the customer gets the note back and the journalled escrow,
        # less coins the hoppers are known to have repaid, stays owed — never guessed in
        # the kiosk's favour.
        repaid = self.cash.paid_under(f"{key}/repay") or 0
        held = max(0, self._journalled_yen(key) - repaid)
        self.actions.append(f"{key}: a {note} yen note still in escrow was handed back"
                            + (f"; {held} stays owed (staff check the cash box)" if held
                               else ""))
        return note, held

    def stack_escrow(self, key: str) -> int:
        note = self.cash.sweep_escrow(stack=True)
        if note:
            self.actions.append(f"{key}: a {note} yen note still in escrow was stacked")
        return super().stack_escrow(key)

    def pay_change(self, key: str, yen: int) -> int:
        """Pay what the hoppers have not paid under ``key`` (and under an earlier
        recovery's ``KEY/recovery``). Where the counters cannot tell — a hopper that took
        more than one dispense since, or does not answer — nothing more is paid: the rest
        stays owed (a refund with a slip), never paid twice."""
        paid = 0
        for k in (key, f"{key}/recovery"):
            if not self.cash.has_intent(k):
                if k == key:  # the payout never began: pay it now, under its own key
                    return min(yen, self.cash.pay(yen, key=key))
                break
            got = self.cash.paid_found(k)
            if got is None:
                self.actions.append(f"{k}: the hoppers cannot tell what this payout paid;"
                                    f" {max(0, yen - paid)} stays owed")
                return min(yen, paid)
            paid += got
        if paid:
            self.actions.append(f"{key}: the hoppers had paid {paid} of {yen} before the crash")
        rest = max(0, yen - paid)
        if rest and not self.cash.has_intent(f"{key}/recovery"):
            paid += self.cash.pay(rest, key=f"{key}/recovery")
        return min(yen, paid)


def _resolve(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


# -- printer ----------------------------------------------------------------------------------


class PrinterAdapter:
    """Prints the verified document: to the kiosk's IPP printer, or — in the device lab,
    tests and demos only — into an explicitly configured *emulated output tray* (a
    directory). Exactly one of the two.

    With a printer, the certificate exists only in memory and in the print job: it is
    rendered into a buffer that lives for the call, sent, and dropped; nothing of it is
    written to the kiosk's disk (no spool copy, no temp file, no log). The rule that pages
    come out only once the card has left the slot is kept by *when the job is sent*: the
    runner starts :meth:`print_document` after the card's removal (IPP ``job-hold-until``
    with Release-Job would keep it in the printer instead, but the printers we test
    against — ippeveprinter among them — do not offer it, and sending later needs nothing
    of the printer). The 未交付 slip carries no personal data (transaction, amount, reason,
    kiosk, time) and prints at once.

    With the emulated tray, pages are written into ``TRAY/.held`` and :meth:`release`
    opens them (moves them into ``TRAY``), as the lab's model of a shuttered output tray;
    that directory then holds certificates, which is why it is never a kiosk's default."""

    def __init__(self, tray: Path | None = None, ipp_url: str | None = None, *,
                 job_timeout: float = 120.0) -> None:
        if (tray is None) == (ipp_url is None):
            raise DeviceConfigError("a kiosk prints to an IPP printer ([printer] url) or, in"
                                    " the device lab, into an emulated output tray ([kiosk]"
                                    " tray): exactly one of the two")
        self.tray = tray
        self.ipp_url = ipp_url
        self.job_timeout = job_timeout
        self.done: dict[str, bool] = {}  # key -> printed (idempotent by key)
        self.files: list[Path] = []  # the emulated tray's files (none with a printer)
        self.print_started: float | None = None
        self.kiosk_id = ""  # printed on the 未交付 slip (the runner sets it)

    @property
    def defers_until_card_out(self) -> bool:
        """True when the job itself must wait for the card's removal (a real printer: its
        pages cannot be held back on our side)."""
        return self.ipp_url is not None

    def _held(self) -> Path:
        assert self.tray is not None
        held = self.tray / ".held"
        make_tray_dir(held)  # the tray's files are this user's alone (0700/0600)
        return held

    def _ipp(self, data: bytes, name: str) -> str | None:
        assert self.ipp_url is not None
        from kiosk.devices.ipp import IppPrinter

        result = IppPrinter(self.ipp_url, timeout=10.0).print_document(
            data, name=name, timeout=self.job_timeout)
        state = result.state.name.lower()
        return None if state == "completed" else state

    def print_document(self, key: str, fetched: object, name: str, *, copies: int = 1
                       ) -> str | None:
        """``None`` when printed completely, else the failure's reason code. ``copies``
        (通数): the same pages that many times, in one job — one job is one outcome for
        the session and for recovery (which asks the printer about that job)."""
        if key in self.done:
            return None if self.done[key] else "failed"
        self.print_started = time.perf_counter()
        if not isinstance(fetched, Fetched) or fetched.document is None:
            self.done[key] = False
            return "no_document"
        from kiosk.documents.render import render_pdf

        try:
            page_seal, scramble_key = page_seal_of(fetched.issued, fetched.document)
        except CardioError:
            self.done[key] = False
            return "bad_seal"  # never print a page whose seal is not this document's
        pdf = render_pdf(fetched.document, page_seal, scramble_key)
        if copies > 1:
            pdf = repeat_pages(pdf, copies)
        try:
            if self.ipp_url is not None:
                failure = self._ipp(pdf, name)
            else:
                path = self._held() / f"{name}.pdf"
                write_tray_file(path, pdf)
                self.files.append(self.tray / path.name)  # type: ignore[operator]
                failure = None
        finally:
            del pdf  # the only copy: gone with the call, printed or not
        self.done[key] = failure is None
        return failure

    def print_slip(self, key: str, txn: str, yen: int, reason: str) -> str | None:
        """The 未交付 slip, printed like a certificate; ``None`` when it printed. With the
        emulated tray the kiosk keeps a copy either way — when the printer is what failed,
        staff reprint it from there — so the file is no proof of printing; the refund
        stands whatever happens to the paper (and is in the journal's books)."""
        if key in self.done:
            return None if self.done[key] else "failed"
        from kiosk.documents.slip import render_slip

        pdf = render_slip(txn, yen, reason, kiosk_id=self.kiosk_id)
        if self.ipp_url is None:
            path = self._held() / f"slip-{txn}.pdf"
            write_tray_file(path, pdf)
            self.files.append(self.tray / path.name)  # type: ignore[operator]
            self.done[key] = True
            return None
        try:
            failure = self._ipp(pdf, f"slip-{txn}")
        except (CardioError, OSError) as e:
            failure = type(e).__name__
        self.done[key] = failure is None
        return failure

    def release(self) -> None:
        if self.tray is not None:
            release_held(self.tray)


def repeat_pages(pdf: bytes, copies: int) -> bytes:
    """The PDF's pages ``copies`` times over (1, 2, …, 1, 2, …): copies of a certificate as
    one print job, in memory like the original."""
    import io

    import pypdfium2 as pdfium

    src = pdfium.PdfDocument(pdf)
    out = pdfium.PdfDocument.new()
    try:
        for _ in range(copies):
            out.import_pages(src)
        buf = io.BytesIO()
        out.save(buf)
        return buf.getvalue()
    finally:
        out.close()
        src.close()


# -- the UI seam ----------------------------------------------------------------------------


class Ui:
    """What the screen does with ``Show``/``RemindCard``: the next issue's UI subclasses it
    and feeds the person's actions back with ``runner.put``."""

    def attach(self, runner: Runner) -> None:
        self.runner = runner

    def show(self, cmd: C.Show) -> None:
        """Put the screen up."""

    def remind(self, cmd: C.RemindCard) -> None:
        """The card-left-behind reminder."""

    def cash_in(self, fee: int) -> None:
        """Acceptance is open for ``fee``."""


class HeadlessUi(Ui):
    """The scripted customer of ``cardio kiosk issue``: types the PIN, chooses ``doc`` with
    ``options``, accepts the fee, inserts ``insert`` (through ``feed``), takes the card when
    reminded; cancels on a wrong PIN, a refused item, or money that does not reach the fee
    once every item has settled."""

    def __init__(self, pin: str, doc: str, options: tuple[str, ...], insert: list[int],
                 feed: Callable[[int], None], *, settle: float = 4.0,
                 take_card: bool = True, reset: tuple[str, str] | None = None) -> None:
        self._pin: str | None = pin
        # PIN reset (``doc == "pin-reset"``): the new value and the reservation number; the
        # PIN is typed a second time to redeem, as a person does at a real kiosk.
        self._reset = reset
        self._pin_again: str | None = pin if reset else None
        self.doc, self.options, self.insert, self.feed = doc, options, insert, feed
        self.settle = settle
        self.take_card = take_card  # False: the card slot reports the removal
        self.took_card = False
        self.note = ""

    def show(self, cmd: C.Show) -> None:
        r, S = self.runner, C.Screen
        if cmd.screen is S.PIN and self._pin is not None:
            count = r.keypad.enter(self._pin)
            self._pin = None
            r.put(E.PinDigits(count))
            r.put(E.PinSubmitted())
        elif cmd.screen is S.NEW_PASSWORD and self._reset is not None:
            r.keypad.enter_secret(*self._reset)
            self._reset = None
            r.put(E.SecretEntered())
        elif cmd.screen is S.PIN_AGAIN and cmd.amount == 0 and self._pin_again is not None:
            count = r.keypad.enter(self._pin_again)
            self._pin_again = None
            r.put(E.PinDigits(count))
            r.put(E.PinSubmitted())
        elif cmd.screen in (S.PIN_WRONG, S.PIN_INCOMPLETE):
            self.note = "wrong_pin" if cmd.screen is S.PIN_WRONG else "pin_incomplete"
            r.put(E.Cancel())
        elif cmd.screen is S.MENU:
            if r.session is not None and (self.doc in r.session.menu or (
                    self.doc == "pin-reset" and r.session.pin_reset_offered)):
                r.put(E.Choose(self.doc))  # a refused item shows its reason, then we go
            else:
                self.note = "not_on_menu"
                r.put(E.Cancel())
        elif cmd.screen is S.REFUSED and r.session is not None and \
                r.session.state is State.MENU:
            self.note = cmd.detail
            r.put(E.Cancel())
        elif cmd.screen is S.OPTIONS:
            offered = r.session.item.options if r.session and r.session.item else ()
            if set(self.options) <= set(offered):
                r.put(E.OptionsConfirmed(self.options))
            else:
                self.note = "option_not_offered"
                r.put(E.Cancel())
        elif cmd.screen is S.QUOTE:
            r.put(E.QuoteAccepted())
        elif cmd.screen is S.TAKE_CARD:
            self._take_card()

    def remind(self, cmd: C.RemindCard) -> None:
        self._take_card()

    def _take_card(self) -> None:
        if self.take_card and not self.took_card:
            self.took_card = True
            self.runner.put(E.CardRemoved())

    def cash_in(self, fee: int) -> None:
        async def pay() -> None:
            for yen in self.insert:
                await asyncio.to_thread(self.feed, yen)
                await asyncio.sleep(0.3)
            await asyncio.sleep(self.settle)
            s = self.runner.session
            if s is not None and s.state is State.PAYMENT:
                self.note = "insufficient_money"
                self.runner.put(E.Cancel())
        self.runner.spawn(pay())


def lab_feeder(control: str) -> Callable[[int], None]:
    """Insert money into emulated devices through their control socket (one JSON object per
    line: ``{"device": …, "op": "insert", "yen": …}``): bills ≥ 1000 to the validator,
    coins to the acceptor. The kiosk speaks the socket's protocol; it imports nothing of
    the emulators."""

    def feed(yen: int) -> None:
        device = "bill_validator" if yen >= 1000 else "coin_acceptor"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(control)
            s.sendall(json.dumps({"device": device, "op": "insert", "yen": yen}).encode()
                      + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data or b"{}")
        if not reply.get("ok"):
            raise KioskError(f"the device lab refused ¥{yen}: {reply.get('error')}")
    return feed


# -- the runner ---------------------------------------------------------------------------------


@dataclass
class SessionResult:
    txn: str
    request_id: str
    outcome: str
    reason: str
    fee: int
    paid: int  # inserted and credited
    cash_in: int  # kept by the machine (stacked, or held and owed)
    change: int
    refund: int
    document: str
    files: list[str]


class Runner:
    """One kiosk: the journal, the adapters, the UI, the timer. :meth:`run_session` runs one
    card's session to ``DONE``."""

    def __init__(self, journal: Journal, *, creds: KioskCredentials, card: CardAdapter,
                 cash: CashAdapter, printer: PrinterAdapter, ui: Ui, keypad: Keypad,
                 timeouts: Timeouts | None = None, tick: float = 1.0,
                 center: CenterClient | None = None, facepin_url: str | None = None,
                 card_out_after_use: bool = False) -> None:
        self.journal, self.creds, self.card, self.cash = journal, creds, card, cash
        self.printer, self.ui, self.keypad = printer, ui, keypad
        self.timeouts = timeouts or Timeouts()
        self.tick = tick
        self.center = center or CenterClient(creds)
        self.facepin_url = facepin_url  # the PIN-reset reservation service, if offered here
        #: The touch kiosk's interlock: once used, the card leaves before the choice.
        self.card_out_after_use = card_out_after_use
        self.session: IssuanceSession | None = None
        self._queue: asyncio.Queue[E.Event] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._option_values: dict[str, dict[str, list[str]]] = {}
        self._opened: SessionOpened | None = None
        self.doc_type = ""  # what was requested: a type, not personal, kept past the wipe
        self.marks: dict[str, float] = {}
        self.failures: list[str] = []  # keys left unanswered (cash devices that failed)
        ui.attach(self)
        printer.kiosk_id = creds.kiosk_id
        self.inserted = 0
        cash.on_credit = self._credited
        cash.on_fault = lambda kind: self.put(E.DeviceFault("cash", kind))

    def _credited(self, yen: int) -> None:
        self.inserted += yen
        self.put(E.CashCredited(yen))

    def put(self, event: E.Event) -> None:
        self._queue.put_nowait(event)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run_session(self, *, deadline: float = 300.0) -> SessionResult:
        txn = "T" + secrets.token_hex(6)
        rid = "req-" + secrets.token_hex(8)
        s = IssuanceSession(txn, rid, self.creds.kiosk_id, binding_check(self.creds),
                            timeouts=self.timeouts, pin_reset=bool(self.facepin_url),
                            card_out_after_use=self.card_out_after_use)
        self.session = s
        ticker = asyncio.get_running_loop().create_task(self._ticker())
        self.put(E.CardInserted())
        end = time.monotonic() + deadline
        try:
            while s.state is not State.DONE:
                left = end - time.monotonic()
                if left <= 0:
                    raise KioskError(f"session {txn} did not end within {deadline:.0f} s"
                                     f" (state {s.state.value}); the journal keeps it for"
                                     " 'cardio kiosk recover'")
                try:
                    ev = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    continue
                if not isinstance(ev, E.Reply) and not s.accepts(type(ev)):
                    continue  # e.g. a second tap, a tick while idle: nothing to say
                for cmd in self.journal.step(s, ev):
                    await self._perform(s, cmd)
            await self._close_cash_in()
        finally:
            ticker.cancel()
            for t in list(self._tasks):
                t.cancel()
            self.keypad.wipe()
            self.card.close()
        doc = s.item.doc_type if s.item else self.doc_type
        return SessionResult(txn, rid, s.outcome.value if s.outcome else "", s.reason, s.fee,
                             self.inserted, s.cash_in, s.change_paid, s.refund, doc,
                             [str(p) for p in self.printer.files])

    async def _close_cash_in(self) -> None:
        """A session that ended with no stack and no return — cancelled or timed out on the
        payment screen before any money came, or refused once acceptance had opened —
        leaves the acceptors' cash-in open (``EndCashIn`` only stops acceptance, the escrow
        waiting for the decision), and the next customer's ``StartCashIn`` would be refused.
        At ``DONE`` nothing is in escrow (the core returns it first), so a rollback closes
        it; an item that arrived after the end is handed back, not kept."""
        with contextlib.suppress(Exception):  # a unit that cannot answer now: the next
            # StartCashIn reports it as the device fault it is
            await self.cash.call(lambda: self.cash.end(False), self.timeouts.cash)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            self.put(E.Tick())

    def _reply(self, key: str, coro: Any, timeout: float,
               on_failure: Callable[[str], E.Event] | None) -> None:
        """Run ``coro`` under ``timeout``; its event, or ``on_failure``'s when it raised or
        ran out of time. ``None`` for money whose fate the device did not tell: no reply is
        made up — the core's time-out shows CALL_STAFF, and recovery settles the key."""
        async def run() -> None:
            try:
                ev = await asyncio.wait_for(coro, timeout)
            except asyncio.CancelledError:
                raise
            except Exception:  # a time-out or any failure of the adapter: an event
                if on_failure is None:
                    self.failures.append(key)
                    return
                ev = on_failure(key)
            self.put(ev)
        self.spawn(run())

    async def _perform(self, s: IssuanceSession, cmd: C.Command) -> None:
        t = self.timeouts
        k = cmd.key
        if isinstance(cmd, C.Show):
            self.ui.show(cmd)
        elif isinstance(cmd, C.RemindCard):
            self.ui.remind(cmd)
        elif isinstance(cmd, C.Wipe):
            self.keypad.wipe()
        elif isinstance(cmd, C.ReadCard):
            self._reply(k, self.card.read(k), t.card, lambda k: E.CardFailed(k, "timeout"))
        elif isinstance(cmd, C.VerifyPin):
            self.marks["pin"] = time.perf_counter()
            self._reply(k, self.card.verify(k), t.card, lambda k: E.CardFailed(k, "timeout"))
        elif isinstance(cmd, C.Authenticate):
            self._reply(k, self._center(k, self._authenticate(k, cmd.request_id)), t.center,
                        lambda k: E.ServerUnavailable(k))
        elif isinstance(cmd, C.LoadMenu):
            self._reply(k, self._center(k, self._load_menu(k, cmd)), t.center,
                        lambda k: E.ServerUnavailable(k))
        elif isinstance(cmd, C.RequestDocument):
            self._reply(k, self._center(k, self._request(k, cmd)), t.center,
                        lambda k: E.ServerUnavailable(k))
        elif isinstance(cmd, C.Finalize):
            self._reply(k, self._center(k, self._finalize(k, cmd)), t.center,
                        lambda k: E.ServerUnavailable(k))
        elif isinstance(cmd, C.ReportIncident):
            self.spawn(self._incident(cmd))
        elif isinstance(cmd, C.StartCashIn):
            try:
                await self.cash.call(lambda: self.cash.start_cash_in(cmd.fee), t.cash)
            except Exception:  # acceptors that cannot open: the payment is refused
                self.put(E.DeviceFault("cash", "cash_in_failed"))
                return
            self.ui.cash_in(cmd.fee)
        elif isinstance(cmd, C.EndCashIn):
            pass  # acceptance stops by itself once covered; the escrow stays until decided
        elif isinstance(cmd, C.StackEscrow):
            self._reply(k, self._stack(k), t.cash * 3, None)
        elif isinstance(cmd, C.ReturnEscrow):
            self._reply(k, self._return(k), t.cash * 3, None)
        elif isinstance(cmd, C.PayChange):
            self._reply(k, self._pay(k, cmd.yen), t.cash * 3, None)
        elif isinstance(cmd, C.PrintDocument):
            self.marks["print"] = time.perf_counter()
            name = f"{s.item.doc_type if s.item else 'document'}-{s.request_id}"
            doc, copies = cmd.document, cmd.copies
            self.spawn(self._print_when_card_out(
                k, lambda: self.printer.print_document(k, doc, name, copies=copies),
                t.printer))
        elif isinstance(cmd, C.PrintSlip):
            self._reply(k, self._printing(k, lambda: self.printer.print_slip(
                k, cmd.txn, cmd.yen, cmd.reason), E.PrintDone, E.PrintFailed), t.printer,
                lambda k: E.PrintFailed(k, "timeout"))
        elif isinstance(cmd, C.ReleasePages):
            self.printer.release()
            self.put(E.PagesReleased(k))
        elif isinstance(cmd, C.RedeemPinReset) and self.facepin_url:
            self._reply(k, self.card.redeem(k, self.facepin_url, cmd.target),
                        t.card + t.center, lambda k: E.ServerUnavailable(k))
        else:  # the core offers PIN reset only when a reservation service is configured
            raise KioskError(f"the runner cannot perform {type(cmd).__name__}")

    # center steps

    async def _center(self, key: str, coro: Any) -> E.Event:
        try:
            ev: E.Event = await coro
            return ev
        except IssuanceRefused as e:
            return E.ServerRefused(key, e.code)
        except CenterUnavailable:
            return E.ServerUnavailable(key)
        except CardioError as e:  # the card failed while signing the nonce
            return E.CardFailed(key, type(e).__name__)

    async def _authenticate(self, key: str, request_id: str) -> E.Event:
        opened = await self.center.open(request_id)
        cert, sig = await self.card.cert_and_sign(base64.b64decode(opened.nonce))
        auth = await self.center.authenticate(opened, cert, sig)
        self._opened = opened
        return E.Authenticated(key, opened.session_id, auth.municipality_code,
                               auth.municipality_name)

    async def _load_menu(self, key: str, cmd: C.LoadMenu) -> E.Event:
        menu = await self.center.menu(cmd.request_id, cmd.session_id)
        items = [E.MenuItem(i.doc_type, i.fee, tuple(sorted(i.options)),
                            max_copies=i.max_copies) for i in menu.items]
        items += [E.MenuItem(r.doc_type, 0, (), r.reason) for r in menu.refused]
        self._option_values = {i.doc_type: dict(i.options) for i in menu.items}
        return E.MenuReceived(key, tuple(items))

    async def _request(self, key: str, cmd: C.RequestDocument) -> E.Event:
        self.doc_type = cmd.doc_type
        allowed = self._option_values.get(cmd.doc_type, {})
        # An option ticked takes its non-default value (the first listed is the default).
        opts = {n: (allowed[n][1] if len(allowed[n]) > 1 else allowed[n][0])
                for n in cmd.options if allowed.get(n)}
        issued = await self.center.request_document(cmd.request_id, cmd.session_id,
                                                    cmd.doc_type, opts)
        return E.DocumentReceived(key, Fetched(issued, fee=issued.fee), signed_digest(issued))

    async def _finalize(self, key: str, cmd: C.Finalize) -> E.Event:
        await self.center.finalize(cmd.request_id, cmd.session_id, cmd.outcome)
        return E.Finalized(key)

    async def _incident(self, cmd: C.ReportIncident) -> None:
        with contextlib.suppress(CardioError):
            await self.center.report_incident(cmd.request_id, cmd.session_id, cmd.kind,
                                              "kiosk binding check")

    # cash steps: each answered with what the devices counted

    async def _stack(self, key: str) -> E.Event:
        if key not in self.cash.results:
            res = await self.cash.call(lambda: self.cash.end(True), self.timeouts.cash * 3)
            # A note that jammed on its way to the cassette is in the machine's custody as
            # much as a stacked one: the customer paid it (staff clear the jam).
            self.cash.results[key] = int(res["stacked"]) + int(res.get("held", 0))
        return E.EscrowStacked(key, self.cash.results[key])

    async def _return(self, key: str) -> E.Event:
        if key not in self.cash.results:
            res = await self.cash.call(lambda: self.cash.end(False), self.timeouts.cash * 3)
            back = int(res.get("stacked", 0))  # stacked items are repaid from the hoppers
            paid = await self.cash.call(lambda: self.cash.pay(back, f"{key}/repay"),
                                        self.timeouts.cash * 3) if back else 0
            self.cash.results[key] = int(res.get("returned", 0)) + int(paid)
        return E.EscrowReturned(key, self.cash.results[key])

    async def _pay(self, key: str, yen: int) -> E.Event:
        if key not in self.cash.results:
            self.cash.results[key] = int(await self.cash.call(lambda: self.cash.pay(yen, key),
                                                              self.timeouts.cash * 3))
        return E.ChangePaid(key, self.cash.results[key])

    async def _print_when_card_out(self, key: str, job: Callable[[], str | None],
                                   timeout: float) -> None:
        """A certificate's job goes to a real printer only once the card has left the slot
        (the pages cannot be held back on our side, and the card must never be left behind
        for them); the printer's own time limit starts then. The wait itself is bounded by
        the session's deadline: a card never taken leaves the job unsent, and recovery
        refunds it."""
        if self.printer.defers_until_card_out:
            while self.session is not None and self.session.card_present:
                await asyncio.sleep(0.05)
        self._reply(key, self._printing(key, job, E.PrintDone, E.PrintFailed), timeout,
                    lambda k: E.PrintFailed(k, "timeout"))

    async def _printing(self, key: str, job: Callable[[], str | None],
                        ok: type[E.PrintDone], failed: type[E.PrintFailed]) -> E.Event:
        try:
            failure = await asyncio.to_thread(job)
        except CardioError as e:
            failure = type(e).__name__
        except OSError as e:
            failure = f"os_error:{e.errno}"
        return ok(key) if failure is None else failed(key, failure)

    async def aclose(self) -> None:
        await self.center.aclose()


def find_credentials(center: str, explicit: Path | None) -> KioskCredentials:
    """``--credentials DIR``, else the kiosk the emulated operator enrolled for ``center``
    under ``$CARDIO_JLIS_DIR/kiosks/`` (the first whose ``kiosk.json`` names that URL)."""
    if explicit is not None:
        return KioskCredentials.load(explicit)
    base = os.environ.get("CARDIO_JLIS_DIR")
    if not base:
        raise UsageError("no kiosk credentials: give --credentials DIR (or set"
                         " CARDIO_JLIS_DIR to the emulated J-LIS directory)")
    for d in sorted((Path(base) / "kiosks").glob("kiosk-*")):
        try:
            meta = json.loads((d / "kiosk.json").read_bytes())
        except (OSError, ValueError, RecursionError):  # not a kiosk's: look further
            continue
        if isinstance(meta, dict) and \
                str(meta.get("center", "")).rstrip("/") == center.rstrip("/"):
            return KioskCredentials.load(d)
    raise UsageError(f"no kiosk enrolled for {center} under {base}/kiosks: give"
                     " --credentials DIR")


#: Center refusals that are its final word on a finalize: nothing is left to send.
FINAL_REFUSALS = frozenset({"already_finalized", "nothing_to_finalize", "unknown_session"})


async def flush_finalizes(journal: Journal, center: CenterClient) -> dict[str, int]:
    """Send the finalizes the journal owes the center (a session that ended while the
    center could not be told, or one recovery closed). Stops at the first unreachable
    center — the rest stay owed for the next flush."""
    sent = refused = 0
    for txn, rid, sid, outcome in journal.owed_finalizes():
        try:
            await center.finalize(rid, sid, outcome)
        except IssuanceRefused as e:
            if e.code not in FINAL_REFUSALS:
                continue
            refused += 1
        except CenterUnavailable:
            break
        else:
            sent += 1
        journal.mark_finalized(txn)
    return {"sent": sent, "refused": refused, "owed": len(journal.owed_finalizes())}


def start_recovery(journal: Journal, out: Path | None, cash: CashAdapter | None = None, *,
                   card_present: Callable[[], bool] | None = None,
                   strict: bool = True, printer: str | None = None) -> list[dict[str, Any]]:
    """Recovery at start, with the conservative port (see :mod:`kiosk.session.ports`); with
    ``cash`` (before its worker starts) change still owed is paid by the real hoppers.

    ``card_present`` is the card slot: while it says a card is in, recovery settles the
    money but releases nothing (no page, no 未交付 slip) and keeps the session open, held
    for the card — call again once the slot reports the removal. Without it the caller
    vouches that the slot is empty (``kiosk recover`` run by staff without ``--reader``).

    ``strict``: a session left for staff (its journal rows do not validate) raises
    :class:`~kiosk.session.journal.JournalDamaged` after the others are recovered; with
    ``strict=False`` it is reported in the list (``"problem"``) for the caller to refuse."""
    # ``printer``: the kiosk's IPP printer, where 未交付 slips go (``out`` is then None: a
    # kiosk with a printer keeps no output directory).
    port = DeviceRecoveryPort(journal, cash, out, card_present, printer) \
        if cash is not None else \
        ConservativePort(journal, out=out, card_present=card_present, printer=printer)
    results = journal.recover(port)
    if strict:
        refuse_left_for_staff(results)
    return [{"txn": r.txn, "outcome": r.outcome, "held_for_card": r.held_for_card,
             "actions": list(r.actions)} | ({"problem": r.problem} if r.problem else {})
            for r in results]
