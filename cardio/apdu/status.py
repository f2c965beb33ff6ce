"""Status words by name: the one place a card (or the software card) spells them.

Names follow ISO 7816-4 and the meanings this card gives them (reference §3). A client
maps them to typed errors in :mod:`cardio.apdu.errors`; the software card answers with
them. Sans-IO like the rest of :mod:`cardio.apdu` (it imports only the error root).
"""

from __future__ import annotations

from enum import IntEnum

from cardio.errors import CardioError


class SW(IntEnum):
    """A status word as one number (``SW1 << 8 | SW2``)."""

    OK = 0x9000
    VERIFY_FAILED_NO_COUNTER = 0x6300
    """VERIFY failed on a key without a retry limit."""
    VERIFY_FAILED = 0x63C0
    """``63Cx``: VERIFY failed (or an empty VERIFY), ``x`` tries left; see :func:`tries_left`."""
    MEMORY_FAILURE = 0x6581
    """The card's memory (EEPROM; the software card's directory) failed."""
    SESSION_KEY_NOT_CONFIGURED = 0x66F1
    WRONG_LENGTH = 0x6700
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    INCOMPATIBLE_FILE_STRUCTURE = 0x6981
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTHENTICATION_METHOD_BLOCKED = 0x6983
    REFERENCE_DATA_BLOCKED = 0x6984
    CONDITIONS_NOT_SATISFIED = 0x6985
    NO_CURRENT_EF = 0x6986
    SM_DATA_OBJECTS_MISSING = 0x6987
    SM_DATA_OBJECTS_INCORRECT = 0x6988
    SECURE_CHANNEL_DESTROYED = 0x69FC
    WRONG_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    RECORD_NOT_FOUND = 0x6A83
    WRONG_P1_P2 = 0x6A86
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    OFFSET_OUT_OF_RANGE = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00

    @property
    def trailer(self) -> bytes:
        """SW1 SW2 as they end a response APDU."""
        return self.value.to_bytes(2, "big")


class StatusWordError(CardioError):
    """A value that no status word can carry (a bug in the card, never user input)."""


MAX_REPORTED_TRIES = 0x0F
"""``63Cx`` has four bits for the count."""


def tries_left(tries: int) -> int:
    """The ``63Cx`` status word for ``tries`` (0..15) tries left."""
    if not 0 <= tries <= MAX_REPORTED_TRIES:
        raise StatusWordError(f"63Cx reports 0..15 tries, not {tries}")
    return SW.VERIFY_FAILED | tries
