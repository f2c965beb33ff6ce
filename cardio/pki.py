"""JPKI certificate validation: chain to a configured J-LIS root, validity at a time, key
usage for the purpose, and revocation by OCSP with CRL fallback.

The answer is a :class:`Validation` whose ``status`` is one of ``valid``, ``revoked``,
``expired``, ``not_yet_valid``, ``untrusted`` or ``unknown`` and whose ``reason`` names
the check that decided it. Revocation that cannot be established (responder down, CRL
unreachable or unverifiable) is ``unknown`` — never ``valid``.

OCSP responses and CRLs are cached until their nextUpdate. Network input is bounded in
size and time, and anything malformed is a typed error internally that turns into the
next source or an ``unknown`` outcome.
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

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


Fetcher = Callable[[str, bytes | None, str, int], bytes]


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


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateValidator:
    """Validates JPKI certificates against trust anchors."""

    def __init__(self, trust: TrustStore, *, fetch: Fetcher = http_fetch,
                 clock: Callable[[], dt.datetime] = _utcnow,
                 use_ocsp: bool = True, use_crl: bool = True) -> None:
        self.trust = trust
        self.fetch = fetch
        self.clock = clock
        self.use_ocsp = use_ocsp
        self.use_crl = use_crl
        self._ocsp_cache: dict[tuple[int, bytes], tuple[ocsp.OCSPResponse, dt.datetime]] = {}
        self._crl_cache: dict[str, x509.CertificateRevocationList] = {}

    # -- the whole check ---------------------------------------------------------------
    def validate(self, cert: x509.Certificate, *, at: dt.datetime | None = None,
                 purpose: str = "any") -> Validation:
        """Chain, validity at ``at`` (default now), key usage for ``purpose`` (``auth``,
        ``sign`` or ``any``), then revocation."""
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
        return self._revocation(cert, issuer, when, checks)

    # -- chain ---------------------------------------------------------------------------
    def _issuer(self, cert: x509.Certificate) -> x509.Certificate | None:
        for root in self.trust.x509_roots:
            if root.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(root)
            except (*PARSE_ERRORS, InvalidSignature):
                continue
            return root
        return None

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
                    when: dt.datetime, checks: list[str]) -> Validation:
        problems: list[str] = []
        if self.use_ocsp:
            try:
                resp = self._ocsp(cert, issuer)
                checks.append("ocsp")
                return self._from_ocsp(resp, when, checks)
            except RevocationSourceError as exc:
                problems.append(f"OCSP: {exc}")
        if self.use_crl:
            try:
                crl = self._crl(cert, issuer)
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

    def _ocsp(self, cert: x509.Certificate, issuer: x509.Certificate) -> ocsp.OCSPResponse:
        key = (cert.serial_number, issuer.fingerprint(hashes.SHA256()))
        now = self.clock()
        cached = self._ocsp_cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        url = _ocsp_url(cert)
        nonce = os.urandom(16)
        req = (ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256())
               .add_extension(x509.OCSPNonce(nonce), critical=False).build())
        raw = self.fetch(url, req.public_bytes(serialization.Encoding.DER),
                         "application/ocsp-request", MAX_OCSP)
        resp = parse_ocsp_response(raw)
        check_ocsp_response(resp, cert, issuer, now, nonce)
        if resp.next_update_utc is not None:
            self._ocsp_cache[key] = (resp, resp.next_update_utc)
        return resp

    def _crl(self, cert: x509.Certificate, issuer: x509.Certificate
             ) -> x509.CertificateRevocationList:
        url = _crl_url(cert)
        now = self.clock()
        cached = self._crl_cache.get(url)
        if cached is not None and cached.next_update_utc is not None and \
                cached.next_update_utc > now:
            return cached
        raw = self.fetch(url, None, "", MAX_CRL)
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
        self._crl_cache[url] = crl
        return crl


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
    """RFC 6960 §3.2: the response is for this certificate, signed by the issuer or by a
    responder the issuer delegated to (id-kp-OCSPSigning), current, and echoes our nonce."""
    try:
        if resp.serial_number != cert.serial_number:
            raise RevocationSourceError("OCSP response for another certificate")
        signer = _ocsp_signer(resp, issuer)
        key = signer.public_key()
        if not isinstance(key, rsa.RSAPublicKey) or resp.signature_hash_algorithm is None:
            raise RevocationSourceError("OCSP response signed with an unsupported key")
        try:
            key.verify(resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(),
                       resp.signature_hash_algorithm)
        except InvalidSignature as exc:
            raise RevocationSourceError("the OCSP response signature does not verify") from exc
        skew = dt.timedelta(minutes=5)
        if resp.this_update_utc > now + skew:
            raise RevocationSourceError("OCSP response from the future")
        if resp.next_update_utc is not None and resp.next_update_utc < now - skew:
            raise RevocationSourceError("stale OCSP response (nextUpdate passed)")
        if nonce is not None:
            try:
                got = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            except x509.ExtensionNotFound:
                got = None
            if got is not None and got != nonce:
                raise RevocationSourceError("OCSP nonce mismatch (replayed response?)")
    except PARSE_ERRORS as exc:  # a malformed response
        raise RevocationSourceError(f"unusable OCSP response: {exc}") from exc


def _ocsp_signer(resp: ocsp.OCSPResponse, issuer: x509.Certificate) -> x509.Certificate:
    if _responder_matches(resp, issuer):
        return issuer
    for cand in resp.certificates:
        if not _responder_matches(resp, cand):
            continue
        try:
            cand.verify_directly_issued_by(issuer)
            eku = cand.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (*PARSE_ERRORS, InvalidSignature, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in eku:
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
