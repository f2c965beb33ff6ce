"""Wallet issuance: the messages by which a resident's device obtains the 住民票 credential
from the 証明書交付センター after authenticating with the card's 利用者証明用 key (JPKI), as
an extension of ``cardio-issuance/1`` (same codec, same strictness; new endpoints only, no
existing message changed). ``docs/credentials.md`` has the flow.

1. ``POST /v1/wallet/sessions`` :class:`WalletSessionOpen` → :class:`WalletSessionOpened`
   (session id, 32-byte nonce, 5 minutes).
2. ``POST /v1/wallet/sessions/{sid}/credential`` :class:`CredentialRequest`: the card's
   利用者証明用 certificate and its signature over :func:`card_challenge` — the session,
   the nonce *and the holder key's thumbprint*, so the card's authentication vouches for
   exactly this key — and the holder's proof of possession of that key (a JWS over the
   nonce, :func:`holder_proof`), and the 住民票 options → :class:`IssuedCredential`.

The nonce is consumed by the first attempt, good or bad.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.credentials.errors import HolderBindingFailed
from kiosk.credentials.jose import (
    jwk_thumbprint,
    jws_sign,
    jws_split,
    jws_verify,
    key_from_jwk,
    key_to_jwk,
)
from kiosk.protocol.codec import PROTOCOL_VERSION, MalformedMessage, Message
from kiosk.protocol.messages import check_id

__all__ = [
    "PROOF_AUD",
    "PROOF_TYP",
    "CredentialRequest",
    "IssuedCredential",
    "WalletSessionOpen",
    "WalletSessionOpened",
    "card_challenge",
    "check_holder_proof",
    "holder_proof",
]

PROOF_TYP = "openid4vci-proof+jwt"
"""The proof-of-possession JWT of OpenID4VCI (its ``jwt`` proof type): header ``jwk``,
claims ``aud``, ``iat``, ``nonce``."""
PROOF_AUD = "cardio-credential-issuance"
_B64 = re.compile(r"[A-Za-z0-9+/=]{1,16384}")


@dataclass(frozen=True)
class WalletSessionOpen(Message):
    request_id: str
    v: str = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        check_id(self.request_id, "request_id")


@dataclass(frozen=True)
class WalletSessionOpened(Message):
    request_id: str
    session_id: str
    nonce: str  # base64url of 32 random bytes
    expires_at: str  # ISO 8601
    v: str = PROTOCOL_VERSION


@dataclass(frozen=True)
class CredentialRequest(Message):
    request_id: str
    session_id: str
    certificate: str  # base64 DER of the card's 利用者証明用 certificate
    signature: str  # base64 PKCS#1 v1.5 SHA-256 by the card's auth key over card_challenge
    holder_jwk: dict[str, str]
    holder_proof: str  # compact JWS by the holder key (PROOF_TYP) over the nonce
    options: dict[str, str] = field(default_factory=dict)  # scope, honseki, relationship
    v: str = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        check_id(self.request_id, "request_id")
        check_id(self.session_id, "session_id")
        if not _B64.fullmatch(self.certificate) or not _B64.fullmatch(self.signature):
            raise MalformedMessage("certificate and signature are base64")


@dataclass(frozen=True)
class IssuedCredential(Message):
    request_id: str
    format: str  # "dc+sd-jwt"
    credential: str  # the SD-JWT in issuance form: <JWT>~<every disclosure>~
    vct: str
    expires_at: int  # the credential's exp
    v: str = PROTOCOL_VERSION


def card_challenge(session_id: str, nonce: str, holder_jwk: dict[str, str]) -> bytes:
    """What the card signs: the session, the center's nonce and the holder key's RFC 7638
    thumbprint — a stolen signature cannot bind the credential to another key."""
    return "\n".join(["cardio-credential-issuance/1", session_id, nonce,
                      jwk_thumbprint(holder_jwk)]).encode("ascii")


def holder_proof(key: ec.EllipticCurvePrivateKey, nonce: str, now: float | None = None) -> str:
    return jws_sign({"alg": "ES256", "typ": PROOF_TYP, "jwk": key_to_jwk(key.public_key())},
                    {"aud": PROOF_AUD, "nonce": nonce,
                     "iat": int(time.time() if now is None else now)}, key)


def check_holder_proof(proof: str, holder_jwk: dict[str, Any], nonce: str, now: float,
                       window: int = 300) -> None:
    """The holder key signed this session's nonce recently; :class:`HolderBindingFailed`
    otherwise (:class:`MalformedPresentation` for a token that is not one)."""
    header, claims, signing_input, sig = jws_split(proof, "holder proof")
    if header.get("typ") != PROOF_TYP or header.get("jwk") != holder_jwk:
        raise HolderBindingFailed("the holder proof is not of the requested key")
    if not jws_verify(signing_input, sig, key_from_jwk(holder_jwk)):
        raise HolderBindingFailed("the holder proof's signature does not verify")
    iat = claims.get("iat")
    if claims.get("aud") != PROOF_AUD or claims.get("nonce") != nonce or \
            not isinstance(iat, int) or abs(now - iat) > window:
        raise HolderBindingFailed("the holder proof is not for this session (aud, nonce, iat)")


