"""The emulated output tray says so and keeps its files private (review of issue 22,
finding 10): a warning on stderr, files 0600 and directories 0700 whatever the umask — the
tray of the device lab holds certificates with residents' personal data."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiosk.runner import PrinterAdapter
from kiosk.session.journal import Journal
from kiosk.session.ports import ConservativePort
from kiosk.tray import announce_tray, make_tray_dir, write_tray_file


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """The usual 022: what made the tray's PDFs readable by every user."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_printer_adapters_tray_files_are_private(tmp_path: Path) -> None:
    tray = tmp_path / "tray"
    printer = PrinterAdapter(tray)
    assert printer.print_slip("k1", "T1", 1000, "print_failed") is None
    held = tray / ".held" / "slip-T1.pdf"
    assert held.read_bytes().startswith(b"%PDF")
    assert mode(held) == 0o600 and mode(tray / ".held") == 0o700
    printer.release()
    assert mode(tray / "slip-T1.pdf") == 0o600  # opened in the tray, still private


def test_recoverys_slips_in_the_tray_are_private(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Journal(tmp_path / "journal.db") as j:
        port = ConservativePort(j, out=out)
        assert port.print_slip("k1", "T2", 400, "print_failed")
    assert mode(out / ".held" / "slip-T2.pdf") == 0o600
    assert mode(out / ".held") == 0o700


def test_tray_helpers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tray = tmp_path / "a" / "tray"
    make_tray_dir(tray)
    assert mode(tray) == 0o700
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    make_tray_dir(existing)
    assert mode(existing) == 0o755  # the operator's own directory is left as it is
    f = tray / "x.pdf"
    f.write_bytes(b"old")
    os.chmod(f, 0o644)
    write_tray_file(f, b"new")
    assert f.read_bytes() == b"new" and mode(f) == 0o600
    (tray / "link.pdf").symlink_to(tmp_path / "elsewhere.pdf")
    with pytest.raises(OSError):
        write_tray_file(tray / "link.pdf", b"x")
    assert not (tmp_path / "elsewhere.pdf").exists()
    text = announce_tray(tray)
    err = capsys.readouterr().err
    assert err == f"warning: {text}\n" and str(tray) in text and "certificate" in text
