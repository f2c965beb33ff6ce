"""Status words and the typed errors they map to.

Every error carries the status word and a sentence that says what to do, because the
people who see them are kiosk operators and integrators, not card engineers. The client
layer adds which credential or file was involved through ``context``.
"""

from __future__ import annotations

from cardio.errors import EXIT_BLOCKED, EXIT_WRONG_PIN
from cardio.errors import CardioError as CardioError

SW_OK = 0x9000


class MalformedApdu(CardioError):
    """Bytes that are not a valid APDU (wrong Lc/Le arithmetic, too short, ...)."""


class TlvError(CardioError):
    """Bytes that are not valid BER-TLV as the card writes it."""


class CardError(CardioError):
    """The card answered with a status word other than 9000."""

    sw: int
    advice: str = "check the command and the card"

    def __init__(self, sw: int, context: str = "", advice: str | None = None) -> None:
        self.sw = sw
        self.context = context
        if advice is not None:
            self.advice = advice
        super().__init__(self._message())

    def _describe(self) -> str:
        return status_meaning(self.sw)

    def _message(self) -> str:
        what = self._describe()
        where = f"{self.context}: " if self.context else ""
        return f"{where}{what} ({self.sw:04X}); {self.advice}"


class VerificationFailed(CardError):
    """A wrong PIN or 照合番号 (63Cx)."""

    exit_code = EXIT_WRONG_PIN

    def __init__(self, sw: int, context: str = "", advice: str | None = None) -> None:
        # 6300: a key without a retry limit, so no count to report.
        self.tries_left: int | None = sw & 0x0F if sw & 0xFFF0 == 0x63C0 else None
        super().__init__(sw, context, advice)

    def _describe(self) -> str:
        if self.tries_left is None:
            return "wrong value"
        if self.tries_left == 0:
            return "wrong value; no tries are left and the credential is now blocked"
        plural = "try" if self.tries_left == 1 else "tries"
        return f"wrong value; {self.tries_left} {plural} left"

    advice = "check the value before trying again; the counter resets only on success"


class PinBlocked(CardError):
    """The credential is blocked (6983/6984): no try is spent, none is left."""

    exit_code = EXIT_BLOCKED
    advice = (
        "it can only be reset at a municipal office or through the PIN-reset service;"
        " do not retry"
    )


class SecurityStatusNotSatisfied(CardError):
    advice = "verify the PIN (or 照合番号) that protects it first"


class ConditionsNotSatisfied(CardError):
    advice = "the card refuses this command in its current state"


class FileNotFound(CardError):
    advice = "the application or file does not exist on this card"


class IncorrectParameters(CardError):
    advice = "P1/P2 are not supported by this command"


class WrongLength(CardError):
    advice = "fix Lc/Le (retry with extended length if the object is large)"


class OffsetOutOfRange(CardError):
    advice = "the offset is past the end of the file"


class WrongData(CardError):
    advice = "the data field is invalid for this command"


class DataObjectNotFound(CardError):
    advice = "the card does not hold this data object"


class InstructionNotSupported(CardError):
    advice = "the card does not support this instruction"


class ClassNotSupported(CardError):
    advice = "the card does not support this CLA (only logical channel 0 works)"


class IncompatibleFileStructure(CardError):
    advice = "the file cannot be accessed this way"


class SecureMessagingError(CardError):
    advice = "the secure channel is gone; select the application again"


_MEANINGS: dict[int, str] = {
    0x9000: "success",
    0x6281: "part of the returned data may be corrupted",
    0x6282: "end of file reached before Le bytes",
    0x6300: "verification failed",
    0x6581: "memory failure",
    0x6700: "wrong length",
    0x6881: "logical channel not supported",
    0x6882: "secure messaging not supported",
    0x6981: "command incompatible with file structure",
    0x6982: "security status not satisfied",
    0x6983: "authentication method blocked",
    0x6984: "credential blocked",
    0x6985: "conditions of use not satisfied",
    0x6986: "command not allowed (no current EF)",
    0x6987: "expected secure messaging data objects missing",
    0x6988: "incorrect secure messaging data objects",
    0x69FC: "secure channel destroyed",
    0x6A80: "incorrect data field",
    0x6A81: "function not supported",
    0x6A82: "file or application not found",
    0x6A86: "incorrect P1/P2",
    0x6A88: "referenced data not found",
    0x6B00: "offset outside the file",
    0x6D00: "instruction not supported",
    0x6E00: "class not supported",
    0x6F00: "no precise diagnosis",
    0x66F1: "session key delivery not configured",
}

_TYPES: dict[int, type[CardError]] = {
    0x6984: PinBlocked,
    0x6983: PinBlocked,
    0x6982: SecurityStatusNotSatisfied,
    0x6985: ConditionsNotSatisfied,
    0x6A82: FileNotFound,
    0x6A86: IncorrectParameters,
    0x6B00: OffsetOutOfRange,
    0x6700: WrongLength,
    0x6A80: WrongData,
    0x6A88: DataObjectNotFound,
    0x6D00: InstructionNotSupported,
    0x6E00: ClassNotSupported,
    0x6881: ClassNotSupported,
    0x6981: IncompatibleFileStructure,
    0x6987: SecureMessagingError,
    0x6988: SecureMessagingError,
    0x69FC: SecureMessagingError,
}


def status_meaning(sw: int) -> str:
    """A short English meaning of a status word."""
    if sw & 0xFFF0 == 0x63C0:
        return f"verification failed, {sw & 0xF} tries left"
    if sw >> 8 == 0x61:
        return f"{sw & 0xFF or 256} more response bytes available"
    if sw >> 8 == 0x6C:
        return f"wrong Le; the card has {sw & 0xFF or 256} bytes"
    return _MEANINGS.get(sw, "unknown status")


def error_for_status(sw: int, context: str = "") -> CardError:
    """The typed error for a non-9000 status word."""
    if sw & 0xFFF0 == 0x63C0 or sw == 0x6300:
        return VerificationFailed(sw, context)
    return _TYPES.get(sw, CardError)(sw, context)


def check_status(sw: int, context: str = "") -> None:
    """Raise the typed error unless ``sw`` is 9000."""
    if sw != SW_OK:
        raise error_for_status(sw, context)
