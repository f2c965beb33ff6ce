from __future__ import annotations

import stat
from pathlib import Path

from emulators.document_issuers import DocumentIssuer, export_trust_list, issuers_dir
from kiosk.documents.samples import SAMPLE_MUNICIPALITY
from kiosk.documents.trust import load_trust_list


def test_an_issuer_is_created_once_and_reloaded_by_later_processes(tmp_path: Path) -> None:
    a = DocumentIssuer.load_or_create(SAMPLE_MUNICIPALITY, tmp_path)
    b = DocumentIssuer.load_or_create(SAMPLE_MUNICIPALITY, tmp_path)
    assert a.kid == b.kid and a.scramble_key == b.scramble_key and len(a.scramble_key) == 32
    key_file = issuers_dir(tmp_path) / SAMPLE_MUNICIPALITY.code / "seal-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # private keys are private


def test_the_exported_trust_list_holds_public_keys_only(tmp_path: Path) -> None:
    out = tmp_path / "trust"
    seal, cred = export_trust_list(out, tmp_path / "jlis", ensure=(SAMPLE_MUNICIPALITY,))
    loaded = {e.use: e for e in load_trust_list(out)}
    assert loaded["seal"].kid == seal.kid and loaded["credential"].kid == cred.kid
    assert seal.kid != cred.kid  # one key per kind of message
    assert {e.issuer for e in loaded.values()} == {SAMPLE_MUNICIPALITY.code}
    text = "".join(p.read_text() for p in out.iterdir())
    assert "PRIVATE" not in text


def test_an_issuer_made_before_credentials_gets_a_credential_key_once(tmp_path: Path) -> None:
    a = DocumentIssuer.load_or_create(SAMPLE_MUNICIPALITY, tmp_path)
    cred_file = issuers_dir(tmp_path) / SAMPLE_MUNICIPALITY.code / "credential-key.pem"
    cred_file.unlink()  # as an issuer directory written by an older version
    b = DocumentIssuer.load_or_create(SAMPLE_MUNICIPALITY, tmp_path)
    c = DocumentIssuer.load_or_create(SAMPLE_MUNICIPALITY, tmp_path)
    assert b.kid == a.kid and b.credential_kid == c.credential_kid != a.credential_kid
    assert stat.S_IMODE(cred_file.stat().st_mode) == 0o600
