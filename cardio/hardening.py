"""Keep a process holding personal data out of core dumps.

Why (review of issue 22, finding 4): ``cardio kiosk run`` under ``ulimit -c unlimited``,
sent SIGQUIT while a session waited for the card, left an 84 MB core file with the
resident's name, address, birth date and 個人番号 — the certificate the kiosk keeps only in
memory (issue 31) was on disk after all. A process that holds certificates, PINs or face
photos therefore calls :func:`no_core_dumps` before it reads any of them:

* ``RLIMIT_CORE`` soft and hard limit 0: no core file, and no child can raise it again
  (the hard limit only goes down without privilege). It covers ``core_pattern`` files
  written by the kernel.
* ``prctl(PR_SET_DUMPABLE, 0)``: a ``core_pattern`` *pipe* (systemd-coredump, apport) is
  not bound by ``RLIMIT_CORE`` for every handler, and a dumpable process also lets any
  process of the same user ``ptrace`` it or read ``/proc/PID/mem``; non-dumpable closes
  both. ``execve`` resets it, so a program the process starts decides for itself.

Both are Linux facts (``prctl`` is Linux-only; ``RLIMIT_CORE`` exists on every POSIX
system); elsewhere what exists is applied and the rest skipped, never an error — a kiosk
must not fail to start because a hardening step does not exist on its platform.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["Hardened", "is_dumpable", "no_core_dumps"]

#: <linux/prctl.h>
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


@dataclass(frozen=True)
class Hardened:
    """What :func:`no_core_dumps` could apply (``False``: not on this platform)."""

    core_limit: bool
    not_dumpable: bool


def _prctl() -> Any:
    """libc's ``prctl`` (``None``: not Linux, or no libc to call)."""
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.prctl
        fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                       ctypes.c_ulong]
        fn.restype = ctypes.c_int
        return fn
    return None


def no_core_dumps() -> Hardened:
    """No core file of this process, and not dumpable (see the module docstring). Call it
    first thing in a command that will hold personal data; safe to call more than once."""
    core = False
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        core = True
    dumpable = False
    prctl = _prctl()
    if prctl is not None:
        dumpable = prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    return Hardened(core_limit=core, not_dumpable=dumpable)


def is_dumpable() -> bool | None:
    """``PR_GET_DUMPABLE`` of this process (``None``: not Linux)."""
    prctl = _prctl()
    return None if prctl is None else bool(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
