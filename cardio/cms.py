"""Detached CMS SignedData (RFC 5652) made with the card's signature key.

The private key never leaves the card, so no library that wants a key object can sign:
this module builds the DER itself. The card signs the DER of the signed attributes
(contentType, signingTime, messageDigest, and the ESS signing-certificate-v2 that PAdES
and CAdES verifiers expect), as a SHA-256 DigestInfo under ``80 2A``.

Verification parses the same structure, checks the message digest and the RSA signature,
and hands the signer's certificate to :class:`~cardio.pki.CertificateValidator`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cardio.apdu import tlv
from cardio.apdu.errors import TlvError
from cardio.crypto import digest_info
from cardio.errors import EXIT_NOT_VALID, CardioError

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
OID_SIGNING_CERT_V2 = "1.2.840.113549.1.9.16.2.47"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_RSA = "1.2.840.113549.1.1.1"
OID_SHA256_RSA = "1.2.840.113549.1.1.11"
MAX_CMS = 1024 * 1024


class CmsError(CardioError):
    """A CMS structure that is malformed or does not verify (exit 6: checked, not valid)."""

    exit_code = EXIT_NOT_VALID


# -- a little DER ---------------------------------------------------------------------------
def _der(tag: int, content: bytes) -> bytes:
    return tlv.Tlv(tag, content).encode()


def seq(*items: bytes) -> bytes:
    return _der(0x30, b"".join(items))


def set_of(*items: bytes) -> bytes:
    """DER SET OF: elements sorted by their encodings (X.690 §11.6)."""
    return _der(0x31, b"".join(sorted(items)))


def oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytes([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, body)


def integer(n: int) -> bytes:
    length = max(1, (n.bit_length() + 8) // 8)
    return _der(0x02, n.to_bytes(length, "big", signed=True))


def octets(b: bytes) -> bytes:
    return _der(0x04, b)


def utc_time(t: dt.datetime) -> bytes:
    return _der(0x17, t.astimezone(dt.UTC).strftime("%y%m%d%H%M%SZ").encode())


NULL = b"\x05\x00"


def algo(dotted: str, params: bytes | None = NULL) -> bytes:
    return seq(oid(dotted), params or b"")


def _oid_str(value: bytes) -> str:
    first = value[0]
    parts = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    n = 0
    for b in value[1:]:
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(n)
            n = 0
    return ".".join(map(str, parts))


# -- signing ---------------------------------------------------------------------------------
def signed_attributes(content: bytes, cert_der: bytes, signing_time: dt.datetime) -> bytes:
    """The SET OF Attribute that is signed (DER, tag 31)."""
    ess = seq(seq(seq(octets(hashlib.sha256(cert_der).digest()))))  # SigningCertificateV2
    return set_of(
        seq(oid(OID_CONTENT_TYPE), set_of(oid(OID_DATA))),
        seq(oid(OID_SIGNING_TIME), set_of(utc_time(signing_time))),
        seq(oid(OID_MESSAGE_DIGEST), set_of(octets(hashlib.sha256(content).digest()))),
        seq(oid(OID_SIGNING_CERT_V2), set_of(ess)),
    )


def sign_detached(content: bytes, cert_der: bytes, sign: Callable[[bytes], bytes],
                  extra_certs: tuple[bytes, ...] = (),
                  signing_time: dt.datetime | None = None) -> bytes:
    """Build a detached SignedData. ``sign`` takes a DigestInfo and returns the PKCS#1
    v1.5 signature (the card's ``80 2A 00``)."""
    cert = x509.load_der_x509_certificate(cert_der)
    attrs = signed_attributes(content, cert_der, signing_time or dt.datetime.now(dt.UTC))
    signature = sign(digest_info("sha256", hashlib.sha256(attrs).digest()))
    signer = seq(
        integer(1),
        seq(cert.issuer.public_bytes(), integer(cert.serial_number)),
        algo(OID_SHA256),
        b"\xa0" + attrs[1:],  # [0] IMPLICIT SET OF Attribute
        algo(OID_RSA),
        octets(signature),
    )
    signed_data = seq(
        integer(1),
        set_of(algo(OID_SHA256)),
        seq(oid(OID_DATA)),
        _der(0xA0, b"".join((cert_der, *extra_certs))),
        set_of(signer),
    )
    return seq(oid(OID_SIGNED_DATA), _der(0xA0, signed_data))


# -- verification ----------------------------------------------------------------------------
@dataclass
class CmsSignature:
    signer: x509.Certificate
    certificates: list[x509.Certificate]
    signing_time: dt.datetime | None
    message_digest: bytes
    signed_attrs: bytes
    signature: bytes
    digest_algorithm: str


def _children(obj: tlv.Tlv, what: str) -> list[tlv.Tlv]:
    try:
        return obj.children
    except TlvError as exc:
        raise CmsError(f"malformed {what}: {exc}") from exc


def parse(data: bytes) -> CmsSignature:
    """Parse a DER SignedData with one signer; anything malformed is a :class:`CmsError`."""
    from cardio.pki import PARSE_ERRORS

    try:
        return _parse(data)
    except CmsError:
        raise
    except (TlvError, IndexError, KeyError, UnicodeDecodeError, *PARSE_ERRORS) as exc:
        raise CmsError(f"malformed CMS: {exc}") from exc


def _parse(data: bytes) -> CmsSignature:
    from cardio.pki import check_parsable

    if len(data) > MAX_CMS:
        raise CmsError(f"CMS of {len(data)} bytes exceeds {MAX_CMS}")
    try:
        ci = tlv.parse(data)
        ci_kids = _children(ci, "ContentInfo")
        if ci.tag != 0x30 or len(ci_kids) != 2 or _oid_str(ci_kids[0].value) != OID_SIGNED_DATA:
            raise CmsError("not a CMS SignedData")
        sd = _children(ci_kids[1], "ContentInfo content")[0]
        kids = _children(sd, "SignedData")
        by_tag = {k.tag: k for k in kids}
        cert_set = by_tag.get(0xA0)
        signer_infos = kids[-1]
        certs = []
        if cert_set is not None:
            for ct in _children(cert_set, "certificates"):
                cert = x509.load_der_x509_certificate(ct.encode())
                check_parsable(cert)
                certs.append(cert)
        infos = _children(signer_infos, "SignerInfos")
        if len(infos) != 1:
            raise CmsError(f"expected one signer, found {len(infos)}")
        si = _children(infos[0], "SignerInfo")
        if len(si) < 6:
            raise CmsError("SignerInfo is incomplete")
        sid_issuer, sid_serial = _children(si[1], "SignerIdentifier")[:2]
        serial = int.from_bytes(sid_serial.value, "big", signed=True)
        digest_alg = _oid_str(_children(si[2], "digestAlgorithm")[0].value)
        if si[3].tag != 0xA0:
            raise CmsError("signed attributes are required")
        signed_attrs = b"\x31" + si[3].encode()[1:]
        attrs = {}
        for a in _children(si[3], "signedAttrs"):
            ak = _children(a, "Attribute")
            attrs[_oid_str(ak[0].value)] = _children(ak[1], "attribute values")[0]
        signature = si[5].value
    except TlvError as exc:
        raise CmsError(f"malformed CMS: {exc}") from exc
    except (IndexError, KeyError) as exc:
        raise CmsError("CMS structure incomplete") from exc
    signer = next((c for c in certs if c.serial_number == serial
                   and c.issuer.public_bytes() == sid_issuer.encode()), None)
    if signer is None:
        raise CmsError("the signer's certificate is not in the CMS")
    md = attrs.get(OID_MESSAGE_DIGEST)
    if md is None:
        raise CmsError("no messageDigest attribute")
    st = attrs.get(OID_SIGNING_TIME)
    signing_time = None
    if st is not None and st.tag == 0x17:
        signing_time = dt.datetime.strptime(st.value.decode(), "%y%m%d%H%M%SZ").replace(
            tzinfo=dt.UTC)
    return CmsSignature(signer, certs, signing_time, md.value, signed_attrs, signature,
                        digest_alg)


def verify_detached(data: bytes, content: bytes) -> CmsSignature:
    """Check the message digest and the signer's RSA signature; the certificate itself is
    left to the caller's validator."""
    sig = parse(data)
    if sig.digest_algorithm != OID_SHA256:
        raise CmsError(f"unsupported digest algorithm {sig.digest_algorithm}")
    if hashlib.sha256(content).digest() != sig.message_digest:
        raise CmsError("the content does not match the signed message digest")
    key = sig.signer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise CmsError("the signer's key is not RSA")
    try:
        key.verify(sig.signature, sig.signed_attrs, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError) as exc:
        raise CmsError("the CMS signature does not verify") from exc
    return sig
