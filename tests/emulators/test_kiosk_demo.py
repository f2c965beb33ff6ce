"""``cardio demo kiosk`` — the README's main job: the clock it picks, and (slow) the whole
run as a user starts it: its summary must say what this run did (the kiosk's own session
line, the device lab's counters, the journal's books, the offline verifier's verdict),
and the PIN must be nowhere but on the card."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cardio import constants as c
from emulators.issuance.rules import Settings, closed_reason
from emulators.kiosk_demo import JST, service_clock
from kiosk.documents.model import DocumentType

SETTINGS = Settings(fees={"juminhyo": 300}, maintenance_days=("2026-12-20",))


def closed(when: dt.datetime) -> bool:
    return closed_reason(SETTINGS, DocumentType.JUMINHYO, when) is not None


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=JST)


def test_open_hours_keep_the_real_clock() -> None:
    start, note = service_clock(at(2026, 11, 26, 13, 25), closed)
    assert start is None and "real clock" in note and "2026-11-26 13:25 JST" in note


@pytest.mark.parametrize(("now", "expected"), [
    (at(2026, 11, 26, 3, 0), at(2026, 11, 26, 10, 0)),     # before 6:30: the same day
    (at(2026, 11, 26, 23, 30), at(2026, 11, 27, 10, 0)),   # after 23:00: the next day
    (at(2026, 12, 19, 23, 5), at(2026, 12, 21, 10, 0)),    # the maintenance day is skipped
    (at(2026, 12, 28, 23, 10), at(2027, 1, 4, 10, 0)),     # the year-end closure
    (at(2026, 12, 31, 12, 0), at(2027, 1, 4, 10, 0)),
])
def test_closed_hours_start_the_services_clock_at_the_next_opening(
        now: dt.datetime, expected: dt.datetime) -> None:
    start, note = service_clock(now, closed)
    assert start == expected and not closed(start)
    assert f"{expected:%Y-%m-%d %H:%M} JST" in note and "closed" in note


def test_a_utc_time_is_judged_in_japan() -> None:
    # 15:00 UTC is midnight in Japan: closed, although it is mid-afternoon in UTC.
    start, _ = service_clock(dt.datetime(2026, 11, 26, 15, 0, tzinfo=dt.UTC), closed)
    assert start == at(2026, 11, 27, 10, 0)


@pytest.mark.slow
def test_demo_kiosk_runs_end_to_end(tmp_path: Path) -> None:
    browser = Path("/usr/bin/chromium").exists()
    argv = [sys.executable, "-m", "cardio.cli", "demo", "kiosk", "--dir", str(tmp_path),
            "--json"] + ([] if browser else ["--no-browser"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDIO_")}
    res = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads(res.stdout)
    assert s["outcome"] == "printed" and s["document"] == "juminhyo" and s["reason"] is None
    # The money as the kiosk said it, as the hoppers counted it, as the journal books it.
    assert s["paid"] == 1000 and 0 < s["fee"] < 1000
    assert s["change"] == s["paid"] - s["fee"] == s["change_paid_by_hoppers"]
    led = s["ledger"]
    assert led["balanced"] and (led["cash_in"], led["change_out"], led["fees_printed"]) == (
        1000, s["change"], s["fee"])
    assert s["refund_due"] == 0
    # The page: a PDF, its PNG, a phone photo of it, and the offline verifier's verdict.
    files = {k: Path(v) for k, v in s["files"].items()}
    assert files["pdf"].read_bytes()[:5] == b"%PDF-"
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files["phone_photo"].read_bytes()[:2] == b"\xff\xd8"
    v = s["verdict"]
    assert v["status"] == "valid" and v["exit_code"] == 0
    assert v["fields"]["doc_type"] == "juminhyo"
    assert v["fields"]["municipality"] == s["municipality"]
    # The summary's session figures are the kiosk's own session line.
    lines = [json.loads(x) for x in (tmp_path / "logs" / "kiosk-run.out").read_text(
        encoding="utf-8").splitlines()]
    session = next(m for m in lines if m.get("event") == "session")
    assert (session["fee"], session["paid"], session["change"], session["request_id"]) == (
        s["fee"], s["paid"], s["change"], s["request_id"])
    if browser:
        assert Path(s["final_screenshot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "done" in s["screens"] or "take-pages" in s["screens"]
    # The PIN reached the card only: not in the summary, a log, the journal or a screen
    # file (the printed PDF's compressed bytes hold random digit runs: skipped).
    # The kiosk's side only: the emulated registers (issuance.db, jlis/) hold random
    # digit runs of their own (my numbers, dates) in which four digits turn up by chance.
    pin = card_pin(tmp_path / "wallet-card")
    kiosk_side = [tmp_path / "logs", tmp_path / "kiosk", tmp_path / "screens"]
    for f in (f for d in kiosk_side if d.is_dir() for f in d.rglob("*")):
        if f.is_file() and f.suffix not in (".pdf", ".png", ".jpg"):
            data = f.read_bytes()
            for rid in (s["request_id"], session["txn"]):
                data = data.replace(rid.encode(), b"")
            assert pin.encode() not in data, f
    assert pin not in res.stdout and pin not in res.stderr


def card_pin(card: Path) -> str:
    """The card's auth PIN, found the way an attacker with the card's storage would: the
    card keeps a salted digest, and there are only 10,000 four-digit PINs."""
    from emulators.card.store import CardStore

    state = CardStore(card).load().secrets[(c.AID_JPKI, c.JPKI_AUTH_PIN)]
    return next(p for p in (f"{i:04d}" for i in range(10_000)) if state.matches(p.encode()))
