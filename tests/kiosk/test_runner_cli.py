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
