"""券面事項入力補助AP (text / input-support AP) client: 個人番号 and 基本4情報 with J-LIS's
signature checked (reference §5.2)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cardio import constants as c
from cardio.apdu import builders
from cardio.card import MyNumberCard, atomic
from cardio.crypto import digest_info_of, verify_payload
from cardio.identity import validate_code_a, validate_code_b, validate_four_digit_pin
from cardio.records import Attributes, IntegrityRecord, MyNumberRecord, SignedPublicKey
from cardio.trust import DataStatus, TrustStore, check_record_signature

MY_NUMBER_EF_SIZE = 17


@dataclass
class TextData:
    """What the text AP gave, and whether J-LIS's signature vouches for it."""

    my_number: str | None = field(repr=False)
    attributes: Attributes | None = field(repr=False)
    status: DataStatus
    reason: str


class TextApplication:
    def __init__(self, card: MyNumberCard) -> None:
        self.card = card

    def verify_pin(self, pin: str) -> None:
        self.card.verify(c.Credential.TEXT, validate_four_digit_pin(pin))

    def verify_code_a(self, my_number: str) -> None:
        self.card.verify(c.Credential.TEXT_A, validate_code_a(my_number))

    def verify_code_b(self, code: str) -> None:
        self.card.verify(c.Credential.TEXT_B, validate_code_b(code))

    def my_number_physical(self) -> bytes:
        return self.card.read_ef(c.AID_TEXT, c.TEXT_MY_NUMBER, MY_NUMBER_EF_SIZE, "個人番号")

    def my_number(self) -> str:
        return MyNumberRecord.parse(self.my_number_physical()).my_number

    def attributes_raw(self) -> bytes:
        return self.card.read_tlv_ef(c.AID_TEXT, c.TEXT_ATTRIBUTES, "基本4情報")

    def attributes(self) -> Attributes:
        return Attributes.parse(self.attributes_raw())

    def integrity(self) -> IntegrityRecord:
        return IntegrityRecord.parse(
            self.card.read_tlv_ef(c.AID_TEXT, c.TEXT_INTEGRITY, "the integrity record"))

    def cv_certificate_raw(self) -> bytes:
        return self.card.read_tlv_ef(c.AID_TEXT, c.TEXT_CV_CERT, "the CV certificate")

    @atomic
    def read_all(self, trust: TrustStore | None = None, *, my_number: bool = True,
                 attributes: bool = True) -> TextData:
        """Read the 個人番号 and/or 基本4情報 (a credential must be verified first) and
        check them against the signed integrity record and the CV certificate."""
        mn_phys = self.my_number_physical() if my_number else None
        attrs = self.attributes() if attributes else None
        record = self.integrity()
        cv_raw = self.cv_certificate_raw()
        status, reason = check_record_signature(
            cv_raw, trust, lambda key: record.verify(key, mn_phys, attrs))
        number = MyNumberRecord.parse(mn_phys).my_number if mn_phys is not None else None
        return TextData(number, attrs, status, reason)

    @atomic
    def presence_signature(self, challenge: bytes) -> tuple[bytes, SignedPublicKey]:
        """Card-presence check: the AP's own key (EF 0013, no PIN) signs a SHA-256
        DigestInfo of ``challenge``; the signed public key (EF 0007, readable after the PIN
        or either 照合番号) verifies it."""
        self.card.select(c.AID_TEXT)
        payload = digest_info_of("sha256", challenge)
        sig = self.card.send_checked(builders.compute_signature(payload, 0x00, current_key=False),
                             "card-presence signature")
        signed = SignedPublicKey.parse(
            self.card.read_tlv_ef(c.AID_TEXT, c.TEXT_SIGNED_PUBKEY, "the signed public key"))
        verify_payload(signed.public_key, sig, payload)
        return sig, signed
