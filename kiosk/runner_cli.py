"""``cardio kiosk ledger|recover|issue|run``: the kiosk's journal and its runner on the
command line (registered by :mod:`kiosk.cli`).

* ``ledger --journal PATH`` — the books: cash in, change out, fees of printed documents,
  refunds due, open sessions, documents printed, and whether they balance (exit 24 if not,
  or if a stored value cannot be a session's money); read-only, and only a kiosk journal;
* ``recover --journal PATH [--out DIR] [--devices FILE] [--reader SLOT]`` — bring
  unfinished sessions to an outcome (also run at every start of ``issue`` and ``run``), with
  the conservative port of :mod:`kiosk.session.ports` (and the hoppers of ``--devices`` for
  change still owed; with ``--reader``, nothing is released while a card is in the slot);
  a session whose journal rows do not validate is left untouched for staff (exit 24);
* ``issue`` — one headless issuance: a software or PC/SC card, the center over HTTP, the
  cash devices named in ``--devices`` (the ``kiosk devices check`` TOML), the document
  rendered into ``--out``;
* ``run --config FILE`` — the kiosk itself (:mod:`kiosk.run`).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from cardio.errors import CardioError, UsageError
from cardio.hardening import no_core_dumps
from kiosk.session.journal import (
    LEFT_FOR_STAFF,
    Journal,
    JournalDamaged,
    JournalError,
    Recovered,
    refuse_left_for_staff,
)

__all__ = ["register"]


class BooksUnbalanced(CardioError):
    """The journal's books do not balance: cash in ≠ change out + fees printed + refunds
    (the cash-ledger code: an attendant must settle it)."""

    exit_code = 24


class NotIssued(CardioError):
    """``kiosk issue`` ended without a printed document (refused, cancelled, refund due);
    the JSON says which and why."""

    exit_code = 26


def _journal(path: Path, *, create: bool = False, readonly: bool = False) -> Journal:
    if not create and not path.is_file():
        raise JournalError(f"no kiosk journal at {path}")
    return Journal(path, readonly=readonly, create=create)


def cmd_ledger(args: argparse.Namespace) -> int:
    from cardio.cli import emit

    with _journal(args.journal, readonly=True) as j:  # reading the books changes nothing
        ledger = j.ledger()
    d = ledger.as_dict()
    emit(args, d, [f"{k:18} {v}" for k, v in d.items()])
    return 0 if ledger.balanced else BooksUnbalanced.exit_code


def cmd_recover(args: argparse.Namespace) -> int:
    from cardio.cli import emit
    from kiosk.runner import start_recovery

    reader = getattr(args, "reader", None)
    card_present = None
    if reader:  # the slot is asked: nothing is released while a card is in it
        from kiosk.run import Slot

        card_present = Slot(reader).present
    devices: dict[str, Any] = {}
    if args.devices is not None:
        from kiosk.devices.cli import load_config

        devices = load_config(args.devices)
    # 未交付 slips go to the kiosk's printer when the devices file names one (a kiosk with
    # a printer keeps no output directory); else into --out, the emulated tray. The printer
    # is asked what became of a job sent before the crash either way (settle_print).
    printer = devices.get("printer", {}).get("url")
    with _journal(args.journal) as j:
        cash = None
        if args.devices is not None:  # the devices are asked, and the hoppers pay
            from kiosk.runner import CashAdapter

            cash = CashAdapter(devices, journal=args.journal)
        try:
            done = start_recovery(j, args.out, cash, card_present=card_present,
                                  strict=False, printer=printer)
        finally:
            if cash is not None:
                cash.stop()
        left = [r for r in done if r["outcome"] == LEFT_FOR_STAFF]
        try:
            ledger: dict[str, Any] | None = j.ledger().as_dict()
        except JournalDamaged:
            if not left:
                raise
            ledger = None  # the books cannot be added up: the line below says why
    emit(args, {"recovered": done, "ledger": ledger},
         [f"{r['txn']}: {r['outcome']}" + (" (held: card in slot)" if r["held_for_card"]
                                           else "") + "".join(f"\n  {a}" for a in r["actions"])
          + (f"\n  {r['problem']}" if r.get("problem") else "")
          for r in done] or ["nothing to recover"])
    if left:
        refuse_left_for_staff([Recovered(r["txn"], r["outcome"], False, (), r["problem"])
                               for r in left])
    return 0


def _yen_list(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--insert takes yen amounts separated by commas: {value!r}") from None
    valid = {10, 50, 100, 500, 1000, 2000, 5000, 10000}
    bad = [v for v in out if v not in valid]
    if bad:
        raise UsageError(f"--insert: no such bill or coin: {bad[0]} (yen: "
                         f"{', '.join(map(str, sorted(valid)))})")
    return out


def cmd_issue(args: argparse.Namespace) -> int:
    no_core_dumps()  # the PIN and the certificate live in this process: never in a core
    from cardio.cli import SecretSource, emit
    from kiosk.devices.cli import load_config
    from kiosk.runner import (
        CardAdapter,
        CashAdapter,
        HeadlessUi,
        Keypad,
        KioskError,
        PrinterAdapter,
        Runner,
        find_credentials,
        lab_feeder,
        start_recovery,
    )

    insert = _yen_list(args.insert)
    pin = SecretSource(args).get("auth PIN")  # from $NAME only; never an argument
    if not (len(pin) == 4 and pin.isascii() and pin.isdigit()):
        raise UsageError(f"the auth PIN in ${args.pin_env} is not 4 digits")  # not echoed
    creds = find_credentials(args.center, args.credentials)
    creds.center_url = args.center
    devices = load_config(args.devices)
    control = devices.get("emulator", {}).get("control")
    if insert and not control:
        raise UsageError("--insert needs emulated devices: [emulator] control = SOCKET in"
                         " the --devices file (a real kiosk takes money from people)")
    printer_url = devices.get("printer", {}).get("url")
    if printer_url and args.tray is not None:
        raise UsageError("--tray is the emulated output tray for a kiosk without a printer;"
                         f" {args.devices} names one ([printer] url): drop --tray")
    if not printer_url and args.tray is None:
        raise UsageError(f"{args.devices} names no printer ([printer] url): give --tray DIR"
                         " for the emulated output tray")
    tray_warning: str | None = None
    if args.tray is not None:
        from kiosk.tray import announce_tray, make_tray_dir

        tray_warning = announce_tray(args.tray)  # it keeps certificates: never by mistake
        make_tray_dir(args.tray)
    printer = PrinterAdapter(args.tray, printer_url)
    args.journal.parent.mkdir(parents=True, exist_ok=True)
    journal = _journal(args.journal, create=True)
    try:
        keypad = Keypad()
        cash = CashAdapter(devices, journal=args.journal)
        from kiosk.run import Slot

        # A card already in the slot holds what recovery would release (the interlock).
        recovered = start_recovery(journal, args.tray, cash,
                                   card_present=Slot(args.reader).present,
                                   printer=printer_url)
        ui = HeadlessUi(pin, args.document, tuple(args.option or ()), insert,
                        lab_feeder(str(control)) if control else lambda _y: None)
        del pin

        async def main() -> Any:
            runner = Runner(journal, creds=creds, card=CardAdapter(args.reader, keypad),
                            cash=cash, printer=printer, ui=ui, keypad=keypad)
            await cash.start()
            try:
                return await runner.run_session(deadline=args.deadline)
            finally:
                cash.stop()
                await runner.aclose()

        result = asyncio.run(main())
        ledger = journal.ledger()
    finally:
        journal.close()
    # A headless cancel says why the scripted customer gave up (wrong PIN, short money).
    reason = ui.note if result.outcome == "cancelled" and ui.note else result.reason
    obj = {"request_id": result.request_id, "txn": result.txn, "document": result.document
           or args.document, "fee": result.fee, "paid": result.paid, "change": result.change,
           "returned": result.paid - result.cash_in, "refund_due": result.refund,
           "outcome": result.outcome, "reason": reason,
           "files": result.files, "recovered": recovered, "balanced": ledger.balanced}
    if args.tray is not None:
        obj["tray"], obj["warning"] = str(args.tray), tray_warning
    emit(args, obj, [f"{result.outcome}: {args.document} (request {result.request_id})",
                     f"fee {result.fee} yen, paid {result.paid}, change {result.change},"
                     f" refund due {result.refund}" + (f", reason {reason}" if reason else "")]
         + [f"  {f}" for f in result.files])
    if result.outcome not in ("printed", "refused", "cancelled", "failed_refund_due"):
        raise KioskError(f"unexpected outcome {result.outcome!r}")
    return 0 if result.outcome == "printed" else NotIssued.exit_code


def register(ksub: Any) -> None:
    """Add ``ledger``, ``recover``, ``issue`` and ``run`` to the ``kiosk`` sub-commands."""
    p = ksub.add_parser("ledger", help="the journal's books: cash in, change, fees, refunds")
    p.add_argument("--journal", type=Path, required=True)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_ledger)

    p = ksub.add_parser("recover", help="settle unfinished sessions (also run at every start)")
    p.add_argument("--journal", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None,
                   help="the emulated output tray (device lab) where 未交付 slips are"
                        " written; without it they go to the --devices file's printer")
    p.add_argument("--devices", type=Path, default=None,
                   help="the kiosk's devices TOML: change still owed is paid by its hoppers")
    p.add_argument("--reader", default=argparse.SUPPRESS,
                   help="the card slot (emu:DIR or a PC/SC reader name): while a card is"
                        " in it nothing is released (without it, you vouch the slot is"
                        " empty)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_recover)

    p = ksub.add_parser("issue", help="one headless issuance on emulated cash devices")
    p.add_argument("--reader", required=True, help="emu:DIR or a PC/SC reader name")
    p.add_argument("--center", required=True, help="the center's URL")
    p.add_argument("--document", required=True, help="document type (juminhyo, …)")
    p.add_argument("--option", action="append", metavar="NAME", help="an option to tick")
    p.add_argument("--pin-env", metavar="NAME", required=True,
                   help="read the auth PIN from $NAME")
    p.add_argument("--insert", required=True, metavar="YEN[,YEN…]",
                   help="bills and coins to insert, in order")
    p.add_argument("--journal", type=Path, required=True)
    p.add_argument("--tray", "--out", dest="tray", type=Path, default=None,
                   help="the emulated output tray (a directory; device lab and tests) when"
                        " the devices file names no printer; with a printer nothing of the"
                        " certificate is written to disk")
    p.add_argument("--devices", type=Path, required=True,
                   help="devices TOML (as for 'kiosk devices check', plus [emulator] control)")
    p.add_argument("--credentials", type=Path, default=None,
                   help="kiosk credentials directory (default: the emulated operator's)")
    p.add_argument("--deadline", type=float, default=300.0,
                   help="give up (journal left for recover) after this many seconds")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_issue)

    from kiosk import run

    run.register(ksub)
