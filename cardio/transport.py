"""The one small interface every applet client is written against.

A transport moves APDU bytes to a card and back. Real readers (pyscard), the software
card in-process, and the software card behind pcscd all implement it, so the same client
code runs on each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cardio.errors import EXIT_TRANSPORT, CardioError


class TransportError(CardioError):
    """The reader or the connection failed (not a status word from the card)."""

    exit_code = EXIT_TRANSPORT


class CardRemovedError(TransportError):
    """The card left the reader; nothing more can be sent until it is back and a new
    connection is made (security state is lost with it)."""

    def __init__(self, message: str = "the card was removed from the reader; "
                 "insert it again and retry") -> None:
        super().__init__(message)


class NoCardError(TransportError):
    """There is no card in the reader."""


@runtime_checkable
class Transport(Protocol):
    """Moves APDUs. ``supports_extended`` says whether extended-length APDUs pass."""

    @property
    def supports_extended(self) -> bool: ...

    def transmit(self, apdu: bytes) -> bytes: ...


class BytesCard(Protocol):
    """Anything with ``transmit(bytes) -> bytes``: a software card, a test double."""

    def transmit(self, raw: bytes) -> bytes: ...


class InProcessTransport:
    """Talks to a card object in the same process, with no reader in between."""

    def __init__(self, card: BytesCard, *, supports_extended: bool = False) -> None:
        self.card = card
        self.supports_extended = supports_extended

    def transmit(self, apdu: bytes) -> bytes:
        return self.card.transmit(apdu)


@dataclass
class TraceStats:
    apdus: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


class CountingTransport:
    """Wraps a transport and counts APDUs and bytes, for benchmarks and tests. It keeps
    no APDU contents (they may hold a PIN)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.stats = TraceStats()

    @property
    def supports_extended(self) -> bool:
        return self.inner.supports_extended

    def transmit(self, apdu: bytes) -> bytes:
        resp = self.inner.transmit(apdu)
        self.stats.apdus += 1
        self.stats.bytes_sent += len(apdu)
        self.stats.bytes_received += len(resp)
        return resp
