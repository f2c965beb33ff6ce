"""What the journal accepts from its own file before it reads the books or acts on them.

Three questions, answered without writing a byte:

* :func:`identity_problem` — is this file a kiosk journal at all? SQLite's header carries
  ``application_id`` (:data:`APPLICATION_ID`, stamped when the journal is created) and
  ``user_version`` (:data:`VERSION`, the schema's version); the three tables must have
  exactly the journal's columns. A journal written before the identity existed (both 0, the
  right tables) is accepted: kiosks in service hold money owed in such files, and the table
  check is what recognises them — the stamp is added the next time the journal is opened for
  writing. Anything else (an empty file, another program's database, a journal missing a
  table, a newer schema) is refused.
* :func:`books_problem` — can the books be added up? Every amount a whole number of yen
  within :data:`MAX_SESSION_YEN`, in 10-yen steps; every flag 0 or 1; a closed session has
  ended (state ``done``) with nothing left in escrow.
* :func:`session_problem` — may recovery act on this unfinished session? The checks above,
  plus the core's own money identities and the commands consistent with the session's
  state (nothing deleted, duplicated, moved from another session or garbled).

Each answers ``None`` or one line saying what is wrong (ids and amounts only: a journal
holds nothing personal). The caller decides: the ledger refuses, recovery leaves the
session for staff.
"""

from __future__ import annotations

import json
import re
import sqlite3
import zlib
from pathlib import Path

from kiosk.session.core import Outcome, State

__all__ = ["APPLICATION_ID", "MAX_SESSION_YEN", "VERSION", "books_problem",
           "header_problem", "identity_problem", "intent_check", "orphans", "row_check",
           "session_problem"]

#: SQLite ``PRAGMA application_id`` of a kiosk journal: "CKJL" (cardio kiosk journal).
APPLICATION_ID = 0x434B4A4C
#: ``PRAGMA user_version``: the journal's schema version.
VERSION = 1

#: The most yen one session can have taken in, owe or pay out. One session buys one
#: document for at most :data:`~kiosk.session.core.MAX_FEE` (¥1,000; the core refuses a
#: dearer menu line), and its cash-in closes once the escrow covers the fee: the last item
#: taken is at most the largest note, ¥10,000, so escrow ≤ fee − 10 + 10,000. After the
#: acceptors are inhibited a coin already in the chute is still counted (and owed back):
#: a handful at most, bounded here by ¥5,000 (ten ¥500 coins). 1,000 + 10,000 + 5,000 =
#: 16,000, rounded up to ¥20,000 — a fiftieth of the former million, which let a forged but
#: self-consistent journal print a slip for ¥1,000,000 (review of issue 22, finding 11).
#: Beyond it a value is not a session's money but damage, and nothing is paid, printed or
#: counted on its strength.
MAX_SESSION_YEN = 20_000

COLUMNS = {
    "sessions": ("txn", "request_id", "session_id", "state", "fee", "escrow", "cash_in",
                 "stacked", "change_due", "change_paid", "refund", "fee_refunded",
                 "printed", "card_present", "outcome", "reason", "doc_digest",
                 "finalize_outcome", "finalize_done", "closed", "recovered", "held"),
    "steps": ("seq", "txn", "event", "reply_key", "state"),
    "commands": ("key", "txn", "seq", "kind", "yen", "detail", "digest", "done", "result"),
}
AMOUNTS = ("fee", "escrow", "cash_in", "stacked", "change_due", "change_paid", "refund")
FLAGS = ("fee_refunded", "printed", "card_present", "finalize_done", "closed", "recovered",
         "held")

_TXN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PRINTABLE = re.compile(r"[\x20-\x7e]{0,200}")  # ids and reason codes: one printable line
_KEY = re.compile(r"(?P<txn>[A-Za-z0-9_-]{1,64}):(?P<n>[0-9]{1,9}|r):(?P<kind>[a-z]{1,32})")
#: Every command kind the journal records (UI-only commands are never journalled).
KINDS = frozenset({"readcard", "verifypin", "redeempinreset", "authenticate", "loadmenu",
                   "requestdocument", "reportincident", "finalize", "startcashin",
                   "endcashin", "stackescrow", "returnescrow", "paychange",
                   "printdocument", "printslip", "releasepages"})
MONEY_KINDS = frozenset({"stackescrow", "returnescrow", "paychange"})
PHYSICAL = frozenset({"stackescrow", "returnescrow", "paychange", "printdocument",
                      "printslip", "releasepages"})
#: The physical command a state waits for: its answer is what recovery asks again.
AWAITS = {State.STACKING.value: "stackescrow", State.PAYING_CHANGE.value: "paychange",
          State.PRINTING.value: "printdocument", State.RETURNING_ESCROW.value: "returnescrow",
          State.SLIP_PRINTING.value: "printslip", State.RELEASING.value: "releasepages"}
_ESCROW_STATES = frozenset({"reading-card", "pin-entry", "pin-verifying", "authenticating",
                            "loading-menu", "menu", "options", "quote", "payment", "fetching",
                            "reset-entry", "reset-pin-entry", "redeeming", "stacking",
                            "returning-escrow"})
_STATES = frozenset(s.value for s in State)
_OUTCOMES = frozenset({""} | {o.value for o in Outcome})
_FINALIZE = frozenset({"", "printed", "failed", "cancelled"})


def row_check(key: str, txn: str, seq: int, kind: str, yen: int) -> int:
    """CRC-32 of what identifies a command row, kept in its ``detail`` (``"crc"``): a key,
    session, order, kind or amount garbled after the row was written no longer matches.
    Rows written before the check existed have none and are judged by the rest. (A
    checksum finds damage, not a forger with write access to the file.)"""
    return zlib.crc32(f"{key}\x1f{txn}\x1f{seq}\x1f{kind}\x1f{yen}".encode())


def intent_check(key: str, counters: dict[int, int]) -> int:
    """CRC-32 of a payout intent (each hopper's event counter before the payout ``key``).
    The cash adapter writes the intent rows (``payout_intents``) and, in the same
    transaction, this number into its command row's ``detail`` (``"payout_intents"``): a
    payout that began is then on record twice, so an intent deleted, a table dropped or a
    counter edited is seen as damage — rather than read as "the payout never began" (which
    would pay the change again) or as a counter the hoppers moved past (which would owe
    back change the customer already has)."""
    text = key + "|" + ",".join(f"{c}:{n}" for c, n in sorted(counters.items()))
    return zlib.crc32(text.encode())


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                      (name,)).fetchone() is not None


def _payout_problem(db: sqlite3.Connection, key: str, fields: dict[str, object]
                    ) -> str | None:
    """The payout intents (and found amounts) a command row says were written must be
    there, unchanged."""
    marks = fields.get("payout_intents", {})
    found = fields.get("payout_found", {})
    if not isinstance(marks, dict) or not isinstance(found, dict):
        return f"command {key}: its payout record is garbled"
    if marks and not _has_table(db, "payout_intents"):
        return f"command {key}: a payout began but the journal's payout_intents table is gone"
    for ikey, crc in marks.items():
        try:
            rows = db.execute("SELECT coin, counter FROM payout_intents WHERE key=?",
                              (ikey,)).fetchall()
            counters = {int(c): int(n) for c, n in rows}
        except (TypeError, ValueError):
            return f"payout {_show(ikey)}: its hopper counters are garbled"
        if not counters:
            return f"payout {_show(ikey)} began, but its hopper counters are missing"
        if intent_check(str(ikey), counters) != crc:
            return f"payout {_show(ikey)}: its hopper counters do not match their checksum"
    if found and not _has_table(db, "payout_found"):
        return f"command {key}: the journal's payout_found table is gone"
    for ikey, yen in found.items():
        row = db.execute("SELECT yen FROM payout_found WHERE key=?", (ikey,)).fetchone()
        if row is None or row[0] != yen:
            return f"payout {_show(ikey)}: what recovery found it paid is missing or changed"
    return None


def _show(v: object) -> str:
    """A stored value in a message: short, one line, its type visible."""
    if isinstance(v, bytes):
        return f"bytes {v[:8].hex()}…" if len(v) > 8 else f"bytes {v.hex() or '(empty)'}"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "…"


def _amount(name: str, v: object) -> str | None:
    if type(v) is not int:
        return f"{name} is {_show(v)}, not a whole number of yen"
    if not 0 <= v <= MAX_SESSION_YEN or v % 10:
        return f"{name} is {v}, not an amount of 0 to {MAX_SESSION_YEN:,} yen in 10-yen steps"
    return None


def _flag(name: str, v: object) -> str | None:
    return None if type(v) is int and v in (0, 1) else f"{name} is {_show(v)}, not 0 or 1"


# -- is it a journal? --------------------------------------------------------------------------


def header_problem(path: Path) -> str | None:
    """The 100-byte SQLite header, read as plain bytes before SQLite opens the file (so a
    foreign file is refused without SQLite touching it or making -wal/-shm files beside
    it). The ``application_id`` here may be stale (0) while a new journal's first page is
    still in its WAL, so 0 is left to :func:`identity_problem`."""
    with path.open("rb") as f:
        head = f.read(100)
    if not head:
        return "an empty file"
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return "not an SQLite database"
    app = int.from_bytes(head[68:72], "big")
    if app not in (0, APPLICATION_ID):
        return f"an SQLite database of another program (application_id {app:#010x})"
    return None


def identity_problem(db: sqlite3.Connection) -> tuple[str | None, bool]:
    """``(problem, legacy)`` of an opened database: ``legacy`` when it is a journal from
    before the identity (the right tables, application_id and user_version 0)."""
    app = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if app not in (0, APPLICATION_ID):
        return f"an SQLite database of another program (application_id {app:#010x})", False
    if app == APPLICATION_ID and version != VERSION:
        newer = " (written by a newer cardio)" if version > VERSION else ""
        return f"a kiosk journal of schema version {version}, not {VERSION}{newer}", False
    if app == 0 and version != 0:
        return f"an SQLite database of another program (user_version {version})", False
    # A journal holds tables and indexes only. A trigger would run inside recovery's own
    # writes (and could change what it pays); a view could stand in for a table. Neither is
    # ever the kiosk's (review of issue 22, finding 12).
    extra = db.execute("SELECT type, name FROM sqlite_master WHERE type IN"
                       " ('trigger', 'view') ORDER BY type, name LIMIT 1").fetchone()
    if extra is not None:
        return f"a database with a {extra[0]} ({_show(extra[1])}), which no kiosk journal" \
            " has", False
    for table, columns in COLUMNS.items():
        have = tuple(r[1] for r in db.execute(f"PRAGMA table_info({table})"))
        if not have:
            return f"a database without the journal's {table} table", False
        if have != columns:
            return f"a database whose {table} table is not the journal's", False
    return None, app == 0


# -- can the books be added up? ---------------------------------------------------------------


def books_problem(db: sqlite3.Connection) -> tuple[str, str] | None:
    """``(txn, problem)`` of the first session whose stored values cannot be summed."""
    bad = " OR ".join(
        [f"typeof({c})!='integer' OR {c}<0 OR {c}>{MAX_SESSION_YEN} OR {c}%10!=0"
         for c in AMOUNTS]
        + [f"typeof({c})!='integer' OR {c} NOT IN (0,1)" for c in FLAGS]
        + ["(closed=1) != (state='done')", "(closed=1 AND escrow!=0)",
           "typeof(txn)!='text'"])
    row = db.execute(f"SELECT * FROM sessions WHERE {bad} LIMIT 1").fetchone()
    if row is None:
        return None
    s = dict(zip(COLUMNS["sessions"], row, strict=True))
    return _txn(s["txn"]), _row_problem(s) or "a closed session that did not end"


def _txn(v: object) -> str:
    return v if isinstance(v, str) and _TXN.fullmatch(v) else _show(v)


def _row_problem(s: dict[str, object]) -> str | None:
    """What is wrong with one sessions row taken alone."""
    if not isinstance(s["txn"], str) or not _TXN.fullmatch(s["txn"]):
        return f"the transaction id {_show(s['txn'])} is not one the kiosk makes"
    for c in AMOUNTS:
        if (p := _amount(c, s[c])) is not None:
            return p
    for c in FLAGS:
        if (p := _flag(c, s[c])) is not None:
            return p
    for c in ("request_id", "session_id", "reason"):
        v = s[c]
        if not isinstance(v, str) or not _PRINTABLE.fullmatch(v):
            return f"{c} is {_show(v)}, not a printable id or reason code"
    if s["state"] not in _STATES:
        return f"state is {_show(s['state'])}, not a session state"
    if s["outcome"] not in _OUTCOMES:
        return f"outcome is {_show(s['outcome'])}, not a session outcome"
    if s["reason"] and not s["outcome"]:
        return f"a reason ({_show(s['reason'])}) without an outcome"
    if s["finalize_outcome"] not in _FINALIZE:
        return f"finalize_outcome is {_show(s['finalize_outcome'])}"
    if s["doc_digest"] is not None and not isinstance(s["doc_digest"], bytes):
        return f"doc_digest is {_show(s['doc_digest'])}, not a digest"
    if (s["closed"] == 1) != (s["state"] == State.DONE.value):
        return f"closed is {s['closed']} in state {s['state']}"
    if s["closed"] == 1 and s["escrow"]:
        return f"a closed session with {s['escrow']} yen still in escrow"
    return None


# -- may recovery act on it? --------------------------------------------------------------------


def orphans(db: sqlite3.Connection) -> list[str]:
    """Transactions with commands or steps but no session row (a deleted or garbled row):
    whatever they owe, no session says it."""
    found = db.execute(
        "SELECT DISTINCT txn FROM commands WHERE txn NOT IN (SELECT txn FROM sessions)"
        " UNION SELECT DISTINCT txn FROM steps WHERE txn NOT IN (SELECT txn FROM sessions)"
    ).fetchall()
    return sorted(_txn(r[0]) for r in found)


def session_problem(db: sqlite3.Connection, txn: str) -> str | None:
    """Why recovery must not act on the unfinished session ``txn`` (``None``: it may)."""
    row = db.execute("SELECT * FROM sessions WHERE txn=?", (txn,)).fetchone()
    if row is None:
        return "no such session"
    s = dict(zip(COLUMNS["sessions"], row, strict=True))
    if (p := _row_problem(s)) is not None:
        return p
    if s["closed"]:
        return "the session is closed"
    cmds = db.execute(
        "SELECT key, txn, seq, kind, yen, detail, digest, done, result FROM commands"
        " WHERE txn=? OR substr(key, 1, ?)=? ORDER BY seq, rowid",
        (txn, len(txn) + 1, f"{txn}:")).fetchall()
    by_kind: dict[str, tuple[str, int, int, int | None]] = {}
    seqs: list[int] = []
    last_n = 0
    for key, ctxn, seq, kind, yen, detail, digest, done, result in cmds:
        if ctxn != txn or not isinstance(key, str) or not key.startswith(f"{txn}:"):
            return f"command {_show(key)} is filed under another session"
        m = _KEY.fullmatch(key)
        if m is None or m["txn"] != txn or m["kind"] != kind or kind not in KINDS:
            return f"command {_show(key)} is garbled (kind {_show(kind)})"
        if type(seq) is not int or seq < 1:
            return f"command {key} has sequence number {_show(seq)}"
        if (p := _amount(f"command {key}: yen", yen)) is not None:
            return p
        if (p := _flag(f"command {key}: done", done)) is not None:
            return p
        if result is not None and type(result) is not int:
            return f"command {key}: result is {_show(result)}, not a number"
        if not done and result is not None:
            return f"command {key} has a result ({result}) but no answer"
        if kind in MONEY_KINDS and done and (p := _amount(f"command {key}: result",
                                                           result)) is not None:
            return p
        if kind not in MONEY_KINDS and result is not None and not 0 <= result <= 99:
            return f"command {key}: result is {result}, not a count of tries or 0/1"
        if digest is not None and not isinstance(digest, bytes):
            return f"command {key}: digest is {_show(digest)}"
        try:
            fields = json.loads(detail)
            if not isinstance(fields, dict):
                raise ValueError
        except (TypeError, ValueError):
            return f"command {key}: its detail is garbled"
        if "crc" in fields and fields["crc"] != row_check(key, txn, seq, kind, yen):
            return f"command {key} does not match its own checksum"
        if (p := _payout_problem(db, key, fields)) is not None:
            return p
        for name in ("request_id", "session_id"):  # the center calls name their session
            if fields.get(name) and fields[name] != s[name]:
                return f"command {key} is for {name} {_show(fields[name])}, the session's" \
                    f" is {_show(s[name])}"
        if kind == "startcashin" and yen != s["fee"]:
            return f"command {key} took payment for {yen} yen, the fee is {s['fee']}"
        if m["n"] != "r":
            if int(m["n"]) <= last_n:
                return f"command {key} is out of order"
            last_n = int(m["n"])
            # (Once recovery has held a session for the card, a release it never made stays
            # unanswered in another state; recovery makes it under the same key.)
            if kind in PHYSICAL and not done and AWAITS.get(str(s["state"])) != kind \
                    and not s["recovered"]:
                return f"command {key} is unanswered but the session is in state {s['state']}"
        if kind in PHYSICAL and kind in by_kind:
            return f"two {kind} commands ({by_kind[kind][0]} and {key})"
        by_kind[kind] = (key, yen, done, result)
        seqs.append(seq)
    if seqs != list(range(1, len(seqs) + 1)):
        return "a command row is missing (sequence numbers " + \
            ", ".join(map(str, seqs[:12])) + ")"
    return _money_problem(s, by_kind) or _steps_problem(db, txn, {c[0] for c in cmds})


def _money_problem(s: dict[str, object],
                   cmds: dict[str, tuple[str, int, int, int | None]]) -> str | None:
    """The core's money identities (kiosk.session.core) on an unfinished session."""
    fee, escrow, cash_in, stacked, due, paid, refund = (
        _int(s, c) for c in ("fee", "escrow", "cash_in", "stacked", "change_due",
                             "change_paid", "refund"))
    state = str(s["state"])
    if cash_in + escrow > MAX_SESSION_YEN:
        return f"{cash_in + escrow} yen in one session"
    if stacked > cash_in:
        return f"stacked {stacked} is more than the cash taken in ({cash_in})"
    if due != max(0, stacked - fee):
        return f"change due {due} is not stacked {stacked} less the fee {fee}"
    if paid > due:
        return f"change paid {paid} is more than the change due {due}"
    if escrow and state not in _ESCROW_STATES:
        return f"{escrow} yen in escrow in state {state}"
    pay = cmds.get("paychange")
    owed = (cash_in - stacked) + (min(fee, stacked) if s["fee_refunded"] else 0) + \
        (due - paid if pay is not None and pay[2] else 0)
    if refund != owed:
        return f"refund {refund} is not what the session owes ({owed})"
    stack = cmds.get("stackescrow")
    if stack is None and (stacked or s["printed"] or state in ("paying-change", "printing")):
        return "money was stacked but the stack command is missing"
    if stack is not None and stack[2] and stack[3] != stacked:
        return f"stacked {stacked} but the stack command says {stack[3]}"
    if stack is not None and not stack[2] and stack[1] != escrow:
        return f"the stack command is for {stack[1]} yen, the escrow holds {escrow}"
    ret = cmds.get("returnescrow")
    if ret is not None and not ret[2] and ret[1] != escrow:
        return f"the return command is for {ret[1]} yen, the escrow holds {escrow}"
    if pay is None and (paid or (due and state not in ("stacking",))):
        return "change is due or paid but the change command is missing"
    if pay is not None and pay[1] != due:
        return f"the change command is for {pay[1]} yen, the change due is {due}"
    if pay is not None and pay[2] and paid != min(int(pay[3] or 0), due):
        return f"change paid {paid} but the change command says {pay[3]}"
    if state == "printing" and due and (pay is None or not pay[2]):
        return "printing before the change was paid"
    doc = cmds.get("printdocument")
    if doc is None and (s["printed"] or state == "printing"):
        return "a document was printed but the print command is missing"
    if s["printed"] and (stacked < fee or s["fee_refunded"]):
        return "printed, yet not paid for or its fee refunded"
    if doc is not None and bool(s["printed"]) != bool(doc[2] and doc[3] == 1):
        return f"printed is {s['printed']} but the print command says {doc[3]}"
    slip = cmds.get("printslip")
    if slip is not None and slip[1] > refund:
        return f"the slip says {slip[1]} yen, more than the refund due ({refund})"
    if state in AWAITS and AWAITS[state] not in cmds:
        return f"state {state} but its {AWAITS[state]} command is missing"
    return None


def _int(s: dict[str, object], column: str) -> int:
    v = s[column]
    assert isinstance(v, int)  # checked by _row_problem before
    return v


def _steps_problem(db: sqlite3.Connection, txn: str, keys: set[str]) -> str | None:
    """Every reply the session journalled answers a command it still has."""
    for (reply_key,) in db.execute(
            "SELECT reply_key FROM steps WHERE txn=? AND reply_key!=''", (txn,)):
        if reply_key not in keys:
            return f"a reply to {_show(reply_key)} is journalled but its command is missing"
    return None
