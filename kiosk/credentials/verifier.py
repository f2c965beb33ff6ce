"""The relying party's side: ask for items, then check a presentation offline and get back
exactly the items the holder disclosed — or a typed refusal.

What a relying party embeds::

    verifier = Verifier(load_trust_list(DIR), client_id="https://shop.example",
                        status=StatusTokens.from_files(paths))   # or FetchingStatus()
    req = verifier.request(PRESETS["age_over_18"], purpose="年齢確認")
    ...send req.to_json() to the holder, receive the presentation text...
    result = verifier.verify(text, req)      # PresentationRefused subclasses otherwise
    result.claims  -> {"age_over_18": True}

The checks, in order (a failure stops at the first, with its own class):

1. syntax — an SD-JWT+KB of ES256 JWTs (:class:`MalformedPresentation`);
2. ``typ`` is ``dc+sd-jwt`` and ``vct`` one the request accepts (:class:`WrongCredentialType`);
3. issuer — a trust-list key with the header's ``kid``, for credentials (``use``), of the
   municipality named in ``iss``, unrevoked, within its period at issuance and now
   (:class:`UntrustedIssuer`); its signature (:class:`BadIssuerSignature`);
4. validity — ``iat``/``nbf`` not in the future, ``exp`` not past (:class:`CredentialExpired`);
5. disclosures — each covered by the signature exactly once (:class:`TamperedDisclosure`);
6. holder binding — a KB-JWT by the ``cnf`` key (:class:`HolderBindingFailed`) over exactly
   these disclosures (``sd_hash``: :class:`UnapprovedDisclosure`), for this verifier (``aud``:
   :class:`WrongAudience`), recent (``iat``: :class:`StalePresentation`), with this request's
   nonce, spent here once (:class:`ReplayedPresentation`);
7. status — the municipality's Status List Token, signed by the same issuer, for this
   ``uri``, not expired and not older than ``max_status_age``; the entry VALID
   (:class:`CredentialRevoked`, :class:`StatusUnavailable`);
8. the items — nothing that was not asked for (:class:`UnrequestedDisclosure`), everything
   that was (:class:`MissingClaims`).

Offline: the trust list is a directory, and the status token is fetched when the holder is
not there (it is public and the same for every credential of the municipality), then kept
for its ``ttl``; nothing about this presentation goes over the network.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path as FsPath
from typing import Any, Protocol

from kiosk.credentials.errors import (
    BadIssuerSignature,
    CredentialExpired,
    CredentialNotYetValid,
    CredentialRevoked,
    MalformedPresentation,
    MissingClaims,
    ReplayedPresentation,
    StalePresentation,
    StatusUnavailable,
    UnrequestedDisclosure,
    UntrustedIssuer,
    WrongAudience,
    WrongCredentialType,
)
from kiosk.credentials.jose import b64u_encode, jws_split, jws_verify
from kiosk.credentials.juminhyo import TECHNICAL_CLAIMS, VCT
from kiosk.credentials.request import PresentationRequest
from kiosk.credentials.sdjwt import Path, parse, path_matches, resolve, verify_kb_jwt
from kiosk.credentials.statuslist import STATUS_TYP, decode_list, status_at
from kiosk.documents.trust import TrustEntry

__all__ = [
    "CREDENTIAL_TYP",
    "DirectoryNonces",
    "FetchingStatus",
    "MemoryNonces",
    "NonceStore",
    "StatusSource",
    "StatusTokens",
    "VerifiedPresentation",
    "Verifier",
    "check_status_token",
    "request_binding",
]

CREDENTIAL_TYP = "dc+sd-jwt"
CREDENTIAL_USE = "credential"
LEEWAY = 60
"""Seconds of clock difference tolerated between holder, issuer and verifier."""


class NonceStore(Protocol):
    """Where a verifier keeps the nonces it handed out until each is used once, each with
    the :func:`request_binding` of the request it was made for."""

    def issue(self, nonce: str, expires_at: int, binding: str = "") -> None: ...

    def consume(self, nonce: str, now: int, binding: str = "") -> bool:
        """True once for a nonce issued here, not expired, for the request ``binding``
        names; False ever after (a mismatch spends the nonce too)."""
        ...


def request_binding(request: PresentationRequest) -> str:
    """SHA-256 over the whole request as the verifier made it (client_id, items, vct,
    purpose, expiry): a presentation is accepted only against the very request its nonce
    was issued with, so a request file edited to ask for less (or for another client_id)
    while keeping the nonce is refused."""
    import hashlib
    import json

    canon = json.dumps(request.to_json(), ensure_ascii=False, sort_keys=True,
                       separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(canon).hexdigest()


class MemoryNonces:
    """Nonces in this process (a relying party with several workers shares a database
    table instead: a conditional DELETE is the same single use)."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[int, str]] = {}
        self._lock = threading.Lock()

    def issue(self, nonce: str, expires_at: int, binding: str = "") -> None:
        with self._lock:
            self._pending[nonce] = (expires_at, binding)

    def consume(self, nonce: str, now: int, binding: str = "") -> bool:
        with self._lock:
            for n in [n for n, (e, _b) in self._pending.items() if e < now]:
                del self._pending[n]
            got = self._pending.pop(nonce, None)
            return got is not None and got[1] == binding


class StatusSource(Protocol):
    def token(self, uri: str) -> str | None:
        """The Status List Token (compact JWT) for ``uri``, or None if there is none."""
        ...


class StatusTokens:
    """Tokens the relying party fetched earlier (offline use), by their ``sub``."""

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        self._by_uri: dict[str, str] = {}
        for t in tokens:
            self.add(t)

    def add(self, token: str) -> None:
        token = token.strip()
        _h, payload, _si, _sig = jws_split(token, "status list token")
        sub = payload.get("sub")
        if not isinstance(sub, str):
            raise StatusUnavailable("a status list token without sub")
        self._by_uri[sub] = token

    @classmethod
    def from_files(cls, paths: Iterable[FsPath]) -> StatusTokens:
        return cls(p.read_text(encoding="ascii", errors="replace") for p in paths)

    def token(self, uri: str) -> str | None:
        return self._by_uri.get(uri)


class FetchingStatus:
    """Fetches a Status List Token over HTTP(S) when none is cached and keeps it for its
    ``ttl`` (bounded to ``[60 s, 1 day]``, the draft's advice to sanity-check both) — but
    only once the verifier has checked it (:meth:`verified`): an answer that does not
    verify is used for nothing and the next check fetches again, so one bad or forged
    answer cannot block status checks. Only http(s) URIs, no redirects followed, at most
    1 MiB, and ``deadline`` seconds for the whole fetch (a server trickling bytes cannot
    hold the verifier longer). The fetch reveals only which municipality's list is
    wanted."""

    MAX_BYTES = 1 << 20

    def __init__(self, clock: Callable[[], float] = time.time,
                 allow: Callable[[str], bool] | None = None, deadline: float = 10.0) -> None:
        self._cache: dict[str, tuple[str, float]] = {}
        self._clock = clock
        self._allow = allow or (lambda uri: uri.startswith(("https://", "http://")))
        self.deadline = deadline

    def token(self, uri: str) -> str | None:
        hit = self._cache.get(uri)
        if hit is not None and hit[1] > self._clock():
            return hit[0]
        self._cache.pop(uri, None)
        if not self._allow(uri):
            return None
        body = self._fetch(uri)
        if body is None or len(body) > self.MAX_BYTES:
            return None
        return str(body.decode("ascii", "replace")).strip()

    def verified(self, uri: str, token: str) -> None:
        """The verifier checked ``token`` (signature, issuer, ``sub``, age): keep it for its
        ``ttl``. Called by :class:`Verifier` after :func:`check_status_token` succeeds."""
        ttl = 300.0
        try:
            _h, payload, _si, _sig = jws_split(token, "status list token")
        except MalformedPresentation:
            return
        if isinstance(payload.get("ttl"), int) and not isinstance(payload["ttl"], bool):
            ttl = float(min(max(payload["ttl"], 60), 86400))
        self._cache[uri] = (token, self._clock() + ttl)

    def _fetch(self, uri: str) -> bytes | None:
        """The body, or None (unreachable, an error status, a redirect, too slow)."""
        import http.client
        import socket

        class _NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kw: Any) -> None:
                return None

        end = time.monotonic() + self.deadline
        req = urllib.request.Request(uri, headers={"Accept": "application/statuslist+jwt"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        chunks: list[bytes] = []
        size = 0
        try:
            with opener.open(req, timeout=self.deadline) as r:
                sock = getattr(getattr(getattr(r, "fp", None), "raw", None), "_sock", None)
                while True:
                    left = end - time.monotonic()
                    if left <= 0:
                        return None
                    if isinstance(sock, socket.socket):
                        sock.settimeout(left)
                    chunk = r.read1(65536) if hasattr(r, "read1") else r.read(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > self.MAX_BYTES:
                        return None
        except (OSError, http.client.HTTPException):
            return None
        if time.monotonic() > end:
            return None
        return b"".join(chunks)


@dataclass(frozen=True)
class VerifiedPresentation:
    """What the relying party may rely on: the disclosed items and who vouches for them."""

    claims: dict[str, Any]
    """Exactly the disclosed items (no technical claims)."""
    disclosed: tuple[Path, ...]
    issuer: str
    issuer_name: str
    vct: str
    issued_at: int
    expires_at: int
    status_checked: bool
    presentation_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"valid": True, "claims": self.claims,
                "disclosed": [list(p) for p in self.disclosed], "issuer": self.issuer,
                "issuer_name": self.issuer_name, "vct": self.vct,
                "issued_at": self.issued_at, "expires_at": self.expires_at,
                "status_checked": self.status_checked,
                "presentation_bytes": self.presentation_bytes}


def _int(payload: dict[str, Any], name: str, required: bool = True) -> int | None:
    v = payload.get(name)
    if v is None and not required:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise MalformedPresentation(f"{name} is not an integer NumericDate")
    return v


def _entry_for(trust: Sequence[TrustEntry], header: dict[str, Any], iss: Any, iat: int,
               now: int, signing_input: str, signature: bytes) -> TrustEntry:
    """The trusted credential key that made this signature, or the refusal saying why
    none did. Keys are tried by kid (8 bytes: collisions possible, so every match)."""
    kid = header.get("kid")
    if not isinstance(kid, str) or not isinstance(iss, str):
        raise UntrustedIssuer("the credential names no issuer key (kid) or issuer (iss)")
    candidates = [t for t in trust if t.kid.hex() == kid]
    if not candidates:
        raise UntrustedIssuer("no key in the trust list has this key id: the issuer is not"
                              " trusted here (update the trust list if it should be)")
    candidates = [t for t in candidates if t.use == CREDENTIAL_USE]
    if not candidates:
        raise UntrustedIssuer("the key is trusted for printed seals only, not credentials")
    candidates = [t for t in candidates if t.issuer == iss]
    if not candidates:
        raise UntrustedIssuer("the key is trusted for another municipality than the"
                              " credential's issuer")
    for t in candidates:
        if not jws_verify(signing_input, signature, t.public_key):
            continue
        if t.revoked_at is not None:
            raise UntrustedIssuer("the issuer's key is revoked in the trust list")
        nb, na = int(t.not_before.timestamp()), int(t.not_after.timestamp())
        if not nb <= iat <= na or now > na:
            raise UntrustedIssuer("the issuer's key was not valid when the credential was"
                                  " issued, or has expired")
        return t
    raise BadIssuerSignature("the issuer's signature does not verify: the credential was"
                             " altered or not issued by this municipality")


def check_status_token(token: str, trust: Sequence[TrustEntry], *, uri: str, issuer: str,
                       now: int, max_age: int) -> tuple[bytes, int]:
    """Verify a Status List Token for ``uri`` signed by ``issuer``'s credential key — a key
    unrevoked and within its validity period both when the token was issued (``iat``) and
    now, as for credentials; the uncompressed list and its ``bits`` per entry. Any failure
    is :class:`StatusUnavailable`."""
    try:
        header, payload, si, sig = jws_split(token, "status list token")
    except MalformedPresentation as e:
        raise StatusUnavailable(f"unusable status list token: {e}") from None
    if header.get("typ") != STATUS_TYP:
        raise StatusUnavailable("the status token's typ is not statuslist+jwt")
    kid = header.get("kid")
    keys = [t for t in trust if t.kid.hex() == kid and t.issuer == issuer
            and t.use == CREDENTIAL_USE and t.revoked_at is None]
    signer = next((t for t in keys if jws_verify(si, sig, t.public_key)), None)
    if signer is None:
        raise StatusUnavailable("the status list token is not signed by the credential's"
                                " issuer")
    if payload.get("sub") != uri:
        raise StatusUnavailable("the status list token is for another list (sub)")
    try:
        iat = _int(payload, "iat")
        exp = _int(payload, "exp", required=False)
    except MalformedPresentation as e:
        raise StatusUnavailable(str(e)) from None
    assert iat is not None
    nb, na = int(signer.not_before.timestamp()), int(signer.not_after.timestamp())
    if not nb <= iat <= na or now > na:
        raise StatusUnavailable("the key that signed the status list token was not valid"
                                " when it was issued, or has expired")
    if exp is not None and now > exp:
        raise StatusUnavailable("the status list token has expired: fetch a fresh one")
    if now - iat > max_age:
        raise StatusUnavailable(f"the status list token is older than {max_age} s: fetch a"
                                " fresh one")
    if iat > now + LEEWAY:
        raise StatusUnavailable("the status list token is issued in the future: check the"
                                " clocks")
    sl = payload.get("status_list")
    bits = sl.get("bits") if isinstance(sl, dict) else None
    if not isinstance(bits, int) or isinstance(bits, bool) or bits not in (1, 2, 4, 8):
        raise StatusUnavailable("the status list token has no status_list of 1, 2, 4 or 8"
                                " bits")
    assert isinstance(sl, dict)
    return decode_list(sl.get("lst", "")), bits


class Verifier:
    """One relying party: its ``client_id`` (the ``aud`` presentations must name), its
    trust list, where status tokens come from, and the nonces it handed out."""

    def __init__(self, trust: Sequence[TrustEntry], *, client_id: str,
                 status: StatusSource | None, nonces: NonceStore | None = None,
                 clock: Callable[[], float] = time.time, freshness: int = 300,
                 max_status_age: int = 86400, require_status: bool = True) -> None:
        self.trust = list(trust)
        self.client_id = client_id
        self.status = status
        self.nonces = nonces if nonces is not None else MemoryNonces()
        self.clock = clock
        self.freshness = freshness
        self.max_status_age = max_status_age
        self.require_status = require_status

    def request(self, claims: Iterable[Path], *, purpose: str = "", ttl: int = 300,
                vct_values: tuple[str, ...] = (VCT,)) -> PresentationRequest:
        import secrets

        nonce = b64u_encode(secrets.token_bytes(32))
        req = PresentationRequest(self.client_id, nonce, tuple(claims),
                                  int(self.clock()) + ttl, purpose, vct_values)
        self.nonces.issue(nonce, req.expires_at, request_binding(req))
        return req

    def verify(self, presentation: str, request: PresentationRequest) -> VerifiedPresentation:
        now = int(self.clock())
        sd = parse(presentation)
        if sd.header.get("typ") != CREDENTIAL_TYP:
            raise WrongCredentialType("the credential's typ is not dc+sd-jwt")
        vct = sd.payload.get("vct")
        if vct not in request.vct_values:
            raise WrongCredentialType("the credential is not of the requested type (vct)")
        iat = _int(sd.payload, "iat")
        exp = _int(sd.payload, "exp")
        nbf = _int(sd.payload, "nbf", required=False)
        assert iat is not None and exp is not None
        entry = _entry_for(self.trust, sd.header, sd.payload.get("iss"), iat, now,
                           sd.signing_input, sd.signature)
        if iat > now + LEEWAY or (nbf is not None and nbf > now + LEEWAY):
            raise CredentialNotYetValid("the credential is not valid yet (iat/nbf in the"
                                        " future): check the clocks")
        if now > exp + LEEWAY:
            raise CredentialExpired("the credential has expired: the holder obtains a new one"
                                    " from the municipality")
        withheld: set[Path] = set()
        claims, paths = resolve(sd.payload, sd.disclosures, withheld)
        kb = verify_kb_jwt(sd)
        if kb["aud"] != self.client_id or request.client_id != self.client_id:
            raise WrongAudience("the presentation was made for another verifier")
        if not now - self.freshness - LEEWAY <= kb["iat"] <= now + LEEWAY:
            raise StalePresentation(f"the holder signed it more than {self.freshness} s ago"
                                    " (or in the future): ask again")
        if kb["nonce"] != request.nonce or \
                not self.nonces.consume(kb["nonce"], now, request_binding(request)):
            raise ReplayedPresentation("the nonce is not an open request of this verifier"
                                       " (reused, expired, someone else's, or the request was"
                                       " altered): ask again")
        checked = self._status(sd.payload, entry, now)
        disclosed = tuple(sorted(set(paths.values()), key=lambda p: [str(x) for x in p]))
        for p in disclosed:
            if not any(path_matches(p, w) for w in request.claims):
                raise UnrequestedDisclosure("the presentation discloses items that were not"
                                            " asked for; the verifier does not take them")
        # An element the issuer signed but the holder withheld, on the way to a requested
        # item (every member for ``household[*].x`` or ``household``; member n for
        # ``household[n].x``), makes the answer incomplete: refused, never shortened.
        missing = [w for w in request.claims if not _present(claims, w)
                   or any(path_matches(h, w) for h in withheld)]
        if missing:
            raise MissingClaims(f"the holder did not disclose {len(missing)} of the requested"
                                " items")
        personal = {k: v for k, v in claims.items() if k not in TECHNICAL_CLAIMS}
        return VerifiedPresentation(personal, disclosed, entry.issuer, entry.name, str(vct),
                                    iat, exp, checked, len(presentation.strip()))

    def _status(self, payload: dict[str, Any], entry: TrustEntry, now: int) -> bool:
        if not self.require_status:  # the relying party said so explicitly
            return False
        st = payload.get("status")
        sl = st.get("status_list") if isinstance(st, dict) else None
        if not isinstance(sl, dict) or not isinstance(sl.get("uri"), str) or \
                not isinstance(sl.get("idx"), int) or isinstance(sl.get("idx"), bool):
            raise StatusUnavailable("the credential names no status list (status.status_list)")
        if self.status is None:
            raise StatusUnavailable("no status list token given: fetch the issuer's list"
                                    " (or say explicitly that status is not checked)")
        token = self.status.token(sl["uri"])
        if token is None:
            raise StatusUnavailable("no status list token for this credential's list: fetch"
                                    " it from the municipality")
        raw, bits = check_status_token(token, self.trust, uri=sl["uri"],
                                       issuer=entry.issuer, now=now,
                                       max_age=self.max_status_age)
        remember = getattr(self.status, "verified", None)
        if callable(remember):  # a fetching source caches only what verified
            remember(sl["uri"], token)
        value = status_at(raw, sl["idx"], bits)
        if value == 1:
            raise CredentialRevoked("the municipality has revoked this credential")
        if value != 0:
            raise CredentialRevoked("the credential is not valid (status "
                                    f"{value}) according to the municipality")
        return True


def _present(claims: Any, path: Path) -> bool:
    if not path:
        return True
    head, rest = path[0], path[1:]
    if head is None:
        return isinstance(claims, list) and bool(claims) and \
            all(x is not None and _present(x, rest) for x in claims)
    if isinstance(head, int):
        return isinstance(claims, list) and head < len(claims) and \
            claims[head] is not None and _present(claims[head], rest)
    return isinstance(claims, dict) and head in claims and _present(claims[head], rest)


def utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class DirectoryNonces:
    """Nonces as files in a directory (``<nonce>.json`` holding the expiry): what the
    ``cardio credential`` commands use between ``request`` and ``verify``, and what several
    verifier processes on one machine can share. Consumption is the unlink: of two processes
    verifying the same nonce, exactly one succeeds."""

    def __init__(self, path: FsPath) -> None:
        self.path = path

    def issue(self, nonce: str, expires_at: int, binding: str = "") -> None:
        import json

        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.path / f"{nonce}.json").write_text(
            json.dumps({"expires_at": expires_at, "binding": binding}) + "\n")

    def consume(self, nonce: str, now: int, binding: str = "") -> bool:
        import json
        import re

        if not re.fullmatch(r"[A-Za-z0-9_-]{22,86}", nonce):
            return False
        path = self.path / f"{nonce}.json"
        try:
            obj = json.loads(path.read_text())
            expires = int(obj["expires_at"])
            bound = str(obj.get("binding", ""))
            path.unlink()
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return expires >= now and bound == binding
