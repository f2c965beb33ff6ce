"""The ``cardio`` command line as a plug-in host: the parser, the plug-ins, ``main``.

The card commands (``readers``, ``info``, ``jpki``, ``text``, ``visual``, ``pin``) are built
in; every package above ``cardio`` (``emulators``, ``facepin``, later ``kiosk``) adds its
own from its own ``cli.py`` through the entry-point group ``cardio.commands``, so
``cardio`` never imports upward and a third party can add commands the same way (as
pytest and flask plug-ins do).

A plug-in entry is a function ``register(sub) -> None`` given the top-level sub-parsers;
it adds parsers with ``set_defaults(func=handler)`` where ``handler(args) -> int``, and
raises :class:`cardio.errors.CardioError` subclasses. A plug-in that fails to load or to
register is reported once on stderr and left out: one broken package must not take the
card commands down with it.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from cardio import __version__
from cardio.cli import card, jpki, text_visual
from cardio.cli.framework import Handler, debug, one_line, run

COMMANDS_GROUP = "cardio.commands"

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


# -- plug-ins --------------------------------------------------------------------------------
def _plugin_entries() -> Iterable[EntryPoint]:
    return sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name)


def load_plugins(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 entries: Iterable[EntryPoint] | None = None) -> list[str]:
    """Let every ``cardio.commands`` entry register its sub-commands. A failing entry is
    reported once on stderr and skipped; returns the names of the failed entries."""
    failed = []
    for ep in _plugin_entries() if entries is None else entries:
        try:
            register: Register = ep.load()
            register(sub)
        except Exception as exc:  # a broken plug-in is reported, never fatal
            failed.append(ep.name)
            print(f"cardio: warning: plug-in {ep.name!r} ({ep.value}) failed to load and is"
                  f" left out: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
            if debug():
                traceback.print_exc()
    return failed


# -- parser ----------------------------------------------------------------------------------
def build_parser(entries: Iterable[EntryPoint] | None = None) -> argparse.ArgumentParser:
    """The whole command line: the built-in card commands, then every plug-in's
    (``entries`` replaces the installed ``cardio.commands`` entries, for tests)."""
    parser = argparse.ArgumentParser(
        prog="cardio", description="My Number card (個人番号カード) tool")
    parser.add_argument("--version", action="version", version=f"cardio {__version__}")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--reader", default=None,
                        help="emu:DIR for a software card, or a PC/SC reader name")
    parser.add_argument("--trust", type=Path, default=None,
                        help="directory of trust anchors (PEM)")
    sub = parser.add_subparsers(dest="command", required=True)
    card.register_info(sub)
    jpki.register(sub)
    text_visual.register(sub)
    card.register_pin(sub)
    load_plugins(sub, entries)
    card.register_readers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Handler = args.func
    return run(func, args)
