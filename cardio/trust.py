"""Trust anchors: J-LIS's keys that make the card's data worth believing.

A directory of PEM files: X.509 certificates are JPKI roots, bare public keys named
``cv-*.pem`` are the keys that certify the 券面 APs' CV certificates, and certificates in
files named ``tsa-*.pem`` are roots of time-stamping authorities (RFC 3161). Those are
kept apart: a TSA's hierarchy vouches for times, never for a person, so a certificate it
issued must not pass as a JPKI certificate. Users point this at
J-LIS's published roots; tests point it at the emulated hierarchy's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cardio.crypto import CvCertificate, SignatureError
from cardio.errors import CardioError


class TrustError(CardioError):
    """A trust directory that cannot be read."""


class DataStatus(Enum):
    """How far a record's signature could be checked."""

    VALID = "valid"
    """Signed by the AP key, whose CV certificate chains to a configured anchor."""
    UNTRUSTED = "untrusted"
    """Signed consistently by the card's AP key, but no anchor vouches for that key."""
    INVALID = "invalid"
    """The signature or digests do not match: the data was altered."""


@dataclass
class TrustStore:
    cv_roots: list[rsa.RSAPublicKey] = field(default_factory=list)
    x509_roots: list[x509.Certificate] = field(default_factory=list)
    tsa_roots: list[x509.Certificate] = field(default_factory=list)

    @classmethod
    def from_dir(cls, path: Path) -> TrustStore:
        store = cls()
        if not path.is_dir():
            raise TrustError(f"trust directory {path} does not exist")
        for pem in sorted(path.glob("*.pem")):
            data = pem.read_bytes()
            try:
                if b"BEGIN CERTIFICATE" in data:
                    roots = store.tsa_roots if pem.name.startswith("tsa-") else \
                        store.x509_roots
                    roots.extend(x509.load_pem_x509_certificates(data))
                elif b"BEGIN PUBLIC KEY" in data:
                    key = serialization.load_pem_public_key(data)
                    if isinstance(key, rsa.RSAPublicKey):
                        store.cv_roots.append(key)
            except (ValueError, UnsupportedAlgorithm) as exc:
                # A damaged anchor is refused outright: skipping it could turn a
                # "valid" into an "untrusted" (or worse) without anyone noticing.
                raise TrustError(f"trust anchor {pem} is not a valid PEM certificate or"
                                 f" public key: {exc}") from exc
        return store

    def check_cv_certificate(self, cert: CvCertificate) -> bool:
        """True when one of the CV roots signed ``cert``."""
        for root in self.cv_roots:
            try:
                cert.verify(root)
                return True
            except SignatureError:
                continue
        return False


def check_record_signature(cv_raw: bytes, trust: TrustStore | None,
                    check: Callable[[rsa.RSAPublicKey], None]) -> tuple[DataStatus, str]:
    """Shared by the 券面 APs: verify a record with the AP key from the CV certificate,
    then the CV certificate against the trust anchors."""
    try:
        cv = CvCertificate.parse(cv_raw)
        check(cv.public_key)
    except SignatureError as exc:
        return DataStatus.INVALID, str(exc)
    if trust is not None and trust.check_cv_certificate(cv):
        return DataStatus.VALID, "signed by the AP key, certified by a trusted J-LIS key"
    return DataStatus.UNTRUSTED, (
        "signature consistent with the card's AP key, but no trust anchor certifies it")
