"""RFC 3161 time-stamp tokens: asking a TSA, and checking what it answered.

A signer's own ``signingTime`` is a claim: whoever holds a compromised key can write any
time there, for instance one before the key-compromise revocation. A time-stamp token is
a TSA's signed statement that the signature value existed at ``genTime``; verification
of "valid at the time of signing" uses that time (:func:`signing_time_of` puts
the two together), so a signature made after the revocation cannot pass for one
made before it.

The token is CMS SignedData with eContentType id-ct-TSTInfo, parsed and verified by
:mod:`cardio.cms`; the TSA certificate must carry the critical extended key usage
id-kp-timeStamping and only it (RFC 3161 §2.3), and be issued by a configured TSA trust
anchor (:attr:`cardio.trust.TrustStore.tsa_roots`, never a JPKI root).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import ClassVar

from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import tsp as asn1_tsp
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from cardio.cms import OID_TST_INFO, CmsError, CmsSignature, check_signature, parse
from cardio.errors import EXIT_NOT_VALID, CardioError
from cardio.pki import (
    CLOCK_SKEW,
    PARSE_ERRORS,
    Fetcher,
    RevocationSourceError,
    http_fetch,
    issuing_root,
)
from cardio.trust import TrustStore

MAX_TSA_RESPONSE = 64 * 1024
QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"


class TimestampError(CardioError):
    """A time-stamp token that is malformed or does not verify (exit 6)."""

    exit_code = EXIT_NOT_VALID


class TsaUnavailable(CardioError):
    """The TSA could not be reached, or refused the request (exit 1: try again later)."""


class TimeStampResponse(core.Sequence):  # type: ignore[misc]
    """RFC 3161 §2.4.2 TimeStampResp. asn1crypto's own model makes the token mandatory,
    so it cannot read a refusal (which carries the status only); this one can."""

    _fields: ClassVar[list[tuple[object, ...]]] = [
        ("status", asn1_tsp.PKIStatusInfo),
               ("time_stamp_token", asn1_cms.ContentInfo, {"optional": True})]


@dataclass(frozen=True)
class TimestampInfo:
    gen_time: dt.datetime
    serial: int
    policy: str
    tsa: x509.Certificate
    hashed_message: bytes


def request_der(data: bytes, nonce: int) -> bytes:
    """A TimeStampReq for SHA-256(``data``), asking for the TSA's certificate."""
    return bytes(asn1_tsp.TimeStampReq({
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                            "hashed_message": hashlib.sha256(data).digest()},
        "nonce": nonce, "cert_req": True}).dump())


class TsaClient:
    """Asks a TSA over HTTP for a token on some bytes (for CMS: the signature value).
    Callable, so it plugs into :func:`cardio.cms.sign` as its ``timestamper``."""

    def __init__(self, url: str, *, fetch: Fetcher = http_fetch,
                 trust: TrustStore | None = None) -> None:
        self.url = url
        self.fetch = fetch
        self.trust = trust

    def __call__(self, data: bytes) -> bytes:
        nonce = secrets.randbits(63)
        try:
            raw = self.fetch(self.url, request_der(data, nonce), QUERY_TYPE, MAX_TSA_RESPONSE)
        except RevocationSourceError as exc:
            raise TsaUnavailable(f"TSA {self.url}: {exc}") from exc
        try:
            resp = TimeStampResponse.load(raw, strict=True)
            status = resp["status"]["status"].native
        except (*PARSE_ERRORS, KeyError, IndexError, OverflowError) as exc:
            raise TsaUnavailable(f"TSA {self.url}: not a TimeStampResp") from exc
        if status not in ("granted", "granted_with_mods"):
            raise TsaUnavailable(f"TSA {self.url} refused the request ({status})")
        try:
            token = resp["time_stamp_token"]
            token_der = None if token.native is None else bytes(token.dump())
        except (*PARSE_ERRORS, KeyError, IndexError, OverflowError) as exc:
            raise TsaUnavailable(f"TSA {self.url}: a damaged token") from exc
        if token_der is None:
            raise TsaUnavailable(f"TSA {self.url}: granted, but no token")
        info = token_info(token_der, data)
        if info_nonce(token_der) != nonce:
            raise TimestampError("the TSA's token does not echo our nonce")
        if self.trust is not None:
            check_tsa_certificate(info, self.trust)
        return token_der


def info_nonce(token_der: bytes) -> int | None:
    sig = parse(token_der)
    assert sig.content is not None  # token_info checked it
    nonce = asn1_tsp.TSTInfo.load(sig.content)["nonce"].native
    return None if nonce is None else int(nonce)


def token_info(token_der: bytes, data: bytes) -> TimestampInfo:
    """Parse and check a token's own signature and that it stamps SHA-256(``data``);
    the TSA certificate's trust is :func:`check_tsa_certificate`'s."""
    try:
        sig = parse(token_der)
        if sig.content_type != OID_TST_INFO or sig.content is None:
            raise TimestampError("not a time-stamp token (eContentType is not TSTInfo)")
        check_signature(sig, sig.content)
        tst = asn1_tsp.TSTInfo.load(sig.content, strict=True)
        imprint = tst["message_imprint"]
        algo = imprint["hash_algorithm"]["algorithm"].native
        hashed = bytes(imprint["hashed_message"].native)
        gen_time = tst["gen_time"].native
        serial = int(tst["serial_number"].native)
        policy = str(tst["policy"].dotted)
    except CmsError as exc:
        raise TimestampError(f"time-stamp token: {exc}") from exc
    except (*PARSE_ERRORS, KeyError, IndexError, OverflowError) as exc:
        raise TimestampError(f"malformed TSTInfo: {type(exc).__name__}") from exc
    if algo != "sha256":
        raise TimestampError(f"unsupported message imprint algorithm {algo}")
    if hashed != hashlib.sha256(data).digest():
        raise TimestampError("the time-stamp token is for other data")
    if not isinstance(gen_time, dt.datetime):
        raise TimestampError("genTime is not a time")
    return TimestampInfo(gen_time.astimezone(dt.UTC), serial, policy, sig.signer, hashed)


def check_tsa_certificate(info: TimestampInfo, trust: TrustStore) -> None:
    """The TSA certificate: critical EKU id-kp-timeStamping alone, valid at genTime,
    issued by a configured TSA trust anchor (``tsa-*.pem``)."""
    cert = info.tsa
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise TimestampError("the TSA certificate has no extended key usage") from None
    if not eku.critical or list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise TimestampError("the TSA certificate is not for time-stamping only (RFC 3161"
                             " §2.3: critical EKU id-kp-timeStamping)")
    if not cert.not_valid_before_utc <= info.gen_time <= cert.not_valid_after_utc:
        raise TimestampError("genTime is outside the TSA certificate's validity")
    if issuing_root(cert, trust.tsa_roots) is not None:
        return
    raise TimestampError("no configured TSA trust anchor (tsa-*.pem) issued the TSA"
                         " certificate"
                         f" ({cert.issuer.rfc4514_string()})")


def verify_token(token_der: bytes, data: bytes, trust: TrustStore) -> TimestampInfo:
    """The whole check of a token on ``data``: its signature, imprint and TSA."""
    info = token_info(token_der, data)
    check_tsa_certificate(info, trust)
    return info


@dataclass
class SigningTime:
    """The time at which a CMS signature's certificate should be checked, and why."""

    at: dt.datetime | None
    source: str
    timestamp: TimestampInfo | None
    warnings: list[str]


CLAIMED = "signingTime (unauthenticated, claimed by the signer)"
STAMPED = "time-stamp token genTime (RFC 3161, authenticated by the TSA)"


def signing_time_of(sig: CmsSignature, trust: TrustStore) -> SigningTime:
    """The token's genTime when the signature carries a time-stamp token (verified on the
    signature value, its TSA trusted): never the signer's own signingTime then. Without a
    token, signingTime with a warning that nothing authenticates it. A token that does
    not verify is a :class:`TimestampError`, not a silent fall-back to the claim."""
    if sig.timestamp_token is not None:
        info = verify_token(sig.timestamp_token, sig.signature, trust)
        warnings = []
        if sig.signing_time is not None and sig.signing_time > info.gen_time + CLOCK_SKEW:
            warnings.append("signingTime is later than the time-stamp token: the signer's"
                            " clock is wrong or the time was forged")
        return SigningTime(info.gen_time, STAMPED, info, warnings)
    return SigningTime(sig.signing_time, CLAIMED, None, [
        "the certificate was checked at the signer's own signingTime, which nothing"
        " authenticates (no time-stamp token): a signer holding a compromised key can"
        " backdate it to before a key-compromise revocation"])


__all__ = [
    "CLAIMED",
    "QUERY_TYPE",
    "REPLY_TYPE",
    "STAMPED",
    "SigningTime",
    "TimestampError",
    "TimestampInfo",
    "TsaClient",
    "TsaUnavailable",
    "check_tsa_certificate",
    "request_der",
    "signing_time_of",
    "token_info",
    "verify_token",
]
