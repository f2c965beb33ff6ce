"""Kiosk controller overhead per event: the session core alone, and the core with the
write-ahead journal (SQLite WAL; a commit is fsynced when a side effect follows it) on the real
disk and on a RAM file system; the fsynced commits are also shown on their own.

Sessions are the simulated world's (``kiosk.session.sim``): full issuances and a mix with
mistakes and faults. Only the controller's own work is timed — ``IssuanceSession.handle``
(baseline) or ``Journal.step`` (handle + journal commit) — not the simulated devices. The
goal in issue 13 is ≤ 1 ms p99 per event with the journal on.

``runner`` mode: the time from PIN entry (the keypad's ``VerifyPin`` performed) to print
start (the printer adapter given the verified document) through the asyncio runner
(:mod:`kiosk.runner`) — the real card client on a software card, real HTTP to ``cardio emu
issuance serve`` on 127.0.0.1, the cash devices of ``cardio emu devices serve`` through the
real ID-003/ccTalk drivers over ptys (a ¥1000 note, change paid by the hoppers), the journal
on disk. Baseline in the same process: the same center steps (open, card signature,
authenticate, menu, request with the binding check) by the plain client, with no devices
and no journal.

    .venv/bin/python bench/kiosk_bench.py [SESSIONS]
    .venv/bin/python bench/kiosk_bench.py runner [ISSUANCES]

Prints figures; never fails for being slow.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kiosk.session import commands as C
from kiosk.session import events as E
from kiosk.session.core import IssuanceSession
from kiosk.session.journal import Journal
from kiosk.session.sim import Chooser, SimKiosk


class TimedJournal(Journal):
    """Times each step (core + journal); ``journal=False`` times the core alone."""

    def __init__(self, path: Path, *, journal: bool = True) -> None:
        super().__init__(path)
        self.samples: list[float] = []
        self.writes = 0
        self.synced = 0  # commits made with synchronous=FULL (a side effect follows)
        self.synced_us: list[float] = []
        self._journal = journal

    def step(self, session: IssuanceSession, event: E.Event) -> list[C.Command]:
        t0 = time.perf_counter_ns()
        if self._journal:
            before = self._db.total_changes
            cmds = super().step(session, event)
            wrote = self._db.total_changes != before
            self.writes += wrote
            full = wrote and self._full
            self.synced += full
        else:
            cmds = session.handle(event)
            full = False
        self.samples.append((time.perf_counter_ns() - t0) / 1000)
        if full:
            self.synced_us.append(self.samples[-1])
        return cmds


def run(directory: Path, sessions: int, *, journal: bool, chaos: int) -> TimedJournal:
    j = TimedJournal(directory / f"journal-{journal}-{chaos}.db", journal=journal)
    kiosk = SimKiosk(j)
    for i in range(sessions):
        kiosk.run(Chooser([], chaos=chaos, faults=chaos, seed=i), wrong_pins=i % 4 == 3)
    j.close()
    return j


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(p * len(s)))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    disk = Path(tempfile.mkdtemp(prefix="kiosk-bench-"))  # /tmp: the real disk here
    shm = Path(tempfile.mkdtemp(prefix="kiosk-bench-", dir="/dev/shm")) \
        if os.path.isdir("/dev/shm") else disk
    print(f"kiosk controller, {n} simulated sessions per row; µs per event")
    print(f"{'configuration':52} {'events':>7} {'writes':>7} {'fsynced':>8} {'p50':>8} "
          f"{'p99':>8} {'max':>9} {'fsynced p50/p99':>16}")
    base: dict[int, float] = {}
    for chaos in (0, 15):
        label = "full issuances" if chaos == 0 else "mistakes+faults 15%"
        for name, where, journal in (("core only (baseline)", shm, False),
                                     ("core + journal, RAM fs", shm, True),
                                     ("core + journal, disk (fsync)", disk, True)):
            j = run(where, n, journal=journal, chaos=chaos)
            p50, p99 = statistics.median(j.samples), pct(j.samples, 0.99)
            if not journal:
                base[chaos] = p99
            ratio = f"  p99 ×{p99 / base[chaos]:.0f} of core" if journal else ""
            synced = (f"{statistics.median(j.synced_us):7.0f}/{pct(j.synced_us, 0.99):<7.0f}"
                      if j.synced_us else "-")
            print(f"{label + ', ' + name:52} {len(j.samples):7d} {j.writes:7d} {j.synced:8d} "
                  f"{p50:8.1f} {p99:8.1f} {max(j.samples):9.1f} {synced:>16}{ratio}")
    for d in {disk, shm}:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


def runner_main(n: int) -> None:
    import asyncio
    import base64
    import hashlib
    import signal

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    from emulators.card.images import photo_jp2
    from emulators.card.keys import KeyPool
    from emulators.devices.lab import control
    from kiosk.protocol.binding import ExpectedSession, check_binding
    from kiosk.runner import (
        CardAdapter,
        CashAdapter,
        HeadlessUi,
        Keypad,
        PrinterAdapter,
        Runner,
        lab_feeder,
    )
    from tests.emulators.devices.serve_helper import start_serve
    from tests.emulators.issuance.conftest import start_service, stop_service

    base = Path(tempfile.mkdtemp(prefix="kiosk-runner-bench-"))
    svc = start_service(base, f"sqlite:///{base / 'issuance.db'}", KeyPool(4), photo_jp2(),
                        workers=1, kiosks=1, residents=100)
    proc, info = start_serve("--no-printer")
    try:
        del control
        devices = {"bill_validator": {"port": info["bill_validator"]},
                   "coin_acceptor": {"port": info["coin_acceptor"]},
                   "hopper": [{"address": a, "coin": c, "stock": 200}
                              for a, c in ((3, 500), (4, 100), (5, 50), (6, 10))]}
        creds = svc.kiosk(1)
        cards = [svc.card() for _ in range(n)]
        j = Journal(base / "journal.db")
        lat: list[float] = []
        outcomes: list[str] = []

        async def kiosk_runs() -> None:
            cash = CashAdapter(devices)
            await cash.start()
            try:
                for i, card in enumerate(cards):
                    keypad = Keypad()
                    ui = HeadlessUi(card.pin, "juminhyo", (), [1000],
                                    lab_feeder(info["control"]))
                    printer = PrinterAdapter(base / f"out{i}")
                    r = Runner(j, creds=creds, card=CardAdapter(f"emu:{card.path}", keypad),
                               cash=cash, printer=printer, ui=ui, keypad=keypad)
                    res = await r.run_session(deadline=120)
                    await r.aclose()
                    outcomes.append(res.outcome)
                    if printer.print_started is not None:
                        lat.append(printer.print_started - r.marks["pin"])
            finally:
                cash.stop()

        async def baseline() -> list[float]:
            from kiosk.center_client import CenterClient
            out: list[float] = []
            async with CenterClient(creds) as client:
                for card in cards:
                    app = card.jpki()
                    t0 = time.perf_counter()
                    app.verify_pin("auth", card.pin)
                    opened = await client.open("req-b" + os.urandom(6).hex())
                    cert = app.certificate_der("auth")
                    sig = app.sign("auth", base64.b64decode(opened.nonce))
                    auth = await client.authenticate(opened, cert, sig)
                    await client.menu(opened.request_id, opened.session_id)
                    issued = await client.request_document(opened.request_id,
                                                           opened.session_id, "juminhyo")
                    check_binding(ExpectedSession(
                        opened.request_id, opened.session_id, creds.kiosk_id,
                        hashlib.sha256(cert).hexdigest(), auth.municipality_code,
                        "juminhyo"), issued.signed, creds.municipality_keys)
                    out.append(time.perf_counter() - t0)
                    await client.finalize(opened.request_id, opened.session_id, "cancelled")
            return out

        asyncio.run(kiosk_runs())
        # The same cards again for the baseline: their PINs are verified fresh each time.
        base_lat = asyncio.run(baseline())
        book = j.ledger()
        j.close()
        print(f"kiosk runner, {n} issuances on emulated devices, real back end on loopback")
        print(f"outcomes: {dict((o, outcomes.count(o)) for o in set(outcomes))}; "
              f"books balanced: {book.balanced} (cash in {book.cash_in}, change "
              f"{book.change_out}, fees {book.fees_printed})")
        for name, xs in (("baseline: center steps, plain client (no devices, journal)",
                          base_lat), ("runner: PIN entry -> print start", lat)):
            print(f"{name:62} p50 {statistics.median(xs) * 1000:7.0f} ms  p90 "
                  f"{pct(xs, 0.9) * 1000:7.0f} ms  max {max(xs) * 1000:7.0f} ms")
        print(f"ratio runner/baseline (p50): "
              f"{statistics.median(lat) / statistics.median(base_lat):.2f}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        stop_service(svc)
        import shutil
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "runner":
        runner_main(int(sys.argv[2]) if len(sys.argv) > 2 else 10)
    else:
        main()
