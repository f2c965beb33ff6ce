"""A serial line for an emulated device: a pseudo-terminal pair, the device on the master side
and the slave's path handed to the driver, which opens it with pyserial as it would
``/dev/ttyUSB0``.

Why a pty and not a socket: the driver under test is the integrator's real pyserial code,
unchanged — it sets 9600 baud and parity with termios, reads with timeouts, flushes buffers —
and a pty is the only thing on Linux that behaves like a serial port for all of that.
The emulator keeps its own descriptor of the slave open so the line does not hang up when a
driver closes and reopens it (a reconnect).

A Linux pty quirk handled here: a pty silently drops parity (PARENB), and a ``tcsetattr``
whose only change is one the pty drops fails with EINVAL. pyserial always applies its
settings on open, so a driver opening 8E1 a *second* time would fail. The line therefore
puts the slave's nominal speed back to 38400 after every exchange: the next open then
changes the speed too, and succeeds — with no effect on the bytes.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import termios
import threading
import tty
from collections.abc import Callable


class PtyLine:
    """Serve ``answer(bytes_in) -> bytes_out`` on a fresh pty from a thread of its own."""

    def __init__(self, answer: Callable[[bytes], bytes], name: str) -> None:
        self._answer = answer
        self.name = name
        self.master, self._slave = pty.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes as they are
        self.path = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pty-{name}", daemon=True)
        self.bytes_in = 0
        self.bytes_out = 0

    def start(self) -> PtyLine:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                self._keep_reconfigurable()
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                continue  # no reader on the slave side right now
            self.bytes_in += len(data)
            self._keep_reconfigurable()
            out = self._answer(data)
            if out:
                self.bytes_out += len(out)
                os.write(self.master, out)

    def _keep_reconfigurable(self) -> None:
        try:
            attrs = termios.tcgetattr(self._slave)
            if attrs[4] != termios.B38400:
                attrs[2] = (attrs[2] & ~termios.CBAUD) | termios.B38400
                attrs[4] = attrs[5] = termios.B38400
                termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
        except termios.error:
            pass

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
