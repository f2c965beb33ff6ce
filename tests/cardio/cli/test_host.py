"""The CLI as a plug-in host: a third party's commands and reader scheme, installed as a
real distribution (a ``.dist-info`` with ``entry_points.txt`` on the path), a broken
plug-in that must not take the CLI down, and how unknown exceptions are reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cardio.cli import build_parser
from emulators.card import Profile

PLUGIN = '''
import argparse
from cardio.cli import add_common_options, emit
from cardio.errors import CardioError
from emulators.readers import open_emu_reader


class Checked(CardioError):
    exit_code = 6


def _raise(exc):
    def handler(args):
        raise exc
    return handler


def register(sub):
    p = sub.add_parser("hello", help="a third party's command")
    add_common_options(p)
    p.set_defaults(func=lambda args: emit(args, {"hello": "world"}, ["hello, world"]) or 0)
    for name, exc in (("crash", RuntimeError("boom")), ("crash-value", ValueError("oops")),
                      ("typed", Checked("checked, not valid"))):
        sub.add_parser(name).set_defaults(func=_raise(exc))


def open_toy(location, trust):
    return open_emu_reader(location, trust)
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("site")
    (path / "thirdparty_cmds.py").write_text(PLUGIN)
    (path / "thirdparty_broken.py").write_text(
        "raise ImportError('the frobnicate dependency is missing')\n")
    info = path / "thirdparty_cardio-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-cardio\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[cardio.commands]\nhello = thirdparty_cmds:register\n"
        "broken = thirdparty_broken:register\n\n"
        "[cardio.readers]\ntoy = thirdparty_cmds:open_toy\n")
    return path


def cli(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cardio.cli", *args], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(site), **env})


def test_third_party_command_and_a_broken_plugin(site: Path) -> None:
    res = cli(site, "hello", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"hello": "world"}
    # The broken plug-in is reported once, on one line, and the rest keeps working.
    warnings = res.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("cardio: warning: plug-in 'broken'")
    assert "ImportError: the frobnicate dependency is missing" in warnings[0]
    res = cli(site, "--help")
    assert res.returncode == 0
    for command in ("info", "jpki", "text", "visual", "pin", "readers", "emu", "demo",
                    "facepin", "hello"):
        assert command in res.stdout


def test_third_party_reader_scheme(site: Path, card_dir: tuple[Path, Profile]) -> None:
    res = cli(site, "--reader", f"toy:{card_dir[0]}", "info", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["token"] == "JPKIAPICCTOKEN2"


def test_unknown_exceptions_are_internal_errors(site: Path) -> None:
    for command, kind, msg in (("crash", "RuntimeError", "boom"),
                               ("crash-value", "ValueError", "oops")):
        res = cli(site, command)
        assert res.returncode == 70
        last = res.stderr.splitlines()[-1]
        assert last == f"cardio: internal error, please report: {kind}: {msg}"
        assert "Traceback" not in res.stderr
    res = cli(site, "crash", CARDIO_DEBUG="1")
    assert res.returncode == 70 and "Traceback (most recent call last)" in res.stderr
    # A plug-in's own CardioError carries its exit code as a class attribute.
    res = cli(site, "typed")
    assert res.returncode == 6 and res.stderr.splitlines()[-1] == (
        "cardio: error: checked, not valid")


def test_commands_and_options_unchanged() -> None:
    """The command tree users see, as before the plug-in split (issue 9 §1)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    choices = sub.choices
    assert isinstance(choices, dict)
    assert {"info", "jpki", "text", "visual", "pin", "emu", "facepin", "readers",
            "demo"} <= set(choices)

    def tree(p: object, prefix: str = "") -> set[str]:
        out = set()
        for action in p._actions:  # type: ignore[attr-defined]
            if isinstance(action.choices, dict) and action.dest != "help":
                for name, child in action.choices.items():
                    out |= tree(child, f"{prefix} {name}".strip())
            else:
                out |= {f"{prefix} {opt}" for opt in action.option_strings}
                if not action.option_strings and action.dest != "help":
                    out.add(f"{prefix} <{action.dest}>")
        return out

    commands = tree(parser)
    for expected in ("jpki verify-cert --at", "jpki cms verify --at-signing-time",
                     "emu serve --port", "emu ca revoke --event", "facepin serve --master-key",
                     "facepin serve --master-key-file", "pin change --new-pin-env",
                     "visual read --with", "text read --pin-stdin", "demo card --dir",
                     "demo kiosk --interactive",
                     "emu init --profile", "facepin verify --threshold"):
        assert expected in commands
    assert "facepin serve --jlis" not in commands  # the production service has no test key
