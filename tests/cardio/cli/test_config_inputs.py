"""Every command that reads a configuration or profile file, fed a damaged one (issue 22,
item 11): binary bytes, nesting deep enough to exhaust the parser's recursion (100,000
nested arrays or tables), text that is not UTF-8, and well-formed files whose values have
the wrong type. Each answer is one line on stderr with the command's configuration exit
code — never exit 70 "internal error" (RecursionError, UnicodeDecodeError, AttributeError
and TypeError were), and never a start on a value that cannot work."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cardio.cli import main
from kiosk.protocol.credentials import KioskCredentials

BINARY = b"\x00\xff\xfe\x80" + bytes(range(256)) * 8
DEEP = 100_000

#: What every format gets: binary, deep nesting of both kinds, invalid UTF-8.
TOML_DAMAGE = {
    "binary": BINARY,
    "deep-arrays": b"a = " + b"[" * DEEP + b"]" * DEEP,
    "deep-tables": b"a = " + b"{b=" * DEEP + b"1" + b"}" * DEEP,
    "invalid-utf8": b'[kiosk]\njournal = "\xff\xfe"\n',
}
JSON_DAMAGE = {
    "binary": BINARY,
    "deep-arrays": b"[" * DEEP + b"]" * DEEP,
    "deep-objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "invalid-utf8": b'{"name": "\xff\xfe"}',
}

KIOSK = b"""[kiosk]
journal = "JOURNAL"
center = "http://127.0.0.1:9"
reader = "emu:/nonexistent"
tray = "TRAY"
"""

#: Well-formed files with a value of the wrong type, per command.
WRONG_TYPES: dict[str, dict[str, bytes]] = {
    "kiosk run": {
        "tick": KIOSK + b"tick = 'fast'\n",
        "deadline": KIOSK + b"deadline = [600]\n",
        "deadline-nan": KIOSK + b"deadline = nan\n",
        "credentials": KIOSK + b"credentials = 5\n",
        "ui-options": KIOSK + b"[ui]\npin_env = 'P'\ndocument = 'juminhyo'\noptions = 5\n",
        "ui-insert": KIOSK + b"[ui]\npin_env = 'P'\ndocument = 'juminhyo'\ninsert = ['x']\n",
        "emulator": b"emulator = 5\n" + KIOSK,
        "emulator-control": KIOSK + b"[emulator]\ncontrol = 5\n",
        "kiosk-array": b"kiosk = [1, 2]\n",
        "ui-number": b"ui = 5\n" + KIOSK,
    },
    "devices check": {
        "emulator": b"emulator = 'x'\n",
        "emulator-control": b"[emulator]\ncontrol = [1]\n",
        "hopper-float": b"[coin_acceptor]\nport = '/dev/null'\n[[hopper]]\naddress = 1e400\n"
                        b"coin = 1\n",
        "timeout-nan": b"[bill_validator]\nport = '/dev/null'\ntimeout = nan\n",
        "top-array": b"bill_validator = [1]\n",
    },
    "kiosk issue --devices": {
        "emulator": b"emulator = 'x'\n",
        "emulator-control": b"[emulator]\ncontrol = 5\n",
    },
    "emu init --profile .json": {
        "array": b"[1, 2]",
        "name": b'{"name": 3}',
        "birth": b'{"birth": 5}',
        "tries": b'{"code_tries": 1e400}',
    },
    "emu init --profile .toml": {
        "name": b"name = [1]",
        "birth": b"birth = 5",
    },
    "facepin serve --card-registry": {
        "array": b"[1]",
        "entry": b'{"ab": 3}',
        "serial": b'{"ab": {"serial": 1, "face_key": "x"}}',
    },
    "kiosk issue --credentials kiosk.json": {
        "array": b"[1]",
        "id": b'{"kiosk_id": 1, "center": "http://127.0.0.1:9"}',
        "missing": b"{}",
    },
    "kiosk issue --credentials municipality-keys.json": {
        "array": b"[1]",
        "number": b'{"13101": 5}',
        "not-pem": b'{"13101": "not a PEM key"}',
    },
}

#: Each command: how to run it on the damaged file, its format, and its exit code for a
#: configuration it refuses (22: a kiosk's device/run configuration; 1: a data file).
Argv = Callable[[Path, Path], list[str]]
COMMANDS: dict[str, tuple[str, int, Argv]] = {
    "kiosk run": ("toml", 22, lambda f, d: ["kiosk", "run", "--config", str(f)]),
    "devices check": ("toml", 22, lambda f, d: ["kiosk", "devices", "check", "--config",
                                                str(f)]),
    "kiosk issue --devices": ("toml", 22, lambda f, d: [
        *issue(d), "--devices", str(f), "--credentials", str(d / "creds")]),
    "emu init --profile .json": ("json", 1, lambda f, d: [
        "emu", "init", str(d / "card"), "--profile", str(f)]),
    "emu init --profile .toml": ("toml", 1, lambda f, d: [
        "emu", "init", str(d / "card"), "--profile", str(f)]),
    "facepin serve --card-registry": ("json", 1, lambda f, d: [
        "facepin", "serve", "--db", f"sqlite:///{d / 'fp.db'}", "--master-key-file",
        str(d / "master.key"), "--card-registry", str(f), "--port", "1", "--trust",
        str(d)]),
    "kiosk issue --credentials kiosk.json": ("json", 1, lambda f, d: [
        *issue(d), "--devices", str(d / "devices.toml"), "--credentials", str(f.parent)]),
    "kiosk issue --credentials municipality-keys.json": ("json", 1, lambda f, d: [
        *issue(d), "--devices", str(d / "devices.toml"), "--credentials", str(f.parent)]),
}


def issue(d: Path) -> list[str]:
    """``kiosk issue`` up to its file options."""
    return ["kiosk", "issue", "--reader", "emu:/nonexistent", "--center",
            "http://127.0.0.1:9", "--document", "juminhyo", "--pin-env", "CARDIO_T_PIN",
            "--insert", "1000", "--journal", str(d / "journal.db")]


def _cases() -> list[tuple[str, str, bytes]]:
    out = []
    for command, (fmt, _code, _argv) in COMMANDS.items():
        damage = TOML_DAMAGE if fmt == "toml" else JSON_DAMAGE
        out += [(command, name, data) for name, data in damage.items()]
        out += [(command, "wrong-" + name, data)
                for name, data in WRONG_TYPES.get(command, {}).items()]
    return out


@pytest.mark.parametrize("command, damage, data", [
    pytest.param(c, n, d, id=f"{c}-{n}") for c, n, d in _cases()])
def test_a_damaged_configuration_is_one_typed_line(
        command: str, damage: str, data: bytes, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fmt, code, argv = COMMANDS[command]
    monkeypatch.setenv("CARDIO_T_PIN", "1234")
    monkeypatch.delenv("CARDIO_JLIS_DIR", raising=False)
    monkeypatch.delenv("CARDIO_DEBUG", raising=False)
    KioskCredentials("kiosk-t", ec.generate_private_key(ec.SECP256R1()),
                     "http://127.0.0.1:9", {}).save(tmp_path / "creds")
    (tmp_path / "devices.toml").write_text("")
    (tmp_path / "master.key").write_bytes(b"k" * 32)
    data = data.replace(b"JOURNAL", str(tmp_path / "j.db").encode()).replace(
        b"TRAY", str(tmp_path / "tray").encode())
    if "--credentials" in command:  # a copy of the good directory with one file spoiled
        creds = tmp_path / "spoiled"
        creds.mkdir()
        for f in (tmp_path / "creds").iterdir():
            (creds / f.name).write_bytes(f.read_bytes())
        target = creds / command.rpartition(" ")[2]
    else:
        target = tmp_path / f"input.{'json' if command.endswith('.json') else fmt}"
        if command == "facepin serve --card-registry":
            target = tmp_path / "registry.json"
    target.write_bytes(data)
    capsys.readouterr()
    got = main(argv(target, tmp_path))
    out, err = capsys.readouterr()
    assert out == ""
    assert "internal error" not in err and "Traceback" not in err, err
    assert got == code, err
    assert err.count("\n") == 1 and err.startswith("cardio: error: "), err
    assert not (tmp_path / "j.db").exists() and not (tmp_path / "journal.db").exists()


@pytest.mark.parametrize("argv", [["kiosk", "run", "--config", "/dev/zero"],
                                  ["kiosk", "devices", "check", "--config", "/dev/zero"]])
def test_an_endless_configuration_is_refused_after_a_bounded_read(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """``/dev/zero`` as the configuration: read up to 1 MiB, then one line (it read until
    memory ran out)."""
    assert main(argv) == 22
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "larger than a" in err, err


@pytest.mark.parametrize("damage", ["binary", "deep-arrays", "deep-objects", "array"])
def test_a_damaged_enrolled_kiosk_is_passed_over(
        damage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``--credentials`` the kiosk looks for the emulated operator's kiosks under
    ``$CARDIO_JLIS_DIR/kiosks``; one whose ``kiosk.json`` is damaged is not this center's
    (a deep one raised RecursionError, a list AttributeError: exit 70), so the answer is
    the usual one line "no kiosk enrolled" (exit 2)."""
    d = tmp_path / "jlis" / "kiosks" / "kiosk-0001"
    d.mkdir(parents=True)
    (d / "kiosk.json").write_bytes(JSON_DAMAGE.get(damage, b"[1]"))
    monkeypatch.setenv("CARDIO_JLIS_DIR", str(tmp_path / "jlis"))
    monkeypatch.setenv("CARDIO_T_PIN", "1234")
    (tmp_path / "devices.toml").write_text("")
    argv = [*issue(tmp_path), "--devices", str(tmp_path / "devices.toml")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no kiosk enrolled for" in err, err
