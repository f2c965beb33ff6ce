"""One trust list, two kinds of key: a seal verifier never accepts a municipality's
credential key, a credential verifier never a seal key (the latter is in test_verifier),
and the ``use`` member round-trips and is validated."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.documents.samples import sample_document
from kiosk.documents.seal import key_id, sign_document
from kiosk.documents.trust import TrustEntry, TrustListError, load_trust_list, write_entry
from kiosk.documents.verify import VerifyStatus, verify_seal

JST = dt.timezone(dt.timedelta(hours=9))


def _entry(key: ec.EllipticCurvePrivateKey, use: str) -> TrustEntry:
    return TrustEntry(key_id(key.public_key()), "999997", "見本市", key.public_key(),
                      dt.datetime(2020, 1, 1, tzinfo=JST), dt.datetime(2036, 1, 1, tzinfo=JST),
                      use=use)


def test_a_seal_made_with_a_credential_key_is_untrusted() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    doc = sample_document("juminhyo")
    seal = sign_document(doc, key)
    assert verify_seal(seal, [_entry(key, "seal")]).status is VerifyStatus.VALID
    assert verify_seal(seal, [_entry(key, "credential")]).status is VerifyStatus.UNTRUSTED


def test_use_round_trips_defaults_to_seal_and_is_validated(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    write_entry(tmp_path, _entry(key, "credential"))
    (loaded,) = load_trust_list(tmp_path)
    assert loaded.use == "credential"
    path = next(tmp_path.iterdir())
    text = path.read_text()
    path.write_text(text.replace('"use": "credential"', '"use": "anything"'))
    with pytest.raises(TrustListError, match="use is one of"):
        load_trust_list(tmp_path)
    old = dataclasses.replace(loaded, use="seal").to_json()
    del old["use"]  # a list written before the member existed
    assert TrustEntry.from_json(old).use == "seal"
