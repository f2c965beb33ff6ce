"""Recovery ports: what :meth:`kiosk.session.journal.Journal.recover` may ask of the devices
when the kiosk starts (or when an operator runs ``cardio kiosk recover``).

:class:`ConservativePort` is the port for a kiosk whose devices cannot tell what happened
to a key — no devices configured, or devices that lost their state across the restart (the
emulated ones do; a real ID-003 unit reports its escrow after power-up, which a device port
would ask). Its rule is the journal's own: money is never guessed *in the kiosk's favour*.
An escrow whose return cannot be confirmed is held by the machine and owed back; a stack
that was asked for is taken as done for the amount journalled (the customer's money is in
the machine either way, and the unprinted document makes all of it a refund); change it
cannot pay is owed; a print it cannot confirm did not happen (refunded, slip). With an
output directory it writes the 未交付 slip there (the PDF of :mod:`kiosk.documents.slip`,
for staff to print and hand over). With the cash devices at hand the runner uses
:class:`kiosk.runner.DeviceRecoveryPort`, which asks them first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from kiosk.session.journal import Journal

__all__ = ["ConservativePort"]


class ConservativePort:
    """A :class:`~kiosk.session.journal.RecoveryPort` that never assumes money left the
    customer's side without a device saying so. ``printer`` (the kiosk's IPP printer, for
    未交付 slips), ``out`` (the device lab's emulated output tray, instead) and
    ``card_present`` (the slot) are optional."""

    def __init__(self, journal: Journal, *, out: Path | None = None,
                 card_present: Callable[[], bool] | None = None,
                 printer: str | None = None) -> None:
        self.journal = journal
        self.out = out
        self.printer = printer
        self.card_present = card_present
        self.actions: list[str] = []

    #: Seconds recovery follows a job still pending or processing at the printer before it
    #: cancels it (a certificate page takes seconds; a printer out of paper would hold it
    #: until someone loads some, long after the customer was refunded).
    PRINT_BOUND = 120.0

    def _journalled_yen(self, key: str) -> int:
        db = sqlite3.connect(self.journal.path)
        try:
            row = db.execute("SELECT yen FROM commands WHERE key=?", (key,)).fetchone()
        finally:
            db.close()
        return int(row[0]) if row else 0

    def return_escrow(self, key: str) -> tuple[int, int]:
        yen = self._journalled_yen(key)
        self.actions.append(f"{key}: escrow of {yen} not confirmed returned: owed")
        return 0, yen

    def stack_escrow(self, key: str) -> int:
        return self._journalled_yen(key)

    def pay_change(self, key: str, yen: int) -> int:
        return 0  # no hoppers to ask or pay with: the change stays owed

    def _request_id(self, key: str) -> str:
        db = sqlite3.connect(self.journal.path)
        try:
            row = db.execute("SELECT s.request_id FROM commands c JOIN sessions s"
                             " ON s.txn = c.txn WHERE c.key=?", (key,)).fetchone()
        finally:
            db.close()
        return str(row[0]) if row and row[0] else ""

    def settle_print(self, key: str) -> bool:
        """Ask the kiosk's IPP printer what became of the job ``key`` sent before the
        crash. The runner names a certificate's job ``DOCTYPE-REQUEST_ID`` (the request id
        is journalled, random and unique), so Get-Jobs finds it by name — no job id needs
        journalling, and a crash between the printer accepting the job and the kiosk
        learning its id is covered too. Completed → printed; pending or processing →
        followed to its end (cancelled past :attr:`PRINT_BOUND`); aborted, cancelled or
        not at the printer → not printed (it never will: a job not there was never sent,
        since the job is sent only after this session's print command was journalled and
        recovery runs before the next one). A printer that cannot be asked leaves the job
        unconfirmed: not counted (the fee is refunded), and the action says so, because
        the page may still come out."""
        if self.printer is None:
            return False  # no printer to ask: unconfirmed, never counted as printed
        from cardio.errors import CardioError
        from kiosk.devices.ipp import IppPrinter, JobState

        rid = self._request_id(key)
        if not rid:
            self.actions.append(f"{key}: no request id journalled: print not confirmed")
            return False
        try:
            printer = IppPrinter(self.printer, timeout=10.0)
            mine = [(job_id, state) for job_id, name, state in printer.jobs("all")
                    if name.endswith(f"-{rid}") and not name.startswith("slip-")]
            if not mine:
                self.actions.append(f"{key}: the printer has no job for this session:"
                                    " never sent, not printed")
                return False
            job_id, state = max(mine)
            state = printer.follow(job_id, bound=self.PRINT_BOUND)
        except (CardioError, OSError) as e:
            self.actions.append(f"{key}: the printer could not be asked about the job"
                                f" ({type(e).__name__}): counted unprinted and refunded,"
                                " but a page may still come out — staff check the printer")
            return False
        self.actions.append(f"{key}: the printer reports job {job_id}"
                            f" {state.name.lower()}")
        return state == JobState.COMPLETED

    def print_slip(self, key: str, txn: str, yen: int, reason: str) -> bool:
        """The slip on the kiosk's printer (it names no resident), or into the emulated
        tray when one is given (``kiosk recover --out``: the printer is then only asked
        about jobs, :meth:`settle_print`); False when neither took it — the refund stands
        in the books either way."""
        from kiosk.documents.slip import render_slip

        if self.printer is not None and self.out is None:
            from cardio.errors import CardioError
            from kiosk.devices.ipp import IppPrinter

            try:
                IppPrinter(self.printer).print_document(render_slip(txn, yen, reason),
                                                        name=f"slip-{txn}", timeout=60.0)
            except (CardioError, OSError) as e:
                self.actions.append(f"{key}: slip not printed ({type(e).__name__})")
                return False
            return True
        if self.out is None:
            return False
        from kiosk.tray import make_tray_dir, write_tray_file

        held = self.out / ".held"
        make_tray_dir(held)  # the tray's files are this user's alone (0700/0600)
        write_tray_file(held / f"slip-{txn}.pdf", render_slip(txn, yen, reason))
        return True

    def card_in_slot(self) -> bool:
        return self.card_present() if self.card_present is not None else False

    def release_pages(self, key: str) -> None:
        if self.out is not None:
            release_held(self.out)


def release_held(out: Path) -> list[Path]:
    """Open the held output: move everything in ``out/.held`` into ``out``."""
    held = out / ".held"
    moved: list[Path] = []
    if not held.is_dir():
        return moved
    for f in sorted(held.iterdir()):
        target = out / f.name
        f.replace(target)
        moved.append(target)
    return moved
