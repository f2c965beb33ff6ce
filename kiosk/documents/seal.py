"""The signed seal: CBOR claims in a COSE_Sign1 (ES256, key id) printed as a DataMatrix.

Design (after the EU DCC, ``reference/kiosk-domain.md`` §2.3/A.2): CBOR carries UTF-8 kanji
natively, which ICAO VDS's C40 cannot, and COSE_Sign1 with ES256 gives a raw 64-byte r‖s
signature — the smallest standard envelope. We print the COSE bytes as-is in a binary
DataMatrix (no Base45/zlib: binary mode is denser than alphanumeric for ~250 bytes of mostly
kanji, and a DataMatrix of ≤ 72×72 modules fits 25 mm at 0.3387 mm = 8 dots at 600 dpi).

Why our own COSE_Sign1 rather than pycose: pycose 1.1.0 cannot decode with cbor2 6.x (its
issue #141) and would pin ``cbor2<6`` for the whole project; we need one message shape
(Sign1, ES256, empty external AAD), which is ~40 lines on cbor2 + cryptography and easy to
audit. Decoding is strict: anything but exactly that shape is a :class:`SealFormatError`.

Claims (integer keys, so the map stays small; 1 and 6 follow CWT, RFC 8392; the negative
keys are ours and documented in ``docs/document-security.md``)::

    1  iss   municipality code (str)          6  iat   issue time, POSIX seconds (int)
    -1 type  document type identifier (str)   -2 no    issue number (str)
    -3 dig   SHA-256 of Document.canonical_bytes() (32 bytes)
    -4 tz    UTC offset of the issue time in minutes (int)
    -5 fld   the relying party's fields: {model field key: printed value}

Never in a seal: 個人番号 (``my_number``) or 住民票コード (``juminhyo_code``) — the field
selection is an allow-list per type and :func:`build_claims` refuses those keys outright.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import cbor2
import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from cardio.errors import CardioError
from kiosk.documents.model import Document, DocumentType

__all__ = [
    "FORBIDDEN_KEYS",
    "SEAL_FIELDS",
    "SealClaims",
    "SealFormatError",
    "SealTooLargeError",
    "cose_sign1",
    "cose_verify",
    "decode_cose",
    "key_id",
    "seal_matrix",
    "sign_document",
]

COSE_ALG_ES256 = -7
COSE_TAG_SIGN1 = 18
KID_LEN = 8

FORBIDDEN_KEYS = frozenset({"my_number", "juminhyo_code"})

# What a relying party (bank, landlord, city office) compares with the page; the rest of the
# content is covered by the digest.
SEAL_FIELDS: dict[DocumentType, tuple[str, ...]] = {
    DocumentType.JUMINHYO: ("name", "birth", "address"),
    DocumentType.KISAI_JIKO: ("name", "birth", "address"),
    DocumentType.INKAN: ("name", "birth", "inkan_number"),
    DocumentType.TAX: ("name", "tax_year", "income_total"),
    DocumentType.KOSEKI: ("honseki", "hittosha"),
    DocumentType.FUHYO: ("honseki", "name", "address"),
}

MAX_SEAL_MODULES = 72  # 72 × 0.3387 mm = 24.4 mm ≤ 25 mm


class SealFormatError(CardioError):
    """The barcode's bytes are not a COSE_Sign1 seal of ours (or its claims are malformed)."""

    exit_code = 1


class SealTooLargeError(CardioError):
    """The claims do not fit in a seal of at most 25 mm; shorten the relying-party fields."""

    exit_code = 1


def key_id(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """First 8 bytes of SHA-256 of the SubjectPublicKeyInfo (the DCC's kid rule, applied to
    the key since our issuers have no certificates). Collisions are possible, so a verifier
    tries every trusted key with the kid."""
    spki = public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()[:KID_LEN]


@dataclass(frozen=True)
class SealClaims:
    """The decoded claims of a seal."""

    issuer: str
    issued_at: datetime
    doc_type: str
    issue_number: str
    digest: bytes
    fields: dict[str, str]

    def to_cbor(self) -> bytes:
        off = self.issued_at.utcoffset() or timedelta(0)
        return cbor2.dumps({
            1: self.issuer,
            6: int(self.issued_at.timestamp()),
            -1: self.doc_type,
            -2: self.issue_number,
            -3: self.digest,
            -4: int(off.total_seconds() // 60),
            -5: self.fields,
        })

    @classmethod
    def from_cbor(cls, data: bytes) -> SealClaims:
        try:
            m = cbor2.loads(data)
            if not isinstance(m, Mapping):
                raise SealFormatError("seal claims are malformed: not a map")
            iss, iat, typ, no, dig = m[1], m[6], m[-1], m[-2], m[-3]
            tz_min, fld = m.get(-4, 0), m.get(-5, {})
            if not (isinstance(iss, str) and isinstance(iat, int) and isinstance(typ, str)
                    and isinstance(no, str) and isinstance(dig, bytes) and len(dig) == 32
                    and isinstance(tz_min, int) and isinstance(fld, Mapping)
                    and all(isinstance(k, str) and isinstance(v, str) for k, v in fld.items())):
                raise SealFormatError("seal claims are malformed: a claim of the wrong type")
            tz = timezone(timedelta(minutes=tz_min))
            return cls(iss, datetime.fromtimestamp(iat, tz), typ, no, dig, dict(fld))
        except (KeyError, TypeError, ValueError, OverflowError, cbor2.CBORDecodeError) as e:
            raise SealFormatError(f"seal claims are malformed: {type(e).__name__}") from None

    def public_fields(self) -> dict[str, str]:
        """Everything a relying party is shown (the digest in hex)."""
        return {
            "doc_type": self.doc_type,
            "municipality": self.issuer,
            "issue_number": self.issue_number,
            "issued_at": self.issued_at.isoformat(),
            "content_digest": self.digest.hex(),
            **self.fields,
        }


def build_claims(doc: Document, max_fields: int | None = None) -> SealClaims:
    keys = SEAL_FIELDS[doc.doc_type][:max_fields]
    if FORBIDDEN_KEYS & set(keys):  # pragma: no cover - guards future edits of SEAL_FIELDS
        raise SealFormatError("a seal must never carry 個人番号 or 住民票コード")
    fields: dict[str, str] = {}
    for k in keys:
        values = doc.find(k)
        if values:
            fields[k] = values[0]  # the first entry: 世帯主 / 筆頭者 / the requester
    return SealClaims(
        issuer=doc.municipality.code,
        issued_at=doc.issued_at,
        doc_type=doc.doc_type.value,
        issue_number=doc.issue_number,
        digest=hashlib.sha256(doc.canonical_bytes()).digest(),
        fields=fields,
    )


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def cose_sign1(payload: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """A tagged COSE_Sign1 (RFC 9052 §4.2) with ES256 and the kid in the protected header."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise SealFormatError("seal keys are ECDSA P-256 (ES256)")
    protected = cbor2.dumps({1: COSE_ALG_ES256, 4: key_id(key.public_key())})
    der = key.sign(_sig_structure(protected, payload), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return cbor2.dumps(cbor2.CBORTag(COSE_TAG_SIGN1, [protected, {}, payload, sig]))


@dataclass(frozen=True)
class CoseSign1:
    """A parsed, not yet verified, COSE_Sign1."""

    protected: bytes
    kid: bytes
    payload: bytes
    signature: bytes


def decode_cose(data: bytes) -> CoseSign1:
    """Parse strictly: tag 18, four items, alg ES256, an 8-byte kid, a 64-byte signature."""
    try:
        obj = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as e:
        raise SealFormatError(f"seal is not CBOR: {type(e).__name__}") from None
    if not (isinstance(obj, cbor2.CBORTag) and obj.tag == COSE_TAG_SIGN1):
        raise SealFormatError("seal is not a tagged COSE_Sign1")
    v = obj.value
    # cbor2 ≥ 6 decodes arrays as tuples and maps as frozendicts.
    if not (isinstance(v, list | tuple) and len(v) == 4 and isinstance(v[0], bytes)
            and isinstance(v[1], Mapping) and isinstance(v[2], bytes) and isinstance(v[3], bytes)):
        raise SealFormatError("COSE_Sign1 has the wrong structure")
    try:
        hdr = cbor2.loads(v[0])
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError):
        raise SealFormatError("COSE protected header is not CBOR") from None
    if not isinstance(hdr, Mapping) or hdr.get(1) != COSE_ALG_ES256:
        raise SealFormatError("seal algorithm is not ES256")
    kid = hdr.get(4)
    if not isinstance(kid, bytes) or len(kid) != KID_LEN or len(v[3]) != 64:
        raise SealFormatError("seal key id or signature has the wrong size")
    return CoseSign1(v[0], kid, v[2], v[3])


def cose_verify(msg: CoseSign1, public_key: ec.EllipticCurvePublicKey) -> bool:
    r = int.from_bytes(msg.signature[:32], "big")
    s = int.from_bytes(msg.signature[32:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), _sig_structure(msg.protected, msg.payload),
                          ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def sign_document(doc: Document, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The seal bytes for ``doc`` (what the DataMatrix carries).

    A long value (an address with a building name) can push the seal past 72×72 modules;
    then the relying-party fields are dropped from the end of the type's list until it fits.
    The digest still covers every printed character, so nothing becomes unverifiable — the
    relying party just compares fewer fields by eye. Only if even the bare claims do not fit
    is it an error."""
    n = len(SEAL_FIELDS[doc.doc_type])
    while True:
        seal = cose_sign1(build_claims(doc, n).to_cbor(), key)
        try:
            seal_matrix(seal)
        except SealTooLargeError:
            if n == 0:
                raise
            n -= 1
            continue
        return seal


def seal_matrix(seal: bytes) -> np.ndarray:
    """The DataMatrix modules (True = dark), one array cell per module, no quiet zone."""
    import zxingcpp

    bc = zxingcpp.create_barcode(seal, zxingcpp.BarcodeFormat.DataMatrix)
    img = np.asarray(bc.to_image(scale=1, add_quiet_zones=False))
    if img.ndim == 3:
        img = img[..., 0]
    if max(img.shape) > MAX_SEAL_MODULES:
        raise SealTooLargeError(
            f"seal needs {img.shape[1]}×{img.shape[0]} modules (> {MAX_SEAL_MODULES}); "
            "it would exceed 25 mm at 0.33 mm modules")
    return img < 128


def read_seal_bytes(image: Any) -> tuple[list[bytes], bool]:
    """Every DataMatrix in a greyscale image: (decoded byte strings, whether a symbol was seen
    but could not be decoded)."""
    import zxingcpp

    found = zxingcpp.read_barcodes(image,
                                   formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.DataMatrix),
                                   try_rotate=True, try_invert=False, return_errors=True)
    ok = [bytes(b.bytes) for b in found if b.valid]
    return ok, any(not b.valid for b in found)
