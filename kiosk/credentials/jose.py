"""The little of JOSE that SD-JWT needs, on ``cryptography`` alone: base64url, ES256 JWS in
compact serialisation, P-256 keys as JWK, and the RFC 7638 thumbprint.

Why not a JOSE library: one algorithm (ES256, RFC 7518 §3.4: raw r‖s, 64 bytes) and one
serialisation are ~100 lines that are easy to audit, and a verifier that accepts exactly one
``alg`` cannot be talked into ``none`` or an HMAC with a public key as the secret (the
classic JOSE algorithm-confusion bugs). Decoding is strict: base64url without padding or
stray characters, JSON objects without duplicate keys, NaN or nesting past a bound, so two
parsers cannot read one token two ways.

Pure: bytes and strings in, values out; no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from kiosk.credentials.errors import CredentialError, MalformedPresentation

__all__ = [
    "ALG",
    "b64u_decode",
    "b64u_encode",
    "jwk_thumbprint",
    "jws_sign",
    "jws_split",
    "jws_verify",
    "key_from_jwk",
    "key_to_jwk",
    "loads_strict",
]

ALG = "ES256"
_B64U = re.compile(r"[A-Za-z0-9_-]*")
MAX_DEPTH = 12


def b64u_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str, what: str = "value") -> bytes:
    """Unpadded base64url only (RFC 7515 §2); anything else is malformed."""
    if not isinstance(text, str) or not _B64U.fullmatch(text) or len(text) % 4 == 1:
        raise MalformedPresentation(f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedPresentation(f"{what} is not base64url") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise MalformedPresentation(f"duplicate member {k[:40]!r} in a JSON object")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise MalformedPresentation(f"{name} is not JSON")


def _depth(v: Any, d: int = 0) -> None:
    if d > MAX_DEPTH:
        raise MalformedPresentation("JSON nested too deep")
    if isinstance(v, dict):
        for x in v.values():
            _depth(x, d + 1)
    elif isinstance(v, list):
        for x in v:
            _depth(x, d + 1)


def loads_strict(data: bytes, what: str = "JSON") -> Any:
    """UTF-8 JSON with no duplicate keys, no NaN/Infinity, nesting bounded."""
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates,
                           parse_constant=_no_constant)
    except MalformedPresentation as e:
        raise MalformedPresentation(f"{what}: {e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise MalformedPresentation(f"{what} is not UTF-8 JSON ({type(e).__name__})") from None
    _depth(value)
    return value


def dumps_compact(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- keys ----------------------------------------------------------------------------------
def key_to_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """A P-256 public key as a JWK (RFC 7518 §6.2.1: x and y, 32 bytes each)."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise CredentialError("only P-256 keys are used here")
    nums = key.public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64u_encode(nums.x.to_bytes(32, "big")),
            "y": b64u_encode(nums.y.to_bytes(32, "big"))}


def key_from_jwk(jwk: Any) -> ec.EllipticCurvePublicKey:
    """A P-256 public JWK, refused if it is anything else (a private ``d`` included: a
    holder that publishes its private key has no key binding)."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise MalformedPresentation("the key is not a P-256 EC JWK")
    if "d" in jwk:
        raise MalformedPresentation("the JWK carries a private key")
    x, y = b64u_decode(jwk.get("x", ""), "JWK x"), b64u_decode(jwk.get("y", ""), "JWK y")
    if len(x) != 32 or len(y) != 32:
        raise MalformedPresentation("the JWK's coordinates are not 32 bytes")
    try:
        return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                             ec.SECP256R1()).public_key()
    except ValueError:
        raise MalformedPresentation("the JWK's point is not on P-256") from None


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638: SHA-256 over the required members in lexicographic order, base64url."""
    canon = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"),
                       sort_keys=True).encode("ascii")
    return b64u_encode(hashlib.sha256(canon).digest())


# -- JWS -------------------------------------------------------------------------------------
def jws_sign(header: dict[str, Any], payload: dict[str, Any],
             key: ec.EllipticCurvePrivateKey) -> str:
    """Compact JWS, ES256: BASE64URL(header).BASE64URL(payload).BASE64URL(r‖s)."""
    if header.get("alg") != ALG:
        raise CredentialError("header alg must be ES256")
    signing_input = (b64u_encode(dumps_compact(header)) + "." +
                     b64u_encode(dumps_compact(payload)))
    der = key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return signing_input + "." + b64u_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def jws_split(token: str, what: str = "JWT") -> tuple[dict[str, Any], dict[str, Any], str,
                                                      bytes]:
    """(header, payload, signing input, raw signature) of a compact JWS, unverified."""
    if not isinstance(token, str) or not token.isascii():
        raise MalformedPresentation(f"{what} is not a compact JWS")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedPresentation(f"{what} is not a compact JWS (three parts)")
    header = loads_strict(b64u_decode(parts[0], f"{what} header"), f"{what} header")
    payload = loads_strict(b64u_decode(parts[1], f"{what} payload"), f"{what} payload")
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise MalformedPresentation(f"{what}: header and payload must be JSON objects")
    if header.get("alg") != ALG:
        raise MalformedPresentation(f"{what}: alg must be ES256")
    if "crit" in header:
        raise MalformedPresentation(f"{what}: critical header parameters are not understood")
    return header, payload, parts[0] + "." + parts[1], b64u_decode(parts[2], f"{what} signature")


def jws_verify(signing_input: str, signature: bytes, key: ec.EllipticCurvePublicKey) -> bool:
    """ES256 over the signing input; a signature that is not 64 bytes is simply invalid."""
    if len(signature) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                               int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
