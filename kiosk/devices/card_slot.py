"""The card slot (カード挿入口) as a kiosk device: card inserted / removed events over PC/SC.

The core is a pure edge detector over reader states — PC/SC reports *states* (present,
empty, unavailable), the kiosk wants *events*, exactly once per change, including a reader
that vanished (unplugged: the card counts as removed, so a session never waits for a card
that cannot come out). The adapter feeds it from :func:`cardio.pcsc.watch`, which blocks in
pcscd's SCardGetStatusChange rather than polling, on a thread of its own.

Why the kiosk cares: the session may only end once the card is out (カード取り忘れ防止,
``reference/kiosk-domain.md`` §1.3).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from kiosk.devices.model import DeviceEvent


@dataclass(frozen=True)
class CardInserted(DeviceEvent):
    """A card arrived in the slot."""


@dataclass(frozen=True)
class CardRemoved(DeviceEvent):
    """The card left the slot (or the reader went away with it)."""


class CardSlotCore:
    """Pure: :meth:`on_state` takes ``present`` (None: reader unavailable) and returns the
    event, if this is a change."""

    def __init__(self, device: str = "card_slot") -> None:
        self.device = device
        self.present: bool | None = None  # unknown until the first reading

    def on_state(self, present: bool | None) -> list[DeviceEvent]:
        now = bool(present)  # an unavailable reader holds no card
        was = self.present
        self.present = now
        if was is None or was == now:
            return []
        return [CardInserted(self.device) if now else CardRemoved(self.device)]

    def on_change(self, change: str) -> list[DeviceEvent]:
        """A change already detected by PC/SC (``"inserted"``/``"removed"``): an event even
        when the previous state was unknown, none when it repeats the known state."""
        if self.present is None:
            self.present = change != "inserted"
        return self.on_state(change == "inserted")


class CardSlot:
    """Watch one PC/SC reader on a thread; events go to ``sink``."""

    def __init__(self, reader: str, sink: Callable[[DeviceEvent], None]) -> None:
        self.reader = reader
        self.core = CardSlotCore()
        self._sink = sink
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="card-slot")
        self.error: BaseException | None = None

    def start(self) -> CardSlot:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _present(self) -> bool | None:
        from cardio import pcsc

        for info in pcsc.list_readers():
            if info.name == self.reader:
                return info.card_present
        return None

    def _run(self) -> None:
        from cardio import pcsc

        try:
            while not self._stop.is_set():
                # The state between two watches is read too, so a change that fell in the
                # gap is still reported (once).
                for event in self.core.on_state(self._present()):
                    self._sink(event)
                for change in pcsc.watch(self.reader, 0.5):
                    for event in self.core.on_change(change):
                        self._sink(event)
                    if self._stop.is_set():
                        return
        except Exception as exc:  # a vanished reader: the card is out
            self.error = exc
            for event in self.core.on_state(None):
                self._sink(event)
