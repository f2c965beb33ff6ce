"""Errors of the kiosk devices, all :class:`~cardio.errors.CardioError` subclasses.

Exit codes: 20 a device did not answer, 21 a device reported a fault, 22 bad configuration,
23 a print job failed.
"""

from __future__ import annotations

from cardio.errors import CardioError


class DeviceError(CardioError):
    """A kiosk device could not do what was asked."""

    exit_code = 21


class DeviceTimeout(DeviceError):
    """The device did not answer in time (cable, power, or a wedged unit)."""

    exit_code = 20


class FrameError(DeviceError):
    """Bytes on the line that are not a valid frame (checksum, length, or echo)."""


class DeviceFault(DeviceError):
    """The device reported a fault (jam, cassette full, hopper empty, cheat …)."""


class DeviceValueError(DeviceError, ValueError):
    """A request the device protocol cannot carry (a frame too long, a count out of range,
    a negative price): the caller's mistake, refused before anything reaches the line."""


class DeviceConfigError(DeviceError):
    """A device configuration file is missing, malformed, or names an unknown device."""

    exit_code = 22


class PrintJobFailed(DeviceError):
    """A print job ended in a state other than completed: nothing may be treated as printed."""

    exit_code = 23
