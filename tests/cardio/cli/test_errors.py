"""Every command that reads a file, fed garbage: certificates, ``.p7s``, images, holder
profiles and trust directories. Each answer is one line on stderr with its documented
exit code (README, cardio.errors) — never a traceback, never "internal error"."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cardio.cli import main
from emulators.card import JlisHierarchy, Profile

GARBAGE: dict[str, bytes] = {
    "empty": b"",
    "random": bytes(range(256)) * 3,
    "text": "これは証明書ではない\n".encode(),
    "utf8-bom-json": b"\xef\xbb\xbf{]",
    "pem-armour": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    "pem-bad-base64": b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    "cms-armour": b"-----BEGIN PKCS7-----\nMIIB\n-----END PKCS7-----\n",
    "der-header-only": bytes.fromhex("3082ffff"),
    "der-huge-length": bytes.fromhex("3084ffffffff02"),
}


@pytest.fixture
def env(tmp_path: Path, card_dir: tuple[Path, Profile], jlis: JlisHierarchy,
        capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    """A real certificate, trust anchors and a signed document to spoil."""
    card, _profile = card_dir
    paths = {"card": card, "doc": tmp_path / "doc.txt", "roots": tmp_path / "roots",
             "cert": tmp_path / "auth.der", "p7s": tmp_path / "doc.p7s"}
    paths["doc"].write_text("a document\n")
    assert main(["emu", "ca", "roots", "--out", str(paths["roots"]),
                 "--jlis", str(jlis.path)]) == 0
    assert main(["--reader", f"emu:{card}", "jpki", "cert", "auth",
                 "--out", str(paths["cert"])]) == 0
    for name, data in GARBAGE.items():
        (tmp_path / f"g-{name}").write_bytes(data)
    paths["truncated-cert"] = tmp_path / "g-truncated-cert"
    paths["truncated-cert"].write_bytes(paths["cert"].read_bytes()[:200])
    capsys.readouterr()
    return paths


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    got = main(argv)
    out, err = capsys.readouterr()
    assert got == code, (argv, err)
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("cardio: error: "), err
    assert "Traceback" not in err and "internal error" not in err
    return err


def garbage_files(tmp: Path) -> list[Path]:
    return [tmp / f"g-{name}" for name in GARBAGE] + [tmp / "g-truncated-cert",
                                                      tmp / "missing", tmp]


def test_garbage_certificates(env: dict[str, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    for bad in garbage_files(tmp_path):
        one_line_error(capsys, ["jpki", "verify-cert", str(bad), "--trust",
                                str(env["roots"])], 1)


def test_garbage_p7s(env: dict[str, Path], tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    for bad in garbage_files(tmp_path):
        # A malformed signature is "checked, not valid" (6); an unreadable file is 1.
        code = 1 if bad.name == "missing" or bad.is_dir() else 6
        one_line_error(capsys, ["jpki", "cms", "verify", "--in", str(env["doc"]), "--sig",
                                str(bad), "--trust", str(env["roots"])], code)
    one_line_error(capsys, ["jpki", "cms", "verify", "--in", str(tmp_path / "missing"),
                            "--sig", str(tmp_path / "g-random"), "--trust",
                            str(env["roots"])], 1)


def test_garbage_trust_dirs(env: dict[str, Path], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    spoilt = tmp_path / "spoilt-roots"
    spoilt.mkdir()
    (spoilt / "a.pem").write_bytes(GARBAGE["pem-armour"])
    keyless = tmp_path / "keyless-roots"
    keyless.mkdir()
    (keyless / "k.pem").write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n"
                                    b"-----END PUBLIC KEY-----\n")
    for trust in (spoilt, keyless, tmp_path / "missing", env["doc"]):
        err = one_line_error(capsys, ["jpki", "verify-cert", str(env["cert"]),
                                      "--trust", str(trust)], 1)
        assert trust.name in err
        one_line_error(capsys, ["--reader", f"emu:{env['card']}", "--trust", str(trust),
                                "info"], 1)
    one_line_error(capsys, ["jpki", "verify-cert", str(env["cert"]), "--trust",
                            str(env["roots"]), "--at", "yesterday"], 2)


PROFILES: dict[str, bytes] = {
    "truncated.json": b'{"name": "\xe8\xa9\xa6',
    "list.json": b"[]",
    "null.json": b"null",
    "number.json": b"42",
    "binary.json": bytes(range(256)),
    "types.json": b'{"name": 5}',
    "bool-as-int.json": b'{"with_sign_certificate": 1}',
    "tries-as-text.json": b'{"code_tries": "5"}',
    "date-as-number.json": b'{"birth": 19900401}',
    "bad-date.json": b'{"birth": "1990-13-45"}',
    "unknown-key.json": b'{"favourite_colour": "blue"}',
    "check-digit.json": b'{"my_number": "123456789012"}',
    "bad.toml": b"name = [\n",
    "types.toml": b"sex = 1\n",
}


def test_garbage_profiles(tmp_path: Path, jlis: JlisHierarchy,
                          capsys: pytest.CaptureFixture[str]) -> None:
    for name, data in PROFILES.items():
        path = tmp_path / name
        path.write_bytes(data)
        err = one_line_error(capsys, ["emu", "init", str(tmp_path / f"card-{name}"),
                                      "--profile", str(path), "--jlis", str(jlis.path)], 1)
        assert not (tmp_path / f"card-{name}").exists()  # nothing half-made
        assert "123456789012" not in err  # a value from the file is never echoed


def test_garbage_images(env: dict[str, Path], tmp_path: Path, jlis: JlisHierarchy,
                        capsys: pytest.CaptureFixture[str]) -> None:
    for bad in garbage_files(tmp_path):
        one_line_error(capsys, ["emu", "init", str(tmp_path / "c"), "--photo", str(bad),
                                "--jlis", str(jlis.path)], 1)
        assert not (tmp_path / "c").exists()
    for bad in (tmp_path / "g-random", tmp_path / "g-text", env["cert"]):
        err = one_line_error(capsys, ["facepin", "verify", "--reference", str(bad),
                                      "--probe", str(bad)], 1)
        assert "cannot decode" in err


def test_no_traceback_from_a_real_process(env: dict[str, Path], tmp_path: Path) -> None:
    """The same, as a user sees it: the process's whole stderr is one line."""
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run
    for argv, code in ((["jpki", "verify-cert", str(tmp_path / "g-random")], 1),
                       (["jpki", "cms", "verify", "--in", str(env["doc"]), "--sig",
                         str(tmp_path / "g-der-huge-length"), "--trust", str(env["roots"])], 6),
                       (["emu", "init", str(tmp_path / "x"), "--profile",
                         str(tmp_path / "g-random")], 1)):
        res = run([sys.executable, "-m", "cardio.cli", *argv], capture_output=True, text=True,
                  timeout=60)
        assert res.returncode == code and res.stderr.count("\n") == 1, res.stderr


def test_bad_ports_are_usage_errors(tmp_path: Path, card_dir: tuple[Path, Profile],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    for port in ("70000", "x1", "-1", "１２"):
        for argv in (["emu", "serve", str(card_dir[0]), "--port", port],
                     ["emu", "ca", "serve", "--jlis", str(tmp_path / "j"), "--port", port],
                     ["facepin", "serve", "--port", port]):
            err = one_line_error(capsys, argv, 2)
            assert "--port takes a number from 0 to 65535" in err
    err = one_line_error(capsys, ["emu", "serve", str(card_dir[0]), str(card_dir[0]),
                                  "--port", "65535"], 2)
    assert "no port for card 2" in err


def test_an_endless_certificate_or_signature_file_is_one_line(
        env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """``/dev/zero`` as a certificate or a signature: the whole file was read into memory
    before the size check, so the process grew until it was killed; now at most one byte
    more than the limit is read."""
    zero = "/dev/zero"
    err = one_line_error(capsys, ["jpki", "verify-cert", zero, "--trust", str(env["roots"])],
                         1)
    assert "exceeds" in err
    err = one_line_error(capsys, ["jpki", "cms", "verify", "--in", str(env["doc"]), "--sig",
                                  zero, "--trust", str(env["roots"])], 6)
    assert "exceeds" in err


def test_a_closed_output_pipe_is_not_reported(tmp_path: Path) -> None:
    """``cardio … | head``: when the reader has gone, no "Broken pipe" error line and no
    "Exception ignored" noise from the interpreter's final flush."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "cardio.cli", "emu", "init",
                             str(tmp_path / "c"), "--jlis", str(tmp_path / "j"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()                      # the reader is gone before anything is written
    err = proc.stderr.read()
    proc.wait(120)
    assert err == b"", err
    assert proc.returncode == 1
    assert (tmp_path / "c" / "card.json").exists()  # the work itself was done
