"""The vpcd bridge: plugs a software card into the real ``pcscd`` exactly as hardware
would, through vsmartcard's vpcd driver (``shared/reference/pcsc-vpcd.md`` §3, §11.1).

vpcd listens on TCP (35963 for ``Virtual PCD 00 00``, 35964 for ``00 01``); a card is a
client that connects — that is insertion — and closes — that is removal. Every message is
a 2-byte big-endian length and the payload. A 1-byte payload is a control code (0 off,
1 on, 2 reset, 4 "send the ATR", the only one answered); anything longer is an APDU.

Debian 12's vpcd 3.3 writes the length and the APDU as two TCP segments, so with the
card's delayed ACK every APDU would wait ~40 ms: ``TCP_QUICKACK`` is re-armed before every
``recv()`` (Linux clears it after use), which brings the round trip to ~80 µs.

Failures: pcscd waits for an answer to every APDU, so the bridge always gives one. An
unexpected exception from the card (a damaged card directory, a bug) is answered with
``6F00`` (no precise diagnosis), logged as one line, and the bridge keeps serving; the
next APDU may well succeed (the file repaired). A lost connection to vpcd (pcscd
restarted) is a removal: the bridge connects again as soon as vpcd listens. Only an
error in the bridge itself ends its thread; :func:`serve_forever` then stops every bridge
and raises :class:`BridgeFailed`, so a serving process exits with a message instead of
hanging with a dead slot.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cardio.constants import VPCD_PORT
from cardio.errors import CardioError
from cardio.transport import CardRemovedError
from emulators.card.card import Faults, SoftwareCard

log = logging.getLogger(__name__)

SW_NO_DIAGNOSIS = b"\x6f\x00"
"""ISO 7816-4: "no precise diagnosis" — the answer to an APDU the card failed on."""


class BridgeError(CardioError):
    """The bridge cannot be set up as asked (a port out of range)."""

    exit_code = 2


class BridgeFailed(CardioError):
    """A bridge thread died: its slot no longer answers pcscd."""


def check_port(port: int) -> int:
    """A TCP port a card can connect to (1..65535), or :class:`BridgeError`."""
    if not 0 < port < 65536:
        raise BridgeError(f"port {port} is out of range: vpcd ports are 1..65535"
                          f" (35963 for 'Virtual PCD 00 00')")
    return port

MIN_OUT_SECONDS = 0.6
"""How long a removed card stays out before it may connect again: longer than pcscd's
~400 ms presence poll, or vpcd may never notice the removal and never accept the new
connection (seen with Debian's vpcd 3.3)."""
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4
TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)


class TrivialCard:
    """A card that answers ``9000`` to everything: the floor for round-trip benchmarks
    (the cost of pcscd + vpcd + TCP with no card logic at all)."""

    atr = bytes.fromhex("3BE000FF8131FE4514")

    def __init__(self) -> None:
        self.present = True
        self.faults = Faults()

    def transmit(self, raw: bytes) -> bytes:
        return b"\x90\x00"

    def reset(self) -> bytes:
        return self.atr

    power_on = reset

    def power_off(self) -> None:
        pass

    def insert(self) -> None:
        self.present = True

    def remove(self) -> None:
        self.present = False


class _Closed(Exception):
    pass


@dataclass(frozen=True)
class LinkModel:
    """A slower link between reader and card than a contact reader's, for measuring what
    each APDU costs there: a contactless card answers after a radio round trip (ISO 14443
    frame exchange, waiting time, the reader's own turnaround — tens of ms per APDU on
    phones and cheap readers) and moves bytes at 106-848 kbit/s. The bridge waits
    ``cost()`` before each answer; control codes (power, ATR) are not delayed."""

    apdu_seconds: float = 0.0
    """Fixed cost of one command-response exchange."""
    byte_seconds: float = 0.0
    """Cost per byte of command and response (about 94 µs at 106 kbit/s: 10 etu a byte)."""

    def cost(self, command: int, response: int) -> float:
        return self.apdu_seconds + self.byte_seconds * (command + response)


CONTACT = LinkModel()


@dataclass
class BridgeStats:
    apdus: int = 0
    controls: dict[int, int] = field(default_factory=dict)
    link_seconds: float = 0.0
    """Time the link model added (the sum of its costs, not a measurement)."""


class VpcdBridge:
    """One software card in one vpcd slot, served from a background thread.

    ``insert()`` connects (retrying until vpcd listens), ``remove()`` closes the socket.
    The card's own fault hooks work through the bridge: when the card reports removal
    mid-command, the bridge closes the connection without answering, as a pulled card
    would.
    """

    def __init__(self, card: SoftwareCard | TrivialCard, port: int = VPCD_PORT,
                 host: str = "127.0.0.1", *, on_event: Callable[[str], None] | None = None,
                 quickack: bool = True) -> None:
        """``quickack=False`` only exists to measure what TCP_QUICKACK saves."""
        self.card = card
        self.quickack = quickack
        self.port = check_port(port)
        self.host = host
        self.stats = BridgeStats()
        self.on_event = on_event
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._want_inserted = threading.Event()
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.reader_name = ""
        """The PC/SC name pcscd gives this slot, once known."""
        self._removed_at = 0.0
        self.failure: BaseException | None = None
        """Why the bridge thread died (None while it runs or after a clean stop)."""
        self.card_errors = 0
        """APDUs the card failed on (answered 6F00)."""
        self.link = CONTACT
        """The modelled reader-card link (:class:`LinkModel`); contact = no delay."""

    # -- public control ----------------------------------------------------------------------
    def start(self, inserted: bool = True) -> VpcdBridge:
        if inserted:
            self._want_inserted.set()
        self._thread = threading.Thread(target=self._run, name=f"vpcd-{self.port}", daemon=True)
        self._thread.start()
        return self

    def insert(self, timeout: float = 10.0) -> None:
        self.card.insert()
        self._want_inserted.set()
        if not self.connected.wait(timeout):
            raise TimeoutError(f"vpcd on port {self.port} did not accept the card")

    def remove(self) -> None:
        self._want_inserted.clear()
        self._close()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._want_inserted.set()  # wake the loop
        self._close()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the loop -----------------------------------------------------------------------------
    def _close(self) -> None:
        # Not connected any more before the peer can see the socket close, so whoever
        # reacts to the close observes a consistent state.
        self.connected.clear()
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _emit(self, event: str) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.failure = exc
            log.error("vpcd bridge on port %d died: %s: %s", self.port, type(exc).__name__, exc)
            self._close()
            self._emit(f"bridge failed: {type(exc).__name__}: {exc}")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._want_inserted.wait()
            if self._stop.is_set():
                return
            wait = self._removed_at + MIN_OUT_SECONDS - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                sock = socket.create_connection((self.host, self.port), timeout=2.0)
            except OSError:
                time.sleep(0.05)  # vpcd not listening yet
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sock = sock
            self.card.insert()
            self.connected.set()
            self._emit("inserted")
            pulled = False
            try:
                self._serve(sock)
            except CardRemovedError:
                pulled = True
            except (_Closed, OSError):
                pass
            if pulled:
                # A fault pulled the card: it stays out until insert() is called.
                self._want_inserted.clear()
            self._close()
            self.card.remove()
            self._removed_at = time.monotonic()
            self._emit("removed")

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if self.quickack:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise _Closed
            buf += chunk
        return bytes(buf)

    @staticmethod
    def _send(sock: socket.socket, payload: bytes) -> None:
        sock.sendall(struct.pack(">H", len(payload)) + payload)

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            (length,) = struct.unpack(">H", self._recv_exact(sock, 2))
            payload = self._recv_exact(sock, length) if length else b""
            if length == 1:
                code = payload[0]
                self.stats.controls[code] = self.stats.controls.get(code, 0) + 1
                if code == CTRL_ATR:
                    self._send(sock, self.card.atr)
                elif code in (CTRL_OFF, CTRL_RESET, CTRL_ON):
                    try:
                        self.card.power_off() if code == CTRL_OFF else self.card.reset()
                    except Exception as exc:  # no answer is expected; keep serving
                        self._card_failed(f"control {code}", exc)
                continue
            if length == 0:
                continue
            try:
                response = self.card.transmit(payload)
            except CardRemovedError:
                raise                       # a fault pulled the card mid-command
            except Exception as exc:
                self._card_failed(f"APDU {payload[:4].hex().upper()}", exc)
                response = SW_NO_DIAGNOSIS
            self.stats.apdus += 1
            delay = self.link.cost(len(payload), len(response))
            if delay > 0:
                self.stats.link_seconds += delay
                time.sleep(delay)
            self._send(sock, response)

    def _card_failed(self, what: str, exc: Exception) -> None:
        """One log line (the header only: the data may hold a PIN) and a count."""
        self.card_errors += 1
        log.error("vpcd bridge on port %d: the card failed on %s: %s: %s", self.port, what,
                  type(exc).__name__, exc)


def serve_forever(bridges: list[VpcdBridge], stop: threading.Event,
                  poll: float = 0.25) -> None:
    """Run bridges until ``stop`` is set (the CLI sets it on SIGINT/SIGTERM). If a bridge
    thread dies, every bridge is stopped and :class:`BridgeFailed` raised."""
    for b in bridges:
        b.start()
    try:
        while not stop.wait(poll):
            for b in bridges:
                if b.failure is not None or (b._thread is not None
                                             and not b._thread.is_alive()):
                    raise BridgeFailed(f"the vpcd bridge on port {b.port} died"
                                       f" ({type(b.failure).__name__}: {b.failure});"
                                       " its card no longer answers pcscd, stopping")
    finally:
        for b in bridges:
            b.stop()
