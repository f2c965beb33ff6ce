"""Raw HTTP/1.1 probes for the servers' body limits, and the resident memory of a server
process — shared by the facepin and CA server tests (issue 8, item 5)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

FULL_SIZE = os.environ.get("CARDIO_FULL_SIZE") == "1"
"""``CARDIO_FULL_SIZE=1`` runs the hostile-body tests at the issue's sizes (300 MB
streamed per case, 100 slow senders); CI runs them bounded (64 MB, 40)."""
HOSTILE_STREAM = (300 if FULL_SIZE else 64) << 20
SLOW_SENDERS = 100 if FULL_SIZE else 40


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


class RssSampler:
    """Samples a process's VmRSS every ``period`` seconds in a thread; ``peak`` in KiB."""

    def __init__(self, pid: int, period: float = 0.02) -> None:
        self.pid, self.period, self.peak = pid, period, rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(self.period)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer; 0 when the server closed without one."""
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") else 0


def exchange(host: str, port: int, head: bytes, body: bytes = b"", *, stream: int = 0,
             chunk: int = 1 << 16, timeout: float = 10.0) -> bytes:
    """Send a request head, then ``body``, then up to ``stream`` more bytes (stopping as
    soon as the server answers or closes); return what the server answered."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(head + body)
        sent = 0
        s.setblocking(False)
        answer = b""
        deadline = time.monotonic() + timeout
        block = b"x" * chunk
        while time.monotonic() < deadline:
            try:
                got = s.recv(65536)
                if not got:
                    break
                answer += got
                if b"\r\n\r\n" in answer:
                    break
                continue
            except BlockingIOError:
                pass
            except OSError:
                break
            if sent < stream:
                try:
                    sent += s.send(block)
                except BlockingIOError:
                    time.sleep(0.001)
                except OSError:  # the server closed on us: read what it said
                    s.setblocking(True)
                    with contextlib.suppress(OSError):
                        answer += s.recv(65536)
                    break
            else:
                time.sleep(0.005)
        return answer


def slow_sender(host: str, port: int, head: bytes, seconds: float,
                done: threading.Event, answers: list[int]) -> threading.Thread:
    """A connection that sends its body one byte every 0.1 s for ``seconds``, then appends
    the status the server answered (0 for none) to ``answers``."""
    def run() -> None:
        answer = b""
        try:
            conn = socket.create_connection((host, port), timeout=seconds + 5)
        except OSError:
            answers.append(-1)
            return
        with conn:
            try:
                conn.sendall(head)
                end = time.monotonic() + seconds
                while time.monotonic() < end and not done.is_set():
                    conn.sendall(b"x")
                    time.sleep(0.1)
            except OSError:
                pass
            conn.settimeout(0.5)
            with contextlib.suppress(OSError):
                answer = conn.recv(4096)
        answers.append(status_of(answer))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t
