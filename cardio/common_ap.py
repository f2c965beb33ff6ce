"""共通AP and 住基AP clients (reference §5.4). Named ``common_ap`` so it does not read as
"shared helpers": 共通AP is the card's "common application"."""

from __future__ import annotations

from dataclasses import dataclass

from cardio import constants as c
from cardio.card import MyNumberCard
from cardio.records import RecordError


@dataclass(frozen=True)
class CardInfo:
    """共通AP record 1: card serial, 全国地方公共団体コード, expiry (YYYYMMDD)."""

    serial: str
    municipality: str
    expiry: str


class CommonApplication:
    def __init__(self, card: MyNumberCard) -> None:
        self.card = card

    def card_info(self) -> CardInfo:
        rec = self.card.read_record(c.AID_COMMON, c.COMMON_CARD_INFO, 1, "the card info")
        if len(rec) < 2 or rec[0] != 0x01 or rec[1] != len(rec) - 2 or rec[1] != 28:
            raise RecordError("共通AP record 1 is not 01 1C + 28 digits")
        text = rec[2:].decode("ascii", "replace")
        return CardInfo(text[:15], text[15:20], text[20:28])
