"""``cardio emu`` commands with hostile input: one line and a documented code, never 70."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from cardio.cli import main


def test_init_with_a_decompression_bomb_photo_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 90 kB PNG of 400 million pixels: Pillow refuses it with DecompressionBombError,
    which is no OSError and was reported as an internal error (exit 70)."""
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000), 1).save(bomb)
    code = main(["emu", "init", str(tmp_path / "card"), "--photo", str(bomb),
                 "--jlis", str(tmp_path / "jlis")])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "the image is too large" in err
    assert not (tmp_path / "card").exists()


@pytest.mark.parametrize("stock", ["-5", "10001"])
def test_devices_serve_refuses_an_impossible_hopper_stock(tmp_path: Path, stock: str) -> None:
    """Refused before anything starts (no ptys, no printer, no work directory). Run as a
    process with a time limit: accepted by mistake, the command would serve until killed."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "cardio.cli", "emu", "devices", "serve",
                          "--no-printer", "--workdir", str(tmp_path / "w"),
                          "--hopper-stock", stock], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == "" and res.stderr.count("\n") == 1
    assert "--hopper-stock" in res.stderr
    assert not (tmp_path / "w").exists()
