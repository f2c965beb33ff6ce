"""Typed refusals of the emulated center and municipalities."""

from __future__ import annotations

from cardio.errors import CardioError
from emulators.issuance.rules import REASONS

__all__ = ["Refused"]


class Refused(CardioError):
    """A request the service will not serve: HTTP status, a stable code (the kiosk maps it
    to a screen) and a message. Messages never carry personal data."""

    def __init__(self, status: int, code: str, message: str | None = None) -> None:
        if message is None:
            message = REASONS[code][0] if code in REASONS else code
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
