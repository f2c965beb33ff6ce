"""Errors of the emulated peripherals, :class:`~cardio.errors.CardioError` subclasses so
the control socket, the ``cardio emu devices`` command and tests all see one line with a
reason, never a traceback."""

from __future__ import annotations

from cardio.errors import CardioError


class UnknownFault(CardioError, ValueError):
    """A fault or control operation the emulated device does not have; the message lists
    the ones it has. (Also a ``ValueError``: the caller passed a wrong value.)"""


class LabControlError(CardioError):
    """The device lab's control socket refused a request; the message is its reason."""
