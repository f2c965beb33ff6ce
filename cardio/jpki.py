"""公的個人認証 (JPKI) AP client: certificates, PINs, signing (reference §5.1, §7.1)."""

from __future__ import annotations

import hashlib
from typing import Literal

from cryptography import x509

from cardio import constants as c
from cardio.apdu import builders
from cardio.card import MyNumberCard, atomic
from cardio.crypto import digest_info
from cardio.identity import InvalidValue, validate_four_digit_pin, validate_sign_password
from cardio.records import RecordError

KeyKind = Literal["auth", "sign"]
HASHES = ("sha256", "sha384", "sha512")
_CERT_FIDS = {"auth": c.JPKI_AUTH_CERT, "sign": c.JPKI_SIGN_CERT,
              "auth-ca": c.JPKI_AUTH_CA_CERT, "sign-ca": c.JPKI_SIGN_CA_CERT}
_KEY_FIDS = {"auth": c.JPKI_AUTH_KEY, "sign": c.JPKI_SIGN_KEY}
_CREDENTIAL = {"auth": c.Credential.AUTH, "sign": c.Credential.SIGN}


class JpkiApplication:
    """The JPKI AP: 利用者証明用 (auth) and 署名用 (sign) keys and certificates."""

    def __init__(self, card: MyNumberCard) -> None:
        self.card = card

    def token(self) -> str:
        """The token label: ``JPKIAPICCTOKEN2`` on a My Number card, others on phones and
        住基 cards (reference §5.1). Reads the 32-byte label only."""
        raw = self.card.read_ef(c.AID_JPKI, c.JPKI_TOKEN, 32, "the token label")
        return raw.decode("ascii", "replace").rstrip(" \x00")

    def certificate_der(self, which: str) -> bytes:
        """``auth``, ``sign`` (needs the signature password first), ``auth-ca`` or
        ``sign-ca``, as the exact DER on the card."""
        fid = _CERT_FIDS.get(which)
        if fid is None:
            raise InvalidValue(f"unknown certificate {which!r}")
        return self.card.read_tlv_ef(c.AID_JPKI, fid, f"the {which} certificate")

    def certificate(self, which: str) -> x509.Certificate:
        der = self.certificate_der(which)
        try:
            return x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise RecordError(f"the {which} certificate on the card is not valid DER") from exc

    def verify_pin(self, kind: KeyKind, secret: str) -> None:
        """Verify the auth PIN (4 digits) or the signature password (6-16 A-Z/0-9)."""
        value = (validate_four_digit_pin(secret) if kind == "auth"
                 else validate_sign_password(secret))
        self.card.verify(_CREDENTIAL[kind], value)

    def tries_left(self, kind: KeyKind) -> int | None:
        return self.card.tries_left(_CREDENTIAL[kind])

    @atomic
    def sign_digest_info(self, kind: KeyKind, payload: bytes) -> bytes:
        """``80 2A 00 (80|SFI)``: PKCS#1 v1.5 over ``payload`` (a DigestInfo), with the key
        named by SFI so no SELECT is spent. The PIN must be verified first."""
        self.card.select(c.AID_JPKI)
        cmd = builders.compute_signature(payload, 0x00, key_sfi=_KEY_FIDS[kind])
        return self.card.send_checked(cmd, f"signing with the {kind} key")

    def sign(self, kind: KeyKind, message: bytes, hash_name: str = "sha256") -> bytes:
        """PKCS#1 v1.5 signature of ``message`` with SHA-256/384/512 (hashed here)."""
        if hash_name not in HASHES:
            raise InvalidValue(f"hash must be one of {', '.join(HASHES)}")
        return self.sign_digest_info(kind, digest_info(hash_name,
                                                       hashlib.new(hash_name, message).digest()))

    @atomic
    def sign_on_card(self, kind: KeyKind, data: bytes, scheme: int) -> bytes:
        """The card-side modes of ``80 2A``: P1 01 (SHA-256, bare hash), 02 (DigestInfo
        around a given hash), 03 (SHA-256 + DigestInfo), 04 (PSS over a given hash),
        05 (SHA-256 + PSS)."""
        if scheme not in range(1, 6):
            raise InvalidValue("scheme is 1..5 (0 is sign_digest_info)")
        self.card.select(c.AID_JPKI)
        cmd = builders.compute_signature(data, scheme, key_sfi=_KEY_FIDS[kind])
        return self.card.send_checked(cmd, f"signing with the {kind} key")

    def change_pin(self, kind: KeyKind, old: str, new: str) -> None:
        check = validate_four_digit_pin if kind == "auth" else validate_sign_password
        self.card.change_reference_data(_CREDENTIAL[kind], check(old), check(new))

    def availability(self) -> dict[str, bool]:
        """Which certificates the card holds (EF 0008: ``8F 8F 00`` both; children under
        15 have no signature certificate)."""
        raw = self.card.read_ef(c.AID_JPKI, c.JPKI_CERT_AVAILABILITY, 3, "availability")
        return {"sign": len(raw) > 0 and raw[0] == 0x8F, "auth": len(raw) > 1 and raw[1] == 0x8F}
