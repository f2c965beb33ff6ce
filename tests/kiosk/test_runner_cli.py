"""``cardio kiosk ledger`` and ``cardio kiosk recover`` over a real journal file, written by
the real core through :meth:`Journal.step` and left unfinished as a crash leaves it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from cardio.cli import main
from kiosk.session import commands as C
from kiosk.session import events as E
from kiosk.session.core import IssuanceSession, State
from kiosk.session.journal import Journal


def _drive_to_payment(j: Journal, txn: str, yen: int, fee: int = 200, *, request_id: str = "",
                      session_id: str = "", municipality: str = "131016") -> IssuanceSession:
    s = IssuanceSession(txn, request_id or f"req-{txn}", "kiosk-0001", lambda _e, _d: None,
                        pin_reset=False)

    def step(ev: E.Event) -> list[C.Command]:
        return j.step(s, ev)

    def reply(cls: type[E.Reply], **kw: object) -> list[C.Command]:
        return step(cls(key=s.pending, **kw))

    step(E.CardInserted())
    reply(E.CardRead, tries_left=3, cert_sha256="00" * 32)
    step(E.PinDigits(4))
    step(E.PinSubmitted())
    reply(E.PinResult, verified=True, tries_left=3)
    reply(E.Authenticated, session_id=session_id or f"sess-{txn}",
          municipality_code=municipality)
    reply(E.MenuReceived, items=(E.MenuItem("juminhyo", fee),))
    step(E.Choose("juminhyo"))
    step(E.OptionsConfirmed(()))
    step(E.QuoteAccepted())
    step(E.CashCredited(yen))
    return s


def crashed_at_print(j: Journal, txn: str, **ids: str) -> None:
    """A session whose print was sent and never answered: ¥1000 stacked for a ¥200 fee,
    ¥800 change paid."""
    s = _drive_to_payment(j, txn, 1000, **ids)
    assert s.state is State.FETCHING
    j.step(s, E.DocumentReceived(key=s.pending, document=object(), digest="ab" * 32))
    j.step(s, E.EscrowStacked(key=s.pending, yen=1000))
    j.step(s, E.ChangePaid(key=s.pending, yen=800))
    assert s.state.value == "printing"


def crashed_at_change(j: Journal, txn: str) -> None:
    """A session that stacked ¥1000 for a ¥200 fee and crashed before the hoppers answered
    the ¥800 change."""
    s = _drive_to_payment(j, txn, 1000)
    j.step(s, E.DocumentReceived(key=s.pending, document=object(), digest="ab" * 32))
    j.step(s, E.EscrowStacked(key=s.pending, yen=1000))
    assert s.state.value == "paying-change"


def crashed_journal(path: Path) -> None:
    """Two sessions a crash left open: one paying (¥500 in escrow of a ¥1000 fee), one
    whose print was sent and never answered (fee ¥200) (¥1000 stacked, ¥800 change paid)."""
    with Journal(path) as j:
        s = _drive_to_payment(j, "Tpay", 500, fee=1000)
        assert s.state is State.PAYMENT
        crashed_at_print(j, "Tprint")


def test_ledger_and_recover(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "journal.db"
    crashed_journal(journal)
    assert main(["kiosk", "ledger", "--journal", str(journal), "--json"]) == 24
    before = json.loads(capsys.readouterr().out)
    # Open: the ¥1000 stacked is in, ¥800 went out, nothing printed, nothing yet owed.
    assert before == {"cash_in": 1000, "change_out": 800, "fees_printed": 0,
                      "refunds_due": 0, "sessions_open": 2, "documents_printed": 0,
                      "balanced": False}

    out = tmp_path / "out"
    assert main(["kiosk", "recover", "--journal", str(journal), "--out", str(out),
                 "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    by_txn = {r["txn"]: r for r in done["recovered"]}
    assert by_txn["Tpay"]["outcome"] == "cancelled"
    assert by_txn["Tprint"]["outcome"] == "failed_refund_due"
    # Unconfirmed escrow is owed back in full; the unprinted fee is refunded.
    assert done["ledger"] == {"cash_in": 1500, "change_out": 800, "fees_printed": 0,
                              "refunds_due": 700, "sessions_open": 0,
                              "documents_printed": 0, "balanced": True}
    slips = sorted(p.name for p in out.iterdir() if p.is_file())
    assert slips == ["slip-Tpay.pdf", "slip-Tprint.pdf"]
    assert "500 円" in pdf_text(out / "slip-Tpay.pdf")
    assert "200 円" in pdf_text(out / "slip-Tprint.pdf")
    # Both owe the center a finalize (it never heard how they ended).
    with Journal(journal) as j:
        owed = {t[0]: t[3] for t in j.owed_finalizes()}
    assert owed == {"Tpay": "cancelled", "Tprint": "failed"}

    # Idempotent: nothing left to recover, books still balanced.
    assert main(["kiosk", "recover", "--journal", str(journal)]) == 0
    assert capsys.readouterr().out.strip() == "nothing to recover"
    assert main(["kiosk", "ledger", "--journal", str(journal)]) == 0
    assert "balanced           True" in capsys.readouterr().out


def test_unbalanced_books_exit_24(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "journal.db"
    crashed_journal(journal)
    assert main(["kiosk", "recover", "--journal", str(journal)]) == 0
    db = sqlite3.connect(journal)
    db.execute("UPDATE sessions SET refund = refund - 100 WHERE txn='Tpay'")
    db.commit()
    db.close()
    capsys.readouterr()
    assert main(["kiosk", "ledger", "--journal", str(journal), "--json"]) == 24
    assert json.loads(capsys.readouterr().out)["balanced"] is False


def test_missing_journal_is_a_clear_error(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("ledger", "recover"):
        assert main(["kiosk", cmd, "--journal", str(tmp_path / "none.db")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no kiosk journal at" in err
        assert not (tmp_path / "none.db").exists()  # not created by looking


def pdf_text(path: Path) -> str:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(path.read_bytes())
    try:
        return "".join(page.get_textpage().get_text_range() for page in doc)
    finally:
        doc.close()


# -- a file that is not a kiosk journal is refused, and left as it was -------------------------


def _stamp(path: Path, *, application_id: int | None = None,
           user_version: int | None = None, drop: str = "") -> None:
    """Change a journal's identity the way another program (or an old cardio) would."""
    db = sqlite3.connect(path)
    if application_id is not None:
        db.execute(f"PRAGMA application_id={application_id}")
    if user_version is not None:
        db.execute(f"PRAGMA user_version={user_version}")
    if drop:
        db.execute(f"DROP TABLE {drop}")
    db.commit()
    db.close()


def not_journals(tmp: Path) -> dict[str, Path]:
    """Files a careless operator might point ``--journal`` at."""
    files: dict[str, Path] = {}
    files["empty"] = tmp / "empty.db"
    files["empty"].write_bytes(b"")
    files["text"] = tmp / "notes.db"
    files["text"].write_bytes("これは日誌ではない\n".encode() * 200)
    files["foreign"] = tmp / "accounts.db"
    db = sqlite3.connect(files["foreign"])
    db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT, balance INTEGER)")
    db.execute("INSERT INTO accounts VALUES (1, 'x', 100)")
    db.commit()
    db.close()
    files["foreign-wal"] = tmp / "other-wal.db"
    db = sqlite3.connect(files["foreign-wal"])
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (a)")
    db.commit()
    db.close()
    files["same-table-name"] = tmp / "lookalike.db"
    db = sqlite3.connect(files["same-table-name"])
    db.execute("CREATE TABLE sessions (txn TEXT, cash_in INTEGER)")
    db.commit()
    db.close()
    for name, change in (("missing-tables", {"drop": "commands"}),
                         ("foreign-application-id", {"application_id": 0x46495245}),
                         ("newer-version", {"user_version": 99})):
        files[name] = tmp / f"{name}.db"
        with Journal(files[name]) as j:
            crashed_at_print(j, "Tprint")
        _stamp(files[name], **change)  # type: ignore[arg-type]
    return files


@pytest.mark.parametrize("cmd", ["ledger", "recover"])
def test_a_file_that_is_not_a_journal_is_refused_untouched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], cmd: str) -> None:
    files = not_journals(tmp_path)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    out = tmp_path / "out"
    for name, path in files.items():
        extra = ["--out", str(out)] if cmd == "recover" else []
        rc = main(["kiosk", cmd, "--journal", str(path), "--json", *extra])
        captured = capsys.readouterr()
        assert rc == 1, (name, rc, captured)
        assert captured.out == "", name
        assert captured.err.count("\n") == 1 and "not a kiosk journal" in captured.err, (
            name, captured.err)
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    # Not a byte written, no table created, no -wal/-shm left beside a foreign file.
    assert after == before
    assert not out.exists()


def test_the_runner_refuses_a_foreign_database_before_writing(tmp_path: Path) -> None:
    from kiosk.session.journal import JournalError

    path = not_journals(tmp_path)["foreign"]
    data = path.read_bytes()
    with pytest.raises(JournalError, match="not a kiosk journal"):
        Journal(path)
    assert path.read_bytes() == data


def test_a_new_journal_carries_its_identity(tmp_path: Path) -> None:
    from kiosk.session.journal import JOURNAL_APPLICATION_ID, JOURNAL_VERSION

    with Journal(tmp_path / "j.db") as j:
        crashed_at_print(j, "Tprint")
    db = sqlite3.connect(tmp_path / "j.db")
    assert db.execute("PRAGMA application_id").fetchone()[0] == JOURNAL_APPLICATION_ID
    assert db.execute("PRAGMA user_version").fetchone()[0] == JOURNAL_VERSION == 1
    db.close()


def test_a_journal_from_before_the_identity_is_read_and_stamped_only_when_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kiosk.session.journal import JOURNAL_APPLICATION_ID

    path = tmp_path / "old.db"
    with Journal(path) as j:
        crashed_at_print(j, "Tprint")
    _stamp(path, application_id=0, user_version=0)  # as every journal was before
    data, mtime = path.read_bytes(), path.stat().st_mtime_ns
    assert main(["kiosk", "ledger", "--journal", str(path), "--json"]) == 24  # open session
    assert json.loads(capsys.readouterr().out)["cash_in"] == 1000
    assert (path.read_bytes(), path.stat().st_mtime_ns) == (data, mtime)  # read-only
    assert main(["kiosk", "recover", "--journal", str(path), "--json"]) == 0
    capsys.readouterr()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA application_id").fetchone()[0] == JOURNAL_APPLICATION_ID
    db.close()


def test_ledger_writes_nothing_to_a_journal(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "journal.db"
    crashed_journal(path)
    data, mtime = path.read_bytes(), path.stat().st_mtime_ns
    assert main(["kiosk", "ledger", "--journal", str(path), "--json"]) == 24
    assert json.loads(capsys.readouterr().out)["sessions_open"] == 2
    assert (path.read_bytes(), path.stat().st_mtime_ns) == (data, mtime)


def test_recover_beside_a_live_writer_refuses_at_once(tmp_path: Path) -> None:
    """Review of issue 22, finding 6: ``kiosk recover`` beside a live ``kiosk run`` on the
    same journal settled the live session (returned its escrow, refunded it). A writer of
    the journal holds an exclusive lock for as long as it is open; a second writer — in
    another process, as ``kiosk recover`` is — is refused at once with one line and
    changes nothing; ``kiosk ledger`` (read-only) still reads the books."""
    import subprocess
    import sys

    path = tmp_path / "journal.db"
    live = Journal(path)  # the running kiosk's journal, mid-session
    s = _drive_to_payment(live, "Tlive", 500, fee=1000)
    assert s.state is State.PAYMENT
    try:
        before = path.read_bytes(), Path(f"{path}-wal").read_bytes()
        cmd = [sys.executable, "-m", "cardio.cli", "kiosk"]
        rec = subprocess.run([*cmd, "recover", "--journal", str(path), "--out",
                              str(tmp_path / "out"), "--json"],
                             capture_output=True, text=True, timeout=60)
        assert rec.returncode == 1, rec.stderr
        assert len(rec.stderr.strip().splitlines()) == 1 and "in use by process" in rec.stderr
        assert str(__import__("os").getpid()) in rec.stderr and rec.stdout == ""
        assert (path.read_bytes(), Path(f"{path}-wal").read_bytes()) == before
        assert not (tmp_path / "out").exists()
        led = subprocess.run([*cmd, "ledger", "--journal", str(path), "--json"],
                             capture_output=True, text=True, timeout=60)
        assert json.loads(led.stdout)["sessions_open"] == 1, led.stderr
        assert live.session_row("Tlive")["state"] == "payment"  # untouched
    finally:
        live.close()
    # Once the kiosk has stopped, recovery runs.
    assert main(["kiosk", "recover", "--journal", str(path), "--out",
                 str(tmp_path / "out"), "--json"]) == 0


@pytest.mark.parametrize("plant", [
    "CREATE TRIGGER pay AFTER UPDATE ON sessions BEGIN"
    " UPDATE sessions SET refund=refund+1000; END",
    "CREATE VIEW v AS SELECT txn FROM sessions",
])
def test_a_journal_with_a_trigger_or_view_is_refused_untouched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], plant: str) -> None:
    """Review of issue 22, finding 12: a trigger planted in the journal ran inside
    recovery's own writes. A journal has tables and indexes only: anything else is refused
    with one line, before a byte is written or a device asked."""
    path = tmp_path / "journal.db"
    crashed_journal(path)
    db = sqlite3.connect(path)
    db.execute(plant)
    db.commit()
    db.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for argv in (["kiosk", "recover", "--journal", str(path), "--out", str(tmp_path / "out")],
                 ["kiosk", "ledger", "--journal", str(path)]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("trigger" in err or "view" in err), err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_forged_amount_beyond_one_session_is_left_for_staff(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Review of issue 22, finding 11: a self-consistent forged escrow of ¥50,000 (far
    beyond one session: the fee ≤ ¥1,000 plus one ¥10,000 note and coins in flight) was
    owed back with a slip; now it is left for staff (exit 24), no slip."""
    from kiosk.session.journal_check import MAX_SESSION_YEN

    assert MAX_SESSION_YEN == 20_000
    path = tmp_path / "journal.db"
    with Journal(path) as j:
        _drive_to_payment(j, "Tforged", 500, fee=1000)
    db = sqlite3.connect(path)
    db.execute("UPDATE sessions SET escrow=50000 WHERE txn='Tforged'")
    db.commit()
    db.close()
    out = tmp_path / "out"
    assert main(["kiosk", "recover", "--journal", str(path), "--out", str(out)]) == 24
    assert "50000" in capsys.readouterr().err
    assert not out.exists() or not list(out.rglob("*.pdf"))


def test_the_core_refuses_a_fee_no_session_may_take() -> None:
    """A menu line dearer than MAX_FEE is refused at the menu: no session takes in more
    than the journal vouches for."""
    from kiosk.session.core import MAX_FEE

    s = IssuanceSession("Tfee", "req-Tfee", "kiosk-0001", lambda _e, _d: None,
                        pin_reset=False)
    s.handle(E.CardInserted())
    s.handle(E.CardRead(key=s.pending, tries_left=3, cert_sha256="00" * 32))
    s.handle(E.PinDigits(4))
    s.handle(E.PinSubmitted())
    s.handle(E.PinResult(key=s.pending, verified=True, tries_left=3))
    s.handle(E.Authenticated(key=s.pending, session_id="sess", municipality_code="131016"))
    s.handle(E.MenuReceived(key=s.pending, items=(E.MenuItem("koseki", MAX_FEE + 10),
                                                  E.MenuItem("juminhyo", 200))))
    s.handle(E.Choose("koseki"))
    assert s.state is State.MENU and s.fee == 0
    s.handle(E.Choose("juminhyo"))
    assert s.state is State.OPTIONS


def test_the_writer_lock_is_released_and_emptied_on_close(tmp_path: Path) -> None:
    """The lock names its holder only while it holds it (no stray digits at rest beside
    the journal, which the PIN searches read), and a closed journal can be opened again."""
    path = tmp_path / "journal.db"
    j = Journal(path)
    lock = tmp_path / "journal.db-lock"
    assert lock.read_text().strip() == str(__import__("os").getpid())
    from kiosk.session.journal import JournalInUse

    with pytest.raises(JournalInUse):
        Journal(path)
    j.close()
    assert lock.read_bytes() == b""
    Journal(path).close()
