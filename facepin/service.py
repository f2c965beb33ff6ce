"""The face-verified PIN-reset reservation service (ASGI, FastAPI).

Flow (kiosk-domain.md §3, with our own protocol where the real one is closed):

1. ``POST /v1/challenges`` → a single-use nonce (5 minutes).
2. The app, with the card and its 4-digit auth PIN, sends ``POST /v1/reservations``:
   the card's JPKI auth certificate and its signature over the nonce (possession of the
   card + knowledge of the PIN), the card face record and CV certificate (the chip photo,
   signed by J-LIS), the card-face key's presence signature over the same nonce (the face
   record belongs to the card at hand), and one camera frame. The service validates the
   certificate, both signatures and J-LIS's signature over the photo, and matches the face
   itself — the app's word is not taken. It answers with a reservation bound to the
   certificate: 24 hours, single use. Attempts are rate-limited per card.
3. At a kiosk, with the same card present and its auth PIN verified, the kiosk asks
   ``POST /v1/reservations/{id}/authorise`` for the MAC of one issuer-authenticated reset
   (``cardio.pinreset``) over the card's fresh challenge and the SHA-256 of the new value;
   the reservation is consumed.

No image, PIN or personal data is stored or logged; logs carry reservation ids, outcomes
and certificate fingerprints only.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cardio import pinreset
from cardio.crypto import CvCertificate, SignatureError, digest_info_of, verify_payload
from cardio.errors import CardioError
from cardio.pki import PARSE_ERRORS, CertificateValidator, Status
from cardio.records import CardFace, RecordError
from cardio.trust import TrustStore
from facepin.face import THRESHOLD, FaceEngine, FaceError, Outcome, load_image, match_probe
from facepin.liveness import LivenessSession, Prompt, Verdict, random_challenge
from facepin.store import Reservation, Store

log = logging.getLogger("facepin.service")
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


CHALLENGE_TTL = 300.0
RESERVATION_TTL = 24 * 3600.0
MAX_ATTEMPTS_PER_DAY = 5
MAX_IMAGE = 4 * 1024 * 1024
MAX_FRAMES = 90


@dataclass
class ServiceConfig:
    database: str
    trust: TrustStore
    master_key: bytes
    clock: Callable[[], float] = time.time
    threshold: float = THRESHOLD
    validator: CertificateValidator | None = None
    engine: FaceEngine | None = None
    max_attempts: int = MAX_ATTEMPTS_PER_DAY
    extra: dict[str, Any] = field(default_factory=dict)


class ChallengeOut(BaseModel):
    challenge_id: str
    nonce: str
    prompts: list[str]
    """The liveness challenge the capture must follow, in order."""


class ReservationIn(BaseModel):
    challenge_id: str
    card_serial: str = Field(pattern=r"^[0-9]{15}$")
    auth_certificate: str
    auth_signature: str
    card_face: str
    card_face_cv_certificate: str
    card_face_signature: str
    frames: list[str] = Field(min_length=1, max_length=MAX_FRAMES)
    """Camera frames (base64 JPEG/PNG) recorded while the person followed the prompts."""
    frame_times: list[float] = Field(min_length=1, max_length=MAX_FRAMES)


class ReservationOut(BaseModel):
    reservation_id: str
    expires_at: float


class AuthoriseIn(BaseModel):
    auth_certificate: str
    card_serial: str = Field(pattern=r"^[0-9]{15}$")
    target: str = Field(pattern=r"^(sign|auth)$")
    card_challenge: str = Field(pattern=r"^[0-9a-fA-F]{16,64}$")
    value_hash: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class AuthoriseOut(BaseModel):
    mac: str


class Refused(CardioError):
    """A request the service turns down; becomes an HTTP error with ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _b64(value: str, what: str, limit: int = MAX_IMAGE) -> bytes:
    if len(value) > limit * 4 // 3 + 8:
        raise Refused(413, "too_large", f"{what} is too large")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(400, "bad_encoding", f"{what} is not base64") from None


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def create_app(config: ServiceConfig) -> FastAPI:
    store = Store(config.database)
    validator = config.validator or CertificateValidator(config.trust)
    app = FastAPI(title="cardio facepin PIN-reset reservations", version="1")

    @app.middleware("http")
    async def correlation_id(request: Request, call_next: Any) -> Any:
        """Every request carries a correlation id end to end (DESIGN.md): the caller's
        ``X-Request-ID`` when it is a sane token, a new one otherwise; echoed back and
        written into the service's log lines for the request."""
        rid = request.headers.get("x-request-id", "")
        if not (0 < len(rid) <= 64 and rid.replace("-", "").replace("_", "").isalnum()):
            rid = secrets.token_hex(8)
        token = REQUEST_ID.set(rid)
        try:
            response = await call_next(request)
        finally:
            REQUEST_ID.reset(token)
        response.headers["X-Request-ID"] = rid
        return response

    @app.exception_handler(Refused)
    async def refused(_request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"error": exc.code, "message": exc.message}, status_code=exc.status)

    def load_cert(b64: str) -> x509.Certificate:
        try:
            cert = x509.load_der_x509_certificate(_b64(b64, "certificate", 64 * 1024))
            _ = (cert.issuer, cert.public_key())
            return cert
        except PARSE_ERRORS:
            raise Refused(400, "bad_certificate", "not a DER certificate") from None

    def check_cert(cert: x509.Certificate) -> None:
        v = validator.validate(cert, purpose="auth")
        if v.status is not Status.VALID:
            raise Refused(403, "certificate_" + v.status.value, "the card's authentication"
                          " certificate is not valid: " + v.status.value)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/challenges", response_model=ChallengeOut)
    def new_challenge() -> ChallengeOut:
        cid, nonce = secrets.token_urlsafe(16), secrets.token_bytes(32)
        prompts = [p.value for p in random_challenge()]
        store.add_challenge(cid, nonce, config.clock(), ",".join(prompts))
        return ChallengeOut(challenge_id=cid, nonce=base64.b64encode(nonce).decode(),
                            prompts=prompts)

    @app.post("/v1/reservations", response_model=ReservationOut, status_code=201)
    def reserve(body: ReservationIn) -> ReservationOut:
        now = config.clock()
        taken = store.take_challenge(body.challenge_id, now, CHALLENGE_TTL)
        if taken is None:
            raise Refused(400, "challenge_invalid", "unknown, used or expired challenge")
        nonce, prompt_list = taken
        if len(body.frames) != len(body.frame_times):
            raise Refused(400, "bad_frames", "one time per frame")
        cert = load_cert(body.auth_certificate)
        fp = fingerprint(cert)
        if store.attempts_since(fp, now - 24 * 3600) >= config.max_attempts:
            log.info("reservation refused: rate limit cert=%s", fp[:16])
            raise Refused(429, "rate_limited", "too many attempts for this card; try tomorrow")
        ok = False
        try:
            check_cert(cert)
            key = cert.public_key()
            if not isinstance(key, rsa.RSAPublicKey):
                raise Refused(400, "bad_certificate", "not an RSA certificate")
            try:
                key.verify(_b64(body.auth_signature, "auth_signature", 1024), nonce,
                           padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                raise Refused(403, "card_signature_invalid", "the card's signature over the"
                              " challenge does not verify") from None
            face_record = _verified_face(body, nonce, config.trust)
            engine = config.engine or FaceEngine.shared()
            try:
                reference = engine.encode(load_image(face_record.photo), allow_several=True,
                                          check_quality=False)
                first = load_image(_b64(body.frames[0], "frame"))
            except FaceError:
                raise Refused(400, "bad_image", "an image cannot be decoded") from None
            if reference.encoding is None:
                raise Refused(422, "reference_no_face", "no face found in the chip photo")
            # 1:1 match on the first (frontal) frame, then the liveness challenge.
            result = match_probe(reference.encoding, first, threshold=config.threshold,
                                 engine=engine)
            if result.outcome is not Outcome.MATCH:
                # The outcome (no face, several faces, ...) helps the person; the score
                # is never returned.
                status = 403 if result.outcome is Outcome.NO_MATCH else 422
                raise Refused(status, "face_" + result.outcome.value,
                              "face verification did not succeed")
            session = LivenessSession(reference.encoding,
                                      [Prompt(p) for p in prompt_list.split(",") if p],
                                      threshold=config.threshold)
            for raw, t in zip(body.frames, body.frame_times, strict=True):
                try:
                    frame = load_image(_b64(raw, "frame"))
                except FaceError:
                    raise Refused(400, "bad_image", "a frame cannot be decoded") from None
                if session.feed_frame(engine, frame, t) is not Verdict.IN_PROGRESS:
                    break
            if session.finish() is not Verdict.LIVE:
                log.info("reservation refused: liveness failed cert=%s", fp[:16])
                raise Refused(403, "liveness_failed", "the liveness check did not succeed;"
                              " follow the prompts and try again")
            ok = True
        finally:
            store.record_attempt(fp, now, ok)
        rid = secrets.token_urlsafe(18)
        store.add_reservation(Reservation(rid, fp, body.card_serial, now, now + RESERVATION_TTL,
                                          None))
        log.info("reservation created id=%s cert=%s request=%s", rid, fp[:16], REQUEST_ID.get())
        return ReservationOut(reservation_id=rid, expires_at=now + RESERVATION_TTL)

    @app.post("/v1/reservations/{rid}/authorise", response_model=AuthoriseOut)
    def authorise(rid: str, body: AuthoriseIn) -> AuthoriseOut:
        now = config.clock()
        r = store.get_reservation(rid)
        if r is None:
            raise Refused(404, "no_reservation", "no such reservation")
        cert = load_cert(body.auth_certificate)
        if fingerprint(cert) != r.cert_fp or body.card_serial != r.serial:
            log.info("authorise refused: wrong card id=%s", rid)
            raise Refused(403, "wrong_card", "this reservation belongs to another card")
        if r.used_at is not None:
            raise Refused(409, "already_used", "this reservation was already used")
        if now >= r.expires:
            raise Refused(410, "expired", "this reservation expired; make a new one")
        if not store.use_reservation(rid, now):
            raise Refused(409, "already_used", "this reservation was already used")
        mac = pinreset.authorise(config.master_key, r.serial, body.target,
                                 bytes.fromhex(body.card_challenge),
                                 bytes.fromhex(body.value_hash))
        log.info("reset authorised id=%s target=%s request=%s", rid, body.target,
                 REQUEST_ID.get())
        return AuthoriseOut(mac=mac.hex())

    app.state.store = store
    return app


def _verified_face(body: ReservationIn, nonce: bytes, trust: TrustStore) -> CardFace:
    """The chip photo, with J-LIS's signature and the card's presence signature checked."""
    try:
        face = CardFace.parse(_b64(body.card_face, "card_face"))
        cv = CvCertificate.parse(_b64(body.card_face_cv_certificate, "card_face_cv", 4096))
        face.verify(cv.public_key)
    except (RecordError, SignatureError):
        raise Refused(403, "card_face_invalid", "the card face is not signed by J-LIS"
                      ) from None
    if not trust.check_cv_certificate(cv):
        raise Refused(403, "card_face_untrusted", "the card face key is not certified by a"
                      " trusted J-LIS key")
    try:
        verify_payload(face.public_key, _b64(body.card_face_signature, "card_face_sig", 1024),
                       digest_info_of("sha256", nonce))
    except SignatureError:
        raise Refused(403, "card_face_signature_invalid", "the card-face key did not sign the"
                      " challenge") from None
    return face


def certificate_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def hash_hex(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()
