from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.documents.layers import DEVICE_DPI
from kiosk.documents.model import DocumentType
from kiosk.documents.render import SEAL_DOTS_PER_MODULE
from kiosk.documents.samples import sample_document
from kiosk.documents.seal import (
    SealClaims,
    SealFormatError,
    cose_sign1,
    cose_verify,
    decode_cose,
    key_id,
    seal_matrix,
    sign_document,
)


@pytest.mark.parametrize("doc_type", list(DocumentType))
def test_seal_fits_25mm_at_ICAO_modules(doc_type: DocumentType,
                                        issuer_key: ec.EllipticCurvePrivateKey) -> None:
    seal = sign_document(sample_document(doc_type), issuer_key)
    m = seal_matrix(seal)
    module_mm = SEAL_DOTS_PER_MODULE / DEVICE_DPI * 25.4
    assert module_mm >= 0.33
    assert max(m.shape) * module_mm <= 25.0


def test_round_trip_and_claims(issuer_key: ec.EllipticCurvePrivateKey) -> None:
    doc = sample_document("tax")
    msg = decode_cose(sign_document(doc, issuer_key))
    assert msg.kid == key_id(issuer_key.public_key())
    assert cose_verify(msg, issuer_key.public_key())
    claims = SealClaims.from_cbor(msg.payload)
    assert claims.issuer == doc.municipality.code
    assert claims.issued_at == doc.issued_at
    assert claims.issue_number == doc.issue_number
    assert claims.fields["income_total"] == "5,240,000円"


def test_never_my_number_or_juminhyo_code_in_the_seal(
        issuer_key: ec.EllipticCurvePrivateKey) -> None:
    doc = sample_document("juminhyo")
    seal = sign_document(doc, issuer_key)
    for key in ("my_number", "juminhyo_code"):
        for value in doc.find(key):
            assert value.encode() not in seal
        assert key.encode() not in seal
    assert set(SealClaims.from_cbor(decode_cose(seal).payload).fields) == {
        "name", "birth", "address"}


def test_a_different_key_does_not_verify(issuer_key: ec.EllipticCurvePrivateKey) -> None:
    msg = decode_cose(sign_document(sample_document("inkan"), issuer_key))
    assert not cose_verify(msg, ec.generate_private_key(ec.SECP256R1()).public_key())


@pytest.mark.parametrize("data", [
    b"", b"\xff\xff", cbor2.dumps([1, 2, 3]), cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b""])),
    cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -35, 4: b"12345678"}), {}, b"x", b"s" * 64])),
    cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7, 4: b"short"}), {}, b"x", b"s" * 64])),
    cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7, 4: b"12345678"}), {}, b"x", b"s" * 63])),
])
def test_anything_but_our_cose_shape_is_a_format_error(data: bytes) -> None:
    with pytest.raises(SealFormatError):
        decode_cose(data)


def test_malformed_claims_are_a_format_error() -> None:
    with pytest.raises(SealFormatError):
        SealClaims.from_cbor(cbor2.dumps({1: "999997"}))
    with pytest.raises(SealFormatError):
        SealClaims.from_cbor(b"\xa1")


def test_only_p256_keys_sign() -> None:
    with pytest.raises(SealFormatError):
        cose_sign1(b"x", ec.generate_private_key(ec.SECP384R1()))


def test_a_very_long_address_drops_fields_but_still_fits(
        issuer_key: ec.EllipticCurvePrivateKey) -> None:
    import dataclasses

    from kiosk.documents.model import Field, Section

    doc = sample_document("fuhyo")
    long_address = ("見本県見本市中央区青葉台三丁目4番5号　" + "みほんグランドレジデンス" * 6
                    + "1201号")
    sections = tuple(
        Section(s.title, tuple(Field(f.key, f.label, long_address) if f.key == "address"
                               else f for f in s.fields)) for s in doc.sections)
    doc = dataclasses.replace(doc, sections=sections)
    seal = sign_document(doc, issuer_key)
    assert max(seal_matrix(seal).shape) <= 72
    claims = SealClaims.from_cbor(decode_cose(seal).payload)
    assert "address" not in claims.fields and claims.fields["honseki"]
