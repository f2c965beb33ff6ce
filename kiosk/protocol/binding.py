"""The misissuance guard: documents signed over their content *and* their binding to one
kiosk session, and the pure kiosk-side check the controller calls before it takes payment
or prints.

The municipality signs (ECDSA P-256, SHA-256) the bytes of :func:`signed_bytes`: the
binding fields and the SHA-256 of the document's canonical encoding. The kiosk re-encodes
the document it parsed, so the signature covers exactly what will be printed. The check
raises, never returns a verdict to be forgotten: :class:`BadDocumentSignature` when the
document is not the municipality's, :class:`BindingMismatch` when it is the municipality's
but not for this session — either is an incident (nothing prints; the center is told).
Yokohama, Kawasaki, Munakata and Takamatsu printed someone else's certificate because no
such check existed between the shared slot and the printer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.documents.model import Document, DocumentFormatError
from kiosk.protocol.codec import PROTOCOL_VERSION, ProtocolError
from kiosk.protocol.messages import Binding, SignedDocument

__all__ = [
    "BadDocumentSignature",
    "BindingMismatch",
    "ExpectedSession",
    "check_binding",
    "key_id",
    "sign_document",
    "signed_bytes",
]

SIGNING_PURPOSE = "cardio-issuance document binding"


class BadDocumentSignature(ProtocolError):
    """The document is not signed by the trusted key of the session's municipality (or it
    was altered after signing). Nothing may be printed; report an incident."""

    exit_code = 6
    code = "bad_signature"


class BindingMismatch(ProtocolError):
    """A genuinely signed document bound to another request, session, kiosk, requester,
    municipality or type — someone else's certificate. Nothing may be printed; report an
    incident. The message names the field, never its value."""

    exit_code = 6
    code = "binding_mismatch"

    def __init__(self, field: str) -> None:
        super().__init__(f"the document's binding does not match this session ({field})")
        self.field = field


@dataclass(frozen=True)
class ExpectedSession:
    """What the kiosk itself knows about its session: it made up the request id, the center
    gave it the session id, the card gave it the certificate, the menu the municipality,
    and the resident chose the type."""

    request_id: str
    session_id: str
    kiosk_id: str
    cert_sha256: str
    municipality_code: str
    doc_type: str


def key_id(code: str, public_key: ec.EllipticCurvePublicKey) -> str:
    spki = public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"{code}:{hashlib.sha256(spki).hexdigest()[:16]}"


def signed_bytes(binding: Binding, document_canonical: bytes) -> bytes:
    """The exact bytes the municipality signs (sorted compact JSON, UTF-8)."""
    obj = {
        "purpose": SIGNING_PURPOSE,
        "v": PROTOCOL_VERSION,
        "binding": {
            "request_id": binding.request_id,
            "session_id": binding.session_id,
            "kiosk_id": binding.kiosk_id,
            "cert_sha256": binding.cert_sha256,
            "municipality_code": binding.municipality_code,
            "doc_type": binding.doc_type,
            "issued_at": binding.issued_at,
        },
        "document_sha256": hashlib.sha256(document_canonical).hexdigest(),
    }
    return json.dumps(obj, ensure_ascii=False, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


def sign_document(document: Document, binding: Binding,
                  key: ec.EllipticCurvePrivateKey) -> SignedDocument:
    """The municipality's side: sign ``document`` bound to ``binding``."""
    if document.doc_type.value != binding.doc_type or \
            document.municipality.code != binding.municipality_code or \
            document.issued_at.isoformat() != binding.issued_at:
        raise BindingMismatch("the binding does not describe this document")
    sig = key.sign(signed_bytes(binding, document.canonical_bytes()), ec.ECDSA(hashes.SHA256()))
    return SignedDocument(binding=binding, document=document.to_dict(),
                          signature=base64.b64encode(sig).decode(),
                          key_id=key_id(binding.municipality_code, key.public_key()))


_FIELDS = ("request_id", "session_id", "kiosk_id", "cert_sha256", "municipality_code",
           "doc_type")


def check_binding(expected: ExpectedSession, signed: SignedDocument,
                  trusted_municipality_keys: Mapping[str, ec.EllipticCurvePublicKey]
                  ) -> Document:
    """Return the document if, and only if, the trusted key of the *expected* municipality
    signed it, bound to exactly this session; raise otherwise. Pure: no I/O, no clock."""
    key = trusted_municipality_keys.get(expected.municipality_code)
    if key is None:
        raise BadDocumentSignature(f"no trusted key for municipality "
                                   f"{expected.municipality_code}")
    if signed.key_id != key_id(expected.municipality_code, key):
        raise BadDocumentSignature("the document names a signing key this kiosk does not"
                                   " trust for the municipality")
    try:
        document = Document.from_dict(signed.document)
        sig = base64.b64decode(signed.signature, validate=True)
    except DocumentFormatError as e:
        raise BadDocumentSignature(f"the document is malformed: {e}") from None
    except (binascii.Error, ValueError):
        raise BadDocumentSignature("the signature is not base64") from None
    try:
        key.verify(sig, signed_bytes(signed.binding, document.canonical_bytes()),
                   ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise BadDocumentSignature("the municipality's signature over the document and its"
                                   " binding does not verify") from None
    b = signed.binding
    for name in _FIELDS:
        if getattr(b, name) != getattr(expected, name):
            raise BindingMismatch(name)
    # The signed binding must also describe the signed content (a municipality bug that
    # bound one resident's type/time to another document is still a mismatch).
    if document.doc_type.value != b.doc_type:
        raise BindingMismatch("document type")
    if document.municipality.code != b.municipality_code:
        raise BindingMismatch("document municipality")
    if document.issued_at.isoformat() != b.issued_at:
        raise BindingMismatch("issue time")
    return document
