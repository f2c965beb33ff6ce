"""The page seal the municipality sends beside a signed document (``SignedDocument.seal``):
the kiosk prints it only if it seals this very content, since the binding signature does
not cover it."""

from __future__ import annotations

import base64
import dataclasses
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.documents.seal import SealClaims, SealFormatError, decode_cose, sign_document
from kiosk.protocol.binding import sign_document as sign_bound
from kiosk.protocol.messages import IssuedDocument
from kiosk.runner import page_seal_of
from tests.kiosk.protocol.test_protocol import binding, document


def issued(seal: bytes, scramble: bytes) -> IssuedDocument:
    key = ec.generate_private_key(ec.SECP256R1())
    signed = sign_bound(document(), binding(), key)
    signed = dataclasses.replace(signed, seal=base64.b64encode(seal).decode(),
                                 scramble_key=scramble.hex())
    return IssuedDocument(request_id="req-00000001", session_id="ses-00000001", fee=300,
                          signed=signed)


def test_the_seal_of_this_document_is_printed() -> None:
    seal_key = ec.generate_private_key(ec.SECP256R1())
    seal = sign_document(document(), seal_key)
    got, scramble = page_seal_of(issued(seal, b"\x07" * 32), document())
    assert got == seal and scramble == b"\x07" * 32
    claims = SealClaims.from_cbor(decode_cose(got).payload)
    assert claims.digest == hashlib.sha256(document().canonical_bytes()).digest()


@pytest.mark.parametrize("case", ["other content", "garbage", "short scramble key"])
def test_a_seal_that_is_not_this_documents_is_refused(case: str) -> None:
    seal_key = ec.generate_private_key(ec.SECP256R1())
    if case == "other content":       # a genuine seal, of another resident's document
        msg = issued(sign_document(document(name="別人　二郎"), seal_key), b"\x07" * 32)
    elif case == "garbage":
        msg = issued(b"\xa0not a cose message", b"\x07" * 32)
    else:
        msg = issued(sign_document(document(), seal_key), b"\x07" * 16)
    with pytest.raises(SealFormatError):
        page_seal_of(msg, document())


def test_no_seal_from_an_older_center_prints_the_binding_signature() -> None:
    msg = issued(b"", b"")
    got, scramble = page_seal_of(msg, document())
    assert got == base64.b64decode(msg.signed.signature)
    assert scramble == hashlib.sha256(got).digest()
