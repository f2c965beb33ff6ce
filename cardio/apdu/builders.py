"""Builders for the commands the My Number card understands (reference §2): one function
per command, e.g. ``select_aid``, ``read_binary_sfi``, ``compute_signature``.

Pure functions returning :class:`CommandApdu`; the applet clients send them and the
tests compare their bytes with the reference's vectors.
"""

from __future__ import annotations

from cardio.apdu.command import SHORT_MAX_LE, CommandApdu
from cardio.apdu.errors import MalformedApdu

INS_SELECT = 0xA4
INS_READ_BINARY = 0xB0
INS_READ_RECORD = 0xB2
INS_VERIFY = 0x20
INS_CHANGE_REFERENCE_DATA = 0x24
INS_RESET_RETRY_COUNTER = 0x2C
INS_CHANGE_KEY = 0x32
INS_SIGN = 0x2A
INS_GET_CHALLENGE = 0x84
INS_INTERNAL_AUTHENTICATE = 0x88
INS_GET_DATA = 0xCA
INS_GET_RESPONSE = 0xC0

MAX_OFFSET = 0x7FFF


def _check_sfi(sfi: int) -> None:
    if not 1 <= sfi <= 30:
        raise MalformedApdu(f"SFI must be 1..30, got {sfi}")


def select_aid(aid: bytes) -> CommandApdu:
    """SELECT DF by AID, no FCI (``00 A4 04 0C``)."""
    return CommandApdu(0x00, INS_SELECT, 0x04, 0x0C, aid)


def select_ef(fid: int) -> CommandApdu:
    """SELECT EF by FID under the current DF (``00 A4 02 0C 02 FID``)."""
    return CommandApdu(0x00, INS_SELECT, 0x02, 0x0C, fid.to_bytes(2, "big"))


def read_binary(offset: int, le: int = SHORT_MAX_LE, *, extended: bool = False) -> CommandApdu:
    """READ BINARY of the current EF at a 15-bit offset."""
    if not 0 <= offset <= MAX_OFFSET:
        raise MalformedApdu(f"READ BINARY offset must be 0..7FFF, got {offset:X}")
    return CommandApdu(0x00, INS_READ_BINARY, offset >> 8, offset & 0xFF, le=le, extended=extended)


def read_binary_sfi(sfi: int, offset: int = 0, le: int = SHORT_MAX_LE, *,
                    extended: bool = False) -> CommandApdu:
    """READ BINARY with a short EF identifier: selects the EF and reads in one APDU
    (P1 = 80|SFI, P2 = an 8-bit offset)."""
    _check_sfi(sfi)
    if not 0 <= offset <= 0xFF:
        raise MalformedApdu("the SFI form of READ BINARY takes an 8-bit offset")
    return CommandApdu(0x00, INS_READ_BINARY, 0x80 | sfi, offset, le=le, extended=extended)


def read_record(record: int, sfi: int, le: int = SHORT_MAX_LE) -> CommandApdu:
    _check_sfi(sfi)
    return CommandApdu(0x00, INS_READ_RECORD, record, (sfi << 3) | 0x04, le=le)


def verify(secret: bytes | None, sfi: int | None = None) -> CommandApdu:
    """VERIFY against the current key EF (P2=80) or by SFI (P2=80|SFI).

    ``secret=None`` builds the empty VERIFY (case 1) that reads the retry counter
    without spending a try.
    """
    p2 = 0x80
    if sfi is not None:
        _check_sfi(sfi)
        p2 |= sfi
    if secret is not None and not secret:
        raise MalformedApdu("an empty secret would read the counter; pass None for that")
    return CommandApdu(0x00, INS_VERIFY, 0x00, p2, secret or b"")


def change_reference_data(new_secret: bytes) -> CommandApdu:
    """CHANGE REFERENCE DATA ``00 24 01 80`` (after VERIFY of the old value)."""
    return CommandApdu(0x00, INS_CHANGE_REFERENCE_DATA, 0x01, 0x80, new_secret)


def change_key(new_secret: bytes) -> CommandApdu:
    """JICSAP CHANGE KEY ``80 32 00 80`` (共通 AP and 住基 AP PINs)."""
    return CommandApdu(0x80, INS_CHANGE_KEY, 0x00, 0x80, new_secret)


def compute_signature(data: bytes, scheme: int = 0x00, key_sfi: int | None = None,
                      *, current_key: bool = True) -> CommandApdu:
    """COMPUTE DIGITAL SIGNATURE ``80 2A P1 P2 Lc data 00``.

    ``scheme`` is P1 (00..05, reference §7.1). P2 is ``80`` for the selected key EF,
    ``80|SFI`` to name the key, or ``00`` for the 券面 APs' default key.
    """
    if key_sfi is not None:
        _check_sfi(key_sfi)
        p2 = 0x80 | key_sfi
    else:
        p2 = 0x80 if current_key else 0x00
    return CommandApdu(0x80, INS_SIGN, scheme, p2, data, le=SHORT_MAX_LE)


def get_challenge(length: int = 8) -> CommandApdu:
    return CommandApdu(0x00, INS_GET_CHALLENGE, 0x00, 0x00, le=length)


def get_data(tag: int, le: int = SHORT_MAX_LE, *, extended: bool = False) -> CommandApdu:
    return CommandApdu(0x00, INS_GET_DATA, tag >> 8, tag & 0xFF, le=le, extended=extended)


def internal_authenticate(challenge: bytes, key_sfi: int) -> CommandApdu:
    _check_sfi(key_sfi)
    return CommandApdu(0x00, INS_INTERNAL_AUTHENTICATE, 0x00, 0x80 | key_sfi, challenge,
                       le=SHORT_MAX_LE)
