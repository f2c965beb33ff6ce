"""What every benchmark starts from: a fresh emulated J-LIS and one personalised software
card in a temporary directory (removed afterwards)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from emulators.card import JlisHierarchy, Profile, create_card


@dataclass
class BenchCard:
    base: Path
    jlis: JlisHierarchy
    profile: Profile
    path: Path


@contextmanager
def fresh_card() -> Iterator[BenchCard]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        jlis = JlisHierarchy.load_or_create(base / "jlis")
        profile = Profile()
        create_card(base / "card", profile, jlis)
        yield BenchCard(base, jlis, profile, base / "card")
