"""The write-ahead journal: durable before the side effect, the ledger, recovery of each kind
of unfinished session (through the simulated devices as the recovery port), idempotent
recovery, and nothing personal at rest."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kiosk.session import commands as C
from kiosk.session import events as E
from kiosk.session.core import IssuanceSession, State
from kiosk.session.journal import Journal, JournalError
from kiosk.session.sim import (
    SIM_TIMEOUTS,
    Chooser,
    SimDocument,
    SimKiosk,
    World,
    check_books,
    journal_bytes_free_of,
    sim_binding_check,
)

CERT = "ab" * 32


class Flow:
    """A session of the real core through the real journal, against a World as devices."""

    def __init__(self, path: Path) -> None:
        self.j = Journal(path)
        self.w = World(txn="tflow", request_id="rflow")
        self.s = IssuanceSession("tflow", "rflow", "kiosk-aa", sim_binding_check,
                                 timeouts=SIM_TIMEOUTS)
        self.log: list[C.Command] = []

    def __call__(self, ev: E.Event) -> list[C.Command]:
        out = self.j.step(self.s, ev)
        self.log += out
        return out

    def key(self, kind: type[C.Command]) -> str:
        return [c for c in self.log if isinstance(c, kind)][-1].key

    def perform(self, kind: type[C.Command]) -> E.Event:
        cmd = [c for c in self.log if isinstance(c, kind)][-1]
        replies = self.w.perform(cmd, Chooser(), CERT)
        return replies[0]

    def until_stacking(self, *coins: int) -> None:
        self.w.card_present = True
        self(E.CardInserted())
        self(E.CardRead(self.key(C.ReadCard), 3, CERT))
        self.w.keypad = self.w.pin
        self(E.PinDigits(4))
        self(E.PinSubmitted())
        self(self.perform(C.VerifyPin))
        self(E.Authenticated(self.key(C.Authenticate), "sflow", "141003"))
        self(E.MenuReceived(self.key(C.LoadMenu), (E.MenuItem("juminhyo", 300),)))
        self(E.Choose("juminhyo"))
        self(E.OptionsConfirmed())
        self(E.QuoteAccepted())
        for y in coins:
            self.w.inserted += y
            self.w.escrow += y
            self(E.CashCredited(y))
        doc = SimDocument("rflow", "sflow", "kiosk-aa", CERT, "141003", "juminhyo", "山田　花子")
        self(E.DocumentReceived(self.key(C.RequestDocument), doc, doc.digest))
        assert self.s.state is State.STACKING


@pytest.fixture
def flow(tmp_path: Path) -> Flow:
    return Flow(tmp_path / "journal.db")


def test_journal_is_wal_with_full_sync(flow: Flow) -> None:
    assert flow.j._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert flow.j._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


class SyncLog:
    """The synchronous level of every commit the journal makes (SQLite's own trace of the
    statements it runs on the connection)."""

    def __init__(self, j: Journal) -> None:
        self.level = "FULL"
        self.commits: list[str] = []
        j._db.set_trace_callback(self.trace)

    def trace(self, sql: str) -> None:
        if sql.startswith("PRAGMA synchronous="):
            self.level = sql.split("=", 1)[1]
        elif sql == "COMMIT":
            self.commits.append(self.level)


def test_a_commit_is_fsynced_exactly_when_a_side_effect_follows_it(flow: Flow) -> None:
    log = SyncLog(flow.j)
    flow.w.card_present, flow.w.keypad = True, flow.w.pin
    flow(E.CardInserted())  # → ReadCard: the card is a side effect
    assert log.commits == ["FULL"]
    flow(E.CardRead(flow.key(C.ReadCard), 3, CERT))  # → the PIN screen only
    assert log.commits == ["FULL", "NORMAL"]
    flow(E.PinDigits(4))  # a count at rest, nothing performed on its strength
    flow(E.PinSubmitted())  # → VerifyPin: the card again
    assert log.commits[-1] == "FULL"
    assert flow.j._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    flow(flow.perform(C.VerifyPin))  # → Authenticate: the center
    flow(E.Authenticated(flow.key(C.Authenticate), "sflow", "141003"))
    flow(E.MenuReceived(flow.key(C.LoadMenu), (E.MenuItem("juminhyo", 300),)))
    flow(E.Choose("juminhyo"))  # → the options screen only
    assert log.commits[-1] == "NORMAL"
    flow.j.close()  # the crash, right after a NORMAL commit
    # Recovery and every other write outside step() is always fsynced.
    flow.w.card_present = False
    with Journal(flow.j.path) as again:
        log = SyncLog(again)
        (r,) = again.recover(flow.w)
        assert r.outcome == "cancelled"
        assert log.commits and set(log.commits) == {"FULL"}


def test_commands_are_durable_before_they_are_returned(flow: Flow) -> None:
    flow.until_stacking(1000)
    stack = flow.key(C.StackEscrow)
    # Another connection (another process after a crash) already sees the intent.
    other = sqlite3.connect(flow.j.path)
    row = other.execute("SELECT kind, yen, done FROM commands WHERE key=?", (stack,)).fetchone()
    assert row == ("stackescrow", 1000, 0)
    assert other.execute("SELECT state FROM sessions").fetchone() == ("stacking",)


def test_ticks_that_change_nothing_are_not_written(flow: Flow) -> None:
    flow.until_stacking(300)
    n = flow.j._db.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
    flow(E.Tick())
    assert flow.j._db.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == n


def test_ledger_after_a_printed_session(flow: Flow) -> None:
    flow.until_stacking(500, 100)
    flow(flow.perform(C.StackEscrow))
    flow(flow.perform(C.PayChange))
    flow(flow.perform(C.PrintDocument))
    flow.w.card_present = False
    flow(E.CardRemoved())
    flow(flow.perform(C.ReleasePages))
    flow(E.Finalized(flow.key(C.Finalize)))
    led = flow.j.ledger()
    assert led.as_dict() == {"cash_in": 600, "change_out": 300, "fees_printed": 300,
                             "refunds_due": 0, "sessions_open": 0, "documents_printed": 1,
                             "balanced": True}
    assert flow.j.owed_finalizes() == []


def test_recovery_returns_an_escrow_never_stacked(tmp_path: Path) -> None:
    f = Flow(tmp_path / "j.db")
    f.w.card_present = True
    f(E.CardInserted())
    f(E.CardRead(f.key(C.ReadCard), 3, CERT))
    f.w.keypad = f.w.pin
    f(E.PinDigits(4))
    f(E.PinSubmitted())
    f(f.perform(C.VerifyPin))
    f(E.Authenticated(f.key(C.Authenticate), "sflow", "141003"))
    f(E.MenuReceived(f.key(C.LoadMenu), (E.MenuItem("juminhyo", 300),)))
    f(E.Choose("juminhyo"))
    f(E.OptionsConfirmed())
    f(E.QuoteAccepted())
    f.w.inserted += 100
    f.w.escrow += 100
    f(E.CashCredited(100))
    f.j.close()  # the crash
    f.w.card_present = False
    j = Journal(tmp_path / "j.db")
    (r,) = j.recover(f.w)
    assert r.outcome == "cancelled" and not r.held_for_card
    assert f.w.returned == 100 and f.w.escrow == 0
    assert j.owed_finalizes() == [("tflow", "rflow", "sflow", "cancelled")]
    assert j.ledger().balanced and j.ledger().sessions_open == 0


def test_recovery_after_stack_without_print_refunds_with_a_slip(flow: Flow) -> None:
    flow.until_stacking(1000)
    flow.w.perform(next(c for c in flow.log if isinstance(c, C.StackEscrow)), Chooser(), CERT)
    # crashed before the stack's answer was journalled
    flow.w.card_present = False
    (r,) = flow.j.recover(flow.w)
    assert r.outcome == "failed_refund_due"
    assert flow.w.change_paid == 700  # change paid by recovery, under its own key
    assert flow.w.slips == {"tflow": 300}
    led = flow.j.ledger()
    assert (led.cash_in, led.change_out, led.refunds_due, led.fees_printed) == (1000, 700,
                                                                                300, 0)
    assert led.balanced
    # Idempotent: a second recovery (or a crash inside the first) changes nothing.
    assert flow.j.recover(flow.w) == []
    assert flow.w.change_paid == 700 and flow.j.ledger() == led


def test_recovery_confirms_a_print_that_finished_and_holds_for_the_card(flow: Flow) -> None:
    flow.until_stacking(300)
    flow(flow.perform(C.StackEscrow))
    flow.perform(C.PrintDocument)  # printed, answer lost in the crash
    (r,) = flow.j.recover(flow.w)
    assert r.outcome == "printed" and r.held_for_card  # card still in: nothing released
    assert flow.w.released == [] and flow.j.ledger().sessions_open == 1
    flow.w.card_present = False
    (r,) = flow.j.recover(flow.w)
    assert not r.held_for_card and flow.w.released == ["tflow"]
    assert flow.w.printed == {"tflow": 1}
    led = flow.j.ledger()
    assert led.balanced and led.documents_printed == 1 and led.sessions_open == 0


def test_recovery_never_reprints_a_job_that_did_not_finish(flow: Flow) -> None:
    flow.until_stacking(300)
    flow(flow.perform(C.StackEscrow))
    flow.w.jobs[flow.key(C.PrintDocument)] = "hung"
    flow.w.card_present = False
    (r,) = flow.j.recover(flow.w)
    assert r.outcome == "failed_refund_due"
    assert flow.w.jobs[flow.key(C.PrintDocument)] == "cancelled"
    assert flow.w.printed == {} and flow.j.ledger().refunds_due == 300


def test_finalize_owed_then_acknowledged(flow: Flow) -> None:
    flow.until_stacking(300)
    flow(flow.perform(C.StackEscrow))
    flow(flow.perform(C.PrintDocument))
    flow.w.card_present = False
    flow(E.CardRemoved())
    flow(flow.perform(C.ReleasePages))
    flow(E.ServerUnavailable(flow.key(C.Finalize)))
    assert flow.j.owed_finalizes() == [("tflow", "rflow", "sflow", "printed")]
    flow.j.mark_finalized("tflow")
    assert flow.j.owed_finalizes() == []


def test_no_personal_data_or_pin_at_rest(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    k = SimKiosk(j)
    records = [k.run(Chooser()) for _ in range(5)]
    check_books(j, k.world, records, k.world.pin)
    journal_bytes_free_of(j, k.world.pin, ["山田", "花子", "佐藤"])
    # Text columns hold ids, states and codes only.
    for (detail,) in j._db.execute("SELECT detail FROM commands"):
        assert all(ch.isascii() for ch in detail)


def test_the_planted_pin_search_would_find_a_leak(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    j._db.execute("INSERT INTO steps (txn, event, reply_key, state) VALUES "
                  "('t', 'pin=7391', '', 'x')")
    from kiosk.session.sim import Violation
    with pytest.raises(Violation, match="PIN"):
        journal_bytes_free_of(j, "7391", [])


def test_a_file_that_is_not_a_journal_is_a_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match="is not a kiosk journal: not an SQLite database"):
        Journal(bad)
    assert bad.read_bytes() == b"this is not sqlite" * 100


def test_a_journal_that_cannot_write_stops_the_side_effect(flow: Flow) -> None:
    flow.until_stacking(1000)
    flow.j._db.execute("PRAGMA query_only=1")  # forced fault: every write now fails
    with pytest.raises(JournalError, match="kiosk journal write failed"):
        flow(flow.perform(C.StackEscrow))
    # Nothing to perform was handed out, and the journal still shows the last durable state
    # (the runner stops; recovery at restart re-asks the stack under its key).
    assert not any(isinstance(c, C.PayChange) for c in flow.log)
    flow.j._db.execute("PRAGMA query_only=0")
    assert flow.j.session_row("tflow")["state"] == "stacking"
    flow.w.card_present = False
    (recovered,) = flow.j.recover(flow.w)
    assert recovered.outcome == "failed_refund_due"
    assert flow.j.ledger().balanced and flow.w.change_paid == 700


def test_the_ledger_beside_a_running_kiosk_sees_one_state(tmp_path: Path) -> None:
    """``kiosk ledger`` (read-only, another connection) while the kiosk writes sessions:
    the validation and the sums read one snapshot, so a commit landing between two of its
    queries is never taken for damage."""
    import os
    import tempfile
    import threading

    from kiosk.session.journal import JournalDamaged

    # The page cache is what the two connections share; a RAM file system keeps it fast.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = Path(tempfile.mkdtemp(dir=shm)) / "j.db" if shm else tmp_path / "j.db"
    writer = Journal(path)
    kiosk = SimKiosk(writer)
    done = threading.Event()
    errors: list[str] = []
    reads = [0]

    def read() -> None:
        with Journal(path, readonly=True) as reader:
            while not done.is_set():
                try:
                    reader.ledger()
                    reads[0] += 1
                except JournalDamaged as e:
                    errors.append(str(e))
                    return

    t = threading.Thread(target=read)
    t.start()
    try:
        for i in range(12):
            kiosk.run(Chooser([], chaos=5, faults=5, seed=i))
    finally:
        done.set()
        t.join(10)
        writer.close()
        if shm:
            import shutil

            shutil.rmtree(path.parent, ignore_errors=True)
    assert errors == [] and reads[0] > 0


def test_recovery_prints_no_slip_while_the_card_is_in_the_slot(flow: Flow) -> None:
    """Review of issue 22, finding 13: a kiosk printer's 未交付 slip comes out at once, so
    recovery must not print it while the card is still in the slot (the interlock: the
    slip waits like pages do); it prints once the card has left."""
    flow.until_stacking(300)
    flow(flow.perform(C.StackEscrow))
    flow.w.jobs[flow.key(C.PrintDocument)] = "hung"  # never printed: refund with a slip
    assert flow.w.card_present
    (r,) = flow.j.recover(flow.w)
    assert r.outcome == "failed_refund_due" and r.held_for_card
    assert flow.w.slips == {}  # nothing came out of the printer
    assert flow.j.ledger().refunds_due == 300  # the money is settled all the same
    flow.w.card_present = False
    (r,) = flow.j.recover(flow.w)
    assert not r.held_for_card and flow.w.slips == {"tflow": 300}
    assert flow.j.ledger().sessions_open == 0
