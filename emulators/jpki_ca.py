"""The emulated JPKI certificate authorities' services: revocation, CRLs and an OCSP
responder (RFC 6960) served over HTTP on loopback.

Revocations live in the J-LIS directory (``revocations.json``, locked read-modify-write)
so that a revocation made by one process (``cardio emu ca revoke``) is seen by the
responder in another on its next request. CRLs are issued fresh on each download, signed
by the CA; OCSP responses are signed by a delegated responder certificate (id-kp-
OCSPSigning, id-pkix-ocsp-nocheck) that the CA issues, and echo the request's nonce.

Revocation events as J-LIS applies them: a change of the 基本4情報 (address, name, ...)
revokes the signature certificate only, since only it carries them; loss or theft of the
card revokes both.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cardio import constants as c
from cardio.errors import CardioError
from emulators.card.jlis import CertificateAuthority, JlisHierarchy
from emulators.card.keys import FreshKeys, key_from_pem, key_to_pem
from emulators.card.store import CardStore, atomic_write

REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "certificate_hold": x509.ReasonFlags.certificate_hold,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn,
}
EVENTS = {
    # 基本4情報 changed (moved, married, ...): only the signature certificate carries them.
    "attributes_changed": (("sign",), "affiliation_changed"),
    # Card lost or stolen: both keys may be in someone else's hands.
    "lost": (("sign", "auth"), "key_compromise"),
}
OCSP_VALIDITY = dt.timedelta(hours=1)
CRL_VALIDITY = dt.timedelta(hours=24)
MAX_REQUEST = 64 * 1024


class CaError(CardioError):
    """A CA operation that cannot be done (unknown certificate, bad reason, ...)."""


@dataclass(frozen=True)
class Revocation:
    kind: str
    serial: int
    reason: str
    time: dt.datetime


class JpkiAuthority:
    """Revocation, CRL and OCSP for the emulated hierarchy."""

    def __init__(self, jlis: JlisHierarchy,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.jlis = jlis
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._responders: dict[str, tuple[Any, x509.Certificate]] = {}

    # -- revocation --------------------------------------------------------------------
    @property
    def _db(self) -> Path:
        return self.jlis.path / "revocations.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[dict[str, Any]]]:
        with open(self.jlis.path / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            yield entries
            atomic_write(self._db, json.dumps(entries, indent=1).encode())

    def _read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self._db.read_text())
        except FileNotFoundError:
            return []
        return list(data)

    def revocations(self, kind: str | None = None) -> list[Revocation]:
        return [Revocation(e["kind"], int(e["serial"]), e["reason"],
                           dt.datetime.fromisoformat(e["time"]))
                for e in self._read() if kind is None or e["kind"] == kind]

    def revoke(self, kind: str, serial: int, reason: str = "unspecified") -> Revocation:
        if kind not in ("sign", "auth"):
            raise CaError("kind is 'sign' or 'auth'")
        if reason not in REASONS:
            raise CaError(f"reason must be one of: {', '.join(REASONS)}")
        now = self.clock().replace(microsecond=0)
        with self._locked() as entries:
            for e in entries:
                if e["kind"] == kind and int(e["serial"]) == serial:
                    return Revocation(kind, serial, e["reason"],
                                      dt.datetime.fromisoformat(e["time"]))
            entries.append({"kind": kind, "serial": str(serial), "reason": reason,
                            "time": now.isoformat()})
        return Revocation(kind, serial, reason, now)

    def revoke_card(self, card_dir: Path, which: str, reason: str = "unspecified"
                    ) -> Revocation:
        """Revoke a software card's ``auth`` or ``sign`` certificate."""
        cert = card_certificate(card_dir, which)
        return self.revoke(which, cert.serial_number, reason)

    def card_event(self, card_dir: Path, event: str) -> list[Revocation]:
        """Apply a life event: ``attributes_changed`` (sign only) or ``lost`` (both)."""
        if event not in EVENTS:
            raise CaError(f"event must be one of: {', '.join(EVENTS)}")
        kinds, reason = EVENTS[event]
        return [self.revoke_card(card_dir, k, reason) for k in kinds
                if k == "auth" or _has_sign_cert(card_dir)]

    # -- CRL ---------------------------------------------------------------------------
    def ca(self, kind: str) -> CertificateAuthority:
        if kind == "sign":
            return self.jlis.sign_ca
        if kind == "auth":
            return self.jlis.auth_ca
        raise CaError(f"unknown CA {kind!r}")

    def crl(self, kind: str) -> x509.CertificateRevocationList:
        ca = self.ca(kind)
        now = self.clock().replace(microsecond=0)
        builder = (x509.CertificateRevocationListBuilder()
                   .issuer_name(ca.cert.subject)
                   .last_update(now)
                   .next_update(now + CRL_VALIDITY)
                   .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       ca.key.public_key()), critical=False))
        for r in self.revocations(kind):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(r.serial)
                .revocation_date(r.time)
                .add_extension(x509.CRLReason(REASONS[r.reason]), critical=False)
                .build())
        return builder.sign(ca.key, hashes.SHA256())

    # -- OCSP --------------------------------------------------------------------------
    def responder(self, kind: str) -> tuple[Any, x509.Certificate]:
        """The delegated OCSP responder key and certificate (created on first use)."""
        if kind in self._responders:
            return self._responders[kind]
        ca = self.ca(kind)
        key_path = self.jlis.path / f"{kind}-ocsp.key"
        cert_path = self.jlis.path / f"{kind}-ocsp.pem"
        with open(self.jlis.path / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not cert_path.exists():
                key = FreshKeys().new_key()
                now = dt.datetime.now(dt.UTC).replace(microsecond=0)
                cert = (x509.CertificateBuilder()
                        .subject_name(x509.Name([
                            x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "JPKI"),
                            x509.NameAttribute(NameOID.COMMON_NAME,
                                               f"JPKI {kind} OCSP responder (cardio test)")]))
                        .issuer_name(ca.cert.subject)
                        .public_key(key.public_key())
                        .serial_number(x509.random_serial_number())
                        .not_valid_before(now - dt.timedelta(days=1))
                        .not_valid_after(now + dt.timedelta(days=365 * 5))
                        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                        .add_extension(x509.KeyUsage(True, False, False, False, False, False,
                                                     False, False, False), True)
                        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]),
                                       False)
                        .add_extension(x509.OCSPNoCheck(), False)
                        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                            ca.key.public_key()), False)
                        .sign(ca.key, hashes.SHA256()))
                atomic_write(key_path, key_to_pem(key), private=True)
                atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        pair = (key_from_pem(key_path.read_bytes(), trusted=True),
                x509.load_pem_x509_certificate(cert_path.read_bytes()))
        self._responders[kind] = pair
        return pair

    def ocsp_response(self, kind: str, request_der: bytes) -> bytes:
        """Answer one DER OCSPRequest; malformed requests get ``malformedRequest`` and
        unknown issuers ``unauthorized``, as RFC 6960 §2.3 says."""
        try:
            req = ocsp.load_der_ocsp_request(request_der)
        except ValueError:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(
                    serialization.Encoding.DER)
        ca = self.ca(kind)
        algo = req.hash_algorithm
        name_hash = _hash(algo, ca.cert.subject.public_bytes())
        key_hash = _hash(algo, _spki_bits(ca.cert))
        if req.issuer_name_hash != name_hash or req.issuer_key_hash != key_hash:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(serialization.Encoding.DER)
        now = self.clock().replace(microsecond=0)
        revoked = {r.serial: r for r in self.revocations(kind)}
        r = revoked.get(req.serial_number)
        status = ocsp.OCSPCertStatus.REVOKED if r else ocsp.OCSPCertStatus.GOOD
        key, cert = self.responder(kind)
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=req.issuer_name_hash, issuer_key_hash=req.issuer_key_hash,
            serial_number=req.serial_number, algorithm=algo, cert_status=status,
            this_update=now, next_update=now + OCSP_VALIDITY,
            revocation_time=r.time if r else None,
            revocation_reason=REASONS[r.reason] if r else None,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, cert).certificates([cert])
        with contextlib.suppress(x509.ExtensionNotFound):
            nonce = req.extensions.get_extension_for_class(x509.OCSPNonce).value
            builder = builder.add_extension(nonce, critical=False)
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _hash(algo: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algo)
    h.update(data)
    return h.finalize()


def _spki_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING contents (what OCSP's issuerKeyHash covers)."""
    from cardio.apdu import tlv

    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    bits = tlv.parse(spki).children[1].value
    return bits[1:]  # drop the unused-bits byte


def card_certificate(card_dir: Path, which: str) -> x509.Certificate:
    fid = {"auth": c.JPKI_AUTH_CERT, "sign": c.JPKI_SIGN_CERT}.get(which)
    if fid is None:
        raise CaError("which is 'auth' or 'sign'")
    image = CardStore(Path(card_dir)).load()
    der = image.files.get((c.AID_JPKI, fid))
    if der is None:
        raise CaError(f"the card in {card_dir} has no {which} certificate")
    return x509.load_der_x509_certificate(der)


def _has_sign_cert(card_dir: Path) -> bool:
    return (c.AID_JPKI, c.JPKI_SIGN_CERT) in CardStore(Path(card_dir)).load().files


# -- HTTP ------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    authority: JpkiAuthority
    server_version = "cardio-jpki-ca/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests carry no personal data, but keep test output quiet

    def _reply(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store" if ctype.endswith("response") else
                         "max-age=60")
        self.end_headers()
        self.wfile.write(body)

    def _kind(self, part: str) -> str | None:
        return part if part in ("sign", "auth") else None

    def do_GET(self) -> None:
        parts = [p for p in urllib.parse.urlsplit(self.path).path.split("/") if p]
        if len(parts) == 2 and parts[0] == "crl" and parts[1] in ("sign.crl", "auth.crl"):
            crl = self.authority.crl(parts[1][:4])
            self._reply(200, crl.public_bytes(serialization.Encoding.DER), "application/pkix-crl")
            return
        if len(parts) >= 3 and parts[0] == "ocsp" and self._kind(parts[1]):
            raw = urllib.parse.unquote("/".join(parts[2:]))
            try:
                der = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=False)
            except ValueError:
                der = b""
            self._ocsp(parts[1], der)
            return
        if parts == ["health"]:
            self._reply(200, b"ok\n", "text/plain")
            return
        self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        parts = [p for p in urllib.parse.urlsplit(self.path).path.split("/") if p]
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"too large\n", "text/plain")
            return
        body = self.rfile.read(length)
        if len(parts) == 2 and parts[0] == "ocsp" and self._kind(parts[1]):
            self._ocsp(parts[1], body)
            return
        self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def _ocsp(self, kind: str, der: bytes) -> None:
        self._reply(200, self.authority.ocsp_response(kind, der), "application/ocsp-response")


class CaServer:
    """The CA's HTTP endpoints on loopback: ``/ocsp/{sign,auth}`` (POST, and GET with the
    base64 request in the path), ``/crl/{sign,auth}.crl``."""

    def __init__(self, authority: JpkiAuthority, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("Handler", (_Handler,), {"authority": authority})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> CaServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> CaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def export_roots(jlis: JlisHierarchy, out: Path) -> dict[str, Path]:
    """Write the emulated trust anchors (PEM) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, src in jlis.trust_anchor_files().items():
        dst = out / f"{name}.pem"
        dst.write_bytes(src.read_bytes())
        written[name] = dst
    return written


__all__ = ["CaError", "CaServer", "JpkiAuthority", "export_roots"]
