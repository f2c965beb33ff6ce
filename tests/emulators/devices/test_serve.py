"""``serve --json`` as a process: one ready line with the device paths, money inserted over
the control socket arrives through the real drivers, ``kiosk devices check`` sees every
device, and SIGTERM cleans up."""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import pytest

from emulators.devices.lab import control
from emulators.devices.printer import unavailable_reason
from kiosk.devices.cash import CashSession
from kiosk.devices.cli import cmd_check, load_config, register
from kiosk.devices.errors import DeviceConfigError
from kiosk.devices.id003 import Id003Driver, Status
from kiosk.devices.model import Outcome
from tests.emulators.devices.serve_helper import start_serve

pytestmark = pytest.mark.slow


def _check_args(config: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cardio kiosk")
    register(parser.add_subparsers(dest="kiosk_command"))
    return parser.parse_args(["devices", "check", "--config", str(config), "--json"])


def test_serve_json_drive_check_and_stop(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    printer = unavailable_reason() is None
    proc, info = start_serve(*([] if printer else ["--no-printer"]))
    try:
        assert set(info) >= {"bill_validator", "coin_acceptor", "printer"}
        assert Path(info["bill_validator"]).exists() and Path(info["coin_acceptor"]).exists()
        if printer:
            assert info["printer"].startswith("ipp://127.0.0.1:")

        config = tmp_path / "devices.toml"
        text = (f'[bill_validator]\nport = "{info["bill_validator"]}"\n'
                f'[coin_acceptor]\nport = "{info["coin_acceptor"]}"\n'
                '[[hopper]]\naddress = 3\ncoin = 500\n')
        if printer:
            text += f'[printer]\nurl = "{info["printer"]}"\n'
        config.write_text(text)
        args = _check_args(config)
        assert args.func(args) == 0
        report = json.loads(capsys.readouterr().out)["devices"]
        assert report["bill_validator"]["ok"] and report["coin_acceptor"]["ok"]
        assert report["coin_acceptor"]["category"] == "Coin Acceptor"
        if printer:
            assert report["printer"] == {"ok": True, "status": "idle", "reasons": ["none"],
                                         "faults": []}

        cash = CashSession(0)
        with Id003Driver(info["bill_validator"], timeout=0.05) as driver:
            driver.host.set_enabled(True)
            # (a note inserted while the unit is still inhibited is refused, as by a real one)
            driver.run_until(lambda: driver.host.configured and driver.host.status ==
                             Status.IDLING, timeout=10)
            control(info["control"], device="bill_validator", op="insert", yen=10000)
            control(info["control"], device="bill_validator", op="fault", fault="corrupt")
            driver.run_until(lambda: cash.credited == 10000 and driver.host.status ==
                             Status.IDLING, sink=cash.apply, timeout=10)
        state = control(info["control"], op="state")
        assert state["bill_validator"]["cassette"] == [10000]
        assert cash.total(Outcome.STACKED) == 10000
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert not os.path.exists(info["control"])


def test_check_reports_a_dead_device_and_bad_config(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "devices.toml"
    config.write_text('[printer]\nurl = "ipp://127.0.0.1:9/ipp/print"\ntimeout = 1\n')
    args = _check_args(config)
    assert cmd_check(args) == 21
    assert not json.loads(capsys.readouterr().out)["devices"]["printer"]["ok"]
    config.write_text("[bill_validator]\nbaud = 9600\n")
    with pytest.raises(DeviceConfigError, match="needs port"):
        load_config(config)
    config.write_text("[scanner]\n")
    with pytest.raises(DeviceConfigError, match="unknown section"):
        load_config(config)
