"""``cardio kiosk …`` is a plug-in group of the ``cardio`` host (entry point
``kiosk = "kiosk.cli:register"``): its commands parse, run and fail like every other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cardio.cli import main


def test_kiosk_devices_check_is_a_cardio_command(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "devices.toml"
    bad.write_text("[bill_validator]\nport = 7\n")
    assert main(["kiosk", "devices", "check", "--config", str(bad)]) == 22
    _out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "[bill_validator] needs port" in err
    assert main(["kiosk", "devices", "check", "--config", str(tmp_path / "none.toml")]) == 22
    _out, err = capsys.readouterr()
    assert err.startswith("cardio: error: cannot read device configuration")


def test_kiosk_group_through_the_installed_entry_point() -> None:
    """The group comes from the package metadata, as an integrator's install has it."""
    res = subprocess.run([sys.executable, "-m", "cardio.cli", "kiosk", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "devices" in res.stdout
    res = subprocess.run([sys.executable, "-m", "cardio.cli", "emu", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "devices" in res.stdout and "issuance" in res.stdout
