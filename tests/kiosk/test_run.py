"""The card-removal interlock across a crash (``cardio kiosk run``/``recover``/``issue``):
recovery at start settles the money but releases nothing — no printed page, no 未交付 slip —
while a card is in the slot; it waits for the slot to report the removal, as a live session
does, and only then opens the held output. (The end-to-end ``kiosk run`` over real devices
is ``test_runner.py``; here the journal, the held-output directory and the slot.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cardio.cli import main
from kiosk.session import events as E
from kiosk.session.journal import Journal
from tests.kiosk.test_runner_cli import _drive_to_payment, crashed_at_print


def printed_awaiting_card(j: Journal, txn: str) -> None:
    """A session whose document printed into the held output and which crashed while it
    waited for the card to be taken (¥1000 for a ¥200 fee, ¥800 change paid)."""
    s = _drive_to_payment(j, txn, 1000)
    j.step(s, E.DocumentReceived(key=s.pending, document=object(), digest="ab" * 32))
    j.step(s, E.EscrowStacked(key=s.pending, yen=1000))
    j.step(s, E.ChangePaid(key=s.pending, yen=800))
    j.step(s, E.PrintDone(key=s.pending))
    assert s.state.value == "await-card-removal" and s.card_present


def crashed_with_pages_held(tmp: Path) -> tuple[Path, Path]:
    """The journal (one printed session waiting for the card, one crashed at print — its
    refund slip is made by recovery) and the output directory with the printed page held."""
    journal, out = tmp / "journal.db", tmp / "out"
    with Journal(journal) as j:
        printed_awaiting_card(j, "Tprinted")
        crashed_at_print(j, "Tslip")
    (out / ".held").mkdir(parents=True)
    (out / ".held" / "juminhyo-req-Tprinted.pdf").write_bytes(b"%PDF-1.7 the page")
    return journal, out


def released(out: Path) -> list[str]:
    """What a person could take: the files outside the held output."""
    return sorted(p.name for p in out.iterdir() if p.is_file())


def open_sessions(journal: Path) -> list[str]:
    with Journal(journal, readonly=True) as j:  # beside a live writer: reads take no lock
        return j.open_sessions()


class FakeSlot:
    def __init__(self, present: bool) -> None:
        self.card = present
        self.asked = 0

    def present(self) -> bool:
        self.asked += 1
        return self.card


def test_recovery_with_a_card_in_the_slot_releases_nothing(tmp_path: Path) -> None:
    from kiosk.runner import start_recovery

    journal, out = crashed_with_pages_held(tmp_path)
    slot = FakeSlot(True)
    with Journal(journal) as j:
        done = start_recovery(j, out, None, card_present=slot.present)
    assert {r["txn"]: r["held_for_card"] for r in done} == {"Tprinted": True, "Tslip": True}
    assert released(out) == []  # neither the page nor the slip
    # The slip is not even made while the card is in (a kiosk printer would put it out at
    # once): it comes with the recovery after the removal.
    assert sorted((out / ".held").iterdir()) == [out / ".held" / "juminhyo-req-Tprinted.pdf"]
    assert open_sessions(journal) == ["Tprinted", "Tslip"]
    slot.card = False
    with Journal(journal) as j:
        again = start_recovery(j, out, None, card_present=slot.present)
        ledger = j.ledger()
    assert {r["txn"]: r["held_for_card"] for r in again} == {"Tprinted": False,
                                                             "Tslip": False}
    assert released(out) == ["juminhyo-req-Tprinted.pdf", "slip-Tslip.pdf"]
    assert ledger.sessions_open == 0 and ledger.balanced and ledger.documents_printed == 1


def test_kiosk_run_waits_for_the_card_before_it_releases(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``kiosk run``'s recovery at start: with the card in the slot it holds everything and
    waits; the slot reporting the removal releases the page and the slip, then it serves."""
    from kiosk.run import recover_at_start

    journal, out = crashed_with_pages_held(tmp_path)
    slot = FakeSlot(True)

    async def scenario() -> list[dict[str, object]]:
        stop = asyncio.Event()
        with Journal(journal) as j:
            task = asyncio.create_task(recover_at_start(j, out, None, slot, stop, poll=0.02))
            await asyncio.sleep(0.5)
            assert not task.done()  # still waiting for the card
            assert released(out) == [] and slot.asked > 3
            assert open_sessions(journal) == ["Tprinted", "Tslip"]
            slot.card = False
            return await asyncio.wait_for(task, 5)

    recovered = asyncio.run(scenario())
    assert released(out) == ["juminhyo-req-Tprinted.pdf", "slip-Tslip.pdf"]
    assert open_sessions(journal) == []
    assert {r["txn"]: (r["outcome"], r["held_for_card"]) for r in recovered} == {
        "Tprinted": ("printed", False), "Tslip": ("failed_refund_due", False)}
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    waiting = [m for m in lines if m["event"] == "awaiting-card-removal"]
    assert waiting and waiting[0]["txns"] == ["Tprinted", "Tslip"]


def test_kiosk_run_stopped_while_waiting_releases_nothing(tmp_path: Path) -> None:
    from kiosk.run import recover_at_start

    journal, out = crashed_with_pages_held(tmp_path)

    async def scenario() -> None:
        stop = asyncio.Event()
        with Journal(journal) as j:
            task = asyncio.create_task(recover_at_start(j, out, None, FakeSlot(True), stop,
                                                        poll=0.02))
            await asyncio.sleep(0.2)
            stop.set()  # SIGTERM while the card is still in
            await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert released(out) == [] and open_sessions(journal) == ["Tprinted", "Tslip"]


def test_kiosk_recover_with_the_reader_holds_for_the_card(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal, out = crashed_with_pages_held(tmp_path)
    card = tmp_path / "card"  # emu:DIR: the software card is in the slot while DIR exists
    card.mkdir()
    argv = ["kiosk", "recover", "--journal", str(journal), "--out", str(out),
            "--reader", f"emu:{card}"]
    assert main(argv) == 0
    assert "(held: card in slot)" in capsys.readouterr().out
    assert released(out) == [] and open_sessions(journal) == ["Tprinted", "Tslip"]
    card.rmdir()
    assert main([*argv, "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert not any(r["held_for_card"] for r in done["recovered"])
    assert released(out) == ["juminhyo-req-Tprinted.pdf", "slip-Tslip.pdf"]
    assert done["ledger"]["sessions_open"] == 0
