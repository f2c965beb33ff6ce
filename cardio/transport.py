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


class CardResetError(TransportError):
    """The card was reset under this connection (by another program or the reader): what
    was selected and every verified PIN are gone. Nothing of the failed command reached
    the card."""

    def __init__(self, message: str = "the card was reset by another program or the reader;"
                 " retry (any PIN must be verified again)") -> None:
        super().__init__(message)


@runtime_checkable
class Transport(Protocol):
    """Moves APDUs. ``supports_extended`` says whether the reader passes extended-length
    APDUs: True, False, or ``None`` when it cannot tell (most PC/SC readers do not say;
    :class:`~cardio.card.MyNumberCard` then asks the card with a probe that falls back
    to short APDUs)."""

    @property
    def supports_extended(self) -> bool | None: ...

    def transmit(self, apdu: bytes) -> bytes: ...


@runtime_checkable
class SharedTransport(Transport, Protocol):
    """A transport to a card that other programs may use at the same time (a PC/SC
    reader in shared mode). :class:`~cardio.card.MyNumberCard` runs every multi-APDU
    sequence between ``begin_transaction`` and ``end_transaction`` so that no other
    program's APDU lands in the middle of it.

    ``begin_transaction`` blocks until this connection has the card to itself and
    returns whether another program may have used the card since this connection last
    held it (the card's current selection is then unknown). ``end_transaction(reset=True)``
    resets the card before letting others in: after a PIN was verified, so that nobody
    inherits the unlocked state. ``recover_from_reset`` reconnects after a
    :class:`CardResetError` without resetting the card again."""

    unlocked: bool
    """Set by the card client after a successful VERIFY: the connection is then released
    with a reset, even by a finaliser."""

    def begin_transaction(self) -> bool: ...

    def end_transaction(self, *, reset: bool = False) -> None: ...

    def recover_from_reset(self) -> None: ...

    def close(self) -> None: ...


class BytesCard(Protocol):
    """Anything with ``transmit(bytes) -> bytes``: a software card, a test double."""

    def transmit(self, raw: bytes) -> bytes: ...


def transport_atr(transport: object) -> bytes | None:
    """The ATR of the card behind ``transport`` when the transport knows it (PC/SC and
    in-process transports do), else ``None``. Never raises: an ATR is advice."""
    try:
        atr = getattr(transport, "atr", None)
    except Exception:  # a reader error while asking: the ATR then says nothing
        return None
    return bytes(atr) if isinstance(atr, bytes | bytearray) else None


class InProcessTransport:
    """Talks to a card object in the same process, with no reader in between.

    ``supports_extended`` defaults to False (short APDUs, as most readers); there being no
    reader, True is as honest: whether the card takes them is then the card's answer."""

    def __init__(self, card: BytesCard, *, supports_extended: bool | None = False) -> None:
        self.card = card
        self.supports_extended = supports_extended

    @property
    def atr(self) -> bytes | None:
        return transport_atr(self.card)

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
    def supports_extended(self) -> bool | None:
        return self.inner.supports_extended

    @property
    def atr(self) -> bytes | None:
        return transport_atr(self.inner)

    def transmit(self, apdu: bytes) -> bytes:
        resp = self.inner.transmit(apdu)
        self.stats.apdus += 1
        self.stats.bytes_sent += len(apdu)
        self.stats.bytes_received += len(resp)
        return resp

    # Transactions pass through to a shared transport; on others they cost nothing.
    @property
    def unlocked(self) -> bool:
        return isinstance(self.inner, SharedTransport) and self.inner.unlocked

    @unlocked.setter
    def unlocked(self, value: bool) -> None:
        if isinstance(self.inner, SharedTransport):
            self.inner.unlocked = value

    def begin_transaction(self) -> bool:
        return self.inner.begin_transaction() if isinstance(self.inner, SharedTransport) \
            else False

    def end_transaction(self, *, reset: bool = False) -> None:
        if isinstance(self.inner, SharedTransport):
            self.inner.end_transaction(reset=reset)

    def recover_from_reset(self) -> None:
        if isinstance(self.inner, SharedTransport):
            self.inner.recover_from_reset()

    def close(self) -> None:
        if isinstance(self.inner, SharedTransport):
            self.inner.close()
