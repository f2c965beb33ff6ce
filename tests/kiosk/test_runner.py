"""``cardio kiosk issue`` end to end: the real command, a software card behind ``emu:DIR``,
real HTTP to ``cardio emu issuance serve`` on 127.0.0.1, the emulated cash devices of
``cardio emu devices serve`` driven through the real ID-003/ccTalk drivers over their ptys;
checked through the JSON, the files, the journal's ledger, the devices' own counters, and
that the PIN is nowhere but on the card."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulators.card.keys import KeyPool
from emulators.devices.lab import control
from tests.emulators.devices.serve_helper import start_serve
from tests.emulators.issuance.conftest import Service, start_service, stop_service
from tests.emulators.issuance.kiosk_sim import Card

pytestmark = pytest.mark.slow

CARDIO = [sys.executable, "-m", "cardio.cli"]


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, key_pool: KeyPool,
            default_photo: bytes) -> Iterator[Service]:
    base = tmp_path_factory.mktemp("kiosk-backend")
    svc = start_service(base, f"sqlite:///{base / 'issuance.db'}", key_pool, default_photo,
                        workers=1, kiosks=1, residents=60)
    try:
        yield svc
    finally:
        stop_service(svc)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``cardio emu devices serve`` (with its IPP printer where this machine can run it;
    else the kiosk prints into an emulated output tray, ``--tray``) and the devices TOML a
    kiosk integrator writes for it."""
    from emulators.devices.printer import unavailable_reason

    printer = unavailable_reason() is None
    proc, info = start_serve() if printer else start_serve("--no-printer")
    toml = tmp_path_factory.mktemp("kiosk-lab") / "devices.toml"
    hoppers = "".join(f"[[hopper]]\naddress = {a}\ncoin = {c}\n"
                      for a, c in ((3, 500), (4, 100), (5, 50), (6, 10)))
    toml.write_text(f'[bill_validator]\nport = "{info["bill_validator"]}"\n'
                    f'[coin_acceptor]\nport = "{info["coin_acceptor"]}"\n{hoppers}'
                    f'[emulator]\ncontrol = "{info["control"]}"\n' +
                    (f'[printer]\nurl = "{info["printer"]}"\n' if printer else ""))
    try:
        yield {**info, "toml": toml}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def kiosk_issue(backend: Service, lab: dict[str, Any], card: Card, tmp: Path, insert: str,
                *, document: str = "juminhyo", pin: str | None = None,
                center: str | None = None, extra: tuple[str, ...] = ()
                ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {**backend.env, "KIOSK_PIN": pin if pin is not None else card.pin}
    res = subprocess.run([*CARDIO, "kiosk", "issue", "--reader", f"emu:{card.path}", *extra,
                          "--center", center or backend.info["center"], "--document", document,
                          "--pin-env", "KIOSK_PIN", "--insert", insert,
                          "--journal", str(tmp / "journal.db"), *tray_args(lab, tmp),
                          "--devices", str(lab["toml"]), "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.stdout, res.stderr
    return res, json.loads(res.stdout)


def tray_args(lab: dict[str, Any], tmp: Path) -> list[str]:
    """With the lab's printer, nothing of a certificate is written by the kiosk; without
    one, the emulated output tray."""
    return [] if lab.get("printer") else ["--tray", str(tmp / "out")]


def printed_pages(lab: dict[str, Any]) -> list[Path]:
    """What the lab's printer printed (its spool files, in order); without a printer,
    nothing."""
    if not lab.get("printer_dir"):
        return []
    pdir = Path(lab["printer_dir"])
    try:
        names = (pdir / "output-tray").read_text().split()
    except FileNotFoundError:
        return []
    return [pdir / "spool" / n for n in names]


def pages_of(lab: dict[str, Any], out: dict[str, Any], before: list[Path]) -> list[Path]:
    """The certificates a session produced (not 未交付 slips): new pages at the printer,
    else the tray's."""
    if lab.get("printer"):
        pages = printed_pages(lab)[len(before):]
    else:
        pages = [Path(f) for f in out["files"]]
    return [p for p in pages if "slip-" not in p.name.lower()]


def ledger(tmp: Path) -> dict[str, Any]:
    res = subprocess.run([*CARDIO, "kiosk", "ledger", "--journal", str(tmp / "journal.db"),
                          "--json"], capture_output=True, text=True, timeout=60)
    out: dict[str, Any] = json.loads(res.stdout)
    assert res.returncode == (0 if out["balanced"] else 24)
    return out


def hoppers_paid(lab: dict[str, Any]) -> int:
    state = control(lab["control"], op="state")["coin_acceptor"]
    return sum(int(coin) * int(h["paid_total"]) for coin, h in state["hoppers"].items())


def assert_pin_nowhere(pin: str, res: subprocess.CompletedProcess[str], tmp: Path,
                       ids: list[str]) -> None:
    """The PIN in no output, no journal byte (WAL included), no file of the output
    directory. Ids the kiosk made up (hex) are taken out first: a 4-digit PIN may occur in
    them by chance, which is no leak."""
    blobs = {"stdout": res.stdout.encode(), "stderr": res.stderr.encode()}
    for f in tmp.rglob("*"):
        # A printed certificate is compressed binary PDF full of numbers (offsets,
        # coordinates, the resident's own dates and addresses): four given digits turn up
        # there by chance (CI saw "1303" once). The PIN never reaches the renderer — it lives
        # in the keypad adapter only — so the search covers everything else: outputs, the
        # journal with its WAL, slips, the held directory's index.
        if f.is_file() and f.suffix != ".pdf":
            blobs[str(f)] = f.read_bytes()
    for name, data in blobs.items():
        for i in ids:
            data = data.replace(i.encode(), b"")
        assert pin.encode() not in data, name


def test_issue_prints_pays_change_and_balances(backend: Service, lab: dict[str, Any],
                                               tmp_path: Path) -> None:
    card = backend.card()
    before = hoppers_paid(lab)
    pages_before = printed_pages(lab)
    res, out = kiosk_issue(backend, lab, card, tmp_path, "1000")
    assert res.returncode == 0, res.stderr
    assert out["outcome"] == "printed" and out["document"] == "juminhyo"
    assert out["fee"] > 0 and out["paid"] == 1000 and out["change"] == 1000 - out["fee"]
    assert out["refund_due"] == 0 and out["request_id"].startswith("req-")
    assert hoppers_paid(lab) - before == out["change"]  # the hoppers' own counters
    files = pages_of(lab, out, pages_before)
    assert len(files) == 1 and files[0].read_bytes().startswith(b"%PDF-")
    if lab.get("printer"):  # printed, and the kiosk kept no copy
        assert out["files"] == [] and not (tmp_path / "out").exists()
    else:
        assert files[0].parent == tmp_path / "out"
        assert not list((tmp_path / "out" / ".held").iterdir())  # released after the card
    # The page carries the municipality's COSE seal (issue 12): an offline verifier with the
    # issuers' published keys says valid, for this municipality and document type.
    trust = tmp_path / "trust"
    subprocess.run([*CARDIO, "doc", "trust", "--out", str(trust), "--jlis",
                    backend.info["jlis_dir"]], check=True, capture_output=True, timeout=120)
    ver = subprocess.run([*CARDIO, "doc", "verify", str(files[0]), "--trust", str(trust),
                          "--json"], capture_output=True, text=True, timeout=120)
    verdict = json.loads(ver.stdout)
    assert ver.returncode == 0 and verdict["status"] == "valid", ver.stdout + ver.stderr
    assert verdict["fields"]["doc_type"] == "juminhyo"
    shutil.rmtree(trust)  # public keys only; out of the PIN search below (base64 noise)
    book = ledger(tmp_path)
    assert book["balanced"] and book["documents_printed"] == 1
    assert (book["cash_in"], book["change_out"], book["fees_printed"]) == (
        1000, out["change"], out["fee"])
    # The center recorded the issuance as printed, for this request id.
    with backend.db.tx() as t:
        row = t.one("SELECT outcome FROM issuances WHERE request_id=?", (out["request_id"],))
    assert row is not None and row[0] == "printed"
    assert_pin_nowhere(card.pin, res, tmp_path, [out["request_id"], out["txn"]])


def test_insufficient_money_is_handed_back(backend: Service, lab: dict[str, Any],
                                           tmp_path: Path) -> None:
    card = backend.card()
    before = hoppers_paid(lab)
    res, out = kiosk_issue(backend, lab, card, tmp_path, "100,50")
    assert res.returncode == 26, res.stderr
    assert out["outcome"] == "cancelled" and out["reason"] == "insufficient_money"
    assert out["paid"] == 150 and out["returned"] == 150 and out["refund_due"] == 0
    assert hoppers_paid(lab) - before == 150  # the coins went back through the hoppers
    assert out["files"] == []
    book = ledger(tmp_path)
    assert book["balanced"] and book["cash_in"] == 0 and book["documents_printed"] == 0
    assert_pin_nowhere(card.pin, res, tmp_path, [out["request_id"], out["txn"]])


def test_printer_jam_refunds_the_fee_with_a_slip(backend: Service, lab: dict[str, Any],
                                                  tmp_path: Path) -> None:
    """A jam at the printer (forced through the lab): the change was already paid, the fee
    is refunded, a 未交付 slip says so, nothing counts as printed — and the books balance."""
    if not lab["printer"]:
        pytest.skip("the emulated IPP printer cannot run on this machine")
    card = backend.card()
    control(lab["control"], device="printer", op="fault", fault="jam")
    try:
        res, out = kiosk_issue(backend, lab, card, tmp_path, "1000")
    finally:
        control(lab["control"], device="printer", op="clear")
    assert res.returncode == 26, res.stderr
    assert out["outcome"] == "failed_refund_due" and out["reason"].startswith("print_failed")
    assert out["change"] == 1000 - out["fee"] and out["refund_due"] == out["fee"]
    # The printer that jammed cannot print the slip either; the refund stands regardless,
    # in the journal's books (below) — nothing is written to the kiosk's disk.
    assert out["files"] == [] and not (tmp_path / "out").exists()
    book = ledger(tmp_path)
    assert book["balanced"] and book["documents_printed"] == 0
    assert book["refunds_due"] == out["fee"]
    with backend.db.tx() as t:
        row = t.one("SELECT outcome FROM issuances WHERE request_id=?", (out["request_id"],))
    assert row is not None and row[0] == "failed"
    assert_pin_nowhere(card.pin, res, tmp_path, [out["request_id"], out["txn"]])


def test_bill_jam_while_stacking(backend: Service, lab: dict[str, Any],
                                 tmp_path: Path) -> None:
    """The held note jams on its way to the cassette (forced through the lab): it is in
    the machine's custody, so the sale goes on; every yen is accounted for."""
    card = backend.card()
    control(lab["control"], device="bill_validator", op="fault", fault="jam")
    res, out = kiosk_issue(backend, lab, card, tmp_path, "1000",
                           extra=("--option", "honseki"))  # an option ticked, too
    assert res.returncode == 0, res.stderr
    assert control(lab["control"], op="state")["bill_validator"]["held"] == [1000]
    assert (out["outcome"], out["paid"], out["change"]) == ("printed", 1000, 1000 - out["fee"])
    book = ledger(tmp_path)
    assert book["balanced"] and book["cash_in"] == 1000


def test_wrong_pin_is_not_retried(backend: Service, lab: dict[str, Any],
                                  tmp_path: Path) -> None:
    card = backend.card()
    wrong = "0000" if card.pin != "0000" else "1111"
    res, out = kiosk_issue(backend, lab, card, tmp_path, "1000", pin=wrong)
    assert res.returncode == 26 and out["outcome"] == "cancelled"
    assert out["reason"] == "wrong_pin" and out["paid"] == 0
    assert card.jpki().tries_left("auth") == 2  # one try spent, no more
    assert_pin_nowhere(wrong, res, tmp_path, [out["request_id"], out["txn"]])


def test_stopped_municipality_is_refused(backend: Service, lab: dict[str, Any],
                                         tmp_path: Path) -> None:
    """An incident stopped the resident's municipality (as a binding mismatch would): the
    center refuses every item, the kiosk takes no money."""
    card = backend.card()
    with backend.db.tx(write=True) as t:
        muni = t.one("SELECT municipality FROM residents WHERE id=?", (card.resident_id,))[0]
        t.execute("UPDATE municipalities SET stopped=1 WHERE code=?", (muni,))
    try:
        res, out = kiosk_issue(backend, lab, card, tmp_path, "1000")
    finally:
        assert backend.cli("clear", muni).returncode == 0
    assert res.returncode == 26, res.stderr
    assert out["outcome"] == "refused" and out["reason"] == "municipality_stopped"
    assert out["paid"] == 0 and out["files"] == []
    assert ledger(tmp_path)["balanced"]


def test_a_refused_item_takes_no_money(backend: Service, lab: dict[str, Any],
                                       tmp_path: Path) -> None:
    """The rules refuse the chosen item (no registered seal for 印鑑登録証明書): the menu
    shows the reason, the customer gives up, no money is asked for."""
    with backend.db.tx() as t:
        rid = t.one("SELECT r.id FROM residents r WHERE r.id NOT IN"
                    " (SELECT resident_id FROM inkan) AND r.birth < '1990-01-01'"
                    " AND r.status = 'active' AND r.support_measure = 0"
                    " AND r.gaiji_pending = 0 ORDER BY r.id LIMIT 1")[0]
    card = backend.card(rid)
    res, out = kiosk_issue(backend, lab, card, tmp_path, "1000", document="inkan")
    assert res.returncode == 26, res.stderr
    assert out["outcome"] == "cancelled" and out["reason"] == "no_inkan", out["reason"]
    assert out["paid"] == 0 and out["fee"] == 0 and out["files"] == []
    assert ledger(tmp_path)["balanced"]


def test_failures_and_bad_choices_end_without_money(backend: Service, lab: dict[str, Any],
                                                  tmp_path: Path) -> None:
    """Forced faults end as outcomes, never hangs: a reader that cannot be opened
    (``CardFailed``), a center that refuses connections (``ServerUnavailable``); and an
    option the type does not have."""
    card = backend.card()
    gone = Card(card.path.with_name("no-such-card"), card.pin, card.resident_id)
    res, out = kiosk_issue(backend, lab, gone, tmp_path / "a", "1000")
    assert res.returncode == 26, res.stderr
    assert (out["outcome"], out["reason"], out["paid"]) == ("refused", "card_error", 0)

    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    creds = Path(backend.info["kiosks_dir"]) / "kiosk-0001"
    res, out = kiosk_issue(backend, lab, card, tmp_path / "b", "1000", center=dead,
                           extra=("--credentials", str(creds)))
    assert res.returncode == 26, res.stderr
    assert (out["outcome"], out["reason"], out["paid"]) == ("refused", "center_unavailable",
                                                            0)
    assert card.jpki().tries_left("auth") == 3  # the PIN was verified once, correctly
    assert ledger(tmp_path / "b")["balanced"]

    # An option the menu does not offer for the type: the customer gives up before paying.
    res, out = kiosk_issue(backend, lab, card, tmp_path / "c", "1000",
                           extra=("--option", "no-such-option"))
    assert res.returncode == 26, res.stderr
    assert (out["outcome"], out["reason"], out["paid"]) == ("cancelled",
                                                            "option_not_offered", 0)


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "KIOSK_PIN": "1234"}
    res = subprocess.run([*CARDIO, "kiosk", "issue", "--reader", "emu:/nonexistent",
                          "--center", "http://127.0.0.1:9", "--document", "juminhyo",
                          "--pin-env", "KIOSK_PIN", "--insert", "1000,7",
                          "--journal", str(tmp_path / "j.db"), "--out", str(tmp_path / "o"),
                          "--devices", str(tmp_path / "d.toml"), "--credentials",
                          str(tmp_path)], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "no such bill or coin: 7" in res.stderr and "1234" not in res.stderr
    env["KIOSK_PIN"] = "12a4"
    res = subprocess.run([*CARDIO, "kiosk", "issue", "--reader", "emu:/nonexistent",
                          "--center", "http://127.0.0.1:9", "--document", "juminhyo",
                          "--pin-env", "KIOSK_PIN", "--insert", "1000",
                          "--journal", str(tmp_path / "j.db"), "--out", str(tmp_path / "o"),
                          "--devices", str(tmp_path / "d.toml"), "--credentials",
                          str(tmp_path)], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 2 and "is not 4 digits" in res.stderr
    assert "12a4" not in res.stderr and not (tmp_path / "j.db").exists()


class Lines:
    """The JSON lines of a process's stdout, read on a thread (``select`` on a buffered
    pipe misses lines already in the buffer)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        import queue
        import threading

        self.q: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        out = proc.stdout

        def pump() -> None:
            for line in out:
                self.q.put(line)
            self.q.put("")
        threading.Thread(target=pump, daemon=True).start()

    def until(self, pred: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Lines until one satisfies ``pred`` (bounded)."""
        import queue
        import time

        seen: list[dict[str, Any]] = []
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.q.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if not line:
                break
            seen.append(json.loads(line))
            if pred(seen[-1]):
                return seen
        raise AssertionError(f"kiosk run never said so; it said {seen[-5:]}")


def test_kiosk_run_serves_a_card_and_stops_on_sigterm(backend: Service, lab: dict[str, Any],
                                                      tmp_path: Path) -> None:
    """The long-running kiosk: recovery and the owed finalizes, a ready line, a session per
    inserted card
    (the slot — here the software card's directory appearing and leaving — drives it,
    the cash devices credit the money), and a clean stop on SIGTERM."""
    import asyncio

    from kiosk.session.journal import Journal
    from tests.emulators.issuance.kiosk_sim import open_and_authenticate
    from tests.kiosk.test_runner_cli import crashed_at_change, crashed_at_print

    # Before the start: a session the center issued a document for, which the kiosk
    # crashed while printing (its journal says so; the center was never told).
    other = backend.card()

    async def issued_not_finalized() -> tuple[str, str, str]:
        async with backend.client() as client:
            opened, auth, _ = await open_and_authenticate(client, other)
            await client.request_document(opened.request_id, opened.session_id, "juminhyo")
            return opened.request_id, opened.session_id, auth.municipality_code

    rid, sid, muni = asyncio.run(issued_not_finalized())
    with Journal(tmp_path / "journal.db") as j:
        crashed_at_print(j, "Tcrashed", request_id=rid, session_id=sid, municipality=muni)
        crashed_at_change(j, "Tchange")  # its change is still owed: the hoppers pay it
    hoppers_before = hoppers_paid(lab)

    card = backend.card()
    parked = card.path.with_name(card.path.name + "-wallet")  # same file system
    card.path.rename(parked)  # no card in the slot yet
    config = tmp_path / "kiosk.toml"
    tray = "" if lab.get("printer") else f'tray = "{tmp_path / "out"}"'
    pages_before = printed_pages(lab)
    config.write_text(lab["toml"].read_text() + f'''
[kiosk]
journal = "{tmp_path / 'journal.db'}"
{tray}
center = "{backend.info['center']}"
reader = "emu:{card.path}"

[ui]
pin_env = "KIOSK_PIN"
document = "juminhyo"
insert = [1000]
''')
    proc = subprocess.Popen([*CARDIO, "kiosk", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**backend.env, "KIOSK_PIN": card.pin})
    lines = Lines(proc)
    try:
        ready = lines.until(lambda m: m["event"] == "ready")[-1]
        # Recovery first (fee refunded, slip), then the owed finalize reaches the center.
        assert [(r["txn"], r["outcome"]) for r in ready["recovered"]] == [
            ("Tcrashed", "failed_refund_due"), ("Tchange", "failed_refund_due")]
        assert hoppers_paid(lab) - hoppers_before == 800  # the owed change, by the hoppers
        # The fake Tchange session is unknown to the center: its final word settles it.
        assert ready["finalizes"] == {"sent": 1, "refused": 1, "owed": 0}
        assert ready["ledger"]["balanced"] and ready["ledger"]["refunds_due"] == 400
        with backend.db.tx() as t:
            assert t.one("SELECT outcome FROM issuances WHERE request_id=?", (rid,))[0] == \
                "failed"
        parked.rename(card.path)  # the card goes in
        seen = lines.until(lambda m: m.get("screen") == "take-card")
        card.path.rename(parked)  # and is taken when asked (a printer prints only then)
        seen += lines.until(lambda m: m["event"] == "session")
        done = seen[-1]
        assert done["outcome"] == "printed" and done["paid"] == 1000
        assert done["change"] == 1000 - done["fee"]
        assert [p.read_bytes()[:5] for p in pages_of(lab, done, pages_before)] == [b"%PDF-"]
        # the two crashed sessions' 未交付 slips went to the printer, not to a directory
        assert sum("slip-" in p.name.lower() for p in printed_pages(lab)[len(pages_before):]
                   ) == 2
        screens = [m["screen"] for m in seen if m["event"] == "screen"]
        # the card is asked for before any page, which comes after it left
        assert screens.index("take-card") < screens.index("printing") < screens.index(
            "take-pages")
        proc.send_signal(signal.SIGTERM)
        stopped = lines.until(lambda m: m["event"] == "stopped")[-1]
        assert stopped["ledger"]["balanced"] and stopped["ledger"]["documents_printed"] == 1
        assert stopped["ledger"]["refunds_due"] == 400
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = proc.stderr.read() if proc.stderr else ""
    assert card.pin not in err.replace(done["request_id"], "")


def test_kiosk_run_restarted_with_the_card_in_releases_nothing_until_it_is_taken(
        backend: Service, lab: dict[str, Any], tmp_path: Path) -> None:
    """A kiosk killed while its customer's card was still in the slot (the page printed and
    held, a second session crashed at print and owes a refund slip), restarted with the card
    still there: recovery settles the money but releases neither page nor slip until the
    slot reports the removal."""
    import time

    from kiosk.session.journal import Journal
    from tests.kiosk.test_run import printed_awaiting_card, released
    from tests.kiosk.test_runner_cli import crashed_at_print

    with Journal(tmp_path / "journal.db") as j:
        printed_awaiting_card(j, "Tprinted")
        crashed_at_print(j, "Tslip")
    out = tmp_path / "out"
    (out / ".held").mkdir(parents=True)
    (out / ".held" / "juminhyo-req-Tprinted.pdf").write_bytes(b"%PDF-1.7 the page")
    card = backend.card()  # its directory exists: the card is in the slot
    config = tmp_path / "kiosk.toml"
    # Pages held in a tray: the device lab's emulated output tray (a kiosk with a printer
    # sends a certificate's job only once the card is out, so nothing is held there).
    devices = lab["toml"].read_text().split("[printer]")[0]
    config.write_text(devices + f'''
[kiosk]
journal = "{tmp_path / 'journal.db'}"
tray = "{out}"
center = "{backend.info['center']}"
reader = "emu:{card.path}"
''')
    proc = subprocess.Popen([*CARDIO, "kiosk", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=backend.env)
    lines = Lines(proc)
    try:
        first = lines.until(lambda m: m["event"] in ("awaiting-card-removal", "ready"))[-1]
        assert first["event"] == "awaiting-card-removal", first
        assert first["txns"] == ["Tprinted", "Tslip"]
        time.sleep(1.0)
        assert released(out) == []  # the card is still in: nothing to take
        card.path.rename(card.path.with_name(card.path.name + "-taken"))
        ready = lines.until(lambda m: m["event"] == "ready")[-1]
        assert released(out) == ["juminhyo-req-Tprinted.pdf", "slip-Tslip.pdf"]
        assert ready["ledger"]["sessions_open"] == 0 and ready["ledger"]["balanced"]
        proc.send_signal(signal.SIGTERM)
        lines.until(lambda m: m["event"] == "stopped")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_recover_prints_the_refund_slip_on_the_kiosks_printer(
        lab: dict[str, Any], tmp_path: Path) -> None:
    """A kiosk with a printer keeps no output directory: the 未交付 slip of a session that
    crashed at print goes to the printer (it names no resident), nothing to the disk."""
    from kiosk.session.journal import Journal
    from tests.kiosk.test_runner_cli import crashed_at_print

    if not lab["printer"]:
        pytest.skip("the emulated IPP printer cannot run on this machine")
    with Journal(tmp_path / "journal.db") as j:
        crashed_at_print(j, "Tslip")
    before = printed_pages(lab)
    res = subprocess.run([*CARDIO, "kiosk", "recover", "--journal", str(tmp_path / "journal.db"),
                          "--devices", str(lab["toml"]), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [(r["txn"], r["outcome"]) for r in out["recovered"]] == [
        ("Tslip", "failed_refund_due")]
    assert out["ledger"]["refunds_due"] == 200 and out["ledger"]["balanced"]
    slips = printed_pages(lab)[len(before):]
    assert len(slips) == 1 and "slip-tslip" in slips[0].name.lower()
    text = subprocess.run(["pdftotext", str(slips[0]), "-"], capture_output=True, text=True,
                          timeout=60).stdout
    assert "Tslip" in text and "200" in text
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("journal.db")
                  ) == []
