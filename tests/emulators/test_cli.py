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
