"""The emulated 証明書交付センター (J-LIS's issuance center), production-shaped: FastAPI
over the shared database, stateless workers.

Per kiosk request: bounded body, the kiosk's ECDSA request signature checked against its
enrolled key, the nonce remembered (a replay is refused), then one step of the session:
open (center nonce) → authenticate (the card's 利用者証明用 certificate: chain, validity
and a fresh OCSP check with CRL fallback through ``cardio.pki``; both down → refused; the
card's signature over the nonce; serial → resident) → menu → document (routed to the
resident's municipality, which signs it bound to this session) → finalize (idempotent by
request id). A kiosk's report of a binding mismatch is an incident that stops the
municipality until an operator clears it.

The audit table and the log carry request id, kiosk id, municipality code, document type,
outcome and timings — never a name, address, 個人番号 or certificate.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import datetime as dt
import hashlib
import inspect
import json
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from cardio.pki import (
    CertificateError,
    CertificateValidator,
    Status,
    load_certificate,
)
from cardio.trust import TrustStore
from emulators.issuance.db import Database
from emulators.issuance.errors import Refused
from emulators.issuance.http11 import RevocationFetcher
from emulators.issuance.municipality import MunicipalityServer
from emulators.issuance.rules import JST, REASONS
from kiosk.documents.model import DocumentType
from kiosk.protocol.codec import MAX_MESSAGE, Message, ProtocolError, decode, encode
from kiosk.protocol.kiosk_auth import FRESHNESS, KioskAuthError, parse_headers, verify_request
from kiosk.protocol.messages import (
    Authenticate,
    Authenticated,
    Binding,
    BuildDocument,
    DocumentRequest,
    EligibilityQuery,
    ErrorReply,
    Finalize,
    Finalized,
    IncidentRecorded,
    IncidentReport,
    IssuedDocument,
    Menu,
    MenuItem,
    MenuQuery,
    MenuRefusal,
    OpenSession,
    ResolveResident,
    SessionOpened,
)

__all__ = ["CenterConfig", "create_app", "jst_now"]

log = logging.getLogger("emulators.issuance.center")
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
SESSION_TTL = 300.0
KIOSK_CACHE_TTL = 5.0
BUSY_TIMEOUT = 2.0
POOL_WAIT = 3.0
"""Seconds a step waits for a pooled PostgreSQL connection. The steps run on the event
loop, so the wait blocks the whole instance: with the server gone (an outage, a failover)
psycopg_pool keeps trying to connect, and the kiosk must get a prompt 503, not a 30 s
stall of every request on the instance."""
INCIDENT_GRACE = 600.0
"""Seconds after a session's end within which its kiosk may still report an incident."""
M = TypeVar("M", bound=Message)


def jst_now() -> dt.datetime:
    return dt.datetime.now(JST)


@dataclass
class CenterConfig:
    database: str
    trust: TrustStore
    clock: Callable[[], dt.datetime] = jst_now
    """The business clock (hours, holidays, certificate expiry); ``--now`` shifts it."""
    wall: Callable[[], float] = time.time
    """Real time, for the freshness of kiosk request signatures and session expiry."""
    session_ttl: float = SESSION_TTL
    max_crl_age: dt.timedelta = dt.timedelta(minutes=10)
    """The CRL fallback (OCSP down) accepts a CRL issued at most this long ago: a grant
    decision on an older one is ``certificate_status_unknown`` (J-LIS-style CRLs are valid
    for a day; one saved before a revocation must not vouch for the card all that time)."""
    jlis_dir: Path | None = None
    """The emulated J-LIS directory whose document issuers (``emulators.document_issuers``)
    seal the pages; ``None``: documents carry no page seal."""


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


log.addFilter(_RequestIdFilter())

_STATUS_CODES = {Status.REVOKED: "certificate_revoked", Status.EXPIRED: "certificate_expired",
                 Status.NOT_YET_VALID: "certificate_not_yet_valid",
                 Status.UNTRUSTED: "certificate_untrusted",
                 Status.UNKNOWN: "certificate_status_unknown"}
_STATUS_MESSAGES = {
    "certificate_revoked": "この電子証明書は失効しています。/ The certificate is revoked.",
    "certificate_expired": "この電子証明書は有効期限切れです。/ The certificate has expired.",
    "certificate_not_yet_valid": "この電子証明書はまだ有効ではありません。/ Not yet valid.",
    "certificate_untrusted": "この電子証明書は利用できません。/ The certificate is not trusted.",
    "certificate_status_unknown": "電子証明書の有効性を確認できないため交付できません。/ The"
                                  " certificate's status cannot be checked (OCSP and CRL are"
                                  " unavailable); nothing can be issued.",
}


@dataclass
class _Audit:
    """The audit row of one kiosk request. A step writes it inside its last transaction
    (one commit less per step: the audit costs no round trip of its own); when a step ends
    without writing it (a refusal rolled its transaction back), the adapter writes it
    alone."""

    event: str
    started: float
    request_id: str = "-"
    kiosk_id: str = "-"
    doc_type: str | None = None
    written: bool = False

    def ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def write(self, t: Any, at: float, outcome: str = "ok",
              municipality: str | None = None) -> None:
        t.execute("INSERT INTO audit (at, request_id, kiosk_id, municipality, doc_type, event,"
                  " outcome, ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  (at, self.request_id, self.kiosk_id, municipality, self.doc_type, self.event,
                   outcome, self.ms()))
        t.after_commit.append(self._committed)

    def _committed(self) -> None:
        self.written = True


class Center:
    """The center's logic over the shared database; the FastAPI app is a thin adapter."""

    def __init__(self, config: CenterConfig) -> None:
        self.config = config
        # The steps run on the event loop: a write lock held elsewhere (a long seed, a
        # backup) must not freeze the worker for 30 s — after BUSY_TIMEOUT the request is
        # refused 503 and the kiosk retries or cancels.
        self.db = Database(config.database, busy_timeout=BUSY_TIMEOUT, pool_wait=POOL_WAIT)
        self.municipalities = MunicipalityServer(self.db, config.jlis_dir)
        self._kiosks: dict[str, tuple[ec.EllipticCurvePublicKey | None, float]] = {}
        self._fetch = RevocationFetcher()
        self.counters: Counter[str] = Counter()
        self._failed_nonces: dict[tuple[str, str], float] = {}

    # -- plumbing ----------------------------------------------------------------------------
    def _utc(self) -> dt.datetime:
        return self.config.clock().astimezone(dt.UTC)

    def validator(self) -> CertificateValidator:
        """A fresh validator per grant decision: no OCSP answer is reused from another
        request (cardio.pki caches within nextUpdate; the grant wants a fresh check).
        It is driven by :meth:`CertificateValidator.validate_async` with the worker's
        :class:`RevocationFetcher`, on the event loop."""
        return CertificateValidator(self.config.trust, clock=self._utc,
                                    max_crl_age=self.config.max_crl_age)

    def kiosk_key(self, kiosk_id: str) -> ec.EllipticCurvePublicKey:
        now = time.monotonic()
        cached = self._kiosks.get(kiosk_id)
        if cached is None or now - cached[1] > KIOSK_CACHE_TTL:
            with self.db.tx() as t:
                row = t.one("SELECT public_key, active FROM kiosks WHERE kiosk_id=?",
                            (kiosk_id,))
            key: ec.EllipticCurvePublicKey | None = None
            if row is not None and row[1]:
                loaded = serialization.load_pem_public_key(str(row[0]).encode())
                if isinstance(loaded, ec.EllipticCurvePublicKey):
                    key = loaded
            cached = (key, now)
            self._kiosks[kiosk_id] = cached
        if cached[0] is None:
            raise Refused(401, "unknown_kiosk", "this kiosk is not enrolled (or is disabled)")
        return cached[0]

    def authenticate_kiosk(self, headers: Any, method: str, path: str, body: bytes
                           ) -> tuple[str, str]:
        kiosk_id, ts, nonce, sig = parse_headers(headers)
        key = self.kiosk_key(kiosk_id)
        verify_request(key, kiosk_id, ts, nonce, sig, method, path, body, self.config.wall())
        if (kiosk_id, nonce) in self._failed_nonces:
            raise Refused(401, "kiosk_replayed", "this kiosk request was already seen"
                          " (replayed)")
        return kiosk_id, nonce

    def remember_failed(self, kiosk_id: str, nonce: str) -> None:
        """A request the database failed (busy or gone) spent its nonce in this worker's
        memory at once — the database learns it when it can (:meth:`spend_quietly`) — so a
        replay on this worker is refused even before then. Bounded, oldest out first."""
        now = time.monotonic()
        self._failed_nonces[(kiosk_id, nonce)] = now
        while self._failed_nonces and (len(self._failed_nonces) > 10_000 or next(iter(
                self._failed_nonces.values())) < now - 3 * FRESHNESS):
            self._failed_nonces.pop(next(iter(self._failed_nonces)))

    def _nonce(self, t: Any, kiosk_id: str, nonce: str) -> None:
        now = self.config.wall()
        try:
            t.execute("INSERT INTO kiosk_nonces (kiosk_id, nonce, at) VALUES (?, ?, ?)",
                      (kiosk_id, nonce, now))
        except self.db.integrity_error():
            raise Refused(401, "kiosk_replayed", "this kiosk request was already seen"
                          " (replayed)") from None
        if secrets.randbelow(500) == 0:
            t.execute("DELETE FROM kiosk_nonces WHERE at < ?", (now - 3 * FRESHNESS,))
            # Sessions abandoned after authentication keep no certificate past their life.
            t.execute("UPDATE sessions SET certificate=NULL WHERE expires < ? AND"
                      " certificate IS NOT NULL", (now,))

    def audit(self, audit: _Audit, outcome: str, municipality: str | None = None, *,
              nonce: str | None = None) -> None:
        """The audit row of a step that did not write it itself (a refusal), and the
        kiosk's request nonce: a signed request is spent when first seen, whatever the
        answer. The step's own transaction recorded it, but a refusal rolls that back — and
        a request refused now (409: the session is not there yet) must not be accepted when
        replayed byte for byte once the session has moved on."""
        with self.db.tx(write=True) as t:
            if nonce is not None:
                t.execute("INSERT INTO kiosk_nonces (kiosk_id, nonce, at) VALUES (?, ?, ?)"
                          " ON CONFLICT DO NOTHING", (audit.kiosk_id, nonce, self.config.wall()))
            if audit.request_id != "-":
                audit.write(t, self.config.wall(), outcome, municipality)

    def spend_quietly(self, audit: _Audit, nonce: str, tries: int = 5) -> None:
        """:meth:`audit` for a request the database failed, retried a few times; a database
        that stays down leaves the nonce unspent (its replay fails the same way)."""
        for _ in range(tries):
            try:
                self.audit(audit, "unavailable", nonce=nonce)
                return
            except self.db.backend_errors():
                time.sleep(BUSY_TIMEOUT)

    def _session(self, t: Any, session_id: str, kiosk_id: str, request_id: str) -> Any:
        # row[8]: issuance for the session's municipality is stopped (an incident); with
        # no municipality known (not yet authenticated, or unknown) it counts as stopped.
        # row[9]: the card's certificate (DER) while the session may still ask for a
        # document, for the second revocation check.
        row = t.one("SELECT s.request_id, s.kiosk_id, s.nonce, s.expires, s.state,"
                    " s.cert_sha256, s.resident_id, s.municipality, COALESCE(m.stopped, 1),"
                    " s.certificate FROM sessions s LEFT JOIN municipalities m"
                    " ON m.code = s.municipality WHERE s.session_id=?", (session_id,))
        if row is None:
            raise Refused(404, "unknown_session", "no such session")
        if row[1] != kiosk_id:
            raise Refused(403, "wrong_kiosk", "this session belongs to another kiosk")
        if row[0] != request_id:
            raise Refused(409, "request_mismatch", "the request id is not this session's")
        return row

    # -- the steps ------------------------------------------------------------------------------
    def open(self, kiosk_id: str, nonce_hdr: str, msg: OpenSession, audit: _Audit
             ) -> SessionOpened:
        if msg.kiosk_id != kiosk_id:
            raise Refused(403, "wrong_kiosk", "kiosk_id differs from the signing kiosk")
        sid = secrets.token_urlsafe(18)
        nonce = secrets.token_bytes(32)
        now = self.config.wall()
        with self.db.tx(write=True) as t:
            self._nonce(t, kiosk_id, nonce_hdr)
            if t.one("SELECT 1 FROM sessions WHERE request_id=?", (msg.request_id,)):
                raise Refused(409, "request_id_reused", "this request id was already used")
            t.execute("INSERT INTO sessions (session_id, request_id, kiosk_id, nonce, created,"
                      " expires, state) VALUES (?, ?, ?, ?, ?, ?, 'open')",
                      (sid, msg.request_id, kiosk_id, nonce, now,
                       now + self.config.session_ttl))
            audit.write(t, now)
        expires = (self.config.clock() + dt.timedelta(seconds=self.config.session_ttl))
        return SessionOpened(request_id=msg.request_id, session_id=sid,
                             nonce=base64.b64encode(nonce).decode(),
                             expires_at=expires.isoformat())

    async def authenticate(self, kiosk_id: str, nonce_hdr: str, msg: Authenticate,
                           audit: _Audit) -> Authenticated:
        """The one step that waits on the network (OCSP, CRL): a coroutine, so the worker
        serves other kiosks meanwhile; its database transactions are short and run
        inline like every other step's."""
        with self.db.tx(write=True) as t:
            self._nonce(t, kiosk_id, nonce_hdr)
            row = self._session(t, msg.session_id, kiosk_id, msg.request_id)
            if row[4] != "open":
                raise Refused(409, "nonce_used", "this session's nonce was already used;"
                              " open a new session")
            if self.config.wall() > row[3]:
                raise Refused(410, "session_expired", "the session expired; start again")
            t.execute("UPDATE sessions SET state='authenticating' WHERE session_id=?",
                      (msg.session_id,))
            nonce = bytes(row[2])
        try:
            cert_sha, serial_hex, der = await self._check_card(msg, nonce)
        except (Refused, asyncio.CancelledError):  # refused, or the worker is shutting down
            with self.db.tx(write=True) as t:
                t.execute("UPDATE sessions SET state='failed' WHERE session_id=?",
                          (msg.session_id,))
            raise
        with self.db.tx(write=True) as t:
            ref = self.municipalities.resolve(ResolveResident(
                request_id=msg.request_id, serial_hex=serial_hex), t)
            if ref is None:
                t.execute("UPDATE sessions SET state='failed' WHERE session_id=?",
                          (msg.session_id,))
            else:
                t.execute("UPDATE sessions SET state='authenticated', cert_sha256=?,"
                          " resident_id=?, municipality=?, certificate=? WHERE session_id=? AND"
                          " state='authenticating'",
                          (cert_sha, ref.resident_id, ref.municipality_code, der,
                           msg.session_id))
                m = self.municipalities.municipality(ref.municipality_code, t)
                audit.write(t, self.config.wall(), municipality=ref.municipality_code)
        if ref is None:
            raise Refused(403, "unknown_certificate", "no municipality knows this"
                          " certificate (利用者証明用電子証明書 not registered)")
        return Authenticated(request_id=msg.request_id, session_id=msg.session_id,
                             municipality_code=ref.municipality_code,
                             municipality_name=m.model.name)

    async def _check_card(self, msg: Authenticate, nonce: bytes) -> tuple[str, str, bytes]:
        """The card's signature over the nonce and its certificate's status: (SHA-256 of
        the certificate, its serial in hex, the DER), or :class:`Refused`."""
        try:
            der = base64.b64decode(msg.certificate, validate=True)
            sig = base64.b64decode(msg.signature, validate=True)
            cert = load_certificate(der)
        except (binascii.Error, ValueError, CertificateError):
            raise Refused(400, "bad_certificate", "not a DER certificate") from None
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Refused(400, "bad_certificate", "not an RSA certificate")
        try:
            key.verify(sig, nonce, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise Refused(403, "card_signature_invalid", "the card's signature over the"
                          " center nonce does not verify with this certificate") from None
        await self._certificate_status(cert)
        return hashlib.sha256(der).hexdigest(), format(cert.serial_number, "x"), der

    async def _certificate_status(self, cert: Any) -> None:
        """Chain, validity and a fresh nonced OCSP answer (CRL fallback; ``unknown``
        refuses), or :class:`Refused` with the status's code."""
        v = await self.validator().validate_async(cert, self._fetch, purpose="auth")
        if v.status is not Status.VALID:
            code = _STATUS_CODES[v.status]
            log.info("certificate refused: %s (%s)", code, v.revocation_source or "-")
            raise Refused(403, code, _STATUS_MESSAGES[code])

    def _stopped(self, t: Any, code: str) -> bool:
        row = t.one("SELECT stopped FROM municipalities WHERE code=?", (code,))
        return row is None or bool(row[0])

    def menu(self, kiosk_id: str, nonce_hdr: str, msg: MenuQuery, audit: _Audit) -> Menu:
        with self.db.tx(write=True) as t:
            self._nonce(t, kiosk_id, nonce_hdr)
            row = self._session(t, msg.session_id, kiosk_id, msg.request_id)
            if row[4] != "authenticated":
                raise Refused(409, "not_authenticated", "authenticate the card first")
            self._alive(row)
            if row[8]:
                ja, en = REASONS["municipality_stopped"]
                items: list[MenuItem] = []
                refused = [MenuRefusal(d.value, "municipality_stopped", ja, en)
                           for d in DocumentType]
            else:
                items, refused = self.municipalities.menu(EligibilityQuery(
                    request_id=msg.request_id, session_id=msg.session_id,
                    resident_id=row[6], at=self.config.clock().isoformat()), t)
            audit.write(t, self.config.wall(), municipality=row[7])
        return Menu(request_id=msg.request_id, session_id=msg.session_id, items=items,
                    refused=refused)

    def _alive(self, row: Any) -> None:
        """Every step after authentication runs within the session's lifetime (the
        authenticate step checks it too): past it, the card's check is stale."""
        if self.config.wall() > row[3]:
            raise Refused(410, "session_expired", "the session expired; start again")

    async def document(self, kiosk_id: str, nonce_hdr: str, msg: DocumentRequest,
                       audit: _Audit) -> IssuedDocument:
        """One document per session, for a card whose certificate is still good.

        The session is claimed first — a conditional update, so of two simultaneous
        requests on one session exactly one goes on, on SQLite and on PostgreSQL alike
        (under PostgreSQL's READ COMMITTED the second waits on the row and then finds it
        claimed), before any municipal work. Then the card's certificate is checked again,
        as at authentication (a card reported lost after its session opened gets nothing),
        before the municipality builds anything."""
        with self.db.tx(write=True) as t:
            self._nonce(t, kiosk_id, nonce_hdr)
            row = self._session(t, msg.session_id, kiosk_id, msg.request_id)
            if row[4] == "requested":
                raise Refused(409, "already_requested", "one document per session")
            if row[4] in ("finalized", "cancelled", "refused", "failed"):
                raise Refused(409, "session_closed", "this session has ended; start again")
            if row[4] != "authenticated":
                raise Refused(409, "not_authenticated", "authenticate the card first")
            self._alive(row)
            if row[8]:
                raise Refused(503, "municipality_stopped")
            claimed = t.execute("UPDATE sessions SET state='requested' WHERE session_id=?"
                                " AND state='authenticated'", (msg.session_id,))
            if claimed.rowcount != 1:
                raise Refused(409, "already_requested", "one document per session")
        try:
            if row[9] is None:  # authenticated before certificates were kept
                code = "certificate_status_unknown"
                raise Refused(403, code, _STATUS_MESSAGES[code])
            await self._certificate_status(load_certificate(bytes(row[9])))
        except (Refused, asyncio.CancelledError):
            with self.db.tx(write=True) as t:
                t.execute("UPDATE sessions SET state='refused', certificate=NULL WHERE"
                          " session_id=?", (msg.session_id,))
            raise
        cert_sha, resident_id, muni = row[5], row[6], row[7]
        issued_at = self.config.clock().astimezone(JST).replace(microsecond=0)
        binding = Binding(request_id=msg.request_id, session_id=msg.session_id,
                          kiosk_id=kiosk_id, cert_sha256=cert_sha, municipality_code=muni,
                          doc_type=msg.doc_type, issued_at=issued_at.isoformat())
        try:
            signed = self.municipalities.build(BuildDocument(
                resident_id=resident_id, options=dict(msg.options), binding=binding))
        except Refused:
            with self.db.tx(write=True) as t:
                t.execute("UPDATE sessions SET state='refused', certificate=NULL WHERE"
                          " session_id=?", (msg.session_id,))
            raise
        fee = self.municipalities.fee(muni, msg.doc_type)
        doc_sha = hashlib.sha256(json.dumps(signed.document, ensure_ascii=False,
                                            sort_keys=True, separators=(",", ":")).encode()
                                 ).hexdigest()
        with self.db.tx(write=True) as t:
            if self._stopped(t, muni):  # an incident may have landed meanwhile
                t.execute("UPDATE sessions SET state='refused', certificate=NULL WHERE"
                          " session_id=?", (msg.session_id,))
                stopped = True
            else:
                stopped = False
                t.execute("UPDATE sessions SET certificate=NULL WHERE session_id=?",
                          (msg.session_id,))
                t.execute("INSERT INTO issuances (request_id, session_id, kiosk_id,"
                          " municipality, doc_type, fee, issued_at, doc_sha256) VALUES"
                          " (?, ?, ?, ?, ?, ?, ?, ?)",
                          (msg.request_id, msg.session_id, kiosk_id, muni, msg.doc_type, fee,
                           binding.issued_at, doc_sha))
                audit.write(t, self.config.wall(), municipality=muni)
        if stopped:
            raise Refused(503, "municipality_stopped")
        return IssuedDocument(request_id=msg.request_id, session_id=msg.session_id, fee=fee,
                              signed=signed)

    def finalize(self, kiosk_id: str, nonce_hdr: str, msg: Finalize, audit: _Audit
                 ) -> Finalized:
        with self.db.tx(write=True) as t:
            self._nonce(t, kiosk_id, nonce_hdr)
            srow = self._session(t, msg.session_id, kiosk_id, msg.request_id)
            row = t.one("SELECT session_id, outcome FROM issuances WHERE request_id=?",
                        (msg.request_id,))
            if row is None:
                if msg.outcome != "cancelled":
                    raise Refused(409, "nothing_to_finalize", "no document was issued in this"
                                  " session; only 'cancelled' applies")
                if srow[4] not in ("cancelled",):
                    t.execute("UPDATE sessions SET state='cancelled', certificate=NULL WHERE"
                              " session_id=?", (msg.session_id,))
                audit.write(t, self.config.wall(), municipality=srow[7])
                return Finalized(request_id=msg.request_id, outcome="cancelled")
            if row[1] is None:
                t.execute("UPDATE issuances SET outcome=?, finalized=? WHERE request_id=? AND"
                          " outcome IS NULL", (msg.outcome, self.config.wall(),
                                               msg.request_id))
                t.execute("UPDATE sessions SET state='finalized' WHERE session_id=?",
                          (msg.session_id,))
            elif row[1] != msg.outcome:
                raise Refused(409, "already_finalized", f"this request was already finalized"
                              f" as {row[1]}")
            audit.write(t, self.config.wall(), municipality=srow[7])
        return Finalized(request_id=msg.request_id, outcome=msg.outcome)

    def incident(self, kiosk_id: str, nonce_hdr: str, msg: IncidentReport, audit: _Audit
                 ) -> IncidentRecorded:
        with self.db.tx(write=True) as t:
            self._nonce(t, kiosk_id, nonce_hdr)
            row = self._session(t, msg.session_id, kiosk_id, msg.request_id)
            muni = row[7]
            if muni is None:
                raise Refused(409, "not_authenticated", "no municipality for this session")
            # A kiosk reports a binding mismatch as it checks the document, which it fetches
            # within the session's life; the report may race the session's finalize, so it
            # is taken a while after — not a day later, when it could only be a way to stop
            # a municipality's issuance with an old session's credentials.
            if self.config.wall() > row[3] + INCIDENT_GRACE:
                raise Refused(410, "session_expired", "too late to report an incident for"
                              " this session")
            t.execute("INSERT INTO incidents (municipality, request_id, kiosk_id, kind, detail,"
                      " at) VALUES (?, ?, ?, ?, ?, ?)",
                      (muni, msg.request_id, kiosk_id, msg.kind, msg.detail,
                       self.config.wall()))
            t.execute("UPDATE municipalities SET stopped=1 WHERE code=?", (muni,))
            t.execute("UPDATE issuances SET outcome='incident', finalized=? WHERE"
                      " request_id=? AND outcome IS NULL", (self.config.wall(), msg.request_id))
            (iid,) = t.one("SELECT MAX(id) FROM incidents WHERE request_id=?",
                           (msg.request_id,))
            audit.write(t, self.config.wall(), municipality=muni)
        log.warning("INCIDENT %s from kiosk %s: issuance for municipality %s stopped until"
                    " cleared", msg.kind, kiosk_id, muni)
        return IncidentRecorded(incident_id=int(iid), municipality_code=muni, stopped=True)

    # -- metrics ---------------------------------------------------------------------------------
    def metrics(self) -> str:
        with self.db.tx() as t:
            outcomes = t.all("SELECT COALESCE(outcome, 'open'), COUNT(*) FROM issuances"
                             " GROUP BY outcome")
            (open_incidents,) = t.one("SELECT COUNT(*) FROM incidents WHERE cleared IS NULL")
            (stopped,) = t.one("SELECT COUNT(*) FROM municipalities WHERE stopped=1")
        lines = ["# TYPE cardio_issuances_total counter"]
        lines += [f'cardio_issuances_total{{outcome="{o}"}} {n}' for o, n in outcomes]
        lines += ["# TYPE cardio_incidents_open gauge", f"cardio_incidents_open {open_incidents}",
                  "# TYPE cardio_municipalities_stopped gauge",
                  f"cardio_municipalities_stopped {stopped}",
                  "# TYPE cardio_worker_requests_total counter"]
        pid = os.getpid()
        lines += [f'cardio_worker_requests_total{{worker="{pid}",result="{k}"}} {v}'
                  for k, v in sorted(self.counters.items())]
        return "\n".join(lines) + "\n"


_ROUTES: dict[str, tuple[type[Message], str]] = {
    "open": (OpenSession, "open"), "authenticate": (Authenticate, "authenticate"),
    "menu": (MenuQuery, "menu"), "documents": (DocumentRequest, "document"),
    "finalize": (Finalize, "finalize"), "incidents": (IncidentReport, "incident"),
}


def create_app(config: CenterConfig) -> FastAPI:
    center = Center(config)
    app = FastAPI(title="cardio emulated 証明書交付センター", version="1", docs_url=None,
                  redoc_url=None, openapi_url=None)

    def reply(status: int, msg: Message, rid: str) -> Response:
        return Response(encode(msg), status_code=status, media_type="application/json",
                        headers={"X-Request-ID": rid})

    async def serve(step: str, headers: Any, method: str, path: str, body: bytes,
                    session_id: str | None) -> tuple[int, Message, str]:
        cls, name = _ROUTES[step]
        audit = _Audit(step, time.perf_counter())
        nonce: str | None = None  # known once the kiosk's signature holds
        try:
            audit.kiosk_id, nonce = center.authenticate_kiosk(headers, method, path, body)
            msg = decode(cls, body)
            audit.request_id = getattr(msg, "request_id", "-")
            REQUEST_ID.set(audit.request_id)
            if session_id is not None and getattr(msg, "session_id", None) != session_id:
                raise Refused(400, "malformed", "session_id differs from the path")
            audit.doc_type = getattr(msg, "doc_type", None)
            out = getattr(center, name)(audit.kiosk_id, nonce, msg, audit)
            if inspect.isawaitable(out):
                out = await out
            status, result, outcome = 200, out, "ok"
        except Refused as e:
            status, outcome = e.status, e.code
            result = ErrorReply(error=e.code, message=e.message,
                                request_id=_safe(audit.request_id))
        except KioskAuthError as e:
            status, outcome = 401, e.code
            result = ErrorReply(error=e.code, message=str(e), request_id=None)
        except ProtocolError as e:
            status = 413 if e.code == "too_large" else 400
            outcome = e.code
            result = ErrorReply(error=e.code, message=str(e), request_id=None)
        except asyncio.CancelledError:
            # The worker is shutting down mid-step (a slow OCSP check outlived the graceful
            # timeout): the row says so, then the cancellation goes on.
            if audit.kiosk_id != "-" and audit.request_id != "-" and not audit.written:
                with contextlib.suppress(*center.db.backend_errors()):
                    center.audit(audit, "interrupted", nonce=nonce)
            raise
        except center.db.backend_errors() as e:
            # The shared database is unreachable or failing: refuse, typed; the kiosk
            # retries or cancels. Only the error's type is logged (a driver message can
            # quote values).
            status, outcome = 503, "unavailable"
            log.error("%s kiosk=%s: database error %s", step, audit.kiosk_id, type(e).__name__)
            result = ErrorReply(error="unavailable", message="the center cannot reach its"
                                " database; try again later", request_id=_safe(audit.request_id))
        center.counters[outcome] += 1
        log.info("%s kiosk=%s outcome=%s %.1f ms", step, audit.kiosk_id, outcome, audit.ms())
        if not audit.written and nonce is not None and outcome != "unavailable":
            try:
                center.audit(audit, outcome, nonce=nonce)
            except center.db.backend_errors() as e:
                log.error("audit row not written: %s", type(e).__name__)
        elif not audit.written and nonce is not None:
            center.remember_failed(audit.kiosk_id, nonce)
            # The database failed this request (busy or gone), which had no effect; its
            # nonce is still spent as soon as the database takes it — off the answer's path
            # (the attempt may wait out the same busy timeout) — so the signed bytes cannot
            # be replayed once it is back. Until then a replay meets the same failure.
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(
                center.spend_quietly, audit, nonce))
            _background.add(task)
            task.add_done_callback(_background.discard)
        rid = audit.request_id
        return status, result, rid

    async def handle(step: str, request: Request, session_id: str | None = None) -> Response:
        try:
            body = await _read(request)
        except Refused as e:
            return reply(e.status, ErrorReply(error=e.code, message=e.message), "-")
        except ClientDisconnect:
            # Nothing was decided and nobody is listening: one rate-limited line, never a
            # traceback (anyone could fill the log by hanging up mid-body).
            _disconnects.note(step)
            return Response(status_code=400)
        # On the event loop, no thread hop: the steps' database work is a few short
        # statements, and the one network wait (OCSP) is awaited.
        status, msg, rid = await serve(step, request.headers, request.method,
                                       request.url.path, body, session_id)
        return reply(status, msg, rid)

    @app.post("/v1/sessions")
    async def open_session(request: Request) -> Response:
        return await handle("open", request)

    @app.post("/v1/sessions/{sid}/{step}")
    async def session_step(sid: str, step: str, request: Request) -> Response:
        if step not in ("authenticate", "menu", "documents", "finalize"):
            return reply(404, ErrorReply(error="not_found", message="no such step"), "-")
        return await handle(step, request, sid)

    @app.post("/v1/incidents")
    async def incidents(request: Request) -> Response:
        return await handle("incidents", request)

    @app.get("/health")
    def health() -> Response:
        try:
            with center.db.tx() as t:
                t.one("SELECT 1")
        except center.db.backend_errors():
            return Response(json.dumps({"status": "unavailable", "database": center.db.kind}),
                            status_code=503, media_type="application/json")
        return Response(json.dumps({"status": "ok", "database": center.db.kind}),
                        media_type="application/json")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(center.metrics(), media_type="text/plain; version=0.0.4")

    # The resident's wallet: the 住民票 credential after JPKI authentication, and the
    # status lists (issue 29; docs/credentials.md).
    from emulators.issuance.wallet import mount_wallet

    mount_wallet(app, center)
    # The database's pooled connections are closed when the server stops (a pool left to
    # the garbage collector is closed in whichever thread collects it, possibly one of its
    # own workers, which cannot join itself). A shutdown handler rather than a lifespan:
    # the profiler's hook (server.app_from_env) is one as well, and a lifespan would
    # silence both.
    app.router.on_shutdown.append(center.db.close)
    app.state.center = center
    return app


class _RateLimitedLine:
    """One log line per ``every`` seconds at most for a noisy, harmless event; the lines
    held back are counted into the next one."""

    def __init__(self, message: str, every: float = 10.0) -> None:
        self.message = message
        self.every = every
        self._last = -float("inf")
        self._held = 0

    def note(self, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            self._held += 1
            return
        log.warning(self.message + " (%d more not logged since the last line)",
                    *args, self._held)
        self._last, self._held = now, 0


_background: set[asyncio.Task[None]] = set()
"""Fire-and-forget work started by a request (kept referenced until it ends)."""

_disconnects = _RateLimitedLine("%s: the client hung up before its request body was complete")


def _safe(rid: str) -> str | None:
    return None if rid == "-" else rid


async def _read(request: Request) -> bytes:
    """The body, refused past :data:`MAX_MESSAGE` before more is buffered."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_MESSAGE):
        raise Refused(413, "too_large", f"request bodies are limited to {MAX_MESSAGE} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_MESSAGE:
            raise Refused(413, "too_large", f"request bodies are limited to {MAX_MESSAGE}"
                          " bytes")
        chunks.append(chunk)
    return b"".join(chunks)
