"""What an Answer-To-Reset says (ISO 7816-3 §8, ISO 7816-4 §8.1.1): its historical bytes
and, from their card-capabilities object, whether the card takes extended-length APDUs.

Pure: bytes in, values out. ``None`` means "the ATR does not say" — the contact ATR in
OpenSC's table has no historical bytes at all, and a PC/SC Part 3 contactless ATR carries
the ATQB instead of the card's capabilities — so the caller decides another way (a probe).
"""

from __future__ import annotations

TS_DIRECT, TS_INVERSE = 0x3B, 0x3F
CATEGORY_COMPACT_TLV = 0x80
"""Historical bytes: compact-TLV objects only."""
CATEGORY_COMPACT_TLV_STATUS = 0x00
"""Historical bytes: compact-TLV objects, then three status bytes."""
TAG_CARD_CAPABILITIES = 0x7
EXTENDED_LENGTH_BIT = 0x40
"""Third software function byte of the card capabilities: extended Lc and Le fields."""


def historical_bytes(atr: bytes) -> bytes | None:
    """The historical bytes of ``atr``, or ``None`` when it is malformed or truncated."""
    if len(atr) < 2 or atr[0] not in (TS_DIRECT, TS_INVERSE):
        return None
    t0 = atr[1]
    k = t0 & 0x0F
    i, y = 2, t0 >> 4
    while True:
        i += bin(y & 0x0F).count("1")  # TA, TB, TC, TD present
        if y & 0x8:
            if i > len(atr):
                return None
            y = atr[i - 1] >> 4
        else:
            break
    if i + k > len(atr):
        return None
    return bytes(atr[i : i + k])


def _is_contactless_part3(atr: bytes) -> bool:
    """``3B 8n 80 01 …``: a reader's synthesised contactless ATR (PC/SC Part 3), whose
    historical bytes are the card's ATQB or ATS, not ISO 7816-4 objects."""
    return len(atr) >= 4 and atr[0] == TS_DIRECT and atr[1] & 0xF0 == 0x80 \
        and atr[2] == 0x80 and atr[3] == 0x01


def extended_length(atr: bytes) -> bool | None:
    """True or False when the ATR's card-capabilities object says whether the card takes
    extended Lc/Le; ``None`` when the ATR does not say (no such object, or an ATR this
    function cannot read)."""
    if _is_contactless_part3(atr):
        return None
    hist = historical_bytes(atr)
    if not hist:
        return None
    category, body = hist[0], hist[1:]
    if category == CATEGORY_COMPACT_TLV_STATUS:
        if len(body) < 3:
            return None
        body = body[:-3]
    elif category != CATEGORY_COMPACT_TLV:
        return None
    i = 0
    while i < len(body):
        tag, length = body[i] >> 4, body[i] & 0x0F
        value = body[i + 1 : i + 1 + length]
        if len(value) < length:
            return None
        if tag == TAG_CARD_CAPABILITIES and length >= 3:
            return bool(value[2] & EXTENDED_LENGTH_BIT)
        i += 1 + length
    return None
