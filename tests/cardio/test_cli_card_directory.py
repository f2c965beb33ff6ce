"""Every CLI command that opens a software card, against every kind of damaged card
directory: no traceback, one line on stderr naming the file, exit code 1 (issue 9 item 4).

The damages are the ones the card store's own tests define (truncated JSON, ``{}``,
``[]``, ``null``, wrong types, negative or out-of-range counters, missing keys, missing
files, unreadable files). Most run in-process through ``cardio.cli.main``; two run as a
real ``cardio`` process, one of them as the unprivileged user ``nobody`` so that "no read
permission" is a real EACCES and not root's trick of a directory in a file's place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardio.cli import main
from emulators.card import JlisHierarchy, Profile, create_card
from emulators.card.keys import KeyPool
from tests.emulators.card.test_store import DAMAGES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, jlis: JlisHierarchy,
             key_pool: KeyPool, default_photo: bytes) -> tuple[Path, Profile]:
    """One personalised card, copied for each test (personalising 400 would be slow)."""
    profile = Profile()
    path = tmp_path_factory.mktemp("pristine") / "card"
    create_card(path, profile, jlis, keys=key_pool, photo=default_photo)
    return path, profile


@pytest.fixture
def fresh(pristine: tuple[Path, Profile], tmp_path: Path) -> tuple[Path, Profile]:
    path = tmp_path / "card"
    shutil.copytree(pristine[0], path)
    return path, pristine[1]


def _commands(tmp: Path, card: Path) -> dict[str, list[str]]:
    """Every command that opens the card, with the arguments it needs to get that far."""
    data = tmp / "data.txt"
    reader = ["--reader", f"emu:{card}"]
    return {
        "info": [*reader, "info"],
        "jpki cert auth": [*reader, "jpki", "cert", "auth", "--out", str(tmp / "a.der")],
        "jpki cert sign": [*reader, "jpki", "cert", "sign", "--out", str(tmp / "s.der"),
                           "--pin-env", "CARDIO_TEST_SIGN"],
        "jpki sign": [*reader, "jpki", "sign", "--key", "auth", "--in", str(data),
                      "--out", str(tmp / "sig"), "--pin-env", "CARDIO_TEST_PIN"],
        "jpki cms sign": [*reader, "jpki", "cms", "sign", "--in", str(data),
                          "--out", str(tmp / "x.p7s"), "--pin-env", "CARDIO_TEST_SIGN"],
        "jpki verify-cert --card": [*reader, "jpki", "verify-cert", "--card", "auth"],
        "text read": [*reader, "text", "read", "--pin-env", "CARDIO_TEST_PIN"],
        "visual read": [*reader, "visual", "read", "--out", str(tmp / "face"),
                        "--with", "b", "--pin-env", "CARDIO_TEST_PIN"],
        "pin change": [*reader, "pin", "change", "auth", "--pin-env", "CARDIO_TEST_PIN",
                       "--new-pin-env", "CARDIO_TEST_NEW"],
        "facepin verify --reference card": [*reader, "facepin", "verify", "--reference",
                                            "card", "--probe", str(data),
                                            "--pin-env", "CARDIO_TEST_PIN"],
        "emu ca revoke": ["emu", "ca", "revoke", str(card), "--cert", "auth"],
        "emu serve": ["emu", "serve", str(card), "--port", "1"],
    }


COMMANDS = sorted(_commands(Path("/nonexistent"), Path("/nonexistent")))

def _cases() -> Iterator[object]:
    for damage in sorted(DAMAGES):
        for command in COMMANDS:
            yield pytest.param(damage, command, id=f"{damage}|{command}")


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch, pristine: tuple[Path, Profile]) -> Profile:
    profile = pristine[1]
    monkeypatch.setenv("CARDIO_TEST_PIN", profile.auth_pin)
    monkeypatch.setenv("CARDIO_TEST_SIGN", profile.sign_password)
    monkeypatch.setenv("CARDIO_TEST_NEW", "9876")
    return profile


def _one_line_error(code: int, err: str, file: str, profile: Profile) -> None:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cardio: error: card directory damaged: "), err
    assert file in lines[0], err
    assert code == 1, err
    for secret in (profile.auth_pin, profile.sign_password, profile.my_number):
        assert secret not in err


@pytest.mark.parametrize(("damage", "command"), list(_cases()))
def test_every_command_gives_one_line_for_a_damaged_card(
        damage: str, command: str, fresh: tuple[Path, Profile], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], secrets_env: Profile) -> None:
    path, profile = fresh
    damage_fn, file, _what = DAMAGES[damage]
    damage_fn(path)
    (tmp_path / "data.txt").write_text("to be signed\n")
    code = main(_commands(tmp_path, path)[command])
    out, err = capsys.readouterr()
    _one_line_error(code, err, file, profile)
    assert out == ""


@pytest.mark.parametrize("command", ["info", "emu serve"])
def test_a_nonexistent_directory_is_one_line(command: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             secrets_env: Profile) -> None:
    code = main(_commands(tmp_path, tmp_path / "no-such-card")[command])
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "no software card in" in err and code == 1


def _cardio(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups"] if user else []
    return subprocess.run([*prefix, sys.executable, "-m", "cardio.cli", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent"})


def test_the_real_process_prints_one_line(fresh: tuple[Path, Profile]) -> None:
    path, profile = fresh
    (path / "state.json").write_text("{}")
    res = _cardio("--reader", f"emu:{path}", "info")
    _one_line_error(res.returncode, res.stderr, "state.json", profile)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to drop to nobody with setpriv")
@pytest.mark.slow
def test_no_read_permission_as_an_unprivileged_user(pristine: tuple[Path, Profile]) -> None:
    """The card as ``nobody`` sees it: everything readable but the 0600 state.json. (A
    directory of its own under /tmp: pytest's base directory is root's alone.)"""
    base = Path(tempfile.mkdtemp(prefix="cardio-nobody-", dir="/tmp"))
    try:
        path = base / "card"
        shutil.copytree(pristine[0], path)
        for p in path.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        for p in (base, path):
            p.chmod(0o755)
        (path / "state.json").chmod(0o600)  # root's alone, as the store writes it
        res = _cardio("--reader", f"emu:{path}", "info", user="nobody")
        _one_line_error(res.returncode, res.stderr, "state.json", pristine[1])
        assert "unreadable (Permission denied)" in res.stderr
    finally:
        shutil.rmtree(base)
