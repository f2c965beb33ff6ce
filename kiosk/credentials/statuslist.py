"""Token Status List (draft-ietf-oauth-status-list), JWT form, one bit per credential.

A municipality keeps one list of ``SIZE`` entries; each credential it issues gets a random,
never reused index (``status.status_list.idx``) and the list's URI. The *Status List Token*
(``typ: statuslist+jwt``) carries ``sub`` (that URI), ``iat``, ``exp``, ``ttl`` and
``status_list: {bits: 1, lst: base64url(zlib(bytes))}``, where entry *i* is bit ``i % 8`` of
byte ``i // 8`` (least significant bit first). 0 is VALID, 1 INVALID (revoked); 2 would be
SUSPENDED, which one bit cannot express — we revoke and re-issue rather than suspend (the
draft's privacy advice on status types).

Herd privacy: the list is one per municipality and large, the indexes random, so fetching it
tells the municipality nothing about which credential a relying party holds; unused entries
read VALID, so the list does not reveal how many credentials exist. Signed by the same
credential key as the credentials, so a verifier checks it against the same trust list and
may cache it for offline use within its ``exp``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from kiosk.credentials.errors import CredentialError, StatusUnavailable
from kiosk.credentials.jose import b64u_decode, b64u_encode

__all__ = ["BITS", "SIZE", "STATUS_TYP", "decode_list", "encode_list", "status_at"]

STATUS_TYP = "statuslist+jwt"
BITS = 1
SIZE = 1 << 17
"""131,072 entries per municipality: 16 KiB uncompressed, a few dozen bytes compressed while
few are revoked; a city issuing more than a few tens of thousands of credentials a validity
period would open a second list."""
MAX_COMPRESSED = 1 << 20
MAX_ENTRIES = 1 << 24


def encode_list(invalid: Iterable[int], size: int = SIZE) -> str:
    """``lst`` for a list of ``size`` entries where ``invalid`` are 1 and the rest 0."""
    raw = bytearray(size // 8)
    for i in invalid:
        if not 0 <= i < size:
            raise CredentialError("status index out of range")
        raw[i // 8] |= 1 << (i % 8)
    return b64u_encode(zlib.compress(bytes(raw), 9))


def decode_list(lst: str) -> bytes:
    """The uncompressed bytes, bounded (a zlib bomb is refused, not inflated)."""
    if not isinstance(lst, str) or len(lst) > MAX_COMPRESSED * 4 // 3 + 4:
        raise StatusUnavailable("the status list is not a bounded base64url string")
    try:
        d = zlib.decompressobj()
        raw = d.decompress(b64u_decode(lst, "status list"), MAX_ENTRIES // 8 + 1)
    except zlib.error:
        raise StatusUnavailable("the status list is not zlib data") from None
    if len(raw) > MAX_ENTRIES // 8 or d.unconsumed_tail:
        raise StatusUnavailable("the status list is larger than any we accept")
    return raw


def status_at(raw: bytes, idx: int, bits: int = BITS) -> int:
    if bits not in (1, 2, 4, 8):
        raise StatusUnavailable("status list bits must be 1, 2, 4 or 8")
    per_byte = 8 // bits
    if not 0 <= idx < len(raw) * per_byte:
        raise StatusUnavailable("the credential's status index is outside the list")
    byte = raw[idx // per_byte]
    return (byte >> ((idx % per_byte) * bits)) & ((1 << bits) - 1)
