"""What every ``cardio`` command shares; the host (parser, plug-ins, ``main``) is
:mod:`cardio.cli.host`.

Here: human or ``--json`` output (:func:`emit`), secret input (:class:`SecretSource`),
the options every command takes (:func:`add_common_options`), opening the card and the
trust anchors, parsing ports and times, and turning what a handler raises into one line
and an exit code (:func:`run`). Plug-ins import these from :mod:`cardio.cli`.

Errors: every error raised on purpose is a :class:`cardio.errors.CardioError` whose
``exit_code`` class attribute is the exit code (codes in :mod:`cardio.errors`); an
``OSError`` (a missing or unreadable file the user named) is a plain error (1); anything
else is a bug, reported as "internal error, please report" with exit 70 and no traceback
unless ``CARDIO_DEBUG=1``. ``ValueError`` is not caught wholesale: a value error raised on
purpose is a typed error (``InvalidValue`` and friends), any other is a bug.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cardio.card import MyNumberCard
from cardio.errors import (
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    CardioError,
    UsageError,
)
from cardio.readers import open_reader
from cardio.trust import TrustStore

Handler = Callable[[argparse.Namespace], int]


# -- secrets -------------------------------------------------------------------------------
class SecretSource:
    """Hands out the secrets a command needs, in order, from one source.

    PINs never come from a plain argument (they would show in ``ps`` and shell history):
    a named environment variable, stdin (one per line) or a prompt without echo.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._stdin: Iterator[str] | None = None

    def get(self, prompt: str, env_option: str = "pin_env") -> str:
        env_name: str | None = getattr(self.args, env_option, None)
        if env_name:
            value = os.environ.get(env_name)
            if value is None:
                raise UsageError(f"environment variable {env_name} is not set")
            return value
        if getattr(self.args, "pin_stdin", False):
            if self._stdin is None:
                self._stdin = iter(sys.stdin.read().splitlines())
            try:
                value = next(self._stdin)
            except StopIteration:
                raise UsageError(f"stdin ended before the {prompt}") from None
            return value.strip()
        if not sys.stdin.isatty():
            raise UsageError(f"no {prompt} given: use --pin-stdin or --pin-env NAME"
                             " (PINs are never taken as plain arguments)")
        return getpass.getpass(f"{prompt}: ")


# -- output ----------------------------------------------------------------------------------
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_text(obj: dict[str, Any]) -> str:
    """JSON that any UTF-8 stdout can carry. A file name that is not UTF-8 (bytes such
    as ``ff`` reach Python as lone surrogates) is written as a ``\\udcff`` escape:
    valid JSON, and ``os.fsencode(json.loads(...))`` gives the original bytes back."""
    text = json.dumps(obj, ensure_ascii=False, indent=2)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _display(line: str) -> str:
    """A line for people: undecodable file-name bytes shown as ``\\xff``, never an
    encoding error after the work is done."""
    if not _LONE_SURROGATE.search(line):
        return line
    return line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def emit(args: argparse.Namespace, obj: dict[str, Any], lines: Sequence[str]) -> None:
    """One JSON object with ``--json``, otherwise the human-readable lines."""
    if args.json:
        print(_json_text(obj))
    else:
        for line in lines:
            print(_display(line))


# -- what commands share --------------------------------------------------------------------
def add_common_options(p: argparse.ArgumentParser, *, secrets: bool = False,
                       new_secret: bool = False) -> None:
    """``--json``, ``--reader`` and ``--trust`` after the sub-command too (SUPPRESS keeps
    a value given before it), plus the PIN sources for commands that need a secret."""
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print one JSON object")
    p.add_argument("--reader", default=argparse.SUPPRESS,
                   help="emu:DIR for a software card, or a PC/SC reader name")
    p.add_argument("--trust", type=Path, default=argparse.SUPPRESS,
                   help="directory of trust anchors (PEM)")
    if secrets:
        p.add_argument("--pin-stdin", action="store_true",
                       help="read the PIN(s) from stdin, one per line")
        p.add_argument("--pin-env", metavar="NAME", help="read the PIN from $NAME")
    if new_secret:
        p.add_argument("--new-pin-env", metavar="NAME", help="read the new PIN from $NAME")


_OPEN_CARDS: list[MyNumberCard] = []


def open_card(args: argparse.Namespace) -> tuple[MyNumberCard, TrustStore | None]:
    """The card in ``--reader`` and the trust anchors that come with it, as one session:
    on a shared PC/SC reader the command's APDUs run in one transaction, and the card is
    reset at the end if a PIN was verified (whatever was actually verified decides, so
    callers need not say). :func:`run` closes it, whatever happens."""
    reader = open_reader(args.reader, args.trust)
    card = MyNumberCard(reader.transport)
    card.begin_session()
    _OPEN_CARDS.append(card)
    return card, reader.trust


def _close_cards() -> None:
    while _OPEN_CARDS:
        _OPEN_CARDS.pop().close()


def trust_for(args: argparse.Namespace, reader_trust: TrustStore | None = None) -> TrustStore:
    """Trust anchors from ``--trust``, the reader's, or ``$CARDIO_TRUST_DIR`` — in that
    order; none is a usage error, never a silent "valid"."""
    if args.trust is not None:
        return TrustStore.from_dir(args.trust)
    if reader_trust is not None:
        return reader_trust
    env = os.environ.get("CARDIO_TRUST_DIR")
    if env:
        return TrustStore.from_dir(Path(env))
    raise UsageError("no trust anchors: give --trust DIR (J-LIS's roots, or"
                     " 'cardio emu ca roots' for the emulated ones) or set CARDIO_TRUST_DIR")


def port_number(value: str, option: str = "--port") -> int:
    """A TCP port from the command line (0 picks a free one), or a one-line usage error
    (exit 2) instead of an ``OverflowError`` from ``bind``."""
    if not (value.isascii() and value.isdigit()):
        raise UsageError(f"{option} takes a number from 0 to 65535: {value!r} is not a"
                         " port number")
    if int(value) > 65535:
        raise UsageError(f"{option} takes a number from 0 to 65535: {value} is out of range")
    return int(value)


def parse_time(value: str | None, option: str = "--at") -> dt.datetime | None:
    """An ISO 8601 time from the command line (UTC when no zone is given)."""
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise UsageError(f"{option} takes an ISO 8601 time, e.g. 2030-01-01T00:00:00+09:00"
                         ) from exc
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


# -- running -----------------------------------------------------------------------------
def debug() -> bool:
    return os.environ.get("CARDIO_DEBUG") == "1"


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def run(func: Handler, args: argparse.Namespace) -> int:
    """Run a handler and turn what it raises into one line on stderr and an exit code.
    Every card the handler opened is closed (reset if a PIN was verified) either way."""
    try:
        try:
            return func(args)
        finally:
            _close_cards()
    except CardioError as exc:
        print(f"cardio: error: {one_line(exc)}", file=sys.stderr)
        return type(exc).exit_code
    except BrokenPipeError:
        # The reader of our output went away (``cardio … | head``): not an error to report.
        # Point stdout at /dev/null so the interpreter's final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:  # a file or directory the user named: their data, not a bug
        print(f"cardio: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("cardio: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug():
            traceback.print_exc()
        print(f"cardio: internal error, please report: {type(exc).__name__}:"
              f" {one_line(exc)}", file=sys.stderr)
        return EXIT_INTERNAL
