"""``cardio emu devices serve``: the emulated peripherals as a process (a plug-in of the
``emu`` group: :mod:`emulators.cli` calls :func:`register`).

It prints where the devices are once they are ready — with ``--json`` one line, an object
with ``bill_validator`` and ``coin_acceptor`` (serial device paths a driver opens at 9600
baud), ``printer`` (an ``ipp://`` URL) and ``control`` (the fault socket) — then runs until
SIGTERM or SIGINT and cleans up (ptys closed, printer namespace torn down, workdir removed
unless it was given).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from cardio.errors import UsageError


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON line once ready")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the control socket and the printer spool live "
                        "(default: a temporary directory, removed at exit)")
    p.add_argument("--no-printer", action="store_true",
                   help="serial devices only (no ippeveprinter)")
    p.add_argument("--hopper-stock", type=int, default=200, help="coins in each hopper")
    p.set_defaults(func=cmd_serve)


def register(emu_sub: Any) -> None:
    """Add ``devices serve`` to the ``emu`` sub-commands."""
    devices = emu_sub.add_parser("devices", help="emulated bill validator, coin acceptor "
                                 "and hoppers, document printer")
    dsub = devices.add_subparsers(dest="devices_command", required=True)
    add_serve_arguments(dsub.add_parser("serve", help="run the emulated peripherals"))


def cmd_serve(args: argparse.Namespace) -> int:
    from emulators.devices.lab import DeviceLab

    if not 0 <= args.hopper_stock <= 10_000:
        raise UsageError("--hopper-stock is 0..10000 coins per hopper")
    own = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="cardio-devices-")) if own else args.workdir
    stop = threading.Event()

    def on_signal(_sig: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lab = DeviceLab(workdir, printer=not args.no_printer, hopper_stock=args.hopper_stock)
    try:
        lab.start()
        info = lab.info()
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            print(f"bill validator (JCM ID-003): {info['bill_validator']}  (9600 8E1)")
            print(f"coin acceptor + hoppers (ccTalk): {info['coin_acceptor']}  (9600 8N1)")
            print(f"printer (IPP Everywhere): {info['printer'] or 'not started'}")
            print(f"control socket: {info['control']}")
            print("Ctrl-C to stop.", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        lab.stop()
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0
