"""Two controllers on one set of devices (issue 22, item 8): while one process holds the
ports through the kiosk's own cash adapter (what ``cardio kiosk run`` opens), a second
``cardio kiosk devices check``, ``kiosk recover --devices`` or ``kiosk issue`` against the
same devices file is refused at once — exit 22, one line naming the holder's PID — and not
one byte reaches the emulated devices, no money moves and no session is journalled."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulators.devices.lab import DeviceLab, control
from kiosk.session.journal import Journal
from tests.emulators.issuance.conftest import Service
from tests.kiosk.test_runner import backend  # noqa: F401 -- the module's fixture, reused

pytestmark = pytest.mark.slow

CARDIO = [sys.executable, "-m", "cardio.cli"]

#: The other controller: the kiosk's cash adapter on the devices file, as ``kiosk run``
#: builds it; "ready" once the ports are held, then it waits (it sends nothing itself, so
#: any byte the devices see came from the second controller).
HOLDER = """
import sys
from pathlib import Path
from kiosk.devices.cli import load_config
from kiosk.runner import CashAdapter
cash = CashAdapter(load_config(Path(sys.argv[1])))
print("ready", flush=True)
sys.stdin.readline()
cash.stop()
"""


@pytest.fixture
def held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[tuple[DeviceLab, Path, subprocess.Popen[str]]]:
    monkeypatch.setenv("CARDIO_LOCK_DIR", str(tmp_path))  # inherited by every process here
    lab = DeviceLab(tmp_path / "lab", printer=False).start()
    toml = tmp_path / "devices.toml"
    toml.write_text(f'[bill_validator]\nport = "{lab.bill_line.path}"\n'
                    f'[coin_acceptor]\nport = "{lab.coin_line.path}"\n'
                    '[[hopper]]\naddress = 3\ncoin = 500\n'
                    f'[emulator]\ncontrol = "{lab.control_path}"\n')
    proc = subprocess.Popen([*CARDIO[:1], "-c", HOLDER, str(toml)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        lab.stop()
        raise AssertionError(proc.communicate()[1][-2000:])
    try:
        yield lab, toml, proc
    finally:
        proc.kill()
        proc.communicate(timeout=10)
        lab.stop()


def _refused(res: subprocess.CompletedProcess[str], holder: int) -> None:
    assert res.returncode == 22, res.stdout + res.stderr
    # The emulated tray's warning (kiosk issue --tray) is a line of its own, not the error.
    lines = [x for x in res.stderr.strip().splitlines() if not x.startswith("warning: ")]
    assert len(lines) == 1 and f"in use by process {holder} " in lines[0], res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_devices_check_and_recover_are_refused_before_a_byte(
        held: tuple[DeviceLab, Path, subprocess.Popen[str]], tmp_path: Path) -> None:
    lab, toml, proc = held
    res = subprocess.run([*CARDIO, "kiosk", "devices", "check", "--config", str(toml)],
                         capture_output=True, text=True, timeout=60)
    _refused(res, proc.pid)
    Journal(tmp_path / "j.db").close()  # a kiosk journal, so that recover gets to the ports
    res = subprocess.run([*CARDIO, "kiosk", "recover", "--journal", str(tmp_path / "j.db"),
                          "--devices", str(toml)], capture_output=True, text=True, timeout=60)
    _refused(res, proc.pid)
    assert lab.bill_line.bytes_in == 0 and lab.coin_line.bytes_in == 0


def test_kiosk_issue_is_refused_before_any_money_moves(
        backend: Service, held: tuple[DeviceLab, Path, subprocess.Popen[str]],  # noqa: F811
        tmp_path: Path) -> None:
    lab, toml, proc = held
    card = backend.card()
    env = {**backend.env, "CARDIO_LOCK_DIR": os.environ["CARDIO_LOCK_DIR"],
           "KIOSK_PIN": card.pin}
    journal = tmp_path / "journal.db"
    res = subprocess.run([*CARDIO, "kiosk", "issue", "--reader", f"emu:{card.path}",
                          "--center", backend.info["center"], "--document", "juminhyo",
                          "--pin-env", "KIOSK_PIN", "--insert", "1000,1000",
                          "--journal", str(journal), "--out", str(tmp_path / "out"),
                          "--devices", str(toml), "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    _refused(res, proc.pid)
    assert lab.bill_line.bytes_in == 0 and lab.coin_line.bytes_in == 0
    state: dict[str, Any] = control(lab.control_path, op="state")["bill_validator"]
    assert (state["queue"], state["cassette"], state["returned"]) == ([], [], [])
    if journal.exists():  # nothing was journalled: no session, no money
        with sqlite3.connect(journal) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if "sessions" in tables:
                assert db.execute("SELECT COUNT(*) FROM sessions").fetchone() == (0,)
