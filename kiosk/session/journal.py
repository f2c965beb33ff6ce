"""The kiosk's write-ahead journal and its recovery: no crash loses a yen, prints twice, or
ends a session with the card left behind.

SQLite in WAL mode; every commit that precedes a side effect is fsynced
(``synchronous=FULL``; see :meth:`Journal._sync`). The runner calls :meth:`Journal.step`
for every event: the session handles it, and the new state, the event's kind and every
command the session wants performed — with its idempotency key — are committed in one
transaction *before* the runner performs any of them.
A reply marks its command done in the same transaction that records its effect.

:meth:`Journal.recover` (run at every start) brings each unfinished session to a defined
outcome through a :class:`RecoveryPort` (the runner's devices): an escrow never stacked is
returned; a stack, change payout or print left unanswered is re-issued under its original
key (the devices act at most once per key and report the first result); a document the
journal cannot show as printed is refunded with a 未交付 slip — the document itself is never
at rest, so it is never re-printed — and a center finalize is recorded as owed. Recovery
journals its own intents first, so a crash during recovery is recovered the same way.

What is at rest: ids, amounts, states, reason codes and digests (as raw bytes). Never a PIN
(the session never has one), never personal data or document content.

The file says what it is (SQLite ``application_id``/``user_version``, stamped at creation)
and is recognised before anything reads or writes it (:mod:`kiosk.session.journal_check`):
another program's database, an empty file or a journal missing a table is refused without a
byte written; reading commands open it read-only. Recovery acts only on what validates —
amounts a session can hold, the core's money identities, commands consistent with their
session — and leaves anything else, untouched, for staff (:data:`LEFT_FOR_STAFF`,
:class:`JournalDamaged`, the cash-ledger exit code 24).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cardio.errors import CardioError
from kiosk.session import commands as C
from kiosk.session import events as E
from kiosk.session.core import CENTER_OUTCOME, IssuanceSession, Outcome, Snapshot, State
from kiosk.session.journal_check import (
    APPLICATION_ID,
    VERSION,
    books_problem,
    header_problem,
    identity_problem,
    orphans,
    row_check,
    session_problem,
)

__all__ = ["JOURNAL_APPLICATION_ID", "JOURNAL_VERSION", "LEFT_FOR_STAFF", "Journal",
           "JournalDamaged", "JournalError", "JournalInUse", "Ledger", "Recovered", "RecoveryPort",
           "refuse_left_for_staff"]

JOURNAL_APPLICATION_ID = APPLICATION_ID
JOURNAL_VERSION = VERSION
#: The outcome recovery reports for a session it did not act on: its journal rows do not
#: validate, so nothing was paid, printed, stacked, returned or released for it.
LEFT_FOR_STAFF = "left_for_staff"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    txn TEXT PRIMARY KEY, request_id TEXT NOT NULL, session_id TEXT NOT NULL,
    state TEXT NOT NULL, fee INTEGER NOT NULL, escrow INTEGER NOT NULL,
    cash_in INTEGER NOT NULL, stacked INTEGER NOT NULL, change_due INTEGER NOT NULL,
    change_paid INTEGER NOT NULL, refund INTEGER NOT NULL, fee_refunded INTEGER NOT NULL,
    printed INTEGER NOT NULL, card_present INTEGER NOT NULL, outcome TEXT NOT NULL,
    reason TEXT NOT NULL, doc_digest BLOB, finalize_outcome TEXT NOT NULL DEFAULT '',
    finalize_done INTEGER NOT NULL DEFAULT 0, closed INTEGER NOT NULL DEFAULT 0,
    recovered INTEGER NOT NULL DEFAULT 0, held INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS steps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, txn TEXT NOT NULL, event TEXT NOT NULL,
    reply_key TEXT NOT NULL, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
    key TEXT PRIMARY KEY, txn TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    yen INTEGER NOT NULL, detail TEXT NOT NULL, digest BLOB,
    done INTEGER NOT NULL DEFAULT 0, result INTEGER);
CREATE INDEX IF NOT EXISTS commands_txn ON commands (txn, kind);
CREATE INDEX IF NOT EXISTS sessions_open ON sessions (closed);
"""

#: Commands that change nothing outside the screen are not journalled.
_UI_ONLY = (C.Show, C.RemindCard, C.Wipe)


class JournalError(CardioError):
    """The journal cannot be opened or written (disk full, not a journal, locked)."""

    exit_code = 1


class JournalDamaged(JournalError):
    """The journal is a kiosk journal, but damaged: a corrupt page, or values no session can
    hold (text where yen belong, impossible amounts, deleted or garbled rows). Nothing is
    paid, printed or counted on its strength; staff settle it from the cash box (the
    cash-ledger code, as for books that do not balance)."""

    exit_code = 24


class JournalInUse(JournalError):
    """Another process has the journal open for writing (``kiosk run``, ``kiosk issue`` or
    ``kiosk recover``): a second writer would settle the live session behind its back —
    return its escrow, refund it, print its slip. Refused at once, before anything is read
    or written (exit 1, as for a journal that cannot be opened)."""


def _lock_writer(path: Path) -> int:
    """Take the journal's writer lock: an exclusive ``flock`` on ``PATH-lock`` (a file of
    its own, so that neither SQLite's POSIX locks on the journal — which a close of any
    descriptor of that file would drop — nor its -wal/-shm are touched), held for the
    Journal's lifetime; the holder's PID is written into it for the refusal's message.
    Readers (``kiosk ledger``) take no lock: SQLite's WAL gives them a consistent view."""
    lock = path.with_name(path.name + "-lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise JournalError(f"cannot lock the kiosk journal {path}: {lock}:"
                           f" {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        who = f"process {holder}" if holder.isdigit() else "another process"
        raise JournalInUse(f"the kiosk journal {path} is in use by {who} (kiosk run, issue"
                           " or recover): stop it first; 'kiosk ledger' can read it"
                           " meanwhile") from None
    except OSError as e:
        os.close(fd)
        raise JournalError(f"cannot lock the kiosk journal {path}: {e.strerror}") from None
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


#: SQLite's primary result codes for a damaged file (sqlite3.h).
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def _db_error(e: sqlite3.Error, path: Path, doing: str) -> JournalError:
    """A typed, one-line error for an SQLite failure: damage (a corrupt page) apart from the
    rest (locked, disk full, unreadable)."""
    code = (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return JournalDamaged(f"the kiosk journal {path} is damaged ({e}): nothing was acted"
                              " on; keep the file for staff and settle from the cash box")
    return JournalError(f"kiosk journal {path}: {doing} failed: {e}")


class RecoveryPort(Protocol):
    """What recovery needs from the devices. Every call is idempotent by ``key``: repeated
    with the same key it acts at most once and returns the first result."""

    def return_escrow(self, key: str) -> tuple[int, int]:
        """Hand back what is in escrow: ``(yen returned, yen held by the machine)``."""

    def stack_escrow(self, key: str) -> int:
        """Yen stacked under ``key`` (performing the stack if it never happened)."""

    def pay_change(self, key: str, yen: int) -> int:
        """Yen paid under ``key`` (≤ ``yen``)."""

    def settle_print(self, key: str) -> bool:
        """Wait for job ``key`` to end, or cancel it: True only if it printed completely; once
        this returns False the job never prints."""

    def print_slip(self, key: str, txn: str, yen: int, reason: str) -> bool:
        """The 未交付 slip; False if it could not print (the refund stands regardless)."""

    def card_in_slot(self) -> bool:
        """Whether a card is in the slot now (the interlock holds across a restart)."""

    def release_pages(self, key: str) -> None:
        """Open the held output (called only while no card is in the slot)."""


@dataclass(frozen=True)
class Ledger:
    cash_in: int
    change_out: int
    fees_printed: int
    refunds_due: int
    sessions_open: int
    documents_printed: int

    @property
    def balanced(self) -> bool:
        """Every yen taken in went out as change, paid for a printed document, or is owed."""
        return self.cash_in == self.change_out + self.fees_printed + self.refunds_due

    def as_dict(self) -> dict[str, int | bool]:
        return {"cash_in": self.cash_in, "change_out": self.change_out,
                "fees_printed": self.fees_printed, "refunds_due": self.refunds_due,
                "sessions_open": self.sessions_open,
                "documents_printed": self.documents_printed, "balanced": self.balanced}


@dataclass(frozen=True)
class Recovered:
    """What recovery did with one session."""

    txn: str
    outcome: str
    held_for_card: bool  # still open: pages wait until the card leaves the slot
    actions: tuple[str, ...]
    problem: str = ""  # why it was left for staff (outcome LEFT_FOR_STAFF)


def refuse_left_for_staff(results: list[Recovered]) -> None:
    """Raise :class:`JournalDamaged` if recovery left a session for staff: a kiosk does not
    take new money while its journal cannot account for old."""
    left = [r for r in results if r.outcome == LEFT_FOR_STAFF]
    if left:
        first = left[0]
        more = f" (and {len(left) - 1} more)" if len(left) > 1 else ""
        raise JournalDamaged(
            f"kiosk journal: session {first.txn} left for staff{more} — {first.problem};"
            " nothing was paid, printed or released for it: keep the journal and settle it"
            " from the cash box")


def _money_moved(before: Snapshot | None, after: Snapshot) -> bool:
    """Money counted in or owed changed: such a commit is fsynced even when no command
    follows it. A credit is a device's unsolicited word (nobody asks it again), so losing
    it to a power cut would lose the customer's money from the books."""
    if before is None:
        return bool(after.escrow or after.cash_in or after.refund)
    return (before.escrow, before.cash_in, before.stacked, before.refund, before.change_paid,
            before.change_due) != (after.escrow, after.cash_in, after.stacked, after.refund,
                                   after.change_paid, after.change_due)


def _digest(hexdigest: str) -> bytes | None:
    try:
        return bytes.fromhex(hexdigest) if hexdigest else None
    except ValueError:
        return None


class Journal:
    """One kiosk's journal file. Not thread-safe: one runner owns it."""

    def __init__(self, path: str | Path, *, readonly: bool = False,
                 create: bool = True) -> None:
        """Open the journal at ``path`` — creating it when ``create`` and the file is missing
        or empty. An existing file is recognised first (:mod:`kiosk.session.journal_check`)
        and checked page by page (``PRAGMA quick_check``); what is not a kiosk journal is
        refused without a write. ``readonly`` opens it as SQLite's read-only mode does: for
        the ledger and other inspection, which must never change the books they read."""
        self.path = Path(path)
        self.readonly = readonly
        self.create = create and not readonly
        self._full = True
        self._last: dict[str, Snapshot] = {}
        self._seq: dict[str, int] = {}
        try:
            exists = self.path.stat().st_size > 0
        except FileNotFoundError:
            exists = False
        except OSError as e:
            raise JournalError(f"cannot open the kiosk journal {self.path}:"
                               f" {e.strerror}") from None
        try:
            problem = header_problem(self.path) if exists or not self.create else None
        except OSError as e:
            raise JournalError(f"cannot open the kiosk journal {self.path}:"
                               f" {e.strerror}") from None
        if problem is None and exists and not self.path.with_name(
                self.path.name + "-wal").exists():
            problem = self._identity_at_rest()
        if problem is not None:
            raise JournalError(f"{self.path} is not a kiosk journal: {problem};"
                               " nothing was written to it")
        # One writer per journal, for as long as it is open (review of issue 22, 6).
        self._lock_fd = None if readonly else _lock_writer(self.path)
        try:
            if readonly:
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro",
                                           uri=True, isolation_level=None)
                self._db.execute("PRAGMA query_only=1")
            else:
                self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as e:
            self._unlock()
            raise _db_error(e, self.path, "open") from None
        try:
            self._open(new=not exists)
        except BaseException:
            self._db.close()
            self._unlock()
            raise

    def _identity_at_rest(self) -> str | None:
        """The identity of a file with no WAL beside it, read as an immutable database: SQLite
        then takes no lock and makes no -wal/-shm file, so a foreign database in WAL mode is
        refused leaving its directory as it was. (With a WAL present — a journal in use or
        left by a crash — the identity is read through it in :meth:`_open`.)"""
        try:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro&immutable=1",
                                 uri=True)
            try:
                return identity_problem(db)[0]
            finally:
                db.close()
        except sqlite3.Error as e:
            raise _db_error(e, self.path, "open") from None

    def _open(self, *, new: bool) -> None:
        try:
            empty = new or not self._db.execute(
                "SELECT 1 FROM sqlite_master LIMIT 1").fetchone()
            legacy = False
            if not (empty and self.create):
                problem, legacy = identity_problem(self._db)
                if problem is not None:
                    raise JournalError(f"{self.path} is not a kiosk journal: {problem};"
                                       " nothing was written to it")
                bad = [r[0] for r in self._db.execute("PRAGMA quick_check(5)")]
                if bad != ["ok"]:
                    raise JournalDamaged(
                        f"the kiosk journal {self.path} is damaged (SQLite: {bad[0]}):"
                        " nothing was acted on; keep the file for staff and settle from"
                        " the cash box")
            if self.readonly:
                return
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            if empty or legacy:
                # The tables and the identity in one transaction: a file is a journal
                # with both, or neither.
                self._db.execute("BEGIN IMMEDIATE")
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                self._db.execute(f"PRAGMA user_version={VERSION}")
                self._db.execute("COMMIT")
        except sqlite3.Error as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise _db_error(e, self.path, "open") from None

    def close(self) -> None:
        self._db.close()
        self._unlock()

    def _unlock(self) -> None:
        fd, self._lock_fd = getattr(self, "_lock_fd", None), None
        if fd is not None:
            with contextlib.suppress(OSError):  # the holder is gone: its PID with it
                os.ftruncate(fd, 0)
            os.close(fd)  # releases the flock

    def __del__(self) -> None:
        self._unlock()

    def _sync(self, *, full: bool) -> None:
        """fsync the commit only when a side effect follows it or money moved. The rule is
        "written before its side effect": a commit that precedes a device, card, center or
        printer command is made with ``synchronous=FULL`` (the WAL is fsynced before
        :meth:`step` returns), and so is one that changes money counted in or owed (a
        credit is nobody's reply: it is not asked again). One that only records a state or
        a reply — nothing is performed on its strength — is made with ``NORMAL``: atomic,
        and durable with the next FULL commit, because the WAL is one append-only file and
        its fsync covers every frame before. Losing such a commit to a power cut loses no
        effect: what it recorded was a state no command acted on, or a device's reply,
        which recovery asks again under the same idempotency key."""
        if full != self._full:
            self._db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self._full = full

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self, *, full: bool = True) -> Iterator[sqlite3.Connection]:
        try:
            self._sync(full=full)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            error = _db_error(e, self.path, "write")
            if isinstance(error, JournalDamaged):
                raise error from None
            raise JournalError(f"kiosk journal write failed: {e}") from None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A query, its SQLite failures as typed errors (a corrupt page: JournalDamaged)."""
        try:
            yield self._db
        except sqlite3.Error as e:
            raise _db_error(e, self.path, "read") from None

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several queries that must see one state of the file: one read transaction, so a
        kiosk writing meanwhile (``kiosk ledger`` beside ``kiosk run``) cannot show a
        session's row from before a commit and its commands from after it."""
        with self._reading() as db:
            if db.in_transaction:
                yield db
                return
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")

    # -- the write-ahead path ----------------------------------------------------------------

    def step(self, session: IssuanceSession, event: E.Event) -> list[C.Command]:
        """Apply ``event`` to ``session`` and journal the result; return the commands, which
        the caller performs only after this returns (the commit is durable by then)."""
        cmds = session.handle(event)
        self.record(session, event, cmds)
        return cmds

    def record(self, session: IssuanceSession, event: E.Event,
               cmds: list[C.Command]) -> None:
        snap = session.snapshot()
        durable = [c for c in cmds if not isinstance(c, _UI_ONLY)]
        reply_key = event.key if isinstance(event, E.Reply) else ""
        if not durable and not reply_key and self._last.get(snap.txn) == snap:
            return  # a tick or a keypad count that changed nothing at rest
        with self._tx(full=bool(durable) or _money_moved(self._last.get(snap.txn), snap)) as db:
            self._write_session(db, snap)
            db.execute("INSERT INTO steps (txn, event, reply_key, state) VALUES (?,?,?,?)",
                       (snap.txn, type(event).__name__, reply_key, snap.state.value))
            if reply_key:
                db.execute("UPDATE commands SET done=1, result=? WHERE key=?",
                           (_reply_result(event), reply_key))
            n = self._seq.get(snap.txn, 0)
            for c in durable:
                n += 1
                self._insert_command(db, snap.txn, n, c)
            self._seq[snap.txn] = n
        self._last[snap.txn] = snap
        if snap.state is State.DONE:
            self._last.pop(snap.txn, None)
            self._seq.pop(snap.txn, None)

    def _insert_command(self, db: sqlite3.Connection, txn: str, n: int,
                        c: C.Command) -> None:
        f = c.journal_fields()
        digest = _digest(str(f.pop("digest", "")))
        yen = int(f.pop("yen", 0) or f.pop("fee", 0))
        kind = type(c).__name__.lower()
        f["crc"] = row_check(c.key, txn, n, kind, yen)
        db.execute("INSERT OR IGNORE INTO commands (key, txn, seq, kind, yen, detail, digest) "
                   "VALUES (?,?,?,?,?,?,?)",
                   (c.key, txn, n, kind, yen,
                    json.dumps(f, sort_keys=True, ensure_ascii=True), digest))

    def _write_session(self, db: sqlite3.Connection, s: Snapshot) -> None:
        closed = int(s.state is State.DONE)
        fin_outcome = ""
        if s.session_id and s.outcome and s.state is State.DONE:
            fin_outcome = CENTER_OUTCOME.get(Outcome(s.outcome), "cancelled")
        db.execute(
            "INSERT INTO sessions (txn, request_id, session_id, state, fee, escrow, cash_in,"
            " stacked, change_due, change_paid, refund, fee_refunded, printed, card_present,"
            " outcome, reason, doc_digest, finalize_outcome, finalize_done, closed)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(txn) DO UPDATE SET session_id=excluded.session_id,"
            " state=excluded.state, fee=excluded.fee, escrow=excluded.escrow,"
            " cash_in=excluded.cash_in, stacked=excluded.stacked,"
            " change_due=excluded.change_due, change_paid=excluded.change_paid,"
            " refund=excluded.refund, fee_refunded=excluded.fee_refunded,"
            " printed=excluded.printed, card_present=excluded.card_present,"
            " outcome=excluded.outcome, reason=excluded.reason,"
            " doc_digest=excluded.doc_digest,"
            " finalize_outcome=CASE WHEN excluded.finalize_outcome != ''"
            "   THEN excluded.finalize_outcome ELSE sessions.finalize_outcome END,"
            " finalize_done=MAX(sessions.finalize_done, excluded.finalize_done),"
            " closed=excluded.closed",
            (s.txn, s.request_id, s.session_id, s.state.value, s.fee, s.escrow, s.cash_in,
             s.stacked, s.change_due, s.change_paid, s.refund, int(s.fee_refunded),
             int(s.printed), int(s.card_present), s.outcome, s.reason,
             _digest(s.doc_digest), fin_outcome,
             int(closed == 1 and bool(s.session_id) and not s.finalize_owed), closed))

    # -- queries -------------------------------------------------------------------------------

    def ledger(self) -> Ledger:
        """The books. Refused (:class:`JournalDamaged`) when the journal holds anything
        recovery would leave for staff (:meth:`damage`): a sum over text, impossible amounts
        or a session whose rows do not add up is no account."""
        with self._snapshot() as db:
            bad = self.damage()
            if bad:
                raise JournalDamaged(f"kiosk journal: session {bad[0][0]}: {bad[0][1]}; the"
                                     " books cannot be vouched for — keep the journal for"
                                     " staff and settle from the cash box")
            row = db.execute(
                "SELECT COALESCE(SUM(cash_in),0), COALESCE(SUM(change_paid),0),"
                " COALESCE(SUM(CASE WHEN printed=1 THEN fee ELSE 0 END),0),"
                " COALESCE(SUM(refund),0), COALESCE(SUM(1-closed),0), COALESCE(SUM(printed),0)"
                " FROM sessions").fetchone()
        return Ledger(*(int(v) for v in row))

    def damage(self) -> list[tuple[str, str]]:
        """``(txn, problem)`` for everything in the journal that does not validate: an
        unfinished session recovery may not act on, commands or steps without their session,
        the first finished session whose values cannot be summed."""
        with self._snapshot() as db:
            out = [(str(txn), p) for txn in self.open_sessions()
                   if (p := session_problem(db, txn)) is not None]
            out += [(txn, "commands or steps without their session row") for txn in orphans(db)]
            bad = books_problem(db)
            if bad is not None and bad[0] not in {t for t, _ in out}:
                out.append(bad)
        return out

    def open_sessions(self) -> list[str]:
        with self._reading() as db:
            return [r[0] for r in db.execute(
                "SELECT txn FROM sessions WHERE closed=0 ORDER BY rowid")]

    def owed_finalizes(self) -> list[tuple[str, str, str, str]]:
        """``(txn, request_id, session_id, outcome)`` the center has not acknowledged."""
        with self._reading() as db:
            return [tuple(r) for r in db.execute(
                "SELECT txn, request_id, session_id, finalize_outcome FROM sessions"
                " WHERE closed=1 AND session_id != '' AND finalize_outcome != ''"
                " AND finalize_done=0 ORDER BY rowid")]

    def mark_finalized(self, txn: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE sessions SET finalize_done=1 WHERE txn=?", (txn,))

    def session_row(self, txn: str) -> dict[str, object]:
        with self._reading() as db:
            cur = db.execute("SELECT * FROM sessions WHERE txn=?", (txn,))
            names = [d[0] for d in cur.description]
            row = cur.fetchone()
        if row is None:
            raise JournalError(f"no session {txn!r} in the journal")
        return dict(zip(names, row, strict=True))

    # -- recovery ------------------------------------------------------------------------------

    def recover(self, port: RecoveryPort) -> list[Recovered]:
        """Bring every unfinished session to a defined outcome (see the module docstring).
        Idempotent: run it at every start, and again once a held card has been taken.

        A session whose rows do not validate (:func:`~kiosk.session.journal_check.
        session_problem`) is not touched — no device is asked anything for it — and comes
        back as :data:`LEFT_FOR_STAFF` with the reason; so do commands or steps with no
        session, and a finished session whose books cannot be summed."""
        damaged = dict(self.damage())
        out: list[Recovered] = []
        for txn in self.open_sessions():
            if str(txn) in damaged:
                out.append(Recovered(str(txn), LEFT_FOR_STAFF, False, (),
                                     damaged.pop(str(txn))))
            else:
                out.append(self._recover_one(txn, port))
        out += [Recovered(txn, LEFT_FOR_STAFF, False, (), problem)
                for txn, problem in damaged.items()]
        return out

    def _commands(self, txn: str) -> dict[str, tuple[str, int, int | None]]:
        """Latest command of each kind: ``kind → (key, done, result)``."""
        out: dict[str, tuple[str, int, int | None]] = {}
        with self._reading() as db:
            for key, kind, done, result in db.execute(
                    "SELECT key, kind, done, result FROM commands WHERE txn=?"
                    " ORDER BY seq, rowid", (txn,)):
                out[kind] = (key, done, result)
        return out

    def _intent(self, txn: str, key: str, kind: str, yen: int) -> None:
        with self._tx() as db:
            n = db.execute("SELECT COALESCE(MAX(seq),0)+1 FROM commands WHERE txn=?",
                           (txn,)).fetchone()[0]
            detail = json.dumps({"crc": row_check(key, txn, n, kind, yen), "recovery": 1})
            db.execute("INSERT OR IGNORE INTO commands (key, txn, seq, kind, yen, detail)"
                       " VALUES (?,?,?,?,?,?)", (key, txn, n, kind, yen, detail))

    def _settle(self, txn: str, key: str, result: int, **changes: object) -> None:
        with self._tx() as db:
            db.execute("UPDATE commands SET done=1, result=? WHERE key=?", (result, key))
            if changes:
                cols = ", ".join(f"{k}=?" for k in changes)
                db.execute(f"UPDATE sessions SET {cols} WHERE txn=?",
                           (*changes.values(), txn))

    def _recover_one(self, txn: str, port: RecoveryPort) -> Recovered:
        s = self.session_row(txn)
        cmds = self._commands(txn)
        actions: list[str] = []

        def key_for(kind: str) -> tuple[str, bool]:
            if kind in cmds:
                return cmds[kind][0], bool(cmds[kind][1])
            return f"{txn}:r:{kind}", False

        cash_in, refund = int(s["cash_in"]), int(s["refund"])  # type: ignore[call-overload]
        fee = int(s["fee"])  # type: ignore[call-overload]
        outcome, reason = str(s["outcome"]), str(s["reason"])
        slip = False
        if "stackescrow" not in cmds:
            key, done = key_for("returnescrow")
            if not done:
                self._intent(txn, key, "returnescrow", int(s["escrow"]))  # type: ignore
                returned, held = port.return_escrow(key)
                cash_in, refund = cash_in + held, refund + held
                reason = reason or ("escrow_stuck" if held else "")
                self._settle(txn, key, returned, cash_in=cash_in, refund=refund, escrow=0)
                actions.append(f"escrow returned {returned}, held {held}")
            outcome = outcome or Outcome.CANCELLED.value
            reason = reason or "recovered"
            slip = refund > 0  # held escrow or a stray credit: the customer needs the slip
        else:
            stacked, change_due = int(s["stacked"]), int(s["change_due"])  # type: ignore
            fee_refunded, printed = bool(s["fee_refunded"]), bool(s["printed"])
            key, done = key_for("stackescrow")
            if not done:
                stacked = port.stack_escrow(key)
                cash_in += stacked
                if stacked < fee:
                    refund, fee_refunded = refund + stacked, True
                    outcome, reason = Outcome.FAILED_REFUND_DUE.value, "payment_short"
                change_due = max(0, stacked - fee)
                self._settle(txn, key, stacked, stacked=stacked, cash_in=cash_in,
                             refund=refund, fee_refunded=int(fee_refunded),
                             change_due=change_due, escrow=0)
                actions.append(f"stack confirmed {stacked}")
            if not fee_refunded and not printed:
                key, done = key_for("paychange")
                if change_due > 0 and not done:
                    self._intent(txn, key, "paychange", change_due)
                    paid = min(port.pay_change(key, change_due), change_due)
                    refund += change_due - paid
                    self._settle(txn, key, paid, change_paid=paid, refund=refund)
                    actions.append(f"change paid {paid} of {change_due}")
                key, done = key_for("printdocument")
                if "printdocument" in cmds and not done and port.settle_print(key):
                    printed = True
                    outcome, reason = Outcome.PRINTED.value, ""
                    self._settle(txn, key, 1, printed=1)
                    actions.append("print confirmed")
                else:
                    if "printdocument" in cmds and not done:
                        self._settle(txn, key, 0)
                    refund, fee_refunded = refund + fee, True
                    outcome, reason = Outcome.FAILED_REFUND_DUE.value, "recovered_unprinted"
                    with self._tx() as db:
                        db.execute("UPDATE sessions SET refund=?, fee_refunded=1 WHERE txn=?",
                                   (refund, txn))
                    actions.append(f"refund due {fee}")
            slip = outcome == Outcome.FAILED_REFUND_DUE.value
        # A card in the slot holds every paper, the 未交付 slip too: a kiosk printer puts the
        # slip out at once, so it is not even sent until the card has left (the next
        # recovery, run when the slot reports the removal, prints it under its key).
        card_in = port.card_in_slot()
        if slip and not card_in:
            key, done = key_for("printslip")
            if not done:
                self._intent(txn, key, "printslip", refund)
                ok = port.print_slip(key, txn, refund, reason)
                self._settle(txn, key, int(ok))
                actions.append("slip printed" if ok else "slip failed")
        with self._tx() as db:
            db.execute("UPDATE sessions SET outcome=?, reason=?, recovered=1 WHERE txn=?",
                       (outcome, reason, txn))
        s = self.session_row(txn)
        with self._reading() as db:
            pages = bool(s["printed"]) or bool(db.execute(
                "SELECT 1 FROM commands WHERE txn=? AND kind='printslip' AND done=1"
                " AND result=1", (txn,)).fetchone())
        if card_in:
            # The interlock holds across a crash: nothing is released, the session does not
            # end, while a card is in the slot. Money is settled already.
            with self._tx() as db:
                db.execute("UPDATE sessions SET held=1, state=? WHERE txn=?",
                           (State.AWAIT_CARD_REMOVAL.value, txn))
            return Recovered(txn, outcome, True, tuple(actions))
        key, done = key_for("releasepages")
        if pages and not done:
            self._intent(txn, key, "releasepages", 0)
            port.release_pages(key)
            self._settle(txn, key, 1)
            actions.append("pages released")
        fin = ""
        if s["session_id"] and not s["finalize_done"]:
            fin = CENTER_OUTCOME.get(Outcome(outcome), "cancelled")
            actions.append(f"finalize owed: {fin}")
        with self._tx() as db:
            db.execute("UPDATE sessions SET closed=1, held=0, state=?, finalize_outcome="
                       "CASE WHEN ?='' THEN finalize_outcome ELSE ? END WHERE txn=?",
                       (State.DONE.value, fin, fin, txn))
        return Recovered(txn, outcome, False, tuple(actions))


def _reply_result(event: E.Event) -> int:
    """The number a reply contributes to its command row (yen, tries, or 1/0)."""
    for name in ("yen", "tries_left"):
        v = getattr(event, name, None)
        if isinstance(v, int):
            return v
    return 0 if isinstance(event, (E.PrintFailed, E.CardFailed, E.ServerRefused,
                                   E.ServerUnavailable, E.PinResetRefused)) else 1
