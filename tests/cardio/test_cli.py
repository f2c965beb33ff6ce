"""The ``cardio`` command line: every command, JSON output, PIN sources, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from cardio.cli import main
from emulators.card import Profile
from tests.conftest import CardFactory


def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str,
        stdin: str | None = None) -> tuple[int, str, str]:
    if stdin is not None:
        import io
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def cli(*args: str, stdin: str = "", env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """The CLI in a new process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "cardio.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def reader(card_dir: tuple[Path, Profile]) -> str:
    return f"emu:{card_dir[0]}"


def test_emu_init_json_prints_credentials(tmp_path: Path) -> None:
    jlis = tmp_path / "jlis"
    res = cli("emu", "init", str(tmp_path / "c"), "--jlis", str(jlis), "--json")
    assert res.returncode == 0, res.stderr
    creds = json.loads(res.stdout)
    for key in ("auth_pin", "sign_password", "text_pin", "my_number", "code_b"):
        assert creds[key]
    assert (tmp_path / "c" / "card.json").exists()
    state_text = (tmp_path / "c" / "state.json").read_text()
    assert creds["sign_password"] not in state_text
    # The card directory keeps salted HMAC digests of the PINs, never the PINs.
    import hashlib
    import hmac
    auth = json.loads(state_text)["keys"]["D392F000260100000001/0018"]
    assert set(auth) == {"max", "tries", "salt", "hash", "rule"}
    assert auth["hash"] == hmac.new(bytes.fromhex(auth["salt"]), creds["auth_pin"].encode(),
                                    hashlib.sha256).hexdigest()
    # Idempotence guard: a second init into the same directory refuses.
    again = cli("emu", "init", str(tmp_path / "c"), "--jlis", str(jlis))
    assert again.returncode == 1 and "already holds a card" in again.stderr


def test_emu_init_with_profile_and_photo(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image
    profile = {"name": "試験　太郎", "address": "大阪府架空市１－２－３", "birth": "1980-02-17",
               "sex": "1", "my_number": "537686677188", "expiry": "2035-02-17",
               "security_code": "2285", "text_pin": "1357"}
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps(profile, ensure_ascii=False))
    img = tmp_path / "face.png"
    Image.new("RGB", (400, 500), (120, 90, 60)).save(img)
    code, out, _ = run(capsys, monkeypatch, "emu", "init", str(tmp_path / "c"), "--profile",
                       str(pf), "--photo", str(img), "--jlis", str(tmp_path / "j"), "--json")
    assert code == 0
    creds = json.loads(out)
    assert creds["code_b"] == "55021720352285"
    code, out, _ = run(capsys, monkeypatch, "--reader", f"emu:{tmp_path / 'c'}", "text",
                       "read", "--json", "--pin-stdin", stdin="1357\n")
    assert code == 0
    data = json.loads(out)
    assert (data["name"], data["my_number"], data["signature"]) == (
        "試験　太郎", "537686677188", "valid")
    code, out, _ = run(capsys, monkeypatch, "--reader", f"emu:{tmp_path / 'c'}", "visual",
                       "read", "--out", str(tmp_path / "v"), "--with", "b", "--pin-stdin",
                       "--json", stdin="55021720352285\n")
    assert code == 0 and json.loads(out)["signature"] == "valid"
    with Image.open(tmp_path / "v" / "photo.jp2") as photo:
        assert photo.format == "JPEG2000" and photo.mode == "L"


def test_bad_profile_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"my_number": "123456789012"}))
    code, _out, err = run(capsys, monkeypatch, "emu", "init", str(tmp_path / "c"),
                          "--profile", str(pf), "--jlis", str(tmp_path / "j"))
    assert code == 1 and "check digit" in err


def test_info_json(reader: str, capsys: pytest.CaptureFixture[str],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(capsys, monkeypatch, "--reader", reader, "info", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["token"] == "JPKIAPICCTOKEN2"
    assert {k: v["tries_left"] for k, v in info["pins"].items() if k in
            ("auth", "sign", "text")} == {"auth": 3, "sign": 5, "text": 3}
    code, out, _ = run(capsys, monkeypatch, "info", "--reader", reader)
    assert code == 0 and "JPKIAPICCTOKEN2" in out and "tries left" in out


def test_blocked_auth_pin_across_processes(card_dir: tuple[Path, Profile]) -> None:
    path, profile = card_dir
    reader = f"emu:{path}"
    wrong = "0000" if profile.auth_pin != "0000" else "1111"
    for _ in range(2):
        r = cli("--reader", reader, "jpki", "sign", "--key", "auth", "--in", str(path /
                "card.json"), "--out", str(path / "s"), "--pin-stdin", stdin=wrong + "\n")
        assert r.returncode == 3 and "63C" in r.stderr
        assert wrong not in r.stderr
    info = json.loads(cli("--reader", reader, "info", "--json").stdout)
    assert info["pins"]["auth"]["tries_left"] == 1
    r = cli("--reader", reader, "jpki", "sign", "--key", "auth", "--in", str(path / "card.json"),
            "--out", str(path / "s"), "--pin-stdin", stdin=wrong + "\n")
    assert r.returncode == 4 and "blocked" in r.stderr and "63C0" in r.stderr
    # Every auth-PIN operation now fails, with the right PIN too, in new processes.
    r = cli("--reader", reader, "jpki", "sign", "--key", "auth", "--in", str(path / "card.json"),
            "--out", str(path / "s"), "--pin-env", "AUTHPIN", env={"AUTHPIN": profile.auth_pin})
    assert r.returncode == 4 and "6984" in r.stderr and "municipal office" in r.stderr
    r = cli("--reader", reader, "pin", "change", "auth", "--pin-stdin",
            stdin=f"{profile.auth_pin}\n9999\n")
    assert r.returncode == 4 and "6984" in r.stderr
    info = json.loads(cli("--reader", reader, "info", "--json").stdout)
    assert info["pins"]["auth"] == {**info["pins"]["auth"], "tries_left": 0, "blocked": True}
    assert info["pins"]["sign"]["tries_left"] == 5


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
@pytest.mark.parametrize(("key", "hash_name"), [("auth", "sha256"), ("sign", "sha512"),
                                                ("auth", "sha384")])
def test_jpki_sign_verifies_with_openssl(tmp_path: Path, reader: str, profile: Profile,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, key: str,
                                         hash_name: str) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_bytes(b"A document signed with a software My Number card.\n")
    secret = profile.auth_pin if key == "auth" else profile.sign_password
    monkeypatch.setenv("CARDIO_TEST_PIN", secret)
    code, _out, err = run(capsys, monkeypatch, "--reader", reader, "jpki", "sign", "--key", key,
                          "--in", str(doc), "--out", str(tmp_path / "sig"), "--hash", hash_name,
                          "--pin-env", "CARDIO_TEST_PIN")
    assert code == 0, err
    code, _out, err = run(capsys, monkeypatch, "--reader", reader, "jpki", "cert", key,
                          "--out", str(tmp_path / "cert.pem"), "--pem",
                          "--pin-env", "CARDIO_TEST_PIN")
    assert code == 0, err
    pub = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "cert.pem"), "-pubkey",
                          "-noout", "-out", str(tmp_path / "pub.pem")],
                         capture_output=True, text=True, timeout=30)
    assert pub.returncode == 0, pub.stderr
    res = subprocess.run(["openssl", "dgst", f"-{hash_name}", "-verify", str(tmp_path / "pub.pem"),
                          "-signature", str(tmp_path / "sig"), str(doc)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "Verified OK" in res.stdout
    doc.write_bytes(b"tampered")
    res = subprocess.run(["openssl", "dgst", f"-{hash_name}", "-verify", str(tmp_path / "pub.pem"),
                          "-signature", str(tmp_path / "sig"), str(doc)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0


def test_jpki_cert_exports_exact_der(tmp_path: Path, reader: str, card_dir: tuple[Path, Profile],
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from emulators.card import SoftwareCard
    card = SoftwareCard.open(card_dir[0])
    for which, fid in (("auth", 0x0A), ("auth-ca", 0x0B), ("sign-ca", 0x02)):
        code, out, _ = run(capsys, monkeypatch, "--reader", reader, "jpki", "cert", which,
                           "--out", str(tmp_path / f"{which}.der"), "--json")
        assert code == 0
        der = (tmp_path / f"{which}.der").read_bytes()
        assert der == card.image.files[(bytes.fromhex("D392F000260100000001"), fid)]
        assert json.loads(out)["subject"] == x509.load_der_x509_certificate(
            der).subject.rfc4514_string()
    code, _out, err = run(capsys, monkeypatch, "--reader", reader, "jpki", "cert", "sign",
                          "--out", str(tmp_path / "s.der"), "--pin-stdin", stdin="")
    assert code == 2 and "stdin ended" in err


def test_text_read_wrong_pin(reader: str, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch, profile: Profile) -> None:
    wrong = "0000" if profile.text_pin != "0000" else "1111"
    code, out, err = run(capsys, monkeypatch, "--reader", reader, "text", "read",
                         "--pin-stdin", stdin=wrong + "\n")
    assert code == 3 and out == "" and "63C2" in err and wrong not in err
    code, out, _ = run(capsys, monkeypatch, "--reader", reader, "text", "read",
                       "--pin-stdin", stdin=profile.text_pin + "\n")
    assert code == 0 and profile.my_number in out and "valid" in out


def test_text_read_with_code_a(reader: str, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch, profile: Profile) -> None:
    code, out, _ = run(capsys, monkeypatch, "--reader", reader, "text", "read", "--with", "a",
                       "--json", "--pin-stdin", stdin=profile.my_number + "\n")
    data = json.loads(out)
    assert code == 0 and data["my_number"] == profile.my_number and "name" not in data


def test_visual_read_with_text_pin(tmp_path: Path, reader: str, profile: Profile,
                                   capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(capsys, monkeypatch, "--reader", reader, "visual", "read", "--out",
                       str(tmp_path / "face"), "--pin-stdin", stdin=profile.text_pin + "\n")
    assert code == 0 and "valid" in out
    assert sorted(p.name for p in (tmp_path / "face").iterdir()) == [
        "address.png", "name.png", "photo.jp2", "security_code.png"]


def test_pin_change(reader: str, profile: Profile, capsys: pytest.CaptureFixture[str],
                    monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(capsys, monkeypatch, "--reader", reader, "pin", "change", "text",
                       "--json", "--pin-stdin", stdin=f"{profile.text_pin}\n8642\n")
    assert code == 0 and json.loads(out) == {"changed": "text"}
    code, _out, _ = run(capsys, monkeypatch, "--reader", reader, "text", "read",
                        "--pin-stdin", stdin="8642\n")
    assert code == 0
    code, _out, err = run(capsys, monkeypatch, "--reader", reader, "pin", "change", "sign",
                          "--pin-stdin", stdin=f"{profile.sign_password}\nweak\n")
    assert code == 1 and "6-16 characters" in err
    monkeypatch.setenv("OLD", profile.common_pin or "")
    monkeypatch.setenv("NEW", "1122")
    code, _out, err = run(capsys, monkeypatch, "--reader", reader, "pin", "change", "common",
                          "--pin-env", "OLD", "--new-pin-env", "NEW")
    assert code == 0, err


def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                             tmp_path: Path) -> None:
    monkeypatch.delenv("CARDIO_READER", raising=False)
    code, _out, err = run(capsys, monkeypatch, "info")
    assert code == 1 and err.count("\n") == 1 and "--reader" in err
    code, _out, err = run(capsys, monkeypatch, "--reader", f"emu:{tmp_path}/none", "info")
    assert code == 1 and "cardio emu init" in err
    code, _out, err = run(capsys, monkeypatch, "--reader", "emu:" + str(tmp_path), "jpki",
                          "sign", "--key", "auth", "--in", str(tmp_path / "missing"), "--out",
                          str(tmp_path / "o"), "--pin-env", "X")
    assert code == 1 and err.startswith("cardio: error:")
    with pytest.raises(SystemExit) as exc:
        main(["jpki", "sign", "--key", "auth", "--pin", "1234"])
    assert exc.value.code == 2


def test_pin_never_in_argv_or_output(reader: str, profile: Profile, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P", profile.auth_pin)
    _code, out, err = run(capsys, monkeypatch, "--reader", reader, "jpki", "sign", "--key",
                         "auth", "--in", str(tmp_path / "x"), "--out", str(tmp_path / "y"),
                         "--pin-env", "P", "--json")
    assert profile.auth_pin not in out + err


def test_demo_runs(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                   tmp_path: Path) -> None:
    code, out, _ = run(capsys, monkeypatch, "demo", "card", "--json", "--dir", str(tmp_path))
    assert code == 0
    data = json.loads(out)
    assert data["text"]["signature"] == "valid" and data["visual"]["signature"] == "valid"
    assert data["pins"]["auth"] == 3


def test_concurrent_processes_do_not_lose_a_try(make_card: CardFactory) -> None:
    path, _profile = make_card()
    script = (
        "import sys\n"
        "from emulators.card import SoftwareCard\n"
        "card = SoftwareCard.open(sys.argv[1])\n"
        "card.transmit(bytes.fromhex('00A4040C0AD3921000310001010408'))\n"
        "for _ in range(4):\n"
        "    assert card.transmit(bytes.fromhex('002000940C' + b'000000000000'.hex()))[0] == 0x63\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path)]) for _ in range(2)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    from emulators.card import SoftwareCard
    card = SoftwareCard.open(path)
    card.transmit(bytes.fromhex("00A4040C0AD3921000310001010408"))
    assert card.transmit(bytes.fromhex("00200094")) == bytes.fromhex("63C2")


def test_more_error_paths(reader: str, profile: Profile, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A wrong 照合番号B for the card face: exit 3, the status word, not the value.
    wrong_b = "0" * 14 if profile.code_b != "0" * 14 else "1" * 14
    code, _out, err = run(capsys, monkeypatch, "--reader", reader, "visual", "read", "--out",
                          str(tmp_path / "v"), "--with", "b", "--pin-stdin", stdin=wrong_b + "\n")
    assert code == 3 and "63C9" in err and wrong_b not in err
    # A malformed 照合番号 never reaches the card.
    code, _out, err = run(capsys, monkeypatch, "--reader", reader, "text", "read", "--with",
                          "b", "--pin-stdin", stdin="123\n")
    assert code == 1 and "14 digits" in err
    # The signature certificate with a wrong password.
    code, _out, err = run(capsys, monkeypatch, "--reader", reader, "jpki", "cert", "sign",
                          "--out", str(tmp_path / "s.der"), "--pin-stdin", stdin="WRONG99\n")
    assert code == 3 and "63C4" in err and not (tmp_path / "s.der").exists()
    # An unset environment variable.
    monkeypatch.delenv("NOPE", raising=False)
    code, _out, err = run(capsys, monkeypatch, "--reader", reader, "text", "read",
                          "--pin-env", "NOPE")
    assert code == 2 and "NOPE is not set" in err


@pytest.mark.parametrize("as_json", [False, True])
def test_out_path_that_is_not_utf8(reader: str, card_dir: tuple[Path, Profile], tmp_path: Path,
                                   as_json: bool) -> None:
    """A file name with a byte that is not UTF-8 (b'\\xff'): the certificate is written and
    the command succeeds (before: written, then exit 1 on printing the name). Run with a
    strict UTF-8 stdout, as a terminal in a UTF-8 locale has."""
    raw = os.fsencode(tmp_path) + b"/cert-\xff.der"
    res = subprocess.run([sys.executable, "-m", "cardio.cli", "--reader", reader, "jpki", "cert",
                          "auth", *(["--json"] if as_json else []), "--out", os.fsdecode(raw)],
                         capture_output=True, timeout=60,
                         env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    assert res.returncode == 0, res.stderr
    assert os.path.exists(raw) and os.path.getsize(raw) > 500
    out = res.stdout.decode("utf-8")                # valid UTF-8 either way
    if as_json:
        assert os.fsencode(json.loads(out)["out"]) == raw   # the exact name round-trips
    else:
        assert "cert-\\xff.der" in out
