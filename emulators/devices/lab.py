"""The emulated kiosk peripherals together: bill validator and ccTalk bus behind ptys, the IPP
printer, and one control socket to insert money and arm faults from another process.

Control protocol (ours): a Unix socket, one JSON object per line in, one per line out
(``{"ok": true, …}`` or ``{"ok": false, "error": …}``). Requests::

    {"device": "bill_validator", "op": "insert", "yen": 1000}
    {"device": "coin_acceptor",  "op": "insert", "yen": 100}
    {"device": "bill_validator" | "coin_acceptor" | "printer", "op": "fault",
     "fault": "jam", ...fault arguments}
    {"device": "printer", "op": "clear"}
    {"op": "state"}

Each device runs on a thread of its own (the ptys) or in a process of its own (the
printer), so a wedged one cannot stall the others.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

from emulators.devices.bill import BillValidator
from emulators.devices.coin import CcTalkBusEmulator
from emulators.devices.errors import LabControlError, UnknownFault
from emulators.devices.printer import PrinterEmulator
from emulators.devices.ptyline import PtyLine


class DeviceLab:
    def __init__(self, workdir: Path, *, printer: bool = True, hopper_stock: int = 200,
                 coin_period: float = 0.002, print_delay: float = 0.3) -> None:
        self.workdir = Path(workdir).resolve()
        self.bill = BillValidator()
        self.coins = CcTalkBusEmulator(stock=hopper_stock, coin_period=coin_period)
        self.printer = PrinterEmulator(self.workdir / "printer", print_delay=print_delay) \
            if printer else None
        self.lines: list[PtyLine] = []
        self._control: socket.socket | None = None
        self._stop = threading.Event()

    @property
    def control_path(self) -> Path:
        return self.workdir / "control.sock"

    def start(self) -> DeviceLab:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bill_line = PtyLine(self.bill.receive, "bill_validator").start()
        self.coin_line = PtyLine(self.coins.receive, "coin_acceptor").start()
        self.lines = [self.bill_line, self.coin_line]
        if self.printer is not None:
            self.printer.start()
        self.control_path.unlink(missing_ok=True)
        self._control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._control.bind(str(self.control_path))
        self._control.listen(8)
        threading.Thread(target=self._serve_control, daemon=True, name="lab-control").start()
        return self

    def info(self) -> dict[str, Any]:
        return {"bill_validator": self.bill_line.path, "coin_acceptor": self.coin_line.path,
                "printer": self.printer.url if self.printer else None,
                # what the emulated printer printed: spool files named in output-tray (a
                # real printer's paper; the kiosk keeps no copy of a certificate)
                "printer_dir": str(self.printer.workdir) if self.printer else None,
                "control": str(self.control_path), "baud": 9600}

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        device = req.get("device")
        args = {k: v for k, v in req.items() if k not in ("op", "device", "fault")}
        if op == "state":
            return {"bill_validator": self.bill.snapshot(), "coin_acceptor": self.coins.snapshot(),
                    "printer": {"offline": self.printer.offline,
                                "printed": self.printer.output_tray()}
                    if self.printer else None}
        if device == "bill_validator":
            target: Any = self.bill
        elif device == "coin_acceptor":
            target = self.coins
        elif device == "printer" and self.printer is not None:
            if op == "fault":
                self.printer.fault(str(req["fault"]))
            elif op == "clear":
                self.printer.clear()
            else:
                raise UnknownFault(f"printer: unknown op {op!r}")
            return {}
        else:
            raise UnknownFault(f"unknown device {device!r}")
        if op == "insert":
            target.insert(int(req["yen"]))
        elif op == "fault":
            target.arm(str(req["fault"]), int(args.pop("count", 1)), **args)
        else:
            raise UnknownFault(f"{device}: unknown op {op!r}")
        return {}

    def _serve_control(self) -> None:
        assert self._control is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._control.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for line in f:
                try:
                    reply = {"ok": True, **self.handle(json.loads(line))}
                except Exception as exc:  # reported to the client, the lab keeps running
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                f.write(json.dumps(reply).encode() + b"\n")
                f.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._control is not None:
            self._control.close()
            self.control_path.unlink(missing_ok=True)
        for line in self.lines:
            line.close()
        if self.printer is not None:
            self.printer.stop()

    def __enter__(self) -> DeviceLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def control(path: Path | str, **request: Any) -> dict[str, Any]:
    """One request to a lab's control socket (for tests and scripts)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    if not reply.pop("ok", False):
        raise LabControlError(f"device lab control {request}: {reply.get('error')}")
    return reply
