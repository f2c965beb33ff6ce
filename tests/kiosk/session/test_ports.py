"""``ConservativePort.settle_print`` when the kiosk's printer cannot be asked: the job
stays unconfirmed — not counted, the fee refunded — and the port says a page may still
come out (the end-to-end case, a printer that completed the job, is
``tests/kiosk/test_runner_crash.py``)."""

from __future__ import annotations

import socket
from pathlib import Path

from kiosk.session.journal import Journal
from kiosk.session.ports import ConservativePort
from tests.kiosk.test_runner_cli import crashed_at_print


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()  # nothing listens there now
    return port


def test_an_unreachable_printer_leaves_the_print_unconfirmed_and_says_so(tmp_path: Path
                                                                         ) -> None:
    with Journal(tmp_path / "journal.db") as j:
        crashed_at_print(j, "Tgone")
        port = ConservativePort(j, printer=f"ipp://127.0.0.1:{_closed_port()}/ipp/print")
        (r,) = j.recover(port)
        assert r.outcome == "failed_refund_due"
        assert j.ledger().refunds_due == 200 and j.ledger().documents_printed == 0
    assert any("could not be asked" in a and "may still come out" in a
               for a in port.actions), port.actions


class FakeJobsPrinter:
    """An IPP printer that knows a few jobs (Get-Jobs, Get-Job-Attributes, Cancel-Job) on
    127.0.0.1: a job's state moves along ``script`` one step per Get-Job-Attributes."""

    def __init__(self, jobs: dict[int, tuple[str, list[int]]]) -> None:
        import http.server
        import threading

        from kiosk.devices.ipp import IppMessage, Op, Tag, decode, encode

        self.jobs = jobs
        self.cancelled: list[int] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_a: object) -> None:
                pass

            def do_POST(self) -> None:
                req = decode(self.rfile.read(int(self.headers["Content-Length"])))
                groups: list[tuple[int, list[tuple[int, str, list[object]]]]] = [
                    (Tag.OPERATION, [(Tag.CHARSET, "attributes-charset", ["utf-8"])])]
                if req.code == Op.GET_JOBS:
                    for jid, (name, script) in sorted(outer.jobs.items()):
                        groups.append((Tag.JOB, [(Tag.INTEGER, "job-id", [jid]),
                                                 (Tag.NAME, "job-name", [name]),
                                                 (Tag.ENUM, "job-state", [script[0]])]))
                elif req.code in (Op.GET_JOB_ATTRIBUTES, Op.CANCEL_JOB):
                    jid = int(req.get(Tag.OPERATION, "job-id")[0])  # type: ignore[arg-type]
                    script = outer.jobs[jid][1]
                    if req.code == Op.CANCEL_JOB:
                        outer.cancelled.append(jid)
                        script[:] = [7]
                    elif len(script) > 1:
                        script.pop(0)
                    groups.append((Tag.JOB, [(Tag.ENUM, "job-state", [script[0]])]))
                body = encode(IppMessage(0, req.request_id), groups)  # type: ignore[arg-type]
                self.send_response(200)
                self.send_header("Content-Type", "application/ipp")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"ipp://127.0.0.1:{self.server.server_address[1]}/ipp/print"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _recover_with(tmp_path: Path, jobs: dict[int, tuple[str, list[int]]],
                  bound: float = 5.0) -> tuple[str, FakeJobsPrinter, ConservativePort]:
    printer = FakeJobsPrinter(jobs)
    try:
        with Journal(tmp_path / "journal.db") as j:
            crashed_at_print(j, "Tjob")
            port = ConservativePort(j, out=tmp_path / "tray", printer=printer.url)
            port.PRINT_BOUND = bound
            (r,) = j.recover(port)
    finally:
        printer.close()
    return r.outcome, printer, port


def test_a_job_still_processing_is_followed_to_completion(tmp_path: Path) -> None:
    rid = "req-Tjob"
    outcome, printer, _ = _recover_with(tmp_path, {
        3: ("slip-Tother", [9]), 4: (f"juminhyo-{rid}", [5, 5, 5, 9])})
    assert outcome == "printed" and printer.cancelled == []


def test_a_job_that_outlives_the_bound_is_cancelled_and_refunded(tmp_path: Path) -> None:
    outcome, printer, port = _recover_with(
        tmp_path, {4: ("juminhyo-req-Tjob", [3] * 10_000)}, bound=0.5)
    assert outcome == "failed_refund_due" and printer.cancelled == [4]
    assert any("canceled" in a for a in port.actions), port.actions


def test_no_job_of_this_session_means_never_sent(tmp_path: Path) -> None:
    outcome, printer, port = _recover_with(tmp_path, {4: ("juminhyo-req-Tother", [9])})
    assert outcome == "failed_refund_due" and printer.cancelled == []
    assert any("no job for this session" in a for a in port.actions), port.actions
