"""The card registry read from a file: lookups, changes seen while running, failing
closed on a damaged file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from facepin.registry import FileCardRegistry, RegistryError

FP = "ab" * 32


def test_lookup_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "cards.json"
    path.write_text(json.dumps({FP: {"serial": "S1", "face_key": "K1"}}))
    registry = FileCardRegistry(path)
    registry.check()
    assert registry(FP) == ("S1", "K1") and registry(FP.upper()) == ("S1", "K1")
    assert registry("cd" * 32) is None
    path.write_text(json.dumps({FP: {"serial": "S1", "face_key": "K1"},
                                "cd" * 32: {"serial": "S2", "face_key": "K2"}}))
    os.utime(path, ns=(1, 1))  # a new stamp even within the clock's resolution
    assert registry("cd" * 32) == ("S2", "K2")


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b"null", b'{"x": 1}',
                                     b'{"x": {"serial": 5, "face_key": "k"}}'])
def test_damaged_file_fails_closed(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "cards.json"
    path.write_bytes(content)
    with pytest.raises(RegistryError, match="card registry"):
        FileCardRegistry(path)(FP)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="No such file"):
        FileCardRegistry(tmp_path / "none.json").check()
