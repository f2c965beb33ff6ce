"""Where the software card's RSA keys come from.

Generating RSA-2048 keys costs tens of milliseconds each and a card needs eight, so the
personaliser takes a key source: fresh keys for real cards, a reusable pool for
property-based tests that personalise hundreds of profiles.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from cardio.crypto import DIGEST_INFO_PREFIXES
from cardio.errors import CardioError

KEY_BITS = 2048


class CardKeyError(CardioError, ValueError):
    """A key file that holds no RSA private key, or a payload an RSA key cannot sign."""


class KeySource(Protocol):
    def new_key(self) -> rsa.RSAPrivateKey: ...


class FreshKeys:
    """A new RSA-2048 key every time (what a real card's on-board generation gives)."""

    def new_key(self) -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


class KeyPool:
    """Cycles through ``size`` pre-generated keys. For tests only: cards personalised from
    one pool share keys."""

    def __init__(self, size: int = 8) -> None:
        self._keys = [FreshKeys().new_key() for _ in range(size)]
        self._cycle: Iterator[rsa.RSAPrivateKey] = itertools.cycle(self._keys)

    def new_key(self) -> rsa.RSAPrivateKey:
        return next(self._cycle)


_DIGEST_INFOS: tuple[tuple[bytes, hashes.HashAlgorithm], ...] = tuple(
    (DIGEST_INFO_PREFIXES[name], algo) for name, algo in
    (("sha256", hashes.SHA256()), ("sha384", hashes.SHA384()), ("sha512", hashes.SHA512()))
    if name in DIGEST_INFO_PREFIXES)


def key_to_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_from_pem(data: bytes, *, trusted: bool = False) -> rsa.RSAPrivateKey:
    """Load a PEM key. ``trusted`` skips OpenSSL's RSA consistency check (tens of ms per
    key), for keys the card itself wrote into its own directory."""
    key = serialization.load_pem_private_key(data, password=None,
                                             unsafe_skip_rsa_key_validation=trusted)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CardKeyError("not an RSA private key")
    return key


def raw_sign(key: rsa.RSAPrivateKey, payload: bytes) -> bytes:
    """PKCS#1 v1.5 type-1 padding over ``payload`` as given, then the RSA private
    operation: what the card's ``80 2A`` P1=00 does. ``cryptography`` only signs whole
    digests, and J-LIS's card-face signature wraps 96 bytes, so the padding is done here
    and the exponentiation with the key's CRT parameters."""
    k = key.key_size // 8
    if len(payload) > k - 11:
        raise CardKeyError("payload too long for PKCS#1 v1.5 padding")
    # A standard DigestInfo (the common case: JPKI signatures of SHA-2 digests) gives the
    # same deterministic PKCS#1 v1.5 signature through OpenSSL, ~10x faster than the
    # exponentiation below in Python (it matters for load tests with many cards).
    for prefix, algorithm in _DIGEST_INFOS:
        if len(payload) == len(prefix) + algorithm.digest_size and payload.startswith(prefix):
            return key.sign(payload[len(prefix):], padding.PKCS1v15(),
                            utils.Prehashed(algorithm))
    em = b"\x00\x01" + b"\xff" * (k - 3 - len(payload)) + b"\x00" + payload
    priv = key.private_numbers()
    m = int.from_bytes(em, "big")
    p, q = priv.p, priv.q
    s1 = pow(m, priv.dmp1, p)
    s2 = pow(m, priv.dmq1, q)
    h = (priv.iqmp * (s1 - s2)) % p
    s = s2 + h * q
    return s.to_bytes(k, "big")
