"""An in-process reader for programs written against pyscard's ``Reader`` /
``CardConnection`` API that want a software card and no ``pcscd``
(``shared/reference/pcsc-vpcd.md`` §8, §11.3).

``conn.transmit()`` runs pyscard's own path (observers, error-checking chain) and ends in
the software card; removal and absence raise pyscard's own exceptions with the PC/SC
codes a real reader gives, so code under test handles them the same way.
"""

from __future__ import annotations

from typing import Any

from smartcard.CardConnection import CardConnection
from smartcard.Exceptions import CardConnectionException, NoCardException
from smartcard.reader.Reader import Reader

from cardio.pcsc import SCARD_E_NO_SMARTCARD, SCARD_W_REMOVED_CARD
from cardio.transport import CardRemovedError
from emulators.card.card import SoftwareCard


class EmulatedCardConnection(CardConnection):  # type: ignore[misc]
    def __init__(self, reader: EmulatedReader) -> None:
        super().__init__(reader)
        self.card = reader.card
        self._connected = False

    def connect(self, protocol: Any = None, mode: Any = None, disposition: Any = None) -> None:
        super().connect(protocol, mode, disposition)
        if not self.card.present:
            raise NoCardException("Unable to connect", hresult=SCARD_E_NO_SMARTCARD)
        self.card.power_on()
        self._connected = True

    def reconnect(self, protocol: Any = None, mode: Any = None, disposition: Any = None) -> None:
        super().reconnect(protocol, mode, disposition)
        if not self.card.present:
            raise NoCardException("Unable to reconnect", hresult=SCARD_E_NO_SMARTCARD)
        from smartcard.scard import SCARD_LEAVE_CARD

        if disposition != SCARD_LEAVE_CARD:
            self.card.reset()
        self._connected = True

    def disconnect(self) -> None:
        super().disconnect()
        if self._connected and self.card.present:
            self.card.power_off()
        self._connected = False

    def getATR(self) -> list[int]:
        return list(self.card.atr)

    def getProtocol(self) -> int:
        return int(CardConnection.T1_protocol)

    def doTransmit(self, command: list[int], protocol: Any = None
                   ) -> tuple[list[int], int, int]:
        if not self._connected:
            raise CardConnectionException("Card not connected")
        try:
            resp = self.card.transmit(bytes(command))
        except CardRemovedError as exc:
            self._connected = False
            raise CardConnectionException("Card was removed.",
                                          hresult=SCARD_W_REMOVED_CARD) from exc
        return list(resp[:-2]), resp[-2], resp[-1]


class EmulatedReader(Reader):  # type: ignore[misc]
    """A pyscard ``Reader`` holding a :class:`SoftwareCard`."""

    def __init__(self, card: SoftwareCard, name: str = "cardio emulated reader 00 00") -> None:
        super().__init__(name)
        self.card = card

    def createConnection(self) -> EmulatedCardConnection:
        return EmulatedCardConnection(self)
