"""The card slot: PC/SC states become inserted/removed events exactly once, over the real
pcscd + vpcd stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from emulators.pytest_plugin import CardHandle, PcscEnv
from kiosk.devices.card_slot import CardInserted, CardRemoved, CardSlotCore


def test_core_reports_each_change_once() -> None:
    core = CardSlotCore()
    assert core.on_state(True) == []  # the first reading is the baseline
    assert core.on_state(True) == []
    assert core.on_state(False) == [CardRemoved("card_slot")]
    assert core.on_state(None) == []  # reader gone while empty: still no card
    assert core.on_state(True) == [CardInserted("card_slot")]
    assert core.on_state(None) == [CardRemoved("card_slot")]  # reader gone with the card


_WATCH = """
import json, sys, time
from kiosk.devices.card_slot import CardSlot
events = []
slot = CardSlot(sys.argv[1], lambda e: (events.append(type(e).__name__),
                                        print(json.dumps(events[-1]), flush=True))).start()
print(json.dumps("ready"), flush=True)
deadline = time.monotonic() + 20
while len(events) < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
"""


@pytest.mark.pcsc
def test_removal_and_insertion_over_pcscd(pcsc_stack: PcscEnv, pcsc_card: CardHandle) -> None:
    env = {**os.environ, **pcsc_stack.stack.env}
    proc = subprocess.Popen([sys.executable, "-c", _WATCH, pcsc_card.reader],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline()) == "ready"
    import time
    time.sleep(0.7)  # let the watcher take its baseline
    pcsc_stack.stack.remove(0)
    assert json.loads(proc.stdout.readline()) == "CardRemoved"
    pcsc_stack.stack.insert(0)
    assert json.loads(proc.stdout.readline()) == "CardInserted"
    assert proc.wait(timeout=20) == 0
