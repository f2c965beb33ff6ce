"""``cardio demo kiosk`` — the README's main job: one コンビニ交付 from end to end.

It starts what a real kiosk stands between — the emulated J-LIS side (証明書交付センター,
the municipalities' 証明発行サーバ, the JPKI CA with OCSP/CRL: ``cardio emu issuance
serve``), the kiosk's peripherals (bill validator, coin acceptor and hoppers over ptys, an IPP
printer: ``cardio emu devices serve``), a software My Number card for a seeded resident —
then the kiosk itself (``cardio kiosk run`` with its touch UI), and a resident who uses it:
headless Chromium taps through the screens (:mod:`kiosk.ui.autopilot`), the card goes into
and out of the slot, money goes into the validator. It ends with a summary in which every
figure comes from this run: the kiosk's own session line, the device lab's counters, the
kiosk's journal, and the offline verifier (``cardio doc verify``, run as a separate process)
on a simulated phone photo of the printed page.

Every part runs as its own process speaking its real protocol (HTTP, ID-003/ccTalk over
ptys, IPP, the card slot); this module only starts them, plays the resident's hands (card
and money) and reads what they say. It lives in ``emulators`` because it wires emulators to
the kiosk (DESIGN.md: the kiosk never imports an emulator).

The card slot of an ``emu:DIR`` reader is the directory: the card is "in" while DIR exists,
so putting the card in and taking it out are two renames on one file system.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cardio.errors import CardioError

__all__ = ["DemoError", "demo_ok", "run_kiosk_demo", "service_clock", "summary_lines"]

JST = dt.timezone(dt.timedelta(hours=9), "JST")
CARDIO = [sys.executable, "-m", "cardio.cli"]
DOCUMENT = "juminhyo"
INSERT = [1000]  # one ¥1000 bill: the 住民票's fee comes back as change from the hoppers


class DemoError(CardioError):
    """A part of the demo did not start or did not do its part (what, and its last words)."""

    exit_code = 1


# -- the services' clock ------------------------------------------------------------------


def service_clock(now: dt.datetime, is_closed: Callable[[dt.datetime], bool]
                  ) -> tuple[dt.datetime | None, str]:
    """Where the emulated services' clock starts: ``None`` (the real clock) when the
    service is open now, else the next day at 10:00 JST on which it is open — with the
    sentence the summary says about it. Real kiosks serve 6:30–23:00 and close at the year
    end and on maintenance days; a demo run at 3 a.m. or on 1 January still issues."""
    local = now.astimezone(JST)
    if not is_closed(local):
        return None, f"the services run on the real clock ({local:%Y-%m-%d %H:%M} JST)"
    for days in range(400):
        start = dt.datetime.combine(local.date() + dt.timedelta(days=days), dt.time(10, 0), JST)
        if start > local and not is_closed(start):
            return start, (f"the kiosk service is closed at {local:%Y-%m-%d %H:%M} JST, so the"
                           f" emulated services' clock starts at {start:%Y-%m-%d %H:%M} JST")
    raise DemoError("no open day for the service within a year")


# -- processes ------------------------------------------------------------------------------


@dataclass
class Part:
    """One started process: its ready line, its stdout lines after that, its stderr file."""

    name: str
    proc: subprocess.Popen[str]
    ready: dict[str, Any]
    err: Path
    lines: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)

    def last_words(self) -> str:
        try:
            return self.err.read_text(errors="replace")[-1500:].strip()
        except OSError:
            return ""

    def until(self, pred: Callable[[dict[str, Any]], bool], timeout: float
              ) -> list[dict[str, Any]]:
        """The lines up to and including the first that ``pred`` accepts."""
        seen: list[dict[str, Any]] = []
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise DemoError(f"{self.name} did not get there within {timeout:.0f} s"
                                f" (last lines: {seen[-3:]}); {self.last_words()}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise DemoError(f"{self.name} exited ({self.proc.returncode}):"
                                    f" {self.last_words()}") from None
                continue
            seen.append(line)
            if pred(line):
                return seen


def _pump(stream: IO[str], into: queue.Queue[dict[str, Any]], copy: Path) -> None:
    """Read the process's lines for as long as it lives (a full pipe would stall it), and
    keep a copy in the logs: the summary's figures can be checked against them."""
    with open(copy, "a", encoding="utf-8") as log:
        for raw in stream:
            log.write(raw)
            log.flush()
            with contextlib.suppress(ValueError):
                obj = json.loads(raw)
                if isinstance(obj, dict):
                    into.put(obj)


@contextlib.contextmanager
def started(name: str, argv: list[str], logs: Path, env: dict[str, str],
            timeout: float = 120.0) -> Iterator[Part]:
    """Start ``argv``, wait for its first JSON line (the ready line), keep reading the rest
    on a thread; on exit SIGTERM and wait (a kill only if it does not stop in 30 s)."""
    err = logs / f"{name}.log"
    with open(err, "w") as errf:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errf, text=True,
                                env=env, start_new_session=True)
    assert proc.stdout is not None
    part = Part(name, proc, {}, err)
    try:
        end = time.monotonic() + timeout
        while not part.ready:
            left = end - time.monotonic()
            r, _, _ = select.select([proc.stdout], [], [], max(left, 0))
            raw = proc.stdout.readline() if r else ""
            if not raw:
                raise DemoError(f"{name} did not start within {timeout:.0f} s"
                                f" (exit {proc.poll()}): {part.last_words()}")
            with contextlib.suppress(ValueError):
                obj = json.loads(raw)
                if isinstance(obj, dict):
                    part.ready = obj
        (logs / f"{name}.out").write_text(json.dumps(part.ready, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
        threading.Thread(target=_pump, args=(proc.stdout, part.lines, logs / f"{name}.out"),
                         daemon=True).start()
        yield part
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the part's whole process group (it was started in its own session, and some
    parts have children: the printer's namespace wrapper and ippeveprinter), wait, SIGKILL
    what is left. A second Ctrl-C during the wait does not leave it running."""
    def group(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    group(signal.SIGTERM)
    try:
        proc.wait(30)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        group(signal.SIGKILL)
        proc.wait(10)
    group(signal.SIGKILL)  # children that outlived their parent


# -- the run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM or SIGHUP (a closed terminal, an outer ``timeout``) unwinds like Ctrl-C, so
    every part started so far is stopped."""
    def raise_(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, raise_) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@dataclass
class Slot:
    """The ``emu:DIR`` card slot: the card is in while ``path`` exists."""

    path: Path
    wallet: Path

    def put(self) -> None:
        if not self.path.exists():
            self.wallet.rename(self.path)

    def take(self) -> None:
        if self.path.exists():
            self.path.rename(self.wallet)


def _pick_clock(db_url: str) -> tuple[dt.datetime | None, str]:
    from emulators.issuance.db import Database
    from emulators.issuance.rules import Settings, closed_reason
    from kiosk.documents.model import DocumentType

    db = Database(db_url, create=False)
    try:
        with db.tx() as t:
            settings = [Settings.from_json(json.loads(r[0]))
                        for r in t.all("SELECT settings FROM municipalities")]
    finally:
        db.close()
    doc = DocumentType(DOCUMENT)
    return service_clock(dt.datetime.now(JST), lambda when: any(
        closed_reason(s, doc, when) is not None for s in settings))


def _kiosk_toml(base: Path, lab: dict[str, Any], center: str, card: Path, *,
                browser: bool, lang: str) -> Path:
    hoppers = "".join(f"[[hopper]]\naddress = {a}\ncoin = {c}\n"
                      for a, c in ((3, 500), (4, 100), (5, 50), (6, 10)))
    text = (f'[bill_validator]\nport = "{lab["bill_validator"]}"\n'
            f'[coin_acceptor]\nport = "{lab["coin_acceptor"]}"\n{hoppers}'
            f'[emulator]\ncontrol = "{lab["control"]}"\n')
    if lab.get("printer"):
        text += f'[printer]\nurl = "{lab["printer"]}"\n'
    text += (f'\n[kiosk]\njournal = "{base / "kiosk" / "journal.db"}"\n'
             f'center = "{center}"\nreader = "emu:{card}"\n')
    if not lab.get("printer"):  # no ippeveprinter here: the lab's emulated output tray
        text += f'tray = "{base / "kiosk" / "tray"}"\n'
    if browser:
        text += f'\n[web]\nlisten = "127.0.0.1:0"\nlang = "{lang}"\n'
    else:  # the scripted customer of [ui] (no browser on this machine)
        text += (f'\n[ui]\npin_env = "CARDIO_DEMO_PIN"\ndocument = "{DOCUMENT}"\n'
                 f"insert = {INSERT}\n")
    path = base / "kiosk" / "kiosk.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _printed_jobs(printer_dir: Path) -> list[str]:
    """The emulated printer's spool names of the jobs that printed, last first."""
    try:
        names = (printer_dir / "output-tray").read_text().split()
    except OSError:
        return []
    return [n for n in reversed(names) if n.endswith(".pdf")]


def _hoppers_paid(control: str) -> int:
    from emulators.devices.lab import control as lab_control

    state = lab_control(control, op="state")["coin_acceptor"]
    return sum(int(coin) * int(h["paid_total"]) for coin, h in state["hoppers"].items())


def _page_png_and_photo(pdf: Path, out: Path) -> tuple[Path, Path]:
    """Page 1 of the printed PDF as the printer's 300 dpi PNG, and a simulated phone photo
    of that page (12 MP JPEG, tilted, on a table, uneven light) — what a person checking a
    certificate at a counter would take."""
    import numpy as np
    import pypdfium2 as pdfium

    from kiosk.documents.simulate import PhoneSettings, phone_photo

    pdfdoc = pdfium.PdfDocument(str(pdf))
    try:
        bitmap = pdfdoc[0].render(scale=300 / 72)
        image = bitmap.to_pil().convert("RGB")
    finally:
        pdfdoc.close()
    png = out / (pdf.stem + ".png")
    image.save(png)
    photo = out / (pdf.stem + "-phone.jpg")
    photo.write_bytes(phone_photo(np.asarray(image), PhoneSettings(
        rotation_deg=4.0, scale=0.82, perspective=0.03, defocus_px=0.6, jpeg_quality=85,
        light_gradient=0.25, noise=2.5, seed=20261126)))
    return png, photo


def _verify(photo: Path, trust: Path, jlis: Path, now: dt.datetime | None, env: dict[str, str]
            ) -> dict[str, Any]:
    subprocess.run([*CARDIO, "doc", "trust", "--out", str(trust), "--jlis", str(jlis)],
                   check=True, capture_output=True, timeout=120, env=env)
    argv = [*CARDIO, "doc", "verify", str(photo), "--trust", str(trust), "--json"]
    if now is not None:
        argv += ["--now", now.isoformat()]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    try:
        verdict: dict[str, Any] = json.loads(res.stdout)
    except ValueError:
        raise DemoError(f"cardio doc verify said nothing usable: {res.stderr[-800:]}") from None
    verdict["exit_code"] = res.returncode
    verdict["command"] = " ".join(["cardio", "doc", "verify", str(photo), "--trust", str(trust)])
    return verdict


def run_kiosk_demo(directory: Path | None = None, *, interactive: bool = False,
                   browser: bool = True, lang: str = "ja", residents: int = 200,
                   as_json: bool = False, say: Callable[[str], None] | None = None
                   ) -> dict[str, Any]:
    """Run the demo; returns the summary (also printed by the CLI). ``directory`` keeps
    everything (default: a new directory under the system's temporary directory)."""
    started_at = time.perf_counter()
    base = directory or Path(tempfile.mkdtemp(prefix="cardio-kiosk-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    logs = base / "logs"
    logs.mkdir(exist_ok=True)
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    jlis = base / "jlis"
    db_url = f"sqlite:///{base / 'issuance.db'}"
    env = {**os.environ, "CARDIO_JLIS_DIR": str(jlis)}
    env.pop("CARDIO_DOC_TRUST_DIR", None)
    timings: dict[str, float] = {}

    def mark(name: str, since: float) -> None:
        timings[name] = round(time.perf_counter() - since, 2)

    from emulators.issuance.db import Database
    from emulators.issuance.population import seed

    t = time.perf_counter()
    say(f"seeding the registers of 4 municipalities ({residents} residents) in {base}")
    db = Database(db_url)
    try:
        seed(db, residents, 4)
    finally:
        db.close()
    clock, clock_note = _pick_clock(db_url)
    mark("seed", t)
    say(clock_note)

    with contextlib.ExitStack() as stack:
        stack.enter_context(_terminate_as_interrupt())
        t = time.perf_counter()
        serve_argv = [*CARDIO, "emu", "issuance", "serve", "--json", "--db", db_url,
                      "--jlis", str(jlis), "--workers", "1", "--kiosks", "1"]
        if clock is not None:
            serve_argv += ["--now", clock.isoformat()]
        jlis_side = stack.enter_context(started("issuance-serve", serve_argv, logs, env))
        center = str(jlis_side.ready["center"])
        say(f"証明書交付センター, municipalities and JPKI CA up: {center}")
        from emulators.devices.printer import unavailable_reason

        lab_argv = [*CARDIO, "emu", "devices", "serve", "--json", "--workdir",
                    str(base / "devices")]
        if unavailable_reason() is not None:
            lab_argv.append("--no-printer")
        lab = stack.enter_context(started("devices-serve", lab_argv, logs, env)).ready
        say(f"peripherals up: bill validator {lab['bill_validator']}, coin acceptor"
            f" {lab['coin_acceptor']}, printer {lab.get('printer') or 'held output only'}")
        mark("services", t)

        t = time.perf_counter()
        from emulators.issuance.operator import issue_card

        card_dir = base / "slot" / "card"
        card_dir.parent.mkdir(exist_ok=True)
        db = Database(db_url, create=False)
        try:
            card = issue_card(db, jlis, card_dir, None,
                              issued=(clock or dt.datetime.now(JST)).date())
        finally:
            db.close()
        slot = Slot(card_dir, base / "wallet-card")
        slot.take()
        pin = str(card.pop("auth_pin"))
        for secret in ("sign_password", "text_pin"):
            card.pop(secret, None)
        mark("card", t)
        say(f"a software My Number card for resident {card['resident_id']}"
            f" ({card['municipality']}) is in the wallet")

        config = _kiosk_toml(base, lab, center, card_dir, browser=browser, lang=lang)
        kiosk_env = dict(env)
        if not browser:
            kiosk_env["CARDIO_DEMO_PIN"] = pin
        t = time.perf_counter()
        kiosk = stack.enter_context(started(
            "kiosk-run", [*CARDIO, "kiosk", "run", "--config", str(config)], logs, kiosk_env))
        # On any way out the card leaves the slot before kiosk run is stopped (callbacks run
        # last-in first-out), so it ends its session instead of waiting for the card.
        stack.callback(slot.take)
        mark("kiosk_start", t)
        ui_url = kiosk.ready.get("ui")
        from kiosk.runner import lab_feeder

        feed = lab_feeder(str(lab["control"]))
        if interactive:
            # A person needs the card's PIN, as its holder would know it: the software card
            # was made for this run, and its credentials are shown once (as emu init does).
            say(f"The card's 利用者証明用 PIN is {pin} (a software card made for this run).")
            return _interactive(ui_url, slot, feed, kiosk, say)

        hoppers_before = _hoppers_paid(str(lab["control"]))
        t = time.perf_counter()
        shots = base / "screens"
        drive: dict[str, Any] = {}
        if browser:
            if not ui_url:
                raise DemoError("kiosk run did not report its UI address")
            from kiosk.ui.autopilot import drive_issuance

            say(f"the kiosk's touch screen is at {ui_url}; headless Chromium plays the"
                " resident")
            drive = drive_issuance(str(ui_url), pin=pin, document=DOCUMENT, insert=feed,
                                   put_card=slot.put, take_card=slot.take, yen=INSERT,
                                   screenshots=shots, lang=lang)
            session = kiosk.until(lambda m: m.get("event") == "session", 120)[-1]
        else:
            say("no browser: the kiosk's scripted customer plays the resident")
            slot.put()
            seen = kiosk.until(lambda m: m.get("screen") in ("take-card", "take-pages")
                               or m.get("event") in ("remind", "session"), 180)
            if seen[-1].get("event") != "session":
                slot.take()
                seen += kiosk.until(lambda m: m.get("event") == "session", 120)
            session = seen[-1]
        del pin
        mark("issuance", t)
        change_by_hoppers = _hoppers_paid(str(lab["control"])) - hoppers_before
        slot.take()

        ledger_res = subprocess.run([*CARDIO, "kiosk", "ledger", "--journal",
                                     str(base / "kiosk" / "journal.db"), "--json"],
                                    capture_output=True, text=True, timeout=60, env=env)
        ledger = json.loads(ledger_res.stdout) if ledger_res.stdout else {}

    summary: dict[str, Any] = {
        "outcome": session.get("outcome"), "reason": session.get("reason") or None,
        "document": session.get("document"), "municipality": card["municipality"],
        "resident_id": card["resident_id"], "request_id": session.get("request_id"),
        "fee": session.get("fee"), "paid": session.get("paid"),
        "change": session.get("change"), "change_paid_by_hoppers": change_by_hoppers,
        "refund_due": session.get("refund_due"), "ledger": ledger, "clock": clock_note,
        "files": {}, "verdict": None, "screens": drive.get("screens", []),
        "final_screenshot": drive.get("final_screenshot"), "directory": str(base),
        "seconds": timings,
    }
    # With the printer, the page is what the emulated printer printed (its own spool; the
    # kiosk keeps no copy); without one, the lab's emulated tray.
    printer_dir = Path(lab["printer_dir"]) if lab.get("printer_dir") else None
    printed = [printer_dir / "spool" / name for name in _printed_jobs(printer_dir)] \
        if printer_dir is not None else []
    pdfs = printed or [Path(f) for f in session.get("files", []) if str(f).endswith(".pdf")]
    if session.get("outcome") == "printed" and pdfs:
        t = time.perf_counter()
        png, photo = _page_png_and_photo(pdfs[0], base)
        summary["files"] = {"pdf": str(pdfs[0]), "png": str(png), "phone_photo": str(photo)}
        verdict = _verify(photo, base / "trust", jlis, clock and (
            clock + dt.timedelta(seconds=time.perf_counter() - started_at)), env)
        summary["verdict"] = {k: verdict.get(k) for k in (
            "status", "reason", "exit_code", "command")}
        summary["verdict"]["fields"] = verdict.get("fields", {})
        mark("verify", t)
    timings["total"] = round(time.perf_counter() - started_at, 2)
    return summary


def _interactive(url: Any, slot: Slot, feed: Callable[[int], None], kiosk: Part,
                 say: Callable[[str], None]) -> dict[str, Any]:
    """Leave the kiosk to a person: the browser at ``url`` is the screen; this terminal
    is their hands (the card slot and the money)."""
    say(f"\nThe kiosk is ready. Open {url} in a browser (the touch screen).")
    say("Here, type:  card  (put the card on the reader / take it back),  1000 / 500 / 100 …"
        "  (insert money),  quit")
    while True:
        try:
            cmd = input("kiosk> ").strip().lower()
        except EOFError:
            break
        if cmd in ("q", "quit", "exit"):
            break
        if cmd == "card":
            if slot.path.exists():
                slot.take()
                say("card taken")
            else:
                slot.put()
                say("card on the reader")
        elif cmd.isdigit():
            try:
                feed(int(cmd))
                say(f"¥{int(cmd)} inserted")
            except CardioError as e:
                say(str(e))
        elif cmd:
            say("card | an amount in yen | quit")
        while True:
            try:
                line = kiosk.lines.get_nowait()
            except queue.Empty:
                break
            if line.get("event") == "session":
                say(f"session: {line.get('outcome')} {line.get('document')}"
                    f" fee ¥{line.get('fee')} paid ¥{line.get('paid')}"
                    f" change ¥{line.get('change')}")
    slot.take()
    return {"interactive": True, "ui": url}


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The human summary: what was issued, paid and given back, where the page is, and
    what the offline verifier said of a phone photo of it."""
    if s.get("interactive"):
        return [f"the kiosk at {s.get('ui')} was left to a person; it has stopped"]
    out: list[str] = []
    names = {"juminhyo": "住民票の写し"}
    out.append("cardio demo kiosk — one コンビニ交付, end to end")
    out.append(f"  clock          {s['clock']}")
    out.append(f"  resident       {s['resident_id']} of municipality {s['municipality']}"
               " (software My Number card, seeded registers)")
    doc = s["document"] or "-"
    out.append(f"  outcome        {s['outcome']}: {names.get(doc, doc)} ({doc}),"
               f" request {s['request_id']}" + (f" — {s['reason']}" if s["reason"] else ""))
    out.append(f"  money          fee ¥{s['fee']}, inserted ¥{s['paid']}, change ¥{s['change']}"
               f" (paid out by the hoppers: ¥{s['change_paid_by_hoppers']}),"
               f" refund due ¥{s['refund_due']}")
    led = s.get("ledger") or {}
    if led:
        out.append(f"  kiosk ledger   cash in ¥{led.get('cash_in')}, change out"
                   f" ¥{led.get('change_out')}, fees ¥{led.get('fees_printed')},"
                   f" {'balanced' if led.get('balanced') else 'NOT BALANCED'}")
    for k, label in (("pdf", "printed PDF"), ("png", "page PNG"), ("phone_photo", "phone photo")):
        if s["files"].get(k):
            out.append(f"  {label:<14} {s['files'][k]}")
    v = s.get("verdict")
    if v:
        f = v.get("fields", {})
        out.append(f"  verifier       {v['status']}: {v['reason']} (exit {v['exit_code']};"
                   f" {f.get('doc_type', '?')}, municipality {f.get('municipality', '?')})")
        out.append(f"                 {v['command']}")
    if s.get("final_screenshot"):
        out.append(f"  final screen   {s['final_screenshot']}")
    if s.get("screens"):
        out.append(f"  screens        {' → '.join(s['screens'])}")
    sec = s["seconds"]
    out.append(f"  time           {sec.get('total')} s in all (issuance through the UI"
               f" {sec.get('issuance')} s); everything is in {s['directory']}")
    out.append("OK" if demo_ok(s) else "FAILED")
    return out


def demo_ok(s: dict[str, Any]) -> bool:
    """The demo did its job: the certificate printed and the phone photo of it verified
    (an interactive run is the person's to judge)."""
    v = s.get("verdict") or {}
    return bool(s.get("interactive")) or (s.get("outcome") == "printed"
                                          and v.get("status") == "valid")

