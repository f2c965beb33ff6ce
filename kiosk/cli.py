"""``cardio kiosk …``: the kiosk's own commands, registered with the ``cardio`` command line
through the entry-point group ``cardio.commands`` (``kiosk = "kiosk.cli:register"``).

Each kiosk area adds its sub-commands here with a ``register(kiosk_sub)`` of its own, so
this module only names the group: ``kiosk devices check`` (:mod:`kiosk.devices.cli`).
Handlers raise :class:`cardio.errors.CardioError` subclasses; the host turns them into one
line and their exit code (devices: 20–24).
"""

from __future__ import annotations

import argparse

from kiosk import runner_cli
from kiosk.devices import cli as devices_cli


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Entry point (``cardio.commands``): the ``kiosk`` group and its areas."""
    kiosk = sub.add_parser("kiosk", help="the コンビニ交付 kiosk: run, issue, ledger,"
                           " recover, devices")
    ksub = kiosk.add_subparsers(dest="kiosk_command", required=True)
    devices_cli.register(ksub)
    runner_cli.register(ksub)


__all__ = ["register"]
