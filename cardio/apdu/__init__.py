"""Sans-IO APDU layer: command/response APDUs, status words, BER-TLV.

Imports nothing else from the project; no I/O, no logging of data.
"""

from cardio.apdu.command import CommandApdu, ResponseApdu
from cardio.apdu.errors import (
    CardError,
    CardioError,
    ConditionsNotSatisfied,
    FileNotFound,
    MalformedApdu,
    PinBlocked,
    SecurityStatusNotSatisfied,
    TlvError,
    VerificationFailed,
    WrongLength,
    check_status,
    error_for_status,
    status_meaning,
)
from cardio.apdu.tlv import Tlv

__all__ = [
    "CardError",
    "CardioError",
    "CommandApdu",
    "ConditionsNotSatisfied",
    "FileNotFound",
    "MalformedApdu",
    "PinBlocked",
    "ResponseApdu",
    "SecurityStatusNotSatisfied",
    "Tlv",
    "TlvError",
    "VerificationFailed",
    "WrongLength",
    "check_status",
    "error_for_status",
    "status_meaning",
]
