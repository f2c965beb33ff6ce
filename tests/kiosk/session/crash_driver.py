"""A kiosk process to kill: runs one scripted session of the real core and journal against
the simulated world, and SIGKILLs itself at crash point N; or, restarted, recovers.

    python -m tests.kiosk.session.crash_driver run DIR CHAOS FAULTS SEED WRONG CRASH_AT
    python -m tests.kiosk.session.crash_driver recover DIR

Crash points are every place where the kiosk's durable state and the world's can diverge:
before each event is journalled, after each journal commit (before any command of it is
performed), and after each device or server command took effect (before its answer is
journalled). The world (devices, center, the person's wallet and the card slot) persists
itself at each point — atomically, as hardware keeps its own state through a kiosk crash.
``run`` without a crash prints the number of points as JSON; ``recover`` prints what it did.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from kiosk.session.journal import Journal
from kiosk.session.sim import Chooser, SimKiosk, World


def _save(world: World, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(world.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load(path: Path) -> World:
    return World.from_json(path.read_text()) if path.exists() else World()


def run(directory: Path, chaos: int, faults: int, seed: int, wrong: int, crash_at: int) -> None:
    wpath = directory / "world.json"
    world = _load(wpath)
    journal = Journal(directory / "journal.db")
    points = 0

    def step(where: str) -> None:
        nonlocal points
        points += 1
        _save(world, wpath)
        if points == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    kiosk = SimKiosk(journal, world, on_step=step)
    rec = kiosk.run(Chooser([], chaos=chaos, faults=faults, seed=seed), wrong_pins=wrong)
    _save(world, wpath)
    row = journal.session_row(rec.txn)
    print(json.dumps({"points": points, "outcome": rec.outcome, "reason": row["reason"]}))


def recover(directory: Path) -> None:
    wpath = directory / "world.json"
    world = _load(wpath)
    journal = Journal(directory / "journal.db")
    done = journal.recover(world)
    _save(world, wpath)
    held = [r.txn for r in done if r.held_for_card]
    if held:  # the person takes the card; the pages wait for exactly that
        world.card_present = False
        _save(world, wpath)
        done += journal.recover(world)
        _save(world, wpath)
    # The runner's background job: tell the center what it is owed.
    for txn, request_id, _sid, outcome in journal.owed_finalizes():
        world.finalized.setdefault(request_id, outcome)
        _save(world, wpath)
        journal.mark_finalized(txn)
    print(json.dumps({"recovered": [[r.txn, r.outcome, list(r.actions)] for r in done],
                      "held": held}))


if __name__ == "__main__":
    mode, d = sys.argv[1], Path(sys.argv[2])
    if mode == "run":
        a = [int(x) for x in sys.argv[3:8]]
        run(d, a[0], a[1], a[2], a[3], a[4])
    else:
        recover(d)
