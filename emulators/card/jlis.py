"""An emulated J-LIS hierarchy: the JPKI signature and user-authentication CAs (X.509),
and the key that certifies the 券面 APs' card-verifiable certificates.

Its public keys are the test trust anchors: a verifier pointed at them accepts the
software cards it personalised, and nothing else. It is persisted in a directory so that
cards made in different processes chain to the same anchors.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from cardio.apdu import tlv
from cardio.crypto import encode_rsa_public_key
from emulators.card.keys import FreshKeys, KeySource, key_from_pem, key_to_pem
from emulators.card.store import atomic_write

DEFAULT_CA_URL = "http://127.0.0.1:35980"
"""Where ``cardio emu ca serve`` listens by default; issued certificates' AIA and CRL
distribution points point here."""

JLIS_OU = "Japan Agency for Local Authority Information Systems"
TEST_OU = "cardio emulated J-LIS (test only)"

# JPKI certificate policy OIDs are J-LIS's arc 1.2.392.200149.8.5.1.x.
POLICY_SIGN = x509.ObjectIdentifier("1.2.392.200149.8.5.1.1.10")
POLICY_AUTH = x509.ObjectIdentifier("1.2.392.200149.8.5.1.3.30")


def default_jlis_dir() -> Path:
    """``$CARDIO_JLIS_DIR``, else ``$XDG_DATA_HOME/cardio/emu-jlis``."""
    env = os.environ.get("CARDIO_JLIS_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cardio" / "emu-jlis"


def cv_key_id(prefix: str, kind: bytes, serial: int) -> bytes:
    """A 16-byte ASCII key ID in the card's style: ``"6000024" 08 05 "001" 00 00 00 00``.
    Test hierarchies start with ``6``."""
    kid = prefix.encode("ascii")[:7].ljust(7, b"0") + kind[:2].ljust(2, b"\x00")
    kid += f"{serial % 1000:03d}".encode("ascii")
    return kid.ljust(16, b"\x00")


def build_cv_certificate(issuer_key: rsa.RSAPrivateKey, issuer_id: bytes, subject_id: bytes,
                         subject_key: rsa.RSAPublicKey) -> bytes:
    """``7F21 82 02 33 { 5F4E 82 01 29 body, 5F37 82 01 00 sig }`` (568 bytes)."""
    from cryptography.hazmat.primitives.asymmetric import padding

    body = issuer_id + subject_id + encode_rsa_public_key(subject_key)
    sig = issuer_key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    return tlv.build(0x7F21, [
        tlv.build(0x5F4E, body, length_octets=2),
        tlv.build(0x5F37, sig, length_octets=2),
    ], length_octets=2).encode()


@dataclass
class CertificateAuthority:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate


@dataclass
class JlisHierarchy:
    """The emulated J-LIS keys. Build with :meth:`load_or_create`."""

    path: Path
    sign_ca: CertificateAuthority
    auth_ca: CertificateAuthority
    cv_root_key: rsa.RSAPrivateKey
    cv_root_id: bytes
    ca_url: str = DEFAULT_CA_URL

    @classmethod
    def load_or_create(cls, path: Path | None = None, keys: KeySource | None = None,
                       ca_url: str = DEFAULT_CA_URL) -> JlisHierarchy:
        """Open the hierarchy at ``path``, creating it on first use. A lock makes two
        processes creating it at once agree on one set of keys."""
        path = Path(path) if path is not None else default_jlis_dir()
        path.mkdir(parents=True, exist_ok=True)
        with open(path / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (path / "cv-root.key").exists():
                cls._create(path, keys or FreshKeys())
        return cls._load(path, ca_url)

    @staticmethod
    def _create(path: Path, keys: KeySource) -> None:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        for name, ou in (("sign", "JPKI for digital signature"),
                         ("auth", "JPKI for user authentication")):
            key = keys.new_key()
            subject = x509.Name([
                x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "JPKI"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, JLIS_OU),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, TEST_OU),
            ])
            ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
            cert = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=365 * 10))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256())
            )
            atomic_write(path / f"{name}-ca.key", key_to_pem(key), private=True)
            atomic_write(path / f"{name}-ca.pem", cert.public_bytes(serialization.Encoding.PEM))
        cv_key = keys.new_key()
        cv_id = cv_key_id("6000001", b"\x01\x01", 1)
        atomic_write(path / "cv-root.key", key_to_pem(cv_key), private=True)
        atomic_write(path / "cv-root.id", cv_id)
        atomic_write(path / "cv-root.pem", cv_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    @classmethod
    def _load(cls, path: Path, ca_url: str) -> JlisHierarchy:
        def ca(name: str) -> CertificateAuthority:
            return CertificateAuthority(
                key_from_pem((path / f"{name}-ca.key").read_bytes()),
                x509.load_pem_x509_certificate((path / f"{name}-ca.pem").read_bytes()),
            )

        return cls(path, ca("sign"), ca("auth"),
                   key_from_pem((path / "cv-root.key").read_bytes()),
                   (path / "cv-root.id").read_bytes(), ca_url)

    def pin_reset_master(self) -> bytes:
        """The issuer master key of the PIN-reset design (``cardio.pinreset``): held by
        the reservation backend only; cards get keys derived from it."""
        path = self.path / "pin-reset-master.key"
        with open(self.path / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                atomic_write(path, secrets.token_bytes(32), private=True)
        return path.read_bytes()

    def cv_certificate(self, subject_id: bytes, subject_key: rsa.RSAPublicKey) -> bytes:
        return build_cv_certificate(self.cv_root_key, self.cv_root_id, subject_id, subject_key)

    def trust_anchor_files(self) -> dict[str, Path]:
        """The public files a verifier needs (PEM)."""
        return {"sign-ca": self.path / "sign-ca.pem", "auth-ca": self.path / "auth-ca.pem",
                "cv-root": self.path / "cv-root.pem"}

    def issue_jpki_certificate(self, kind: str, public_key: rsa.RSAPublicKey, *,
                               not_before: dt.datetime, not_after: dt.datetime,
                               san_attributes: dict[str, str] | None = None
                               ) -> x509.Certificate:
        """Issue a 署名用 (``kind='sign'``) or 利用者証明用 (``'auth'``) certificate.

        The signature certificate carries the 基本4情報 in subjectAltName otherName
        entries under 1.2.392.200149.8.5.5.x; the authentication certificate carries none
        (reference §5.1)."""
        ca = self.sign_ca if kind == "sign" else self.auth_ca
        serial = x509.random_serial_number()
        subject = x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{secrets.randbelow(10**18):018d}"),
        ])
        if kind == "sign":
            usage = x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False)
            policy = POLICY_SIGN
        else:
            usage = x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False)
            policy = POLICY_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.cert.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.CertificatePolicies([x509.PolicyInformation(policy, None)]),
                           critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False)
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(f"{self.ca_url}/crl/{kind}.crl")],
                None, None, None)]), critical=False)
            .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP,
                x509.UniformResourceIdentifier(f"{self.ca_url}/ocsp/{kind}"))]),
                critical=False)
        )
        if san_attributes:
            names = [x509.OtherName(x509.ObjectIdentifier(f"1.2.392.200149.8.5.5.{n}"),
                                    _utf8_der(value))
                     for n, value in _san_order(san_attributes)]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(ca.key, hashes.SHA256())


_SAN_NUMBERS = {"name": 1, "name_alt": 2, "sex": 3, "birth": 4, "address": 5, "address_alt": 6}


def _san_order(attrs: dict[str, str]) -> list[tuple[int, str]]:
    return sorted((_SAN_NUMBERS[k], v) for k, v in attrs.items() if v)


def _utf8_der(value: str) -> bytes:
    raw = value.encode("utf-8")
    return bytes((0x0C,)) + tlv.encode_length(len(raw)) + raw
