"""A kiosk run with the emulated output tray says so (review of issue 22, finding 10):
``kiosk run``'s ready line and ``kiosk issue``'s output carry ``"tray"`` with a
``"warning"``, a warning line goes to stderr, and the certificate in the tray is 0600 in a
0700 directory. End to end over the lab's devices (without its printer) and the emulated
issuance service, as ``test_runner.py`` does."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.issuance.conftest import Service
from tests.kiosk.test_runner import CARDIO, Lines, backend, lab  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def _trayless_devices(lab: dict[str, Any], tmp_path: Path) -> Path:  # noqa: F811
    """The lab's devices without its printer: the tray stands in for it."""
    devices = tmp_path / "devices.toml"
    devices.write_text(lab["toml"].read_text().split("[printer]")[0])
    return devices


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_kiosk_issue_with_a_tray_warns_and_keeps_it_private(
        backend: Service, lab: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    card = backend.card()
    out = tmp_path / "out"
    old = os.umask(0o022)  # the usual umask: what left the PDFs readable by everyone
    try:
        res = subprocess.run([*CARDIO, "kiosk", "issue", "--reader", f"emu:{card.path}",
                              "--center", backend.info["center"], "--document", "juminhyo",
                              "--pin-env", "KIOSK_PIN", "--insert", "1000",
                              "--journal", str(tmp_path / "journal.db"), "--tray", str(out),
                              "--devices", str(_trayless_devices(lab, tmp_path)), "--json"],
                             capture_output=True, text=True, timeout=120,
                             env={**backend.env, "KIOSK_PIN": card.pin})
    finally:
        os.umask(old)
    assert res.stdout, res.stderr[-2000:]
    obj = json.loads(res.stdout)
    assert obj["outcome"] == "printed", obj
    assert obj["tray"] == str(out) and str(out) in obj["warning"]
    assert f"warning: {obj['warning']}" in res.stderr.splitlines()
    pages = [Path(f) for f in obj["files"]]
    assert pages and all(p.parent == out and _mode(p) == 0o600 for p in pages)
    assert _mode(out) == 0o700 and _mode(out / ".held") == 0o700


def test_kiosk_run_with_a_tray_says_so_in_its_ready_line(
        backend: Service, lab: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "out"
    config = tmp_path / "kiosk.toml"
    config.write_text(_trayless_devices(lab, tmp_path).read_text() + f'''
[kiosk]
journal = "{tmp_path / 'journal.db'}"
tray = "{out}"
center = "{backend.info['center']}"
reader = "emu:{tmp_path / 'no-card'}"
''')
    proc = subprocess.Popen([*CARDIO, "kiosk", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=backend.env)
    lines = Lines(proc)
    try:
        ready = lines.until(lambda m: m["event"] == "ready")[-1]
        assert ready["tray"] == str(out) and str(out) in ready["warning"]
        proc.send_signal(signal.SIGTERM)
        lines.until(lambda m: m["event"] == "stopped")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = proc.stderr.read() if proc.stderr else ""
    assert f"warning: {ready['warning']}" in err.splitlines()
    assert _mode(out) == 0o700
