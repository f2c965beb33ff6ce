from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.documents.trust import TrustListError, load_trust_list, write_entry
from tests.kiosk.documents.conftest import NOW, entry_for


def test_entries_round_trip_through_the_directory(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    entry = entry_for(key, revoked_at=NOW)
    write_entry(tmp_path, entry)
    (loaded,) = load_trust_list(tmp_path)
    assert loaded.kid == entry.kid and loaded.revoked_at == NOW
    assert loaded.revocation_reason == "keyCompromise"
    assert loaded.public_key.public_numbers() == key.public_key().public_numbers()


def test_a_kid_that_does_not_match_its_key_is_rejected_naming_the_file(tmp_path: Path) -> None:
    path = write_entry(tmp_path, entry_for(ec.generate_private_key(ec.SECP256R1())))
    obj = json.loads(path.read_text())
    obj["kid"] = "00" * 8
    path.write_text(json.dumps(obj))
    with pytest.raises(TrustListError, match=re.escape(path.name)):
        load_trust_list(tmp_path)


def test_garbage_and_missing_directories_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(TrustListError):
        load_trust_list(tmp_path / "nope")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(TrustListError, match=r"x\.json"):
        load_trust_list(tmp_path)
