"""The root of every error cardio raises on purpose.

A leaf module (it imports nothing of the project) so that every layer — the sans-IO
``cardio.apdu`` included — can derive its errors from one class. Each error carries the
exit code the command line gives it, so the CLI needs no ``isinstance`` chain.
"""

from __future__ import annotations

__all__ = ["CardioError"]


class CardioError(Exception):
    """Base of every error this project raises on purpose."""

    #: Exit code of the ``cardio`` command line for this error (1: generic error).
    exit_code: int = 1
