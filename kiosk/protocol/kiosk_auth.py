"""Kiosk authentication to the 証明書交付センター: per-kiosk ECDSA P-256 request signatures.

Each kiosk holds its own key (enrolled by the operator; the center keeps only the public
key). Every request carries four headers, and the signature covers the method, the path,
the SHA-256 of the body, the time and a single-use nonce — so a captured request cannot be
replayed, re-targeted or have its body swapped, and there is no shared secret to leak
from a header. Freshness is judged on the real wall clock (the services' business clock
may be shifted with ``--now``); the center remembers nonces for the freshness window.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.protocol.codec import ProtocolError

__all__ = [
    "FRESHNESS",
    "H_KIOSK",
    "H_NONCE",
    "H_SIGNATURE",
    "H_TIME",
    "KioskAuthError",
    "request_headers",
    "string_to_sign",
    "verify_request",
]

H_KIOSK, H_TIME, H_NONCE, H_SIGNATURE = ("x-cardio-kiosk", "x-cardio-time", "x-cardio-nonce",
                                         "x-cardio-signature")
FRESHNESS = 120
"""Seconds a signed request stays acceptable either side of the center's wall clock."""
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_KIOSK = re.compile(r"[A-Za-z0-9_-]{8,64}")


class KioskAuthError(ProtocolError):
    """The request is not from an enrolled kiosk (missing, stale, replayed or badly signed
    credentials)."""

    code = "kiosk_unauthenticated"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def string_to_sign(kiosk_id: str, method: str, path: str, body: bytes, timestamp: int,
                   nonce: str) -> bytes:
    return "\n".join(["cardio-kiosk-request/1", kiosk_id, method.upper(), path,
                      hashlib.sha256(body).hexdigest(), str(timestamp), nonce]).encode()


def request_headers(key: ec.EllipticCurvePrivateKey, kiosk_id: str, method: str, path: str,
                    body: bytes, now: float) -> dict[str, str]:
    ts, nonce = int(now), secrets.token_urlsafe(18)
    sig = key.sign(string_to_sign(kiosk_id, method, path, body, ts, nonce),
                   ec.ECDSA(hashes.SHA256()))
    return {H_KIOSK: kiosk_id, H_TIME: str(ts), H_NONCE: nonce,
            H_SIGNATURE: base64.b64encode(sig).decode()}


def parse_headers(headers: Mapping[str, str]) -> tuple[str, int, str, bytes]:
    """(kiosk id, timestamp, nonce, signature) or :class:`KioskAuthError`."""
    kiosk, ts, nonce, sig = (headers.get(h) for h in (H_KIOSK, H_TIME, H_NONCE, H_SIGNATURE))
    if not (kiosk and ts and nonce and sig):
        raise KioskAuthError("kiosk_unauthenticated", "kiosk credentials missing")
    if not _KIOSK.fullmatch(kiosk) or not _NONCE.fullmatch(nonce) or \
            not ts.isdigit() or len(ts) > 12 or len(sig) > 200:
        raise KioskAuthError("kiosk_unauthenticated", "malformed kiosk credentials")
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise KioskAuthError("kiosk_unauthenticated", "malformed kiosk signature") from None
    return kiosk, int(ts), nonce, raw


def verify_request(public_key: ec.EllipticCurvePublicKey, kiosk_id: str, timestamp: int,
                   nonce: str, signature: bytes, method: str, path: str, body: bytes,
                   now: float) -> None:
    """Signature and freshness; the caller checks the nonce has not been seen."""
    if abs(now - timestamp) > FRESHNESS:
        raise KioskAuthError("kiosk_request_stale", "the kiosk request is outside the"
                             f" {FRESHNESS} s window (check the kiosk's clock)")
    try:
        public_key.verify(signature, string_to_sign(kiosk_id, method, path, body, timestamp,
                                                    nonce), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise KioskAuthError("kiosk_bad_signature", "the kiosk request signature does not"
                             " verify (wrong kiosk credentials)") from None
