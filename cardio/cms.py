"""CMS SignedData (RFC 5652) made with the card's signature key, on asn1crypto's models.

The private key never leaves the card, so no library that wants a key object can sign.
asn1crypto does not need one: it models the whole structure and lets us put in the
signature bytes the card returns. The card signs the DER of the signed attributes
(contentType, signingTime, messageDigest, and the ESS signing-certificate-v2 that PAdES
and CAdES verifiers expect), handed to it as a SHA-256 DigestInfo under ``80 2A``.

Signatures are detached (the content travels beside the ``.p7s``) or attached (the
content inside, ``eContent``). A signature timestamp token (RFC 3161, attribute
id-aa-signatureTimeStampToken) may be added as an unsigned attribute afterwards; it is what
makes "valid at the time of signing" honest (see :mod:`cardio.tsp` and
:func:`signing_time_validation`).

Parsing and verification go through the same models. Anything malformed — whatever
asn1crypto or cryptography raise on the way — is a :class:`CmsError`, never another
exception: the parser touches every field it uses inside one guarded block.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asn1crypto import cms, core
from asn1crypto import tsp as asn1_tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from cardio.crypto import digest_info
from cardio.errors import EXIT_NOT_VALID, CardioError

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
MAX_CMS = 1024 * 1024

Signer = Callable[[bytes], bytes]
"""Takes a DER DigestInfo (SHA-256) and returns the PKCS#1 v1.5 signature over it: the
card's ``80 2A 00`` (``JpkiApplication.sign_digest_info``)."""

# asn1crypto raises these (and, on some damaged inputs, the odd other built-in) while it
# parses lazily; cryptography adds its own when the certificates are loaded.
_PARSE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeDecodeError,
    UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType)


class CmsError(CardioError):
    """A CMS structure that is malformed or does not verify (exit 6: checked, not valid)."""

    exit_code = EXIT_NOT_VALID


# -- signing ---------------------------------------------------------------------------------
def _ess_signing_certificate_v2(cert_der: bytes) -> asn1_tsp.SigningCertificateV2:
    """RFC 5035: binds the signer's certificate (hash, issuer and serial) into what is
    signed, so a verifier cannot be given another certificate for the same key."""
    cert = asn1_x509.Certificate.load(cert_der)
    issuer_serial = asn1_tsp.IssuerSerial({
        "issuer": [asn1_x509.GeneralName({"directory_name": cert.issuer})],
        "serial_number": cert.serial_number})
    return asn1_tsp.SigningCertificateV2({"certs": [asn1_tsp.ESSCertIDv2({
        "hash_algorithm": {"algorithm": "sha256"},
        "cert_hash": hashlib.sha256(cert_der).digest(),
        "issuer_serial": issuer_serial})]})


def signed_attributes(content: bytes, cert_der: bytes, signing_time: dt.datetime,
                      content_type: str = "data") -> cms.CMSAttributes:
    """The SET OF Attribute that is signed; its DER (tag 31, sorted: asn1crypto sorts a
    SET OF by the children's encodings, X.690 §11.6) is what the card signs."""
    when = signing_time.astimezone(dt.UTC).replace(microsecond=0)
    return cms.CMSAttributes([
        cms.CMSAttribute({"type": "content_type", "values": [content_type]}),
        cms.CMSAttribute({"type": "signing_time", "values": [cms.Time({"utc_time": when})]}),
        cms.CMSAttribute({"type": "message_digest",
                          "values": [hashlib.sha256(content).digest()]}),
        cms.CMSAttribute({"type": "signing_certificate_v2",
                          "values": [_ess_signing_certificate_v2(cert_der)]}),
    ])


def sign(content: bytes, cert_der: bytes, signer: Signer, *, detached: bool = True,
         extra_certs: tuple[bytes, ...] = (), signing_time: dt.datetime | None = None,
         content_type: str = "data",
         timestamper: Callable[[bytes], bytes] | None = None) -> bytes:
    """Build a SignedData (DER ContentInfo) with one signer.

    ``signer`` signs the DigestInfo of the signed attributes (the card). ``timestamper``,
    when given, receives the signature value and returns an RFC 3161 TimeStampToken (DER
    ContentInfo), added as the unsigned attribute id-aa-signatureTimeStampToken."""
    cert = asn1_x509.Certificate.load(cert_der)
    attrs = signed_attributes(content, cert_der, signing_time or dt.datetime.now(dt.UTC),
                              content_type)
    signature = signer(digest_info("sha256", hashlib.sha256(attrs.dump()).digest()))
    info: dict[str, Any] = {
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber(
            {"issuer": cert.issuer, "serial_number": cert.serial_number})}),
        "digest_algorithm": {"algorithm": "sha256"},
        "signed_attrs": attrs,
        "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},
        "signature": signature,
    }
    if timestamper is not None:
        info["unsigned_attrs"] = _timestamp_attrs(timestamper(signature))
    encap: dict[str, Any] = {"content_type": content_type}
    if not detached:
        # id-data is an OCTET STRING to asn1crypto; other types (TSTInfo) are parsable
        encap["content"] = (core.OctetString(content) if content_type == "data"
                            else core.ParsableOctetString(content))
    signed_data = cms.SignedData({
        "version": "v1" if content_type == "data" else "v3",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": encap,
        "certificates": [asn1_x509.Certificate.load(d) for d in (cert_der, *extra_certs)],
        "signer_infos": [cms.SignerInfo(info)],
    })
    return bytes(cms.ContentInfo({"content_type": "signed_data",
                                  "content": signed_data}).dump())


def sign_detached(content: bytes, cert_der: bytes, signer: Signer,
                  extra_certs: tuple[bytes, ...] = (),
                  signing_time: dt.datetime | None = None) -> bytes:
    """A detached SignedData (the content is not inside)."""
    return sign(content, cert_der, signer, extra_certs=extra_certs, signing_time=signing_time)


def sign_attached(content: bytes, cert_der: bytes, signer: Signer,
                  extra_certs: tuple[bytes, ...] = (),
                  signing_time: dt.datetime | None = None) -> bytes:
    """An attached SignedData (the content is the eContent)."""
    return sign(content, cert_der, signer, detached=False, extra_certs=extra_certs,
                signing_time=signing_time)


def _timestamp_attrs(token_der: bytes) -> cms.CMSAttributes:
    token = cms.ContentInfo.load(token_der)
    return cms.CMSAttributes([cms.CMSAttribute(
        {"type": "signature_time_stamp_token", "values": [token]})])


def add_timestamp(data: bytes, timestamper: Callable[[bytes], bytes]) -> bytes:
    """Add (or replace) the signature timestamp token of an existing one-signer
    SignedData. The signed part is untouched, so the signature still verifies."""
    parse(data)  # typed errors first
    ci = cms.ContentInfo.load(data)
    si = ci["content"]["signer_infos"][0]
    token = timestamper(bytes(si["signature"].native))
    new_si = cms.SignerInfo({
        "version": si["version"], "sid": si["sid"], "digest_algorithm": si["digest_algorithm"],
        "signed_attrs": si["signed_attrs"], "signature_algorithm": si["signature_algorithm"],
        "signature": si["signature"], "unsigned_attrs": _timestamp_attrs(token)})
    sd = ci["content"]
    fields = {k: sd[k] for k in ("version", "digest_algorithms", "encap_content_info",
                                 "certificates", "crls") if sd[k].native is not None}
    fields["signer_infos"] = [new_si]
    return bytes(cms.ContentInfo({"content_type": "signed_data",
                                  "content": cms.SignedData(fields)}).dump())


# -- parsing and verification ---------------------------------------------------------------
@dataclass
class CmsSignature:
    signer: x509.Certificate
    certificates: list[x509.Certificate]
    signing_time: dt.datetime | None
    message_digest: bytes
    signed_attrs: bytes
    """The DER of the signed attributes as signed (tag 31), from the original bytes."""
    signature: bytes
    digest_algorithm: str
    content_type: str
    content: bytes | None
    """The eContent of an attached signature; None when detached."""
    timestamp_token: bytes | None
    """The DER of the signature timestamp token (unsigned attribute), if any."""
    signing_certificate_hash: bytes | None


def parse(data: bytes) -> CmsSignature:
    """Parse a DER SignedData with one signer; anything malformed is a :class:`CmsError`."""
    if len(data) > MAX_CMS:
        raise CmsError(f"CMS of {len(data)} bytes exceeds {MAX_CMS}")
    try:
        return _parse(data)
    except CmsError:
        raise
    except _PARSE_ERRORS as exc:
        raise CmsError(f"malformed CMS: {type(exc).__name__}") from exc


def _attr(attrs: Any, name: str) -> Any:
    found = [a for a in attrs if a["type"].native == name]
    if len(found) > 1:
        raise CmsError(f"the {name} attribute appears more than once")
    if not found:
        return None
    values = found[0]["values"]
    if len(values) != 1:
        raise CmsError(f"the {name} attribute must have exactly one value")
    return values[0]


def _parse(data: bytes) -> CmsSignature:
    from cardio.pki import check_parsable

    ci = cms.ContentInfo.load(data, strict=True)
    if ci["content_type"].dotted != OID_SIGNED_DATA:
        raise CmsError("not a CMS SignedData")
    sd = ci["content"]
    encap = sd["encap_content_info"]
    content_type = encap["content_type"].dotted
    econtent = encap["content"]
    content = None if econtent.native is None else bytes(econtent.contents)
    certs = []
    for choice in sd["certificates"] or []:
        if choice.name != "certificate":
            continue
        cert = x509.load_der_x509_certificate(choice.chosen.dump())
        check_parsable(cert)
        certs.append(cert)
    infos = sd["signer_infos"]
    if len(infos) != 1:
        raise CmsError(f"expected one signer, found {len(infos)}")
    si = infos[0]
    sid = si["sid"]
    if sid.name != "issuer_and_serial_number":
        raise CmsError("the signer must be identified by issuer and serial number")
    issuer_der = sid.chosen["issuer"].dump()
    serial = sid.chosen["serial_number"].native
    digest_alg = si["digest_algorithm"]["algorithm"].dotted
    sig_alg = si["signature_algorithm"]["algorithm"].native
    if sig_alg not in ("rsassa_pkcs1v15", "sha256_rsa"):
        raise CmsError(f"unsupported signature algorithm {sig_alg}")
    attrs = si["signed_attrs"]
    if not isinstance(attrs, cms.CMSAttributes) or len(attrs) == 0:
        raise CmsError("signed attributes are required")
    signed_attrs = b"\x31" + attrs.dump()[1:]
    ct = _attr(attrs, "content_type")
    if ct is None or ct.dotted != content_type:
        raise CmsError("the contentType attribute does not match the encapsulated content")
    md = _attr(attrs, "message_digest")
    if md is None:
        raise CmsError("no messageDigest attribute")
    st = _attr(attrs, "signing_time")
    signing_time = None if st is None else st.native
    if signing_time is not None and not isinstance(signing_time, dt.datetime):
        raise CmsError("signingTime is not a time")
    ess = _attr(attrs, "signing_certificate_v2")
    ess_hash = None
    if ess is not None:
        ids = ess["certs"]
        if len(ids) == 0:
            raise CmsError("empty ESS signing-certificate-v2")
        if ids[0]["hash_algorithm"]["algorithm"].dotted != OID_SHA256:
            raise CmsError("ESS signing-certificate-v2 must use SHA-256")
        ess_hash = bytes(ids[0]["cert_hash"].native)
    token = None
    unsigned = si["unsigned_attrs"]
    if isinstance(unsigned, cms.CMSAttributes):
        tst = _attr(unsigned, "signature_time_stamp_token")
        if tst is not None:
            token = bytes(tst.dump())
    signature = bytes(si["signature"].native)
    signer = next((c for c in certs if c.serial_number == serial
                   and c.issuer.public_bytes() == issuer_der), None)
    if signer is None:
        raise CmsError("the signer's certificate is not in the CMS")
    return CmsSignature(signer, certs, signing_time, bytes(md.native), signed_attrs,
                        signature, digest_alg, content_type, content, token, ess_hash)


def check_signature(sig: CmsSignature, content: bytes) -> None:
    """The message digest against ``content``, the ESS certificate hash against the
    signer, and the RSA signature over the signed attributes."""
    if sig.digest_algorithm != OID_SHA256:
        raise CmsError(f"unsupported digest algorithm {sig.digest_algorithm}")
    if hashlib.sha256(content).digest() != sig.message_digest:
        raise CmsError("the content does not match the signed message digest")
    if (sig.signing_certificate_hash is not None and sig.signing_certificate_hash
            != hashlib.sha256(sig.signer.public_bytes(Encoding.DER)).digest()):
        raise CmsError("the ESS signing certificate is not the signer's certificate")
    key = sig.signer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise CmsError("the signer's key is not RSA")
    try:
        key.verify(sig.signature, sig.signed_attrs, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError) as exc:
        raise CmsError("the CMS signature does not verify") from exc


def verify(data: bytes, content: bytes | None = None) -> CmsSignature:
    """Verify a detached (``content`` given) or attached signature; the certificate itself
    is left to the caller's validator, the timestamp token to :mod:`cardio.tsp`."""
    sig = parse(data)
    if sig.content is not None and content is not None and content != sig.content:
        raise CmsError("the given content differs from the content inside the signature")
    payload = content if content is not None else sig.content
    if payload is None:
        raise CmsError("a detached signature: the signed content must be given")
    check_signature(sig, payload)
    return sig


def verify_detached(data: bytes, content: bytes) -> CmsSignature:
    """Check the message digest and the signer's RSA signature; the certificate itself is
    left to the caller's validator."""
    return verify(data, content)


__all__ = ["MAX_CMS", "CmsError", "CmsSignature", "Signer", "add_timestamp",
           "check_signature", "parse", "sign", "sign_attached", "sign_detached",
           "signed_attributes", "verify", "verify_detached"]
