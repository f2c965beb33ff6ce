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


@pytest.mark.parametrize("text, says", [
    ("bill_validator = 3\n", "must be a [bill_validator] table"),
    ("card_slot = 1\n", "must be a [card_slot] table"),
    ('printer = "x"\n', "must be a [printer] table"),
    ("hopper = 5\n", "must be [[hopper]] tables"),
    ('[coin_acceptor]\nport = "/dev/null"\n[[hopper]]\naddress = "x"\ncoin = 500\n',
     "[[hopper]] address must be a whole number"),
    ('[coin_acceptor]\nport = "/dev/null"\n[[hopper]]\naddress = 3\n',
     "[[hopper]] coin must be a whole number"),
    ('[coin_acceptor]\nport = "/dev/null"\naddress = 99999999999999999999\n',
     "[coin_acceptor] address must be a whole number"),
    ('[printer]\nurl = "ipp://127.0.0.1:1/x"\ntimeout = "abc"\n', "[printer] timeout"),
    ('[bill_validator]\nport = "/dev/null"\ntimeout = -1\n', "[bill_validator] timeout"),
    ('[printer]\nurl = "http://[::1"\n', "Invalid IPv6 URL"),
    ('[printer]\nurl = "ipp://127.0.0.1:99999/x"\n', "Port out of range"),
    ("[card_slot]\nreader = [1, 2]\n", "[card_slot] reader"),
])
def test_hostile_device_config_is_one_line_exit_22(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, says: str) -> None:
    """A value of the wrong type is a configuration error found before any device is
    opened — not an AttributeError/ValueError reported as an internal error (exit 70)."""
    bad = tmp_path / "devices.toml"
    bad.write_text(text)
    assert main(["kiosk", "devices", "check", "--config", str(bad)]) == 22
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and says in err, err


def test_non_utf8_device_config_is_exit_22(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "devices.toml"
    bad.write_bytes(b'[printer]\nurl = "\xff"\n')
    assert main(["kiosk", "devices", "check", "--config", str(bad)]) == 22
    assert "not UTF-8" in capsys.readouterr().err
