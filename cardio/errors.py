"""The root of every error cardio raises on purpose, and the exit codes they carry.

A leaf module (it imports nothing of the project) so that every layer — the sans-IO
``cardio.apdu`` included — can derive its errors from one class. Each error carries the
exit code the command line gives it as a class attribute, so the CLI needs no
``isinstance`` chain and a plug-in's errors get their codes the same way.

The codes (documented for users in the README):

====  ===============================================================================
1     any other error (card, file, data, a damaged card directory)
2     usage (a missing or malformed option, an unset variable, no configured key)
3     wrong PIN / 照合番号 (tries remain)
4     blocked credential
5     card removed or reader failure
6     a certificate or signature checked but not valid (revoked, expired, unknown, ...)
70    internal error: a bug, please report it
130   interrupted (Ctrl-C)
====  ===============================================================================
"""

from __future__ import annotations

__all__ = [
    "EXIT_BLOCKED",
    "EXIT_ERROR",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_VALID",
    "EXIT_TRANSPORT",
    "EXIT_USAGE",
    "EXIT_WRONG_PIN",
    "CardioError",
    "UsageError",
]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_WRONG_PIN = 3
EXIT_BLOCKED = 4
EXIT_TRANSPORT = 5
EXIT_NOT_VALID = 6
EXIT_INTERNAL = 70  # EX_SOFTWARE of sysexits.h
EXIT_INTERRUPTED = 130


class CardioError(Exception):
    """Base of every error this project raises on purpose."""

    #: Exit code of the ``cardio`` command line for this error (1: generic error).
    exit_code: int = EXIT_ERROR


class UsageError(CardioError):
    """The command line or the configuration is incomplete or malformed: the user fixes
    the invocation, nothing is wrong with the card or the data."""

    exit_code = EXIT_USAGE
