"""The issuer-authenticated PIN reset — our own design: J-LIS's real command is not
public (docs/pin-reset-protocol.md). It lives in ``cardio`` because both the card and the
issuer speak it. Sans-IO: keys, MACs and APDU bytes only.

* The issuer (the reservation backend) holds a 32-byte master key. Each card holds its own
  key ``K_card = HMAC-SHA256(master, "cardio/pin-reset/v1/" || card serial)``, written at
  personalisation; the master key never leaves the backend.
* The kiosk selects the JPKI AP, verifies the *other* credential (the 4-digit auth PIN to
  reset the signature password; the signature password to reset the auth PIN), and asks
  the card for a fresh ``GET CHALLENGE``.
* The backend authorises one reset: ``MAC = HMAC-SHA256(K_card, "cardio-rrc-v1" || CLA INS
  P1 P2 || challenge || SHA-256(new value))[:16]``. It sees only the hash of the new
  value, never the value.
* The kiosk sends ``0C 2C 02 (80|SFI) Lc [81 L new-value] [8E 10 MAC]`` — RESET RETRY
  COUNTER with new reference data, under secure messaging with a MAC. The card checks the
  MAC against the challenge it issued, consumes the challenge whatever the result (a
  captured command cannot be replayed), checks the value's format, sets it and restores
  the retry counter.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cardio.apdu import tlv
from cardio.apdu.command import CommandApdu
from cardio.errors import CardioError

LABEL_KEY = b"cardio/pin-reset/v1/"
LABEL_MAC = b"cardio-rrc-v1"
CLA_SM = 0x0C
INS_RESET_RETRY_COUNTER = 0x2C
P1_NEW_REFERENCE = 0x02
MAC_LEN = 16
TARGET_SFI = {"sign": 0x1B, "auth": 0x18}


class ResetError(CardioError):
    pass


def card_key(master: bytes, serial: str) -> bytes:
    if len(master) < 32:
        raise ResetError("the issuer master key must be at least 32 bytes")
    return hmac.new(master, LABEL_KEY + serial.encode("ascii"), hashlib.sha256).digest()


def value_hash(new_value: bytes) -> bytes:
    return hashlib.sha256(new_value).digest()


def header(target: str) -> bytes:
    try:
        sfi = TARGET_SFI[target]
    except KeyError as exc:
        raise ResetError("target is 'sign' or 'auth'") from exc
    return bytes((CLA_SM, INS_RESET_RETRY_COUNTER, P1_NEW_REFERENCE, 0x80 | sfi))


def mac(key: bytes, apdu_header: bytes, challenge: bytes, new_value_hash: bytes) -> bytes:
    if len(new_value_hash) != 32:
        raise ResetError("the value hash is a SHA-256 digest")
    msg = LABEL_MAC + apdu_header + challenge + new_value_hash
    return hmac.new(key, msg, hashlib.sha256).digest()[:MAC_LEN]


def authorise(master: bytes, serial: str, target: str, challenge: bytes,
              new_value_hash: bytes) -> bytes:
    """What the backend computes for one reset."""
    if not 8 <= len(challenge) <= 32:
        raise ResetError("the card challenge is 8-32 bytes")
    return mac(card_key(master, serial), header(target), challenge, new_value_hash)


def reset_apdu(target: str, new_value: bytes, mac_value: bytes) -> CommandApdu:
    """The command the kiosk sends to the card."""
    h = header(target)
    data = tlv.build(0x81, new_value).encode() + tlv.build(0x8E, mac_value).encode()
    return CommandApdu(h[0], h[1], h[2], h[3], data)


def parse_reset_data(data: bytes) -> tuple[bytes, bytes]:
    """(new value, MAC) from the command data; :class:`ResetError` when malformed."""
    try:
        objs = {o.tag: o.value for o in tlv.iter_tlv(data, allow_filler=False)}
    except CardioError as exc:
        raise ResetError(f"malformed reset data: {exc}") from exc
    if set(objs) != {0x81, 0x8E} or len(objs[0x8E]) != MAC_LEN:
        raise ResetError("reset data must hold 81 (new value) and 8E (16-byte MAC)")
    return objs[0x81], objs[0x8E]


def public_key_fingerprint(key: rsa.RSAPublicKey) -> str:
    """SHA-256 (hex) of a public key's SubjectPublicKeyInfo DER: how the issuer's card
    registry names a card's card-face (presence) key, beside its serial and certificate."""
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()
