"""The emulated JPKI certificate authorities' services: revocation, CRLs, an OCSP
responder (RFC 6960) and a time-stamping authority (RFC 3161) served over HTTP on loopback.

The TSA is not J-LIS (a real one is a commercial 認定タイムスタンプ事業者); it lives here
because tests need both at once. It has its own test root (``tsa-root.pem``, exported with
the JPKI roots) and a certificate with the critical EKU id-kp-timeStamping; its genTime is
the authority's clock.

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
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cardio import constants as c
from cardio.errors import CardioError
from cardio.pinreset import public_key_fingerprint
from cardio.pki import spki_bits
from cardio.records import CardFace
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
TSA_POLICY = "2.999.15.1"
"""The emulated TSA's policy OID, under the X.660 example arc: it means nothing anywhere."""


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
        self._tsa: tuple[Any, x509.Certificate, x509.Certificate] | None = None

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
        ca = self.ca(which)
        try:  # another J-LIS directory's card: its CA would never list the revocation
            cert.verify_directly_issued_by(ca.cert)
        except (ValueError, TypeError, InvalidSignature):
            raise CaError(f"the {which} certificate of {card_dir} was not issued by the"
                          f" emulated J-LIS in {self.jlis.path}; give its --jlis") from None
        return self.revoke(which, cert.serial_number, reason)

    def card_event(self, card_dir: Path, event: str) -> list[Revocation]:
        """Apply a life event: ``attributes_changed`` (sign only) or ``lost`` (both)."""
        if event not in EVENTS:
            raise CaError(f"event must be one of: {', '.join(EVENTS)}")
        kinds, reason = EVENTS[event]
        return [self.revoke_card(card_dir, k, reason) for k in kinds
                if k == "auth" or _has_sign_cert(card_dir)]

    # -- the issuer's card registry -----------------------------------------------------
    # J-LIS knows which card (serial) carries which certificates and which card-face key,
    # since it issued them (kiosk-domain.md §1.2: the certificate-to-person mapping is done
    # on the J-LIS side). Services that must tie a certificate to a card serial — the
    # PIN-reset backend derives the card's reset key from the serial — ask this registry
    # and never a client. The emulated one is ``cards.json`` in the J-LIS directory.
    @property
    def _cards_db(self) -> Path:
        return self.jlis.path / "cards.json"

    def register_card(self, card_dir: Path) -> tuple[str, str, str]:
        """Record a software card this J-LIS issued: (auth certificate SHA-256, card serial,
        card-face key fingerprint)."""
        image = CardStore(Path(card_dir)).load()
        auth = image.files.get((c.AID_JPKI, c.JPKI_AUTH_CERT))
        face = image.files.get((c.AID_VISUAL, c.VISUAL_FACE))
        if auth is None or face is None:
            raise CaError(f"the card in {card_dir} has no auth certificate or card face")
        cert_fp = x509.load_der_x509_certificate(auth).fingerprint(hashes.SHA256()).hex()
        entry = (cert_fp, str(image.meta["serial"]),
                 public_key_fingerprint(CardFace.parse(face).public_key))
        with open(self.jlis.path / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            cards = self._read_cards()
            cards[entry[0]] = {"serial": entry[1], "face_key": entry[2]}
            atomic_write(self._cards_db, json.dumps(cards, indent=1).encode())
        return entry

    def _read_cards(self) -> dict[str, dict[str, str]]:
        try:
            return dict(json.loads(self._cards_db.read_text()))
        except FileNotFoundError:
            return {}

    def card_of(self, auth_cert_sha256: str) -> tuple[str, str] | None:
        """(card serial, card-face key fingerprint) of the card whose authentication
        certificate has this SHA-256 fingerprint; None for a card J-LIS did not issue."""
        e = self._read_cards().get(auth_cert_sha256)
        return None if e is None else (e["serial"], e["face_key"])

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

    # -- RFC 3161 ----------------------------------------------------------------------
    def tsa(self) -> tuple[Any, x509.Certificate, x509.Certificate]:
        """The TSA's key, certificate and root (created on first use)."""
        if self._tsa is None:
            self._tsa = tsa_credentials(self.jlis.path)
        return self._tsa

    def timestamp_response(self, request_der: bytes) -> bytes:
        """Answer one DER TimeStampReq with a TimeStampResp: a token over the request's
        SHA-256 imprint at the authority's clock, echoing the nonce; anything malformed
        or another hash gets ``rejection`` with the failure reason (RFC 3161 §2.4.2)."""
        from asn1crypto import tsp as asn1_tsp
        from asn1crypto import x509 as asn1_x509
        from cryptography.hazmat.primitives.asymmetric import padding
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

        from cardio.cms import sign as cms_sign

        try:
            req = asn1_tsp.TimeStampReq.load(request_der, strict=True)
            algo = req["message_imprint"]["hash_algorithm"]["algorithm"].native
            hashed = bytes(req["message_imprint"]["hashed_message"].native)
            nonce = req["nonce"].native
        except (ValueError, TypeError, KeyError, IndexError, OverflowError):
            return _tsa_rejection("bad_data_format")
        if algo != "sha256" or len(hashed) != 32:
            return _tsa_rejection("bad_alg")
        key, cert, _root = self.tsa()
        now = self.clock().replace(microsecond=0)
        info: dict[str, Any] = {
            "version": "v1", "policy": TSA_POLICY,
            "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                                "hashed_message": hashed},
            "serial_number": x509.random_serial_number(), "gen_time": now,
            "accuracy": {"seconds": 1},
            "tsa": asn1_x509.GeneralName({"directory_name": asn1_x509.Name.load(
                cert.subject.public_bytes())})}
        if nonce is not None:
            info["nonce"] = nonce
        tst = asn1_tsp.TSTInfo(info).dump()
        cert_der = cert.public_bytes(serialization.Encoding.DER)
        token = cms_sign(tst, cert_der,
                         lambda di: key.sign(di[-32:], padding.PKCS1v15(),
                                             Prehashed(hashes.SHA256())),
                         detached=False, content_type="tst_info", signing_time=now)
        from asn1crypto import cms as asn1_cms

        return bytes(asn1_tsp.TimeStampResp({
            "status": {"status": "granted"},
            "time_stamp_token": asn1_cms.ContentInfo.load(token)}).dump())

    def ocsp_response(self, kind: str, request_der: bytes) -> bytes:
        """Answer one DER OCSPRequest; malformed requests get ``malformedRequest`` and
        unknown issuers ``unauthorized``, as RFC 6960 §2.3 says."""
        try:
            req = ocsp.load_der_ocsp_request(request_der)
            # Touch every field used below: cryptography parses lazily, and an unknown hash
            # OID or a damaged extension must be answered, not end the connection.
            algo = req.hash_algorithm
            _ = (req.issuer_name_hash, req.issuer_key_hash, req.serial_number,
                 list(req.extensions))
        except (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension):
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        ca = self.ca(kind)
        name_hash = _hash(algo, ca.cert.subject.public_bytes())
        key_hash = _hash(algo, spki_bits(ca.cert))
        if req.issuer_name_hash != name_hash or req.issuer_key_hash != key_hash:
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
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


def _tsa_rejection(reason: str) -> bytes:
    """A TimeStampResp without a token: a refusal carries the status only."""
    from asn1crypto import tsp as asn1_tsp

    from cardio.tsp import TimeStampResponse

    return bytes(TimeStampResponse({"status": {
        "status": "rejection", "fail_info": asn1_tsp.PKIFailureInfo({reason})}}).dump())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cardio test TSA"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def tsa_credentials(jlis_dir: Path) -> tuple[Any, x509.Certificate, x509.Certificate]:
    """The emulated TSA's key, certificate and test root, kept in the J-LIS directory
    (created once, under the directory's lock, so concurrent servers agree)."""
    files = {n: jlis_dir / n for n in ("tsa-root.key", "tsa-root.pem", "tsa.key", "tsa.pem")}
    with open(jlis_dir / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not files["tsa.pem"].exists():
            now = dt.datetime.now(dt.UTC).replace(microsecond=0)
            root_key, key = FreshKeys().new_key(), FreshKeys().new_key()
            root_name = _name("cardio test TSA root")
            root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
                    .public_key(root_key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - dt.timedelta(days=1))
                    .not_valid_after(now + dt.timedelta(days=365 * 20))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
                    .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                 False, False), True)
                    .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                        root_key.public_key()), False)
                    .sign(root_key, hashes.SHA256()))
            cert = (x509.CertificateBuilder().subject_name(_name("cardio test TSA"))
                    .issuer_name(root_name).public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - dt.timedelta(days=1))
                    .not_valid_after(now + dt.timedelta(days=365 * 10))
                    .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                    .add_extension(x509.KeyUsage(True, True, False, False, False, False, False,
                                                 False, False), True)
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
                                   True)
                    .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                        root_key.public_key()), False)
                    .sign(root_key, hashes.SHA256()))
            pem = serialization.Encoding.PEM
            atomic_write(files["tsa-root.key"], key_to_pem(root_key), private=True)
            atomic_write(files["tsa-root.pem"], root.public_bytes(pem))
            atomic_write(files["tsa.key"], key_to_pem(key), private=True)
            atomic_write(files["tsa.pem"], cert.public_bytes(pem))
    return (key_from_pem(files["tsa.key"].read_bytes(), trusted=True),
            x509.load_pem_x509_certificate(files["tsa.pem"].read_bytes()),
            x509.load_pem_x509_certificate(files["tsa-root.pem"].read_bytes()))


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER)


def _hash(algo: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algo)
    h.update(data)
    return h.finalize()


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
BODY_TIMEOUT = 10.0
"""Seconds a client has to send a whole request body: a slow sender cannot hold a thread
and its buffer for longer."""
MAX_CONNECTIONS = 32
"""Connections served at once; more get ``503`` at once. Each holds a thread and at most
:data:`MAX_REQUEST` bytes, so the server's memory stays bounded however many connect."""
KEEP_ALIVE_IDLE = 2.0
"""Seconds a kept-alive connection may wait for its next request: an idle client does not
hold one of the :data:`MAX_CONNECTIONS` slots for long (relying parties that keep
connections expire theirs sooner, see ``IDLE_REUSE``)."""


def content_length(headers: Any, limit: int) -> tuple[int, int | None]:
    """(status, length) for a request body: ``(0, n)`` when acceptable, else the HTTP status
    to answer before reading anything — 411 for a missing length or a chunked
    (``Transfer-Encoding``) body, 400 for a negative, non-numeric or repeated one, 413
    beyond ``limit``. Checked before any byte of the body is read."""
    if headers.get("Transfer-Encoding") is not None:
        return HTTPStatus.LENGTH_REQUIRED, None
    values = headers.get_all("Content-Length") or []
    if not values:
        return HTTPStatus.LENGTH_REQUIRED, None
    if len(values) != 1 or not values[0].strip().isdigit() or not values[0].strip().isascii():
        return HTTPStatus.BAD_REQUEST, None
    n = int(values[0].strip()[:20])
    if n > limit or len(values[0].strip()) > 20:
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, None
    return 0, n


class _Handler(BaseHTTPRequestHandler):
    authority: JpkiAuthority
    body_timeout: float = BODY_TIMEOUT
    server_version = "cardio-jpki-ca/1"
    timeout = BODY_TIMEOUT  # socket timeout for each read (request line, headers, body)
    # HTTP/1.1: a relying party that checks OCSP on every request (the issuance center)
    # keeps its connection open instead of paying a TCP handshake and a thread per check.
    # Every answer carries a Content-Length; an idle connection closes after ``timeout``.
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests carry no personal data, but keep test output quiet

    def setup(self) -> None:
        super().setup()
        # Head and body go out in two writes; on a kept-alive connection Nagle's algorithm
        # would hold the body until the client's delayed ACK (40 ms) of the head.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _reply(self, status: int, body: bytes, ctype: str, *, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store" if ctype.endswith(("response", "reply")) else
                         "max-age=60")
        if close:  # the body was not read: the connection cannot carry another request
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
        if not self.close_connection:
            self.connection.settimeout(min(KEEP_ALIVE_IDLE, self.timeout or KEEP_ALIVE_IDLE))

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
        status, length = content_length(self.headers, MAX_REQUEST)
        if length is None:
            msg = {HTTPStatus.LENGTH_REQUIRED: b"a Content-Length is required (no chunked"
                   b" bodies)\n", HTTPStatus.BAD_REQUEST: b"bad Content-Length\n"}.get(
                       HTTPStatus(status), b"request body too large\n")
            self._reply(status, msg, "text/plain", close=True)
            return
        body = self._read_body(length)
        if body is None:
            self._reply(HTTPStatus.REQUEST_TIMEOUT, b"the request body did not arrive in"
                        b" time\n", "text/plain", close=True)
            return
        if len(parts) == 2 and parts[0] == "ocsp" and self._kind(parts[1]):
            self._ocsp(parts[1], body)
            return
        if parts == ["tsa"]:
            if self.headers.get("Content-Type", "").split(";")[0].strip() != \
                    "application/timestamp-query":
                self._reply(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, b"send an"
                            b" application/timestamp-query\n", "text/plain")
                return
            self._reply(200, self.authority.timestamp_response(body),
                        "application/timestamp-reply")
            return
        self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def _read_body(self, length: int) -> bytes | None:
        """Exactly ``length`` bytes within :attr:`body_timeout` in total, or None."""
        deadline = time.monotonic() + self.body_timeout
        chunks: list[bytes] = []
        got = 0
        try:
            while got < length:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.connection.settimeout(min(left, self.body_timeout))
                chunk = self.rfile.read1(min(length - got, 16384))
                if not chunk:
                    return None
                chunks.append(chunk)
                got += len(chunk)
        except (TimeoutError, OSError):
            return None
        return b"".join(chunks)

    def _ocsp(self, kind: str, der: bytes) -> None:
        self._reply(200, self.authority.ocsp_response(kind, der), "application/ocsp-response")


class _BoundedServer(ThreadingHTTPServer):
    """A threading server that serves at most :data:`MAX_CONNECTIONS` connections at once
    and answers the rest ``503`` instead of spawning a thread each."""

    daemon_threads = True
    max_connections = MAX_CONNECTIONS
    request_queue_size = 64  # a burst of connections waits in the backlog, not dropped

    def server_activate(self) -> None:
        super().server_activate()
        self._slots = threading.BoundedSemaphore(self.max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Retry-After: 1\r\nConnection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (reset, broken pipe, timeout) is not worth a traceback."""
        import sys

        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class CaServer:
    """The CA's HTTP endpoints on loopback: ``/ocsp/{sign,auth}`` (POST, and GET with the
    base64 request in the path), ``/crl/{sign,auth}.crl``, ``/tsa`` (RFC 3161 over HTTP:
    POST application/timestamp-query). Request bodies are bounded
    before they are read (:func:`content_length`), in time (:data:`BODY_TIMEOUT`) and in
    number of connections (``max_connections``, :data:`MAX_CONNECTIONS` by default; the
    issuance back end sizes it to its workers' connection pools)."""

    def __init__(self, authority: JpkiAuthority, host: str = "127.0.0.1", port: int = 0, *,
                 body_timeout: float = BODY_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        handler = type("Handler", (_Handler,), {"authority": authority,
                                                "body_timeout": body_timeout,
                                                "timeout": body_timeout})
        server = type("Server", (_BoundedServer,), {"max_connections": max_connections})
        self.httpd = server((host, port), handler)
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
    dst = out / "tsa-root.pem"
    dst.write_bytes(tsa_credentials(jlis.path)[2].public_bytes(serialization.Encoding.PEM))
    written["tsa-root"] = dst
    return written


__all__ = ["CaError", "CaServer", "JpkiAuthority", "export_roots"]
