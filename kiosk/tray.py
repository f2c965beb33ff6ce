"""The emulated output tray (``[kiosk] tray`` / ``kiosk issue --tray``): a directory that
stands in for a printer in the device lab, tests and demos — and so keeps every certificate
it "prints" as a PDF file with the resident's name, address, birth date and 個人番号.

Why this module (review of issue 22, finding 10): a kiosk configured with a tray instead of
``[printer]`` ran without a word about it, its ready line did not mention the tray, and the
PDFs were written 0644 — readable by every user of the machine. A kiosk must never run so
by mistake, so a tray is announced loudly (a warning line on stderr, and ``"tray"`` with a
``"warning"`` in the machine-readable output), and what it keeps is private to the kiosk's
user: files 0600, directories 0700 when this process creates them (an existing directory's
mode is the operator's choice and is left alone).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["TRAY_WARNING", "announce_tray", "make_tray_dir", "tray_warning",
           "write_tray_file"]

#: The warning's text; ``{tray}`` is the directory.
TRAY_WARNING = ("emulated output tray {tray}: every certificate is kept there as a PDF file"
                " with the resident's personal data — device lab and tests only; a kiosk"
                " prints to its [printer] and keeps nothing")


def tray_warning(tray: Path) -> str:
    """The one-line warning for ``tray``."""
    return TRAY_WARNING.format(tray=tray)


def announce_tray(tray: Path) -> str:
    """Say on stderr (one line, ``warning: …``) that this kiosk writes into an emulated
    tray; returns the warning for the command's machine-readable output."""
    text = tray_warning(tray)
    sys.stderr.write(f"warning: {text}\n")
    sys.stderr.flush()
    return text


def make_tray_dir(directory: Path) -> None:
    """Create ``directory`` (and its parents) if missing; the directory itself 0700."""
    if directory.is_dir():
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        return
    os.chmod(directory, 0o700)  # whatever the umask


def write_tray_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, readable by this user alone (0600, also when the file
    existed with a wider mode); a symlink planted at ``path`` is refused, not followed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
