"""``cardio facepin serve`` takes its master key from configuration only (issue 9 §3).

The refusals are checked in-process (they happen before uvicorn is imported); the one
that starts the service is ``test_service.py::test_facepin_serve_process``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cardio.cli import main


@pytest.fixture
def jlis_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty emulated J-LIS directory in the environment: it must stay empty."""
    path = tmp_path / "emu-jlis"
    path.mkdir()
    monkeypatch.setenv("CARDIO_JLIS_DIR", str(path))
    monkeypatch.delenv("CARDIO_FACEPIN_MASTER_KEY_FILE", raising=False)
    return path


def serve(capsys: pytest.CaptureFixture[str], tmp_path: Path, *extra: str) -> tuple[int, str]:
    roots = tmp_path / "roots"
    roots.mkdir(exist_ok=True)
    code = main(["facepin", "serve", "--db", f"sqlite:///{tmp_path / 'f.db'}", "--port", "0",
                 "--trust", str(roots), *extra])
    out, err = capsys.readouterr()
    assert out == ""
    return code, err


def test_no_master_key_refuses_to_start(jlis_env: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, err = serve(capsys, tmp_path)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("cardio: error: no PIN-reset master key")
    assert "--master-key-file" in err and "CARDIO_FACEPIN_MASTER_KEY_FILE" in err
    assert list(jlis_env.iterdir()) == []
    assert not (tmp_path / "f.db").exists()


def test_unreadable_or_short_key_refuses(jlis_env: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARDIO_FACEPIN_MASTER_KEY_FILE", str(tmp_path / "missing.key"))
    code, err = serve(capsys, tmp_path)
    assert code == 2 and err.count("\n") == 1 and "missing.key" in err
    short = tmp_path / "short.key"
    short.write_bytes(b"K3Y-BYTES-" * 2)
    code, err = serve(capsys, tmp_path, "--master-key-file", str(short))
    assert code == 2 and err.count("\n") == 1 and "20 bytes" in err
    assert "K3Y-BYTES" not in err  # the key itself never reaches a message
    # The old option name still works as an alias of --master-key-file.
    code, err = serve(capsys, tmp_path, "--master-key", str(short))
    assert code == 2 and "20 bytes" in err
    assert list(jlis_env.iterdir()) == []


def test_emulated_key_comes_from_emu_wiring(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``cardio emu ca pin-reset-key`` is where a test key may be created."""
    assert main(["emu", "ca", "pin-reset-key", "--jlis", str(tmp_path / "j"), "--json"]) == 0
    out, _err = capsys.readouterr()
    import json

    path = Path(json.loads(out)["master_key_file"])
    assert path.parent == tmp_path / "j" and len(path.read_bytes()) == 32


def test_card_registry_is_required_and_checked(jlis_env: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Which card a certificate was issued to comes from a registry named in configuration
    (issue 8 item 1 with issue 9's layers): none, a missing or a malformed file is a
    one-line refusal before anything starts, and the J-LIS directory is never consulted."""
    key = tmp_path / "master.key"
    key.write_bytes(b"\x11" * 32)
    monkeypatch.setenv("CARDIO_FACEPIN_MASTER_KEY_FILE", str(key))
    monkeypatch.delenv("CARDIO_FACEPIN_CARD_REGISTRY", raising=False)
    code, err = serve(capsys, tmp_path)
    assert code == 2 and err.count("\n") == 1
    assert "--card-registry" in err and "CARDIO_FACEPIN_CARD_REGISTRY" in err
    code, err = serve(capsys, tmp_path, "--card-registry", str(tmp_path / "nope.json"))
    assert code == 1 and err.count("\n") == 1 and "nope.json" in err
    bad = tmp_path / "cards.json"
    bad.write_text('{"ab": {"serial": 7}}')
    monkeypatch.setenv("CARDIO_FACEPIN_CARD_REGISTRY", str(bad))
    code, err = serve(capsys, tmp_path)
    assert code == 1 and err.count("\n") == 1 and "cards.json" in err
    assert list(jlis_env.iterdir()) == []
    assert not (tmp_path / "f.db").exists()


def test_a_port_in_use_is_one_line_exit_1(jlis_env: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn exits 3 when it cannot bind — the CLI's wrong-PIN code — after several log
    lines; the service checks the address first and says it in one line, exit 1."""
    import socket

    key = tmp_path / "master.key"
    key.write_bytes(b"\x11" * 32)
    registry = tmp_path / "cards.json"
    registry.write_text("{}")
    monkeypatch.setenv("CARDIO_FACEPIN_MASTER_KEY_FILE", str(key))
    monkeypatch.setenv("CARDIO_FACEPIN_CARD_REGISTRY", str(registry))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["facepin", "serve", "--db", f"sqlite:///{tmp_path / 'f.db'}",
                     "--port", str(port), "--trust", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"cardio: error: cannot listen on 127.0.0.1:{port}")
    assert not (tmp_path / "f.db").exists()


@pytest.mark.parametrize("threshold", ["nan", "inf", "-5", "0", "1.5"])
def test_a_threshold_out_of_range_is_a_usage_error(tmp_path: Path, threshold: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """NaN and inf printed invalid JSON ("NaN", "Infinity") and inf matched any two faces;
    the value is refused before any image or card is touched."""
    code = main(["facepin", "verify", "--reference", str(tmp_path / "none.jpg"), "--probe",
                 str(tmp_path / "none.jpg"), "--threshold", threshold, "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and "--threshold" in err
