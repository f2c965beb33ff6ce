"""Interoperability with a second, independent SD-JWT implementation: ``sd-jwt``, the IETF
reference implementation (openwallet-foundation; on jwcrypto), a test-only dependency.

Both directions: what our municipality issues and our holder presents verifies with their
verifier (issuer signature, disclosures, KB-JWT with nonce, aud and sd_hash) to the same
claims; what their holder presents from our credential, and what their issuer issues in our
credential type, our verifier accepts. Not covered by them: ``typ``/``vct`` (SD-JWT VC),
the Token Status List and our trust list — they have no second implementation here (the
status list's bit layout is checked against the draft's own test vector instead)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from emulators.issuance.credentials import issue_credential, status_list_token
from kiosk.credentials.holder import Wallet, new_holder_key
from kiosk.credentials.jose import key_to_jwk
from kiosk.credentials.juminhyo import PRESETS, VCT
from kiosk.credentials.statuslist import decode_list, encode_list, status_at
from kiosk.credentials.verifier import StatusTokens, Verifier
from kiosk.documents.seal import key_id
from kiosk.documents.trust import TrustEntry
from tests.kiosk.credentials.test_verifier import RECORD

sd_jwt = pytest.importorskip("sd_jwt", reason="the sd-jwt reference implementation (dev extra)")
from jwcrypto.jwk import JWK  # noqa: E402  (installed with sd-jwt)
from sd_jwt.common import SDObj  # noqa: E402
from sd_jwt.holder import SDJWTHolder  # noqa: E402
from sd_jwt.issuer import SDJWTIssuer  # noqa: E402
from sd_jwt.verifier import SDJWTVerifier  # noqa: E402

JST = dt.timezone(dt.timedelta(hours=9))
URI = "https://center.example/v1/status/131016"
AUD = "https://bank.example"


def _jwk(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> JWK:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    else:
        pem = key.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return JWK.from_pem(pem)


@pytest.fixture(scope="module")
def issuer_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _trust(key: ec.EllipticCurvePrivateKey) -> list[TrustEntry]:
    return [TrustEntry(key_id(key.public_key()), "131016", "見本区", key.public_key(),
                       dt.datetime(2020, 1, 1, tzinfo=JST), dt.datetime(2036, 1, 1, tzinfo=JST),
                       use="credential")]


def _verifier(key: ec.EllipticCurvePrivateKey) -> Verifier:
    kid = key_id(key.public_key()).hex()
    token = status_list_token(uri=URI, invalid=[], key=key, kid=kid, now=int(time.time()))
    return Verifier(_trust(key), client_id=AUD, status=StatusTokens([token]))


def _ours(key: ec.EllipticCurvePrivateKey, tmp: Path):  # type: ignore[no-untyped-def]
    hk = new_holder_key()
    text, _ = issue_credential(RECORD, issuer_code="131016", key=key,
                               kid=key_id(key.public_key()).hex(),
                               holder_jwk=key_to_jwk(hk.public_key()), status_uri=URI,
                               status_idx=3, now=dt.datetime.now(JST))
    return Wallet(tmp).store(text, hk)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_their_verifier_accepts_our_presentations(issuer_key: ec.EllipticCurvePrivateKey,
                                                 tmp_path: Path, preset: str) -> None:
    cred = _ours(issuer_key, tmp_path)
    ours = _verifier(issuer_key)
    req = ours.request(PRESETS[preset])
    text = cred.present(req, req.claims)
    theirs = SDJWTVerifier(text, lambda iss, header: _jwk(issuer_key.public_key()),
                           expected_aud=AUD, expected_nonce=req.nonce)
    payload = theirs.get_verified_payload()
    mine = ours.verify(text, req).claims
    assert {k: payload[k] for k in mine} == mine
    assert payload["vct"] == VCT and payload["iss"] == "131016"
    personal = set(payload) - {"iss", "iat", "exp", "vct", "cnf", "status"}
    assert personal == set(mine)  # they see exactly the disclosed items too


def test_their_verifier_sees_nested_household_disclosures(
        issuer_key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> None:
    cred = _ours(issuer_key, tmp_path)
    ours = _verifier(issuer_key)
    req = ours.request([("household", None, "name")])
    text = cred.present(req, req.claims)
    theirs = SDJWTVerifier(text, lambda iss, header: _jwk(issuer_key.public_key()),
                           expected_aud=AUD, expected_nonce=req.nonce)
    assert theirs.get_verified_payload()["household"] == ours.verify(text, req).claims[
        "household"] == [{"name": "見本　太郎"}, {"name": "見本　一郎"}]


def test_their_verifier_refuses_what_ours_refuses(issuer_key: ec.EllipticCurvePrivateKey,
                                                 tmp_path: Path) -> None:
    cred = _ours(issuer_key, tmp_path)
    req = _verifier(issuer_key).request(PRESETS["4jouhou"])
    text = cred.present(req, req.claims)
    with pytest.raises(Exception, match="nonce"):  # another nonce
        SDJWTVerifier(text, lambda iss, header: _jwk(issuer_key.public_key()),
                      expected_aud=AUD, expected_nonce="x" * 43)
    jwt_part, rest = text.split("~", 1)
    other = ec.generate_private_key(ec.SECP256R1())  # an issuer they do not trust
    with pytest.raises(Exception):  # noqa: B017 (jwcrypto's InvalidJWSSignature)
        SDJWTVerifier(text, lambda iss, header: _jwk(other.public_key()),
                      expected_aud=AUD, expected_nonce=req.nonce)
    assert jwt_part and rest


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_our_verifier_accepts_their_holders_presentations(
        issuer_key: ec.EllipticCurvePrivateKey, tmp_path: Path, preset: str) -> None:
    cred = _ours(issuer_key, tmp_path)
    ours = _verifier(issuer_key)
    req = ours.request(PRESETS[preset])
    holder = SDJWTHolder(cred.sd_jwt)
    holder.create_presentation({p[0]: True for p in req.claims}, nonce=req.nonce, aud=AUD,
                               holder_key=_jwk(cred.key), sign_alg="ES256")
    out = ours.verify(holder.sd_jwt_presentation, req)
    assert set(out.claims) == {p[0] for p in req.claims}


def test_our_verifier_accepts_their_issuers_credential(
        issuer_key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> None:
    """Their encoder (JSON with spaces, their salts and decoy handling) in our type."""
    hk = new_holder_key()
    now = int(time.time())
    claims = {"iss": "131016", "iat": now, "exp": now + 86400, "vct": VCT,
              "status": {"status_list": {"idx": 9, "uri": URI}},
              SDObj("name"): "見本　花子", SDObj("birthdate"): "1990-04-01",
              SDObj("age_over_18"): True, SDObj("address"): {"formatted": "東京都見本区"}}
    issued = SDJWTIssuer(claims, _jwk(issuer_key), holder_key=_jwk(hk), sign_alg="ES256",
                         add_decoy_claims=True,
                         extra_header_parameters={"typ": "dc+sd-jwt",
                                                  "kid": key_id(issuer_key.public_key()).hex()})
    text = issued.sd_jwt_issuance
    if not text.endswith("~"):  # 0.10.x writes the issuance form without the final ~
        text += "~"
    cred = Wallet(tmp_path).store(text, hk)
    ours = _verifier(issuer_key)
    req = ours.request(PRESETS["name_address"])
    assert ours.verify(cred.present(req, req.claims), req).claims == {
        "name": "見本　花子", "address": {"formatted": "東京都見本区"}}


def test_the_status_list_bits_follow_the_drafts_test_vector() -> None:
    """draft-ietf-oauth-status-list §4.1: 16 entries, bits 1, statuses
    1,0,0,1,1,1,0,1,1,1,0,0,0,1,0,1 → bytes B9 A3."""
    invalid = [i for i, b in enumerate([1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]) if b]
    raw = decode_list(encode_list(invalid, 16))
    assert raw == bytes([0xB9, 0xA3])
    assert [status_at(raw, i) for i in range(16)] == \
        [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]
