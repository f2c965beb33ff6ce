"""The face-verified PIN-reset reservation service (ASGI, FastAPI).

Flow (kiosk-domain.md §3, with our own protocol where the real one is closed):

1. ``POST /v1/challenges`` → a single-use nonce (5 minutes).
2. The app, with the card and its 4-digit auth PIN, opens the WebSocket
   ``/v1/reservations/live`` and sends the card's evidence: the JPKI auth certificate and
   its signature over the nonce (possession of the card + knowledge of the PIN), the card
   face record and CV certificate (the chip photo, signed by J-LIS), the card-face key's
   presence signature over the same nonce (the face record belongs to the card at hand).
   Then it streams camera frames while the service shows the liveness prompts it chooses
   and times (``facepin.live``, ``facepin.liveness``). The service validates the
   certificate, both signatures and J-LIS's signature over the photo, and matches the face
   itself — the app's word is not taken. Which card that is comes from the issuer's card
   registry (certificate → card serial and card-face key), never from a client field: the
   certificate and the card face must be registered to one card. It answers with a
   reservation bound to that card (certificate fingerprint and serial): 24 hours, single
   use. Attempts are rate-limited per card, counted and recorded in one transaction.
3. At a kiosk, with the same card present and its auth PIN verified, the kiosk asks
   ``POST /v1/reservations/{id}/authorise`` for the MAC of one issuer-authenticated reset
   (``cardio.pinreset``) over the card's fresh challenge and the SHA-256 of the new value;
   the reservation is consumed — only for the card it was made for, and only while its
   certificate is still unrevoked by a fresh OCSP answer.

Revocation is checked fresh (OCSP with a nonce, no cache) for both granting decisions.
Request bodies are bounded before they are parsed (:class:`BodyLimit`).

No image, PIN or personal data is stored or logged; logs carry reservation ids, outcomes
and certificate fingerprints only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import copy
import json
import logging
import secrets
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from cardio import pinreset
from cardio.crypto import CvCertificate, SignatureError, digest_info_of, verify_payload
from cardio.errors import CardioError
from cardio.pki import PARSE_ERRORS, CertificateValidator, KeepAliveFetcher, Status
from cardio.records import CardFace, RecordError
from cardio.trust import TrustStore
from facepin.face import (
    THRESHOLD,
    FaceEngine,
    FaceError,
    load_image,
)
from facepin.live import (
    EVIDENCE_SECONDS,
    FPS,
    MAX_EVIDENCE_BYTES,
    MAX_FRAME_BYTES,
    MAX_FRAMES,
    MAX_LIVE,
    MAX_SECONDS,
    FrameRefused,
    run_capture,
)
from facepin.liveness import LivenessSession, Prompt, Verdict, random_challenge
from facepin.registry import RegistryError
from facepin.store import Reservation, Store

log = logging.getLogger("facepin.service")
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


CHALLENGE_TTL = 300.0
RESERVATION_TTL = 24 * 3600.0
MAX_ATTEMPTS_PER_DAY = 5
MAX_IMAGE = 4 * 1024 * 1024
MAX_BODY = 64 * 1024
"""Every HTTP request body (frames come over the live capture's WebSocket, bounded there:
``facepin.live``)."""
MAX_BUFFERED = 48 * 1024 * 1024
"""Request bodies held at once, over all requests: beyond it new ones get ``503``, so the
memory the service spends on bodies is bounded whatever the clients send."""
BODY_TIMEOUT = 30.0
"""Seconds to receive a whole body (a slow sender is cut off with ``408``)."""
LIVE_SLOT_WAIT = 30.0
"""A live capture waits this long for one of the worker's :data:`facepin.live.MAX_LIVE`
places before it is refused ``503``."""

ATTEMPT_DEADLINE = LIVE_SLOT_WAIT + MAX_SECONDS + 30.0
"""Seconds an admitted attempt may run in all (the wait for a place, the capture, the
measuring of the frames still queued), well inside the store's ``ATTEMPT_LEASE``: the
attempt is finished (counted) by then, so a held capture is never still open when its
card gets its tries back."""

RETRY_AFTER = 5
"""Seconds a client is told to wait (``Retry-After``) when no database connection is to be
had."""
UNAVAILABLE_MESSAGE = "the service cannot reach its database; try again shortly"


def _database_errors() -> tuple[type[Exception], ...]:
    """What the store raises when its database is unreachable, gone or failing: sqlite3's
    errors and psycopg's (psycopg_pool's ``PoolTimeout`` is a ``psycopg.OperationalError``)."""
    errors: list[type[Exception]] = [sqlite3.Error]
    with contextlib.suppress(ImportError):
        import psycopg

        errors.append(psycopg.Error)
    return tuple(errors)


DATABASE_ERRORS = _database_errors()

CardRegistry = Callable[[str], "tuple[str, str] | None"]
"""The issuer's card registry: the SHA-256 fingerprint of a card's JPKI authentication
certificate → (the card serial, :func:`cardio.pinreset.public_key_fingerprint` of its
card-face key), or None for a card the issuer does not know. J-LIS holds this mapping
(kiosk-domain.md §1.2); the emulated J-LIS serves it from ``emulators.jpki_ca``."""


@dataclass
class ServiceConfig:
    database: str
    trust: TrustStore
    master_key: bytes
    clock: Callable[[], float] = time.time
    threshold: float = THRESHOLD
    registry: CardRegistry = field(default=lambda _fp: None)
    """Fails closed: without a registry no card can be identified, so nothing is granted."""
    validator: CertificateValidator | None = None
    engine: FaceEngine | None = None
    max_attempts: int = MAX_ATTEMPTS_PER_DAY
    body_timeout: float = BODY_TIMEOUT
    max_buffered: int = MAX_BUFFERED


class ChallengeOut(BaseModel):
    challenge_id: str
    nonce: str
    prompts: list[str]
    """The prompts the live capture will ask for — their order and timing are the
    service's, revealed one at a time during the capture; this list is empty."""


class ReservationIn(BaseModel):
    """The card's evidence, the first message of the live capture."""

    challenge_id: str = Field(max_length=64)
    card_serial: str | None = Field(default=None, pattern=r"^[0-9]{15}$")
    """What the app read from the card. Never trusted: the serial comes from the issuer's
    registry; a value that disagrees is refused."""
    auth_certificate: str
    auth_signature: str
    card_face: str
    card_face_cv_certificate: str
    card_face_signature: str


class ReservationOut(BaseModel):
    reservation_id: str
    expires_at: float


class AuthoriseIn(BaseModel):
    auth_certificate: str
    card_serial: str | None = Field(default=None, pattern=r"^[0-9]{15}$")
    target: str = Field(pattern=r"^(sign|auth)$")
    card_challenge: str = Field(pattern=r"^(?:[0-9a-fA-F]{2}){8,32}$")  # whole bytes, 8-32
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


HTTP_IMPL = "h11"
"""uvicorn's HTTP parser for this service, named rather than left to what is installed:
h11 answers a body streamed past its declared length with the 413 the limits promise
(httptools, which the issuance center uses for speed, answers such a stream 400)."""


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def create_app(config: ServiceConfig) -> BodyLimit:
    """The ASGI application: the FastAPI routes behind :class:`BodyLimit`."""
    store = Store(config.database)
    # Every reservation checks OCSP afresh: over kept-alive connections to the responder.
    validator = config.validator or CertificateValidator(config.trust, fetch=KeepAliveFetcher())

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        """The store's pooled PostgreSQL connections are closed when the server stops:
        left to the garbage collector, the pool was closed in whichever thread collected
        it — one of its own workers, which cannot join itself — and its server sessions
        stayed open until then."""
        try:
            yield
        finally:
            store.close()

    app = FastAPI(title="cardio facepin PIN-reset reservations", version="1",
                  lifespan=lifespan)

    @app.middleware("http")
    async def correlation_id(request: Request, call_next: Any) -> Any:
        """Every request carries a correlation id end to end (DESIGN.md): the caller's
        ``X-Request-ID`` when it is a sane token, a new one otherwise; echoed back and
        written into the service's log lines for the request."""
        rid = request.headers.get("x-request-id", "")
        if not (0 < len(rid) <= 64 and rid.replace("-", "").replace("_", "").isalnum()
                and rid.isascii()):
            rid = secrets.token_hex(8)
        token = REQUEST_ID.set(rid)
        try:
            response = await call_next(request)
            log.info("%s %s -> %d request=%s", request.method, request.url.path,
                     response.status_code, rid)
        finally:
            REQUEST_ID.reset(token)
        response.headers["X-Request-ID"] = rid
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming the fields and what is wrong, without echoing their values:
        FastAPI's default echoes the input — photos, and non-finite numbers that its own
        JSON encoder then cannot write (a 500 with a traceback)."""
        fields = [{"field": ".".join(str(p) for p in e.get("loc", ())),
                   "problem": str(e.get("msg", ""))[:200]} for e in exc.errors()[:20]]
        return JSONResponse({"error": "invalid_request", "message": "the request does not"
                             " match the API", "fields": fields}, status_code=422)

    async def unavailable(_request: Request, exc: Exception) -> JSONResponse:
        """No database connection (psycopg_pool's PoolTimeout, a server gone, a locked
        SQLite file): 503 with Retry-After, so the app or kiosk tries again; it was a 500.
        Only the error's type is logged: a driver's message can quote values."""
        log.error("database unavailable: %s request=%s", type(exc).__name__,
                  REQUEST_ID.get())
        return JSONResponse({"error": "unavailable", "message": UNAVAILABLE_MESSAGE},
                            status_code=503, headers={"Retry-After": str(RETRY_AFTER)})

    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, unavailable)

    @app.exception_handler(Refused)
    async def refused(_request: Request, exc: Refused) -> JSONResponse:
        log.info("refused %s (%d) request=%s", exc.code, exc.status, REQUEST_ID.get())
        return JSONResponse({"error": exc.code, "message": exc.message}, status_code=exc.status)

    def load_cert(b64: str) -> x509.Certificate:
        try:
            cert = x509.load_der_x509_certificate(_b64(b64, "certificate", 64 * 1024))
            _ = (cert.issuer, cert.public_key())
            return cert
        except PARSE_ERRORS:
            raise Refused(400, "bad_certificate", "not a DER certificate") from None

    def check_cert(cert: x509.Certificate) -> None:
        """Both decisions grant something, so revocation is checked fresh: an OCSP answer
        to this request's nonce, no cache, no CRL (cardio.pki, fresh=True)."""
        v = validator.validate(cert, purpose="auth", fresh=True)
        if v.status is not Status.VALID:
            log.info("certificate %s cert=%s: %s", v.status.value, fingerprint(cert)[:16],
                     v.reason)
            raise Refused(403, "certificate_" + v.status.value, "the card's authentication"
                          " certificate is not valid: " + v.status.value)

    def issued_card(fp: str) -> tuple[str, str]:
        try:
            found = config.registry(fp)
        except (OSError, ValueError, KeyError, RegistryError):
            # RegistryError: FileCardRegistry's damaged or missing file (it was a 500).
            log.warning("card registry unavailable")
            raise Refused(503, "registry_unavailable", "the card registry cannot be read;"
                          " try again later") from None
        if found is None:
            raise Refused(403, "card_unknown", "the issuer has no card with this certificate")
        return found

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/challenges", response_model=ChallengeOut)
    def new_challenge() -> ChallengeOut:
        cid, nonce = secrets.token_urlsafe(16), secrets.token_bytes(32)
        prompts = [p.value for p in random_challenge()]
        store.add_challenge(cid, nonce, config.clock(), ",".join(prompts))
        # The order is kept server-side and shown one prompt at a time during the capture.
        return ChallengeOut(challenge_id=cid, nonce=base64.b64encode(nonce).decode(),
                            prompts=[])

    @app.post("/v1/reservations", status_code=410)
    def uploaded_capture() -> JSONResponse:
        """The former upload of recorded frames with the client's own timestamps: gone,
        since a capture the client times is a capture the client can fake."""
        return JSONResponse({"error": "live_capture_required", "message": "frames are"
                             " streamed during the challenge over the WebSocket"
                             " /v1/reservations/live; an uploaded capture is not accepted"},
                            status_code=410)

    def admit(body: ReservationIn, now: float) -> tuple[str, str, CardFace, str, str]:
        """The card's part of a reservation, before any face is looked at: the challenge
        claimed (once), the certificate (fresh revocation), its signature over the nonce
        (the card and its auth PIN), the J-LIS-signed card face and the card-face key's
        signature over the same nonce; which card that is, from the issuer's registry
        (never from the request); one attempt slot, counted and taken in one transaction.
        Returns (certificate fingerprint, serial, card face, attempt id, prompts)."""
        taken = store.take_challenge(body.challenge_id, now, CHALLENGE_TTL)
        if taken is None:
            raise Refused(400, "challenge_invalid", "unknown, used or expired challenge")
        nonce, prompts = taken
        cert = load_cert(body.auth_certificate)
        fp = fingerprint(cert)
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
        serial, face_key = issued_card(fp)
        if pinreset.public_key_fingerprint(face_record.public_key) != face_key or \
                (body.card_serial is not None and body.card_serial != serial):
            log.warning("reservation refused: proofs of different cards cert=%s request=%s",
                        fp[:16], REQUEST_ID.get())
            raise Refused(403, "card_mismatch", "the certificate, card face and serial are"
                          " not those of one card")
        attempt = store.take_attempt(fp, now, now - 24 * 3600, config.max_attempts)
        if attempt is None:
            log.info("reservation refused: rate limit cert=%s", fp[:16])
            raise Refused(429, "rate_limited", "too many attempts for this card; try tomorrow")
        return fp, serial, face_record, attempt, prompts

    live_slots = asyncio.Semaphore(MAX_LIVE)

    @app.websocket("/v1/reservations/live")
    async def live(ws: WebSocket) -> None:
        """The app's reservation: the card's evidence as the first (text) message, then
        camera frames (binary, JPEG) while the service sends the prompts; the last
        message is ``reserved`` or ``refused`` (``facepin.live`` has the bounds)."""
        rid = ws.headers.get("x-request-id", "")
        if not (0 < len(rid) <= 64 and rid.replace("-", "").replace("_", "").isalnum()
                and rid.isascii()):
            rid = secrets.token_hex(8)
        token = REQUEST_ID.set(rid)
        await ws.accept()
        try:
            out = await _live(ws)
            await ws.send_json({"type": "reserved", **out.model_dump()})
            await ws.close(1000)
        except Refused as exc:
            log.info("refused %s (%d) request=%s", exc.code, exc.status, rid)
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await ws.send_json({"type": "refused", "status": exc.status,
                                    "error": exc.code, "message": exc.message})
                await ws.close(1008 if exc.status < 500 else 1013)
        except WebSocketDisconnect:
            log.info("live capture: the client went away request=%s", rid)
        except DATABASE_ERRORS as exc:
            # As the HTTP routes' 503 (the handler above): typed, the type logged only.
            log.error("database unavailable: %s request=%s", type(exc).__name__, rid)
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await ws.send_json({"type": "refused", "status": 503, "error": "unavailable",
                                    "message": UNAVAILABLE_MESSAGE,
                                    "retry_after": RETRY_AFTER})
                await ws.close(1013)
        finally:
            REQUEST_ID.reset(token)

    async def _live(ws: WebSocket) -> ReservationOut:
        try:
            raw = await asyncio.wait_for(ws.receive(), EVIDENCE_SECONDS)
        except TimeoutError:
            raise Refused(408, "timeout", "the card's evidence did not arrive in time") from None
        if raw["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(1000)
        text = raw.get("text")
        if text is None or len(text) > MAX_EVIDENCE_BYTES:
            raise Refused(400, "bad_evidence", "the first message is the card's evidence"
                          f" as JSON text of at most {MAX_EVIDENCE_BYTES} bytes")
        try:
            body = ReservationIn.model_validate_json(text)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e.get("loc", ()))
                               for e in exc.errors()[:20])
            raise Refused(422, "invalid_request", f"the evidence does not match the API:"
                          f" {fields}") from None
        now = config.clock()
        fp, serial, face_record, attempt, taken_prompts = await asyncio.to_thread(admit, body,
                                                                                now)
        ok = False
        try:
            # The card has proved itself; what is bounded is the capture's measuring, and
            # the whole attempt by a wall-clock deadline: a client that goes quiet
            # mid-capture (run_capture checks MAX_SECONDS only when a frame arrives) is cut
            # off and its attempt counted now, long before its lease runs out.
            try:
                async with asyncio.timeout(ATTEMPT_DEADLINE):
                    try:
                        await asyncio.wait_for(live_slots.acquire(), LIVE_SLOT_WAIT)
                    except TimeoutError:
                        raise Refused(503, "busy", "too many captures at once; try again"
                                      " shortly") from None
                    try:
                        await _capture(ws, face_record, taken_prompts, fp)
                    finally:
                        live_slots.release()
            except TimeoutError:
                raise Refused(408, "timeout", "the live capture did not finish in time;"
                              " start again") from None
            ok = True
        finally:
            if not store.finish_attempt(attempt, ok, config.clock()):
                # Older than its lease (the clock jumped, or the instance stalled): the
                # card may have been given this try back already, so this outcome is not
                # recorded, not told and grants nothing.
                log.warning("live capture outlived its attempt's lease cert=%s request=%s",
                            fp[:16], REQUEST_ID.get())
                raise Refused(408, "timeout", "the live capture did not finish in time;"
                              " start again")
        rid = secrets.token_urlsafe(18)
        store.add_reservation(Reservation(rid, fp, serial, now, now + RESERVATION_TTL, None))
        log.info("reservation created id=%s cert=%s request=%s", rid, fp[:16], REQUEST_ID.get())
        return ReservationOut(reservation_id=rid, expires_at=now + RESERVATION_TTL)

    async def _capture(ws: WebSocket, face_record: CardFace, taken_prompts: str, fp: str
                       ) -> None:
        """The chip photo encoded, the challenge run on the arriving frames; returns when
        the session is live, raises :class:`Refused` otherwise."""
        engine = config.engine or FaceEngine.shared()
        try:
            # Once per capture, so with the slower, better settings (jittered copies).
            reference = await asyncio.to_thread(
                lambda: engine.encode_reference(load_image(face_record.photo)))
        except FaceError:
            raise Refused(400, "bad_image", "the chip photo cannot be decoded") from None
        if reference.encoding is None:
            raise Refused(422, "reference_no_face", "no face found in the chip photo")
        session = LivenessSession(reference.encoding,
                                  [Prompt(p) for p in taken_prompts.split(",") if p],
                                  threshold=config.threshold)
        await ws.send_json({"type": "capture", "fps": FPS, "max_frames": MAX_FRAMES,
                            "max_seconds": MAX_SECONDS, "max_frame_bytes": MAX_FRAME_BYTES,
                            "frame_format": "image/jpeg"})
        try:
            result = await run_capture(ws.receive, ws.send_json, session, engine)
        except FrameRefused as exc:
            raise Refused(400, exc.code, exc.message) from None
        log.info("live capture: %s after %d frames (%d dropped), %.1f s, %.2f s of work"
                 " cert=%s request=%s%s", result.verdict.value, result.frames, result.dropped,
                 result.seconds, result.work, fp[:16], REQUEST_ID.get(),
                 f" ({session.reason})" if session.reason else "")
        if result.verdict is not Verdict.LIVE:
            # The outcome (no face, several faces, ...) helps the person; the scores and the
            # failing check are never returned (the log keeps the session's reason code).
            code = session.code or "liveness_failed"
            if code == "liveness_failed":
                raise Refused(403, code, "the liveness check did not succeed; follow the"
                              " prompts and try again")
            status = 403 if code == "face_no_match" else 422
            raise Refused(status, code, "face verification did not succeed")

    @app.post("/v1/reservations/{rid}/authorise", response_model=AuthoriseOut)
    def authorise(rid: str, body: AuthoriseIn) -> AuthoriseOut:
        now = config.clock()
        r = store.get_reservation(rid)
        if r is None:
            raise Refused(404, "no_reservation", "no such reservation")
        cert = load_cert(body.auth_certificate)
        fp = fingerprint(cert)
        if fp != r.cert_fp or (body.card_serial is not None and body.card_serial != r.serial):
            log.info("authorise refused: wrong card id=%s", rid)
            raise Refused(403, "wrong_card", "this reservation belongs to another card")
        if r.used_at is not None:
            raise Refused(409, "already_used", "this reservation was already used")
        if now >= r.expires:
            raise Refused(410, "expired", "this reservation expired; make a new one")
        check_cert(cert)
        if issued_card(fp)[0] != r.serial:
            log.warning("authorise refused: registry serial changed id=%s", rid)
            raise Refused(403, "wrong_card", "this reservation belongs to another card")
        if not store.use_reservation(rid, now):
            raise Refused(409, "already_used", "this reservation was already used")
        # The MAC is keyed by the serial the issuer's registry gave at reservation time:
        # it only opens the card the face was verified for.
        mac = pinreset.authorise(config.master_key, r.serial, body.target,
                                 bytes.fromhex(body.card_challenge),
                                 bytes.fromhex(body.value_hash))
        log.info("reset authorised id=%s target=%s request=%s", rid, body.target,
                 REQUEST_ID.get())
        return AuthoriseOut(mac=mac.hex())

    app.state.store = store
    return BodyLimit(app, config.body_timeout, config.max_buffered)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware that bounds every request body before anything parses it.

    * A ``Content-Length`` that is not one plain decimal number → ``400``; above
      :data:`MAX_BODY` → ``413``, without reading a byte.
    * Chunked (streamed) bodies are counted as they arrive and cut off with ``413`` at the
      limit.
    * The whole body must arrive within ``timeout`` seconds (``408``).
    * At most ``max_buffered`` bytes of bodies are held at once over all requests; a
      request that would exceed it gets ``503`` with ``Retry-After``.

    The body is then handed on in one piece, so the application never sees more than the
    limit. uvicorn's h11 already refuses a negative or malformed length with ``400``.
    """

    def __init__(self, app: FastAPI, timeout: float = BODY_TIMEOUT,
                 max_buffered: int = MAX_BUFFERED) -> None:
        self.fastapi = app
        self.app: ASGIApp = app
        self.timeout = timeout
        self.max_buffered = max_buffered
        self.buffered = 0
        self.state = app.state

    @staticmethod
    def limit_for(path: str) -> int:
        return MAX_BODY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(str(scope.get("path", "")))
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared: int | None = None
        if b"content-length" in headers:
            raw = headers[b"content-length"].strip()
            if not (raw.isdigit() and len(raw) <= 20):
                await _plain(send, 400, "bad Content-Length")
                return
            declared = int(raw)
            if declared > limit:
                await _plain(send, 413, f"request body larger than {limit} bytes")
                return
        reserved = declared if declared is not None else 0
        if self.buffered + reserved > self.max_buffered:
            await _plain(send, 503, "busy; try again", retry_after=True)
            return
        self.buffered += reserved
        try:
            body = await self._read(receive, limit, reserved)
            if isinstance(body, int):
                await _plain(send, body, {413: f"request body larger than {limit} bytes",
                                          408: "the request body did not arrive in time",
                                          503: "busy; try again"}[body],
                             retry_after=body == 503)
                return
            delivered = False

            async def replay() -> Message:
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.buffered -= reserved

    async def _read(self, receive: Receive, limit: int, reserved: int) -> bytes | int:
        """The body, or the status to answer. Grows this request's share of the buffer
        budget as a chunked body arrives."""
        deadline = time.monotonic() + self.timeout
        parts: list[bytes] = []
        size = 0
        extra = 0
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return 408
                try:
                    msg = await asyncio.wait_for(receive(), left)
                except TimeoutError:
                    return 408
                if msg["type"] == "http.disconnect":
                    return 408
                chunk = msg.get("body", b"")
                size += len(chunk)
                # The shared budget first: a streamed body larger than it is "busy" whether
                # or not it is also larger than this route's limit (one read may carry
                # more than the limit, which would otherwise hide the budget).
                if size > reserved + extra:
                    grow = size - reserved - extra
                    if self.buffered + grow > self.max_buffered:
                        return 503
                    self.buffered += grow
                    extra += grow
                if size > limit:
                    return 413
                parts.append(chunk)
                if not msg.get("more_body", False):
                    return b"".join(parts)
        finally:
            self.buffered -= extra


async def _plain(send: Send, status: int, text: str, *, retry_after: bool = False) -> None:
    code = {400: "bad_request", 408: "timeout", 413: "too_large", 503: "busy"}[status]
    body = json.dumps({"error": code, "message": text}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    log.info("refused request body: %d %s request=-", status, text)


def serve(config: ServiceConfig, host: str, port: int, *, limit_concurrency: int = 64) -> None:
    """Run the service with uvicorn, its own log lines (``facepin.*``, with request ids)
    going to stderr beside uvicorn's, and a bound on concurrent connections."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["formatters"]["facepin"] = {
        "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    log_config["handlers"]["facepin"] = {"class": "logging.StreamHandler",
                                         "formatter": "facepin",
                                         "stream": "ext://sys.stderr"}
    log_config["loggers"]["facepin"] = {"handlers": ["facepin"], "level": "INFO",
                                        "propagate": False}
    _check_bind(host, port)
    try:
        uvicorn.run(create_app(config), host=host, port=port, log_level="info",
                    access_log=False, log_config=log_config,
                    limit_concurrency=limit_concurrency, timeout_keep_alive=5, http=HTTP_IMPL,
                    ws_max_size=MAX_FRAME_BYTES + 4096)
    except SystemExit as exc:
        # uvicorn exits with 3 when it cannot start — the CLI's "wrong PIN" code.
        if exc.code in (0, None):
            raise
        raise ServeError(f"the service did not start on {host}:{port} (uvicorn exit"
                         f" {exc.code}; its log line above says why)") from None


class ServeError(CardioError):
    """The service cannot listen where it was told to (an address not of this host, a
    port in use): the operator's configuration, exit 1 — not uvicorn's exit 3, which
    the CLI documents as a wrong PIN."""


def _check_bind(host: str, port: int) -> None:
    """Bind once before uvicorn does, so a bad ``--host``/``--port`` is one clear line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _name, addr = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
    except OSError as exc:  # socket.gaierror is an OSError
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


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

