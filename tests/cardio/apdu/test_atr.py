"""What an ATR says about extended-length APDUs (ISO 7816-4 §8.1.1.2.7, card capabilities),
on the ATRs the reference lists for the My Number card (reference §1)."""

from __future__ import annotations

import pytest

from cardio.apdu.atr import extended_length, historical_bytes


@pytest.mark.parametrize(("atr", "expected"), [
    # OpenSC's jpki_atrs[]: no historical bytes, says nothing.
    ("3BE000FF8131FE4514", None),
    # "JPKI (02)", the 2024 card: card capabilities 73 C6 01 C0 (chaining, extended Lc/Le).
    ("3BDA13FF8131FB468012392F31C173C601C03B", True),
    # "JPKI (03)": card capabilities 73 C6 01 00: no extended length.
    ("3BC5FF8131FB458073C6010000", False),
    # PC/SC Part 3 contactless ATRs carry the ATQB, not the card's capabilities.
    ("3B888001000005E0B381A1007F", None),
    ("3B888001004B51FFB381D1000F", None),
])
def test_reference_atrs(atr: str, expected: bool | None) -> None:
    assert extended_length(bytes.fromhex(atr)) is expected


def test_historical_bytes_follow_the_interface_bytes() -> None:
    assert historical_bytes(bytes.fromhex("3BDA13FF8131FB468012392F31C173C601C03B")) == \
        bytes.fromhex("8012392F31C173C601C0")
    assert historical_bytes(bytes.fromhex("3BE000FF8131FE4514")) == b""


@pytest.mark.parametrize("atr", ["", "3B", "3BDA13", "3BC5FF8131FB4580", "3F0512",
                                  "3B0280", "3B038073"])
def test_malformed_or_truncated_atrs_say_nothing(atr: str) -> None:
    assert extended_length(bytes.fromhex(atr)) is None


def test_status_category_compact_tlv() -> None:
    # Category 00: compact-TLV followed by three status bytes (here 73 00 00 40 = extended).
    assert extended_length(bytes.fromhex("3B08" + "00" + "73000040" + "009000")) is True
