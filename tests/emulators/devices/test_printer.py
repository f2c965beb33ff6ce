"""The IPP client against Debian's ippeveprinter (in its own namespace): the spooled document
is what was sent, byte for byte; a jam, paper-out or offline printer mid-job is a failed
job, never a printed one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulators.devices.printer import PrinterEmulator, PrinterUnavailable, unavailable_reason
from kiosk.devices.errors import PrintJobFailed
from kiosk.devices.ipp import IppPrinter, JobState
from kiosk.devices.model import Command, CompletionCode, Interface
from kiosk.devices.services import DocumentPrinter
from tests.kiosk.devices.test_services import _cash_rig, _wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def printer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrinterEmulator]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    emu = PrinterEmulator(tmp_path_factory.mktemp("printer"), print_delay=0.4)
    try:
        emu.start()
    except PrinterUnavailable as exc:
        pytest.skip(str(exc))
    yield emu
    emu.stop()


@pytest.fixture
def client(printer: PrinterEmulator) -> Iterator[IppPrinter]:
    printer.clear()
    yield IppPrinter(printer.url, timeout=5)
    printer.clear()


def _pdf(tag: str) -> bytes:
    # Arbitrary bytes, with every byte value, framed as a PDF: the spool must keep them all.
    return b"%PDF-1.7\n%" + tag.encode() + b"\n" + bytes(range(256)) * 64 + b"\n%%EOF\n"


def _spooled(printer: PrinterEmulator, job_id: int) -> Path:
    matches = [p for p in printer.spool.iterdir()
               if p.name.startswith(f"{job_id}-") and p.suffix == ".pdf"]
    assert len(matches) == 1, list(printer.spool.iterdir())
    return matches[0]


def _print_in_background(client: IppPrinter, doc: bytes) -> tuple[threading.Thread,
                                                                  list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(client.print_document(doc, timeout=20, offline_after=1.0))
        except PrintJobFailed as exc:
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _wait_processing(printer: PrinterEmulator, client: IppPrinter) -> None:
    deadline = time.monotonic() + 10
    while client.status().state != 4:  # processing: the job is on the "engine"
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_spooled_document_is_byte_identical(printer: PrinterEmulator,
                                            client: IppPrinter) -> None:
    doc = _pdf("identical")
    result = client.print_document(doc)
    assert result.state is JobState.COMPLETED
    assert _spooled(printer, result.job_id).read_bytes() == doc


@pytest.mark.parametrize(("fault", "kind"), [("jam", "jam"), ("media-empty", "out-of-paper")])
def test_media_fault_mid_job_is_a_failed_job(printer: PrinterEmulator, client: IppPrinter,
                                             fault: str, kind: str) -> None:
    thread, out = _print_in_background(client, _pdf(fault))
    _wait_processing(printer, client)
    printer.fault(fault)  # while the job is printing
    thread.join(30)
    assert len(out) == 1 and isinstance(out[0], PrintJobFailed), out
    assert kind in str(out[0]) and "not printed" in str(out[0])


def test_offline_mid_job_is_a_failed_job(printer: PrinterEmulator, client: IppPrinter) -> None:
    thread, out = _print_in_background(client, _pdf("offline"))
    _wait_processing(printer, client)
    printer.fault("offline")
    thread.join(30)
    assert len(out) == 1 and isinstance(out[0], PrintJobFailed), out
    assert "offline" in str(out[0])
    printer.clear()
    time.sleep(0.6)  # let the abandoned job finish before the next test


def test_toner_low_is_a_warning_and_the_job_prints(printer: PrinterEmulator,
                                                   client: IppPrinter) -> None:
    printer.fault("toner-low")
    doc = _pdf("toner")
    result = client.print_document(doc)
    assert result.state is JobState.COMPLETED
    assert "toner-low" in [f.kind for f in result.events]
    assert _spooled(printer, result.job_id).read_bytes() == doc


@pytest.mark.parametrize("jam", [False, True])
def test_paid_then_jammed_hands_the_note_back(printer: PrinterEmulator, client: IppPrinter,
                                             jam: bool) -> None:
    """The integrator's nightmare — the printer jams after the money is taken — end to end:
    the note that paid waits in escrow while the certificate prints; a jam rolls the payment
    back and hands that very note back; a good print commits it."""
    unit, _coins, cash, lines = _cash_rig()
    doc = _pdf(f"paid-{jam}")

    async def main() -> tuple[str, dict[str, object]]:
        cash_svc = cash.service()
        print_svc = DocumentPrinter(IppPrinter(printer.url, timeout=5), job_timeout=20).service()
        await cash_svc.start()
        await print_svc.start()
        await cash_svc.execute(Command(Interface.CASH_ACCEPTOR, "CashInStart", {"fee": 300}))
        unit.insert(1000)
        await _wait_for(cash_svc, "CashAcceptor.InsertItemsEvent")  # held in escrow
        job = asyncio.create_task(print_svc.execute(Command(
            Interface.DOCUMENT_PRINTER, "PrintJob", {"document": doc})))
        if jam:
            await asyncio.to_thread(_wait_processing, printer, client)
            printer.fault("jam")
        printed = await asyncio.wait_for(job, 30)
        name = "CashInEnd" if printed.code is CompletionCode.SUCCESS else "CashInRollback"
        end = await cash_svc.execute(Command(Interface.CASH_ACCEPTOR, name, {"sold": True}))
        await cash_svc.stop()
        await print_svc.stop()
        return name, end.payload

    try:
        name, result = asyncio.run(main())
    finally:
        for line in lines:
            line.close()
    if jam:
        assert name == "CashInRollback" and not result["sold"]
        assert unit.returned == [1000] and unit.cassette == [] and result["refund_due"] == 0
    else:
        assert name == "CashInEnd" and result["sold"] and unit.cassette == [1000]
        assert result["change_paid"] == 700
