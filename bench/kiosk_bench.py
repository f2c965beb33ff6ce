"""Kiosk controller overhead per event: the session core alone, and the core with the
write-ahead journal (SQLite WAL, synchronous=FULL) on the real disk and on a RAM file system.

Sessions are the simulated world's (``kiosk.session.sim``): full issuances and a mix with
mistakes and faults. Only the controller's own work is timed — ``IssuanceSession.handle``
(baseline) or ``Journal.step`` (handle + journal commit) — not the simulated devices. The
goal in issue 13 is ≤ 1 ms p99 per event with the journal on.

Not measured here: the time from PIN entry to print start on emulated devices with the real
back end on loopback — that needs the asyncio runner, which is not built yet.

    .venv/bin/python bench/kiosk_bench.py [SESSIONS]

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
        self._journal = journal

    def step(self, session: IssuanceSession, event: E.Event) -> list[C.Command]:
        t0 = time.perf_counter_ns()
        if self._journal:
            before = self._db.total_changes
            cmds = super().step(session, event)
            self.writes += self._db.total_changes != before
        else:
            cmds = session.handle(event)
        self.samples.append((time.perf_counter_ns() - t0) / 1000)
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
    print(f"{'configuration':52} {'events':>7} {'writes':>7} {'p50':>8} {'p99':>8} "
          f"{'max':>9}")
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
            print(f"{label + ', ' + name:52} {len(j.samples):7d} {j.writes:7d} {p50:8.1f} "
                  f"{p99:8.1f} {max(j.samples):9.1f}{ratio}")
    for d in {disk, shm}:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


if __name__ == "__main__":
    main()
