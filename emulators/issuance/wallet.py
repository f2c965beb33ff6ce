"""The center's wallet endpoints: a resident's device obtains the 住民票 credential after
JPKI authentication with the card, and anyone fetches a municipality's Token Status List.

``POST /v1/wallet/sessions`` → a nonce; ``POST /v1/wallet/sessions/{sid}/credential`` →
the card's 利用者証明用 certificate is checked exactly as a kiosk's (chain, validity, a fresh
nonced OCSP answer with CRL fallback, through the center's own check), its signature over
the session, nonce and holder-key thumbprint verified, the holder's proof of possession
verified, the serial resolved to the resident, the 住民票's eligibility rules applied as for
paper, and the municipality issues the SD-JWT VC with a fresh random status index;
``GET /v1/status/{code}`` → the municipality's Status List Token
(``application/statuslist+jwt``). Messages: :mod:`kiosk.credentials.messages`.

The ``credentials`` table holds, per issued credential, the municipality, its status index,
the resident id, times, status and the SHA-256 of the credential — never its content. The
audit table gets one row per step (kiosk id ``wallet``), as for kiosks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from cardio.errors import UsageError
from emulators.issuance.errors import Refused
from emulators.issuance.municipality import MunicipalityServer, _household, _options
from emulators.issuance.rules import JST, refusal_for
from kiosk.credentials.errors import HolderBindingFailed, MalformedPresentation
from kiosk.credentials.jose import b64u_encode, key_from_jwk
from kiosk.credentials.juminhyo import VCT, JuminhyoRecord, Person
from kiosk.credentials.messages import (
    CredentialRequest,
    IssuedCredential,
    WalletSessionOpen,
    WalletSessionOpened,
    card_challenge,
    check_holder_proof,
)
from kiosk.credentials.statuslist import SIZE
from kiosk.documents.model import DocumentType
from kiosk.protocol.codec import MAX_MESSAGE, Message, ProtocolError, decode, encode
from kiosk.protocol.messages import Authenticate, ErrorReply, ResolveResident

__all__ = ["allocate_index", "juminhyo_record", "mount_wallet", "revoke_credentials", "status_uri"]

log = logging.getLogger("emulators.issuance.wallet")
SESSION_TTL = 300.0
WALLET_KIOSK = "wallet"
_CODE = re.compile(r"[0-9]{6}")
CREDENTIAL_OPTIONS = ("scope", "honseki", "relationship")
"""What the resident may choose, as for the printed 住民票; ``my_number`` is never offered."""
MAX_LIVE_CREDENTIALS = 4
"""Unexpired, unrevoked credentials one resident may hold at once (a phone, a spare, a
replacement on the way). Without a bound one card could take every index of the
municipality's status list (the review measured 56 credentials/s)."""
INDEX_REUSE_AFTER = 2 * 86400 + 120
"""Seconds after a credential's ``exp`` before its status index is given to another: a
revoked credential's bit is dropped from the list once it has expired (every verifier
refuses it as expired then), and a verifier may keep a status token for up to a day
(``max_status_age``) within the token's one-day life — after two days no token still in
use can show the old holder's bit against the new credential."""
PENDING_TTL = 3600
"""A row whose credential was never finished (expires 0) frees its index after an hour."""


def status_uri(base: str, code: str) -> str:
    return f"{base.rstrip('/')}/v1/status/{code}"


def revoke_credentials(db: Any, *, resident_id: str | None = None,
                       municipality: str | None = None, idx: int | None = None,
                       now: float | None = None) -> int:
    """Mark credentials invalid in their municipality's status list: all of a resident's
    (a move out, a lost phone, a changed entry), or one by municipality and index. The
    number revoked."""
    if resident_id is None and (municipality is None or idx is None):
        raise UsageError("name a resident, or a municipality and an index")
    at = time.time() if now is None else now
    with db.tx(write=True) as t:
        if resident_id is not None:
            cur = t.execute("UPDATE credentials SET status=1, revoked=? WHERE resident_id=? AND"
                            " status=0", (at, resident_id))
        else:
            cur = t.execute("UPDATE credentials SET status=1, revoked=? WHERE municipality=? AND"
                            " idx=? AND status=0", (at, municipality, idx))
        return int(cur.rowcount)


def allocate_index(db: Any, code: str, resident_id: str, wall: float, now: float,
                   size: int = SIZE) -> int:
    """A random status index for a new credential of ``resident_id``, claimed in the same
    transaction that counts the resident's live credentials: refused (429) past
    :data:`MAX_LIVE_CREDENTIALS`; an index is free if unused, or its credential expired
    :data:`INDEX_REUSE_AFTER` ago, or it was never finished. 503 if 32 random draws
    find none (the list is close to full)."""
    for _attempt in range(3):
        try:
            with db.tx(write=True) as t:
                live = t.one("SELECT COUNT(*) FROM credentials WHERE resident_id=? AND"
                             " status=0 AND (expires > ? OR (expires = 0 AND issued > ?))",
                             (resident_id, now, wall - PENDING_TTL))
                if live is not None and int(live[0]) >= MAX_LIVE_CREDENTIALS:
                    raise Refused(429, "too_many_credentials",
                                  f"this resident already holds {MAX_LIVE_CREDENTIALS}"
                                  " valid credentials: revoke one (a lost phone is"
                                  " reported to the municipality) or wait until one"
                                  " expires")
                for _ in range(32):  # random (herd privacy), reused only when safe
                    idx = secrets.randbelow(size)
                    row = t.one("SELECT expires, issued FROM credentials WHERE"
                                " municipality=? AND idx=?", (code, idx))
                    if row is not None:
                        expires, issued = float(row[0]), float(row[1])
                        free = (expires > 0 and expires + INDEX_REUSE_AFTER < now) or \
                            (expires == 0 and issued < wall - PENDING_TTL)
                        if not free:
                            continue
                        t.execute("DELETE FROM credentials WHERE municipality=? AND idx=?",
                                  (code, idx))
                    t.execute("INSERT INTO credentials (municipality, idx, resident_id,"
                              " issued, expires, status, sha256) VALUES (?, ?, ?, ?, 0, 0,"
                              " '')", (code, idx, resident_id, wall))
                    return idx
        except db.integrity_error():
            continue  # another issuance took the same index at the same moment
        raise Refused(503, "status_list_full", "no free status index in the"
                      " municipality's list; try again later")
    raise Refused(503, "status_list_full", "no free status index; try again")


class WalletIssuance:
    """The wallet steps over the center (its database, its card check, its municipalities).

    Times in credentials and status tokens are the business clock's (``--now`` shifts them
    with everything else the municipality decides); sessions expire on the wall clock, as
    the kiosks' do."""

    def __init__(self, center: Any) -> None:
        self.center = center
        self.db = center.db
        self.munis: MunicipalityServer = center.municipalities
        self._issuers: dict[str, Any] = {}
        self._base: str | None = None

    def _issuer(self, code: str) -> Any:
        from emulators.document_issuers import DocumentIssuer

        issuer = self._issuers.get(code)
        if issuer is None:
            jlis = self.center.config.jlis_dir
            if jlis is None:
                raise Refused(503, "credentials_unavailable", "this center has no document"
                              " issuers (no J-LIS directory): it cannot issue credentials")
            issuer = DocumentIssuer.load_or_create(self.munis.municipality(code).model, jlis)
            self._issuers[code] = issuer
        return issuer

    def base_url(self, request: Request) -> str:
        """The center's published URL (recorded by ``issuance serve``); an in-process app
        without one uses the request's."""
        if self._base is None:
            self._base = self.db.info("center_url") or str(request.base_url).rstrip("/")
        return self._base

    def _audit(self, t: Any, request_id: str, event: str, outcome: str, started: float,
               municipality: str | None = None) -> None:
        t.execute("INSERT INTO audit (at, request_id, kiosk_id, municipality, doc_type, event,"
                  " outcome, ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  (self.center.config.wall(), request_id, WALLET_KIOSK, municipality,
                   "juminhyo-credential", event, outcome,
                   (time.perf_counter() - started) * 1000))

    # -- steps ------------------------------------------------------------------------------
    def open(self, msg: WalletSessionOpen, started: float) -> WalletSessionOpened:
        sid = secrets.token_urlsafe(18)
        nonce = b64u_encode(secrets.token_bytes(32))
        now = self.center.config.wall()
        with self.db.tx(write=True) as t:
            if secrets.randbelow(200) == 0:
                t.execute("DELETE FROM wallet_sessions WHERE expires < ?", (now - 3600,))
            t.execute("INSERT INTO wallet_sessions (session_id, request_id, nonce, created,"
                      " expires, state) VALUES (?, ?, ?, ?, ?, 'open')",
                      (sid, msg.request_id, nonce, now, now + SESSION_TTL))
            self._audit(t, msg.request_id, "wallet_open", "ok", started)
        expires = self.center.config.clock() + dt.timedelta(seconds=SESSION_TTL)
        return WalletSessionOpened(request_id=msg.request_id, session_id=sid, nonce=nonce,
                                   expires_at=expires.isoformat())

    async def credential(self, msg: CredentialRequest, started: float, base: str
                         ) -> IssuedCredential:
        cfg = self.center.config
        with self.db.tx(write=True) as t:
            row = t.one("SELECT request_id, nonce, expires, state FROM wallet_sessions WHERE"
                        " session_id=?", (msg.session_id,))
            if row is None:
                raise Refused(404, "unknown_session", "no such wallet session")
            if row[0] != msg.request_id:
                raise Refused(409, "request_mismatch", "the request id is not this session's")
            claimed = t.execute("UPDATE wallet_sessions SET state='used' WHERE session_id=? AND"
                                " state='open'", (msg.session_id,))
            if claimed.rowcount != 1:
                raise Refused(409, "nonce_used", "this session's nonce was already used;"
                              " open a new session")
        if cfg.wall() > row[2]:
            raise Refused(410, "session_expired", "the session expired; start again")
        nonce = str(row[1])
        if set(msg.options) - set(CREDENTIAL_OPTIONS):
            raise Refused(400, "bad_option", "a credential never carries 個人番号 or 住民票コード;"
                          " options are scope, honseki, relationship")
        try:
            key_from_jwk(msg.holder_jwk)
            check_holder_proof(msg.holder_proof, msg.holder_jwk, nonce, cfg.wall())
        except (HolderBindingFailed, MalformedPresentation) as e:
            raise Refused(400, "bad_holder_proof", str(e)) from None
        # The card: the center's own check (chain, validity, fresh OCSP, CRL fallback) over
        # the challenge that names this session, nonce and holder key.
        auth = Authenticate(request_id=msg.request_id, session_id=msg.session_id,
                            certificate=msg.certificate, signature=msg.signature)
        _sha, serial_hex, _der = await self.center._check_card(
            auth, card_challenge(msg.session_id, nonce, msg.holder_jwk))
        now = cfg.clock().astimezone(JST).replace(microsecond=0)
        with self.db.tx(write=True) as t:
            ref = self.munis.resolve(ResolveResident(request_id=msg.request_id,
                                                     serial_hex=serial_hex), t)
            if ref is None:
                raise Refused(403, "unknown_certificate", "no municipality knows this"
                              " certificate (利用者証明用電子証明書 not registered)")
            r, has_inkan, has_tax = self.munis._resident(t, ref.resident_id, now)
            m = self.munis.municipality(r.municipality, t)
            if self.center._stopped(t, r.municipality):
                raise Refused(503, "municipality_stopped")
            reason = refusal_for(r, m.settings, DocumentType.JUMINHYO, now,
                                 has_inkan=has_inkan, has_tax=has_tax)
            # Online issuance is not bound to the kiosks' opening hours (the register is
            # read as at any time); every rule about the resident applies as for paper.
            if reason is not None and reason not in ("outside_hours", "closed_year_end"):
                raise Refused(403, reason)
            opts = _options(m.settings, DocumentType.JUMINHYO, dict(msg.options))
            rec = juminhyo_record(t, r, opts)
        issuer = self._issuer(r.municipality)
        uri = status_uri(base, r.municipality)
        from emulators.issuance.credentials import issue_credential

        idx = allocate_index(self.db, r.municipality, r.id, cfg.wall(),
                             cfg.clock().timestamp())
        sd_jwt, exp = issue_credential(
            rec, issuer_code=r.municipality, key=issuer.credential_key,
            kid=issuer.credential_kid.hex(),
            holder_jwk={k: msg.holder_jwk[k] for k in ("kty", "crv", "x", "y")},  # nothing else
            status_uri=uri,
            status_idx=idx, now=now)
        with self.db.tx(write=True) as t:
            t.execute("UPDATE credentials SET expires=?, sha256=? WHERE municipality=? AND idx=?",
                      (exp, hashlib.sha256(sd_jwt.encode("ascii")).hexdigest(), r.municipality,
                       idx))
            self._audit(t, msg.request_id, "wallet_credential", "ok", started, r.municipality)
        return IssuedCredential(request_id=msg.request_id, format="dc+sd-jwt",
                                credential=sd_jwt, vct=VCT, expires_at=exp)

    def status_token(self, code: str, base: str) -> str:
        from emulators.issuance.credentials import status_list_token

        with self.db.tx() as t:
            if t.one("SELECT 1 FROM municipalities WHERE code=?", (code,)) is None:
                raise Refused(404, "unknown_municipality", "no such municipality")
            # A revoked credential's bit is kept until a minute after its exp: then every
            # verifier refuses it as expired, and the index can later serve another.
            rows = t.all("SELECT idx FROM credentials WHERE municipality=? AND status=1 AND"
                         " expires + 60 > ?",
                         (code, self.center.config.clock().timestamp()))
        issuer = self._issuer(code)
        return status_list_token(uri=status_uri(base, code), invalid=[int(x[0]) for x in rows],
                                 key=issuer.credential_key, kid=issuer.credential_kid.hex(),
                                 now=int(self.center.config.clock().timestamp()))


def juminhyo_record(t: Any, r: Any, opts: dict[str, str]) -> JuminhyoRecord:
    """The register's entries for the credential, chosen by the same options (and from
    the same rows) as the printed 住民票; ``my_number`` is dropped whatever it says."""
    head, members = _household(t, r)
    household = None
    if opts.get("scope") == "household":
        household = tuple(_person(x) for x in members
                          if x.id != r.id and x.status in ("active", "move_filed"))
    honseki = opts.get("honseki") == "yes"
    return JuminhyoRecord(
        holder=_person(r), address=r.address, resident_since=r.moved_in,
        household_head=head, show_relationship=opts.get("relationship") == "yes",
        honseki=r.honseki if honseki else None, hittousha=r.hittousha if honseki else None,
        household=household)


def _person(r: Any) -> Person:
    return Person(r.name, r.kana, r.birth, r.sex, r.relationship)


async def _read(request: Request) -> bytes:
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


def mount_wallet(app: FastAPI, center: Any) -> None:
    """Add the wallet and status-list routes to the center's app."""
    wallet = WalletIssuance(center)

    def reply(status: int, msg: Message, rid: str = "-") -> Response:
        return Response(encode(msg), status_code=status, media_type="application/json",
                        headers={"X-Request-ID": rid})

    async def handle(request: Request, cls: type[Any], step: Any) -> Response:
        started = time.perf_counter()
        rid = "-"
        try:
            msg = decode(cls, await _read(request))
            rid = msg.request_id
            out = step(msg, started)
            if hasattr(out, "__await__"):
                out = await out
            return reply(200, out, rid)
        except Refused as e:
            outcome, status = e.code, e.status
            result = ErrorReply(error=e.code, message=e.message,
                                request_id=None if rid == "-" else rid)
        except ProtocolError as e:
            outcome, status = e.code, 413 if e.code == "too_large" else 400
            result = ErrorReply(error=e.code, message=str(e), request_id=None)
        except center.db.backend_errors() as e:
            log.error("wallet step: database error %s", type(e).__name__)
            return reply(503, ErrorReply(error="unavailable", message="the center cannot reach"
                                         " its database; try again later"), rid)
        log.info("wallet %s outcome=%s", cls.__name__, outcome)
        if rid != "-":
            try:
                with center.db.tx(write=True) as t:
                    wallet._audit(t, rid, "wallet", outcome, started)
            except center.db.backend_errors():
                pass
        return reply(status, result, rid)

    @app.post("/v1/wallet/sessions")
    async def wallet_open(request: Request) -> Response:
        return await handle(request, WalletSessionOpen, wallet.open)

    @app.post("/v1/wallet/sessions/{sid}/credential")
    async def wallet_credential(sid: str, request: Request) -> Response:
        base = wallet.base_url(request)

        async def step(msg: CredentialRequest, started: float) -> IssuedCredential:
            if msg.session_id != sid:
                raise Refused(400, "malformed", "session_id differs from the path")
            return await wallet.credential(msg, started, base)

        return await handle(request, CredentialRequest, step)

    @app.get("/v1/status/{code}")
    def status_list(code: str, request: Request) -> Response:
        if not _CODE.fullmatch(code):
            return Response(status_code=404)
        try:
            token = wallet.status_token(code, wallet.base_url(request))
        except Refused as e:
            return reply(e.status, ErrorReply(error=e.code, message=e.message))
        return Response(token, media_type="application/statuslist+jwt",
                        headers={"Cache-Control": "max-age=300"})

    app.state.wallet = wallet

