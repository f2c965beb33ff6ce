"""券面事項確認AP (card-face AP) client: the face photo and the card face images with
J-LIS's signature checked (reference §5.3)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cardio import constants as c
from cardio.apdu import builders
from cardio.card import MyNumberCard, atomic
from cardio.crypto import digest_info_of
from cardio.identity import validate_code_a, validate_code_b
from cardio.records import CardFace, VisualBasicInfo
from cardio.text import TextApplication
from cardio.trust import DataStatus, TrustStore, check_record_signature


@dataclass
class VisualData:
    face: CardFace = field(repr=False)
    status: DataStatus
    reason: str


class VisualApplication:
    def __init__(self, card: MyNumberCard) -> None:
        self.card = card

    def unlock_with_text_pin(self, text_pin: str) -> None:
        """Open the card face with the 4-digit 券面事項入力補助 PIN instead of a 照合番号:
        the PIN unlocks the 券面事項入力補助AP, whose 個人番号 is 照合番号A here. The 個人番号
        lives only in this frame, so a caller that wants the face never holds it."""
        text = TextApplication(self.card)
        text.verify_pin(text_pin)
        self.verify_code_a(text.my_number())

    def verify_code_a(self, my_number: str) -> None:
        self.card.verify(c.Credential.VISUAL_A, validate_code_a(my_number))

    def verify_code_b(self, code: str) -> None:
        self.card.verify(c.Credential.VISUAL_B, validate_code_b(code))

    def card_face(self) -> CardFace:
        return CardFace.parse(self.card_face_raw())

    def card_face_raw(self) -> bytes:
        """The card face record as stored (J-LIS-signed), for a relying party that checks
        it itself (the PIN-reset service)."""
        return self.card.read_tlv_ef(c.AID_VISUAL, c.VISUAL_FACE, "the card face")

    def cv_certificate_raw(self) -> bytes:
        return self.card.read_tlv_ef(c.AID_VISUAL, c.VISUAL_CV_CERT, "the CV certificate")

    @atomic
    def presence_signature(self, challenge: bytes) -> bytes:
        """Card-presence check: the AP's own key signs a SHA-256 DigestInfo of
        ``challenge`` (a 照合番号 verified first). The key's public half is in the card face,
        so whoever holds the face can check the signature was made by this very card."""
        self.card.select(c.AID_VISUAL)
        return self.card.send_checked(
            builders.compute_signature(digest_info_of("sha256", challenge), 0x00,
                                       current_key=False), "card-face presence signature")

    def basic_info(self) -> VisualBasicInfo:
        return VisualBasicInfo.parse(
            self.card.read_tlv_ef(c.AID_VISUAL, c.VISUAL_BASIC_INFO, "the AP basic info"))

    @atomic
    def read_verified(self, trust: TrustStore | None = None) -> VisualData:
        """Read the card face (照合番号A or B verified first) and check its signature."""
        face = self.card_face()
        cv_raw = self.cv_certificate_raw()
        status, reason = check_record_signature(cv_raw, trust, face.verify)
        return VisualData(face, status, reason)
