"""JPKI certificate validation: chain to a configured J-LIS root, validity at a time, key
usage for the purpose, and revocation by OCSP with CRL fallback.

The answer is a :class:`Validation` whose ``status`` is one of ``valid``, ``revoked``,
``expired``, ``not_yet_valid``, ``untrusted`` or ``unknown`` and whose ``reason`` names
the check that decided it. Revocation that cannot be established (responder down, CRL
unreachable or unverifiable) is ``unknown`` — never ``valid``.

Two freshness levels (``docs/pin-reset-protocol.md`` says which decision uses which):

* ``fresh=True`` — for decisions that *grant* something (a reservation, a reset
  authorisation, an issuance): one OCSP request made now, with a random nonce the signed
  answer must echo. No cache is read and the CRL is not a fallback (a CRL is only as fresh
  as its issuer made it, up to its nextUpdate, hours later): no fresh answer, ``unknown``.
* ``fresh=False`` — for display (``verify-cert``, status pages): answers may come from a
  small cache, never older than :data:`DISPLAY_CACHE_TTL` (and never past their
  nextUpdate), with the CRL as fallback when OCSP is unreachable.

An OCSP answer counts only if it is for this certificate and issuer, signed by the issuer
or by a delegated responder that the issuer certified for id-kp-OCSPSigning and that is
within its validity, echoes our nonce, and is current: thisUpdate and producedAt not in
the future and nextUpdate not past, each with :data:`CLOCK_SKEW` allowance. Anything else
is ``unknown``, never ``valid``. Network input is bounded in size and time, and anything
malformed is a typed error internally that turns into the next source or ``unknown``.
"""

from __future__ import annotations

import datetime as dt
import http.client
import os
import threading
import time
import typing
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from cardio.apdu.errors import CardioError
from cardio.trust import TrustStore

MAX_CERT = 64 * 1024
MAX_OCSP = 64 * 1024
MAX_CRL = 8 * 1024 * 1024
HTTP_TIMEOUT = 3.0
CLOCK_SKEW = dt.timedelta(minutes=5)
"""Allowance for the difference between our clock and a responder's."""
MAX_OCSP_AGE = dt.timedelta(hours=1)
"""How old thisUpdate may be when a response gives no nextUpdate."""
IDLE_REUSE = 1.0
"""Seconds a kept-alive connection to a responder may sit idle and still be reused; older
ones are closed: before the responder's own idle timeout (the emulated CA's is 2 s) closes
them under us, and without holding one of its connection slots for nothing."""
DISPLAY_CACHE_TTL = dt.timedelta(minutes=5)
"""How long a revocation answer may serve *display* (never a granting decision): a
revocation shows in status displays within five minutes, while a status page that
refreshes every few seconds does not send one OCSP request per refresh."""
MAX_CACHE_ENTRIES = 1024
"""Bound of the display cache (oldest entries go first), so a long-running process that
sees many certificates does not grow without limit."""
MAX_CRL_CACHE = 8
"""CRLs kept for display (one per CA URL; J-LIS has two CAs per generation)."""
PARSE_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion,
                x509.DuplicateExtension, x509.UnsupportedGeneralNameType)
"""What cryptography raises for damaged DER, some of it lazily on first access."""


class CertificateError(CardioError):
    """Bytes that are not a usable certificate (truncated, not DER, too large)."""


class RevocationSourceError(CardioError):
    """An OCSP responder or CRL that could not be reached, parsed or trusted."""


class Status(Enum):
    VALID = "valid"
    REVOKED = "revoked"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    UNTRUSTED = "untrusted"
    UNKNOWN = "unknown"


@dataclass
class Validation:
    status: Status
    reason: str
    checks: list[str] = field(default_factory=list)
    revocation_source: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"status": self.status.value, "reason": self.reason, "checks": self.checks,
                "revocation_source": self.revocation_source}


def load_certificate(data: bytes) -> x509.Certificate:
    """DER or PEM, with typed errors for anything else."""
    if len(data) > MAX_CERT:
        raise CertificateError(f"certificate of {len(data)} bytes exceeds {MAX_CERT}")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
        check_parsable(cert)
    except PARSE_ERRORS as exc:
        raise CertificateError(f"not a valid X.509 certificate: {exc}") from exc
    return cert


def check_parsable(cert: x509.Certificate) -> None:
    """cryptography parses fields lazily; touch every one validation uses so a damaged
    certificate fails here, as a typed error, and not halfway through a check."""
    _ = (cert.issuer, cert.subject, cert.serial_number, cert.not_valid_before_utc,
         cert.not_valid_after_utc, cert.public_key(), cert.signature_hash_algorithm)
    for _ext in cert.extensions:
        pass


_K = TypeVar("_K")
_V = TypeVar("_V")

Fetcher = Callable[[str, bytes | None, str, int], bytes]
"""``fetch(url, body, content_type, limit)``: GET when ``body`` is None, else POST; the
answer's bytes, or :class:`RevocationSourceError`."""
AsyncFetcher = Callable[[str, bytes | None, str, int], Awaitable[bytes]]
FetchRequest = tuple[str, bytes | None, str, int]
"""What the validation needs from the network next: the arguments of a fetcher."""
_R = TypeVar("_R")
_Steps = Generator[FetchRequest, bytes, _R]
"""The validation written once, without I/O: a generator that yields each fetch it needs
and is sent the answer (or thrown the fetch's :class:`RevocationSourceError`). The
synchronous and the asyncio drivers below run the same steps."""


def _drive(steps: _Steps[_R], fetch: Fetcher) -> _R:
    try:
        request = next(steps)
        while True:
            try:
                answer = fetch(*request)
            except RevocationSourceError as exc:
                request = steps.throw(exc)
            else:
                request = steps.send(answer)
    except StopIteration as done:
        return typing.cast(_R, done.value)


async def _drive_async(steps: _Steps[_R], fetch: AsyncFetcher) -> _R:
    try:
        request = next(steps)
        while True:
            try:
                answer = await fetch(*request)
            except RevocationSourceError as exc:
                request = steps.throw(exc)
            else:
                request = steps.send(answer)
    except StopIteration as done:
        return typing.cast(_R, done.value)


def http_fetch(url: str, body: bytes | None, content_type: str, limit: int) -> bytes:
    """GET (body None) or POST over HTTP only, no proxies, bounded time and size."""
    if not url.startswith("http://"):
        raise RevocationSourceError(f"only http:// revocation URLs are fetched ({url})")
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("Content-Type", content_type)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=HTTP_TIMEOUT) as resp:
            data: bytes = resp.read(limit + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RevocationSourceError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
    if len(data) > limit:
        raise RevocationSourceError(f"{url}: response larger than {limit} bytes")
    return data


def split_http_url(url: str) -> tuple[tuple[str, int], str]:
    """``((host, port), target)`` of a plain-HTTP revocation URL — what a fetcher that
    keeps connections per responder needs — or :class:`RevocationSourceError`."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise RevocationSourceError(f"only http:// revocation URLs are fetched ({url})")
    try:
        origin = (parts.hostname, parts.port or 80)
    except ValueError as exc:
        raise RevocationSourceError(f"{url}: {exc}") from None
    return origin, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class KeepAliveFetcher:
    """A :data:`Fetcher` for services that check revocation on every request: like
    :func:`http_fetch` (HTTP only, no proxies, bounded time and size, failures as
    :class:`RevocationSourceError`), but over HTTP/1.1 connections kept alive and reused,
    at most ``per_origin`` per responder: a request waits (up to the timeout) for one
    rather than opening more, so N service processes hold at most N × ``per_origin``
    connections of a responder that serves a bounded number at once.

    A fresh nonced OCSP request per grant decision is the rule; a new TCP connection and
    a urllib opener per request cost the service a millisecond each time for nothing. A
    connection the responder closed while idle fails on reuse before any answer: the
    request is sent once more on a new connection (an OCSP or CRL request has no side
    effects). Thread-safe: a connection serves one request at a time.
    """

    def __init__(self, *, per_origin: int = 4, timeout: float = HTTP_TIMEOUT) -> None:
        self.per_origin = per_origin
        self.timeout = timeout
        self._idle: dict[tuple[str, int], list[tuple[http.client.HTTPConnection, float]]] = {}
        self._slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def __call__(self, url: str, body: bytes | None, content_type: str, limit: int) -> bytes:
        origin, target = split_http_url(url)
        headers = {"Content-Type": content_type} if body is not None else {}
        with self._lock:
            slots = self._slots.setdefault(origin, threading.BoundedSemaphore(self.per_origin))
        if not slots.acquire(timeout=self.timeout):
            raise RevocationSourceError(f"{url}: no connection free within {self.timeout} s")
        try:
            return self._exchange(url, origin, target, body, headers, limit)
        finally:
            slots.release()

    def _exchange(self, url: str, origin: tuple[str, int], target: str, body: bytes | None,
                  headers: dict[str, str], limit: int) -> bytes:
        conn, reused = self._take(origin)
        while True:
            try:
                conn.request("POST" if body is not None else "GET", target, body=body,
                             headers=headers)
                resp = conn.getresponse()
                data = resp.read(limit + 1)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                if reused:  # closed while idle: once more, on a new connection
                    conn, reused = http.client.HTTPConnection(*origin, timeout=self.timeout), False
                    continue
                raise RevocationSourceError(f"{url}: {exc}") from exc
            except (OSError, http.client.HTTPException, ValueError) as exc:
                conn.close()
                raise RevocationSourceError(f"{url}: {exc}") from exc
            if len(data) > limit or resp.will_close or not resp.isclosed():
                conn.close()  # not fully read, or the server will not take another request
            else:
                self._give(origin, conn)
            if len(data) > limit:
                raise RevocationSourceError(f"{url}: response larger than {limit} bytes")
            if resp.status != 200:
                raise RevocationSourceError(f"{url}: HTTP {resp.status} {resp.reason}")
            return data

    def _take(self, origin: tuple[str, int]) -> tuple[http.client.HTTPConnection, bool]:
        stale = []
        with self._lock:
            idle = self._idle.get(origin, [])
            while idle:
                conn, since = idle.pop()
                if time.monotonic() - since <= IDLE_REUSE:
                    return conn, True
                stale.append(conn)
        for conn in stale:
            conn.close()
        return http.client.HTTPConnection(*origin, timeout=self.timeout), False

    def _give(self, origin: tuple[str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self.per_origin:
                idle.append((conn, time.monotonic()))
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c, _ in idle]
            self._idle.clear()
        for c in conns:
            c.close()


def issuing_root(cert: x509.Certificate, roots: Iterable[x509.Certificate]
                 ) -> x509.Certificate | None:
    """The anchor among ``roots`` whose key signed ``cert`` (names match and the signature
    verifies), or None."""
    for root in roots:
        if root.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(root)
        except (*PARSE_ERRORS, InvalidSignature):
            continue
        return root
    return None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateValidator:
    """Validates JPKI certificates against trust anchors."""

    def __init__(self, trust: TrustStore, *, fetch: Fetcher = http_fetch,
                 clock: Callable[[], dt.datetime] = _utcnow,
                 use_ocsp: bool = True, use_crl: bool = True,
                 max_crl_age: dt.timedelta | None = None) -> None:
        self.trust = trust
        self.fetch = fetch
        self.clock = clock
        self.use_ocsp = use_ocsp
        self.use_crl = use_crl
        # A CRL vouches for nothing after its thisUpdate: a bound on its age caps how stale a
        # fallback answer may be (a CRL saved before a revocation and served again while the
        # OCSP responder is down stays within its nextUpdate for hours). None: nextUpdate only.
        self.max_crl_age = max_crl_age
        # Insertion-ordered: the first key is the oldest entry, evicted first. A service
        # validates from many threads at once; the lock keeps eviction consistent.
        self._cache_lock = threading.Lock()
        self._ocsp_cache: dict[tuple[int, bytes], tuple[ocsp.OCSPResponse, dt.datetime]] = {}
        self._crl_cache: dict[str, tuple[x509.CertificateRevocationList, dt.datetime]] = {}

    # -- the whole check ---------------------------------------------------------------
    def validate(self, cert: x509.Certificate, *, at: dt.datetime | None = None,
                 purpose: str = "any", fresh: bool = False) -> Validation:
        """Chain, validity at ``at`` (default now), key usage for ``purpose`` (``auth``,
        ``sign`` or ``any``), then revocation — by a fresh nonced OCSP answer only when
        ``fresh`` (a decision that grants something), else possibly from the display
        cache or the CRL."""
        return _drive(self._validate(cert, at, purpose, fresh), self.fetch)

    async def validate_async(self, cert: x509.Certificate, fetch: AsyncFetcher, *,
                             at: dt.datetime | None = None, purpose: str = "any",
                             fresh: bool = False) -> Validation:
        """:meth:`validate` for an asyncio service: the same checks, with OCSP and CRL
        fetched by ``fetch`` on the event loop instead of a blocking call in a thread."""
        return await _drive_async(self._validate(cert, at, purpose, fresh), fetch)

    def _validate(self, cert: x509.Certificate, at: dt.datetime | None, purpose: str,
                  fresh: bool) -> _Steps[Validation]:
        when = at or self.clock()
        try:
            check_parsable(cert)
        except PARSE_ERRORS as exc:
            raise CertificateError(f"not a valid X.509 certificate: {exc}") from exc
        checks: list[str] = []
        issuer = self._issuer(cert)
        if issuer is None:
            return Validation(Status.UNTRUSTED, "no configured trust anchor issued this "
                              f"certificate (issuer {cert.issuer.rfc4514_string()})", checks)
        checks.append("chain")
        if when < cert.not_valid_before_utc:
            return Validation(Status.NOT_YET_VALID, "not valid before "
                              f"{cert.not_valid_before_utc.isoformat()}", checks)
        if when > cert.not_valid_after_utc:
            return Validation(Status.EXPIRED, "expired at "
                              f"{cert.not_valid_after_utc.isoformat()}", checks)
        checks.append("validity")
        usage_problem = self._usage_problem(cert, purpose)
        if usage_problem:
            return Validation(Status.UNTRUSTED, usage_problem, checks)
        checks.append("key_usage")
        return (yield from self._revocation(cert, issuer, when, checks, fresh))

    # -- chain ---------------------------------------------------------------------------
    def _issuer(self, cert: x509.Certificate) -> x509.Certificate | None:
        return issuing_root(cert, self.trust.x509_roots)

    @staticmethod
    def _usage_problem(cert: x509.Certificate, purpose: str) -> str | None:
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            if bc.ca:
                return "wrong key usage: a CA certificate is not an end-entity certificate"
        except x509.ExtensionNotFound:
            pass
        try:
            ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            return "wrong key usage: no keyUsage extension"
        if purpose == "sign" and not ku.content_commitment:
            return "wrong key usage: not a signature (nonRepudiation) certificate"
        if purpose == "auth" and not ku.digital_signature:
            return "wrong key usage: no digitalSignature"
        if purpose == "any" and not (ku.digital_signature or ku.content_commitment):
            return "wrong key usage: neither digitalSignature nor nonRepudiation"
        return None

    # -- revocation ----------------------------------------------------------------------
    def _revocation(self, cert: x509.Certificate, issuer: x509.Certificate,
                    when: dt.datetime, checks: list[str], fresh: bool) -> _Steps[Validation]:
        problems: list[str] = []
        if self.use_ocsp:
            try:
                resp = yield from self._ocsp(cert, issuer, fresh)
                checks.append("ocsp-fresh" if fresh else "ocsp")
                return self._from_ocsp(resp, when, checks)
            except RevocationSourceError as exc:
                problems.append(f"OCSP: {exc}")
        if fresh:
            problems.append("a fresh OCSP answer is required for this decision (no cache,"
                            " no CRL fallback)")
        elif self.use_crl:
            try:
                crl = yield from self._crl(cert, issuer)
                checks.append("crl")
                revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
                if revoked is not None and revoked.revocation_date_utc <= when:
                    when_revoked = revoked.revocation_date_utc.isoformat()
                    return Validation(Status.REVOKED, f"revoked at {when_revoked}"
                                      f" ({_reason(revoked)}) per the CRL", checks, "crl")
                return Validation(Status.VALID, "chain, validity, key usage and CRL checked",
                                  checks, "crl")
            except RevocationSourceError as exc:
                problems.append(f"CRL: {exc}")
        if not problems:
            problems.append("revocation checking is disabled")
        return Validation(Status.UNKNOWN, "revocation unknown: " + "; ".join(problems), checks)

    def _from_ocsp(self, resp: ocsp.OCSPResponse, when: dt.datetime,
                   checks: list[str]) -> Validation:
        if resp.certificate_status == ocsp.OCSPCertStatus.REVOKED:
            rt = resp.revocation_time_utc
            if rt is not None and rt <= when:
                reason = resp.revocation_reason.value if resp.revocation_reason else "unspecified"
                return Validation(Status.REVOKED, f"revoked at {rt.isoformat()} ({reason}) per"
                                  " OCSP", checks, "ocsp")
            return Validation(Status.VALID, "revoked only after the time checked (OCSP)",
                              checks, "ocsp")
        if resp.certificate_status == ocsp.OCSPCertStatus.UNKNOWN:
            return Validation(Status.UNKNOWN, "the OCSP responder does not know this"
                              " certificate", checks, "ocsp")
        return Validation(Status.VALID, "chain, validity, key usage and OCSP checked",
                          checks, "ocsp")

    def _ocsp(self, cert: x509.Certificate, issuer: x509.Certificate,
              fresh: bool) -> _Steps[ocsp.OCSPResponse]:
        key = (cert.serial_number, issuer.fingerprint(hashes.SHA256()))
        now = self.clock()
        cached = self._ocsp_cache.get(key)
        if not fresh and cached is not None and cached[1] > now:
            return cached[0]
        url = _ocsp_url(cert)
        nonce = os.urandom(16)
        req = (ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256())
               .add_extension(x509.OCSPNonce(nonce), critical=False).build())
        raw = yield (url, req.public_bytes(serialization.Encoding.DER),
                     "application/ocsp-request", MAX_OCSP)
        resp = parse_ocsp_response(raw)
        check_ocsp_response(resp, cert, issuer, now, nonce)
        until = now + DISPLAY_CACHE_TTL
        if resp.next_update_utc is not None:
            until = min(until, resp.next_update_utc)
        with self._cache_lock:
            _bounded_put(self._ocsp_cache, key, (resp, until), MAX_CACHE_ENTRIES)
        return resp

    def _crl(self, cert: x509.Certificate, issuer: x509.Certificate
             ) -> _Steps[x509.CertificateRevocationList]:
        url = _crl_url(cert)
        now = self.clock()
        cached = self._crl_cache.get(url)
        if cached is not None and cached[1] > now:
            return cached[0]
        raw = yield (url, None, "", MAX_CRL)
        try:
            crl = x509.load_der_x509_crl(raw)
        except ValueError as exc:
            raise RevocationSourceError(f"{url}: not a DER CRL") from exc
        if crl.issuer != issuer.subject:
            raise RevocationSourceError(f"{url}: CRL from another issuer")
        key = issuer.public_key()
        if not isinstance(key, rsa.RSAPublicKey) or not crl.is_signature_valid(key):
            raise RevocationSourceError(f"{url}: the CRL signature does not verify")
        if crl.next_update_utc is not None and crl.next_update_utc < now:
            raise RevocationSourceError(f"{url}: the CRL is stale (nextUpdate passed)")
        if self.max_crl_age is not None and \
                crl.last_update_utc < now - self.max_crl_age - CLOCK_SKEW:
            raise RevocationSourceError(
                f"{url}: the CRL was issued at {crl.last_update_utc.isoformat()}, more than"
                f" {self.max_crl_age.total_seconds():.0f} s ago: too old for this decision")
        if crl.last_update_utc > now + CLOCK_SKEW:
            raise RevocationSourceError(f"{url}: the CRL is dated in the future")
        until = now + DISPLAY_CACHE_TTL
        if crl.next_update_utc is not None:
            until = min(until, crl.next_update_utc)
        with self._cache_lock:
            _bounded_put(self._crl_cache, url, (crl, until), MAX_CRL_CACHE)
        return crl


def _bounded_put(cache: dict[_K, _V], key: _K, value: _V, limit: int) -> None:
    """Insert as the newest entry, dropping the oldest beyond ``limit``."""
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > limit:
        del cache[next(iter(cache))]


def _reason(revoked: x509.RevokedCertificate) -> str:
    try:
        return str(revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason.value)
    except x509.ExtensionNotFound:
        return "unspecified"


def _ocsp_url(cert: x509.Certificate) -> str:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound as exc:
        raise RevocationSourceError("no OCSP URL in the certificate") from exc
    for desc in aia:
        if desc.access_method == x509.oid.AuthorityInformationAccessOID.OCSP and isinstance(
                desc.access_location, x509.UniformResourceIdentifier):
            return desc.access_location.value
    raise RevocationSourceError("no OCSP URL in the certificate")


def _crl_url(cert: x509.Certificate) -> str:
    try:
        dps = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound as exc:
        raise RevocationSourceError("no CRL distribution point in the certificate") from exc
    for dp in dps:
        for name in dp.full_name or []:
            if isinstance(name, x509.UniformResourceIdentifier):
                return name.value
    raise RevocationSourceError("no CRL distribution point in the certificate")


def parse_ocsp_response(raw: bytes) -> ocsp.OCSPResponse:
    if len(raw) > MAX_OCSP:
        raise RevocationSourceError("OCSP response too large")
    try:
        resp = ocsp.load_der_ocsp_response(raw)
    except PARSE_ERRORS as exc:
        raise RevocationSourceError(f"malformed OCSP response: {exc}") from exc
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise RevocationSourceError(f"OCSP responder answered {resp.response_status.name}")
    return resp


def check_ocsp_response(resp: ocsp.OCSPResponse, cert: x509.Certificate,
                        issuer: x509.Certificate, now: dt.datetime, nonce: bytes | None) -> None:
    """RFC 6960 §3.2: the response is for this certificate and issuer, signed by the issuer
    or by a responder the issuer delegated to (id-kp-OCSPSigning, within its validity),
    current (thisUpdate, producedAt, nextUpdate against ``now`` with :data:`CLOCK_SKEW`),
    and — when we sent a nonce — echoes it: a response without it may be a replayed
    pre-revocation "good", so it does not count."""
    try:
        if resp.serial_number != cert.serial_number:
            raise RevocationSourceError("OCSP response for another certificate")
        algo = resp.hash_algorithm
        if resp.issuer_name_hash != _digest(algo, issuer.subject.public_bytes()) or \
                resp.issuer_key_hash != _digest(algo, spki_bits(issuer)):
            raise RevocationSourceError("OCSP response for a certificate of another issuer")
        signer = _ocsp_signer(resp, issuer, now)
        key = signer.public_key()
        if not isinstance(key, rsa.RSAPublicKey) or resp.signature_hash_algorithm is None:
            raise RevocationSourceError("OCSP response signed with an unsupported key")
        try:
            key.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(),
                       resp.signature_hash_algorithm)
        except InvalidSignature as exc:
            raise RevocationSourceError("the OCSP response signature does not verify") from exc
        if resp.this_update_utc > now + CLOCK_SKEW:
            raise RevocationSourceError("OCSP response from the future (thisUpdate)")
        if resp.produced_at_utc > now + CLOCK_SKEW:
            raise RevocationSourceError("OCSP response from the future (producedAt)")
        if resp.next_update_utc is not None:
            if resp.next_update_utc < now - CLOCK_SKEW:
                raise RevocationSourceError("stale OCSP response (nextUpdate passed)")
            if resp.next_update_utc < resp.this_update_utc:
                raise RevocationSourceError("OCSP response with nextUpdate before thisUpdate")
        elif resp.this_update_utc < now - MAX_OCSP_AGE - CLOCK_SKEW:
            raise RevocationSourceError("stale OCSP response (old thisUpdate, no nextUpdate)")
        if nonce is not None:
            try:
                got = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            except x509.ExtensionNotFound:
                raise RevocationSourceError("OCSP response without our nonce (replayed"
                                            " response?)") from None
            if got != nonce:
                raise RevocationSourceError("OCSP nonce mismatch (replayed response?)")
    except (*PARSE_ERRORS, AttributeError) as exc:  # a malformed response
        raise RevocationSourceError(f"unusable OCSP response: {exc}") from exc


def _digest(algo: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algo)
    h.update(data)
    return h.finalize()


def spki_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING contents, without the unused-bits byte: what an
    OCSP CertID's issuerKeyHash covers (RFC 6960 §4.1.1)."""
    from asn1crypto import keys

    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return bytes(keys.PublicKeyInfo.load(spki)["public_key"].contents[1:])


def _ocsp_signer(resp: ocsp.OCSPResponse, issuer: x509.Certificate,
                 now: dt.datetime) -> x509.Certificate:
    """The issuer itself, or a delegated responder certificate in the response that the
    issuer signed, that carries id-kp-OCSPSigning and that is valid now. A responder
    certificate failing any of these is not a signer we accept (RFC 6960 §4.2.2.2)."""
    if _responder_matches(resp, issuer):
        return issuer
    for cand in resp.certificates:
        if not _responder_matches(resp, cand):
            continue
        try:
            if cand.issuer != issuer.subject:
                continue
            cand.verify_directly_issued_by(issuer)
            eku = cand.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (*PARSE_ERRORS, InvalidSignature, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            continue
        if not (cand.not_valid_before_utc - CLOCK_SKEW <= now <=
                cand.not_valid_after_utc + CLOCK_SKEW):
            raise RevocationSourceError("the delegated OCSP responder certificate is not"
                                        " valid now (expired or not yet valid)")
        return cand
    raise RevocationSourceError("the OCSP response is not signed by the issuer or a"
                                " responder it authorised")


def _responder_matches(resp: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if resp.responder_name is not None:
        return bool(resp.responder_name == cert.subject)
    if resp.responder_key_hash is not None:
        from cryptography.x509 import SubjectKeyIdentifier

        return SubjectKeyIdentifier.from_public_key(cert.public_key()).digest == \
            resp.responder_key_hash
    return False
