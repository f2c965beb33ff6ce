"""The kiosk's device model: XFS4IoT-shaped commands, events and completions (ours, not CEN's).

XFS4IoT (CEN/TS 17852) talks JSON over a WebSocket: a client sends a *command*, the service
*acknowledges* it, sends *events* while it works (and *unsolicited events* at any time) and
ends with one *completion*. We keep that shape — because it is the shape every kiosk
integrator already thinks in — but as plain Python dataclasses on asyncio queues, with only
the interfaces a コンビニ交付 kiosk needs:

* ``CashAcceptor``: CashInStart / items credited / CashInEnd / CashInRollback (return the
  note in escrow) / Dispense (change);
* ``DocumentPrinter``: PrintJob, progress, MediaTaken, jam, out of paper/toner;
* ``CardSlot``: card inserted / removed.

The protocol cores (:mod:`~kiosk.devices.id003`, :mod:`~kiosk.devices.cctalk`,
:mod:`~kiosk.devices.ipp`) produce the *device events* below; :class:`DeviceService` runs one
blocking adapter on its own thread behind an asyncio task, so a wedged serial line or printer
stalls its own queue and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# -- device events (produced by the protocol cores) ---------------------------------------


class Outcome(enum.Enum):
    """Where an inserted bill or coin ended: exactly one of these, never two."""

    STACKED = "stacked"  # in the cassette / cash box: the customer was credited
    RETURNED = "returned"  # handed back to the customer
    REFUND_DUE = "refund-due"  # held by the machine (jam, stuck): staff owe it back


@dataclass(frozen=True)
class DeviceEvent:
    """Base of everything a device core reports."""

    device: str


@dataclass(frozen=True)
class ItemEscrowed(DeviceEvent):
    """A bill was validated and waits in escrow (まだ入金されていない)."""

    item: int
    yen: int


@dataclass(frozen=True)
class ItemSettled(DeviceEvent):
    """An inserted item reached its final place; ``yen`` 0 only for rejected items."""

    item: int
    yen: int
    outcome: Outcome
    reason: str = ""


@dataclass(frozen=True)
class ItemRejected(DeviceEvent):
    """The device refused an item before it was ever credited (it goes back at once)."""

    reason: str


@dataclass(frozen=True)
class Fault(DeviceEvent):
    """A fault the device reported or the driver detected (``kind`` is a stable keyword)."""

    kind: str
    detail: str = ""


@dataclass(frozen=True)
class CommunicationLost(DeviceEvent):
    """The device stopped answering (the driver keeps trying)."""


@dataclass(frozen=True)
class CommunicationRestored(DeviceEvent):
    """The device answers again."""


@dataclass(frozen=True)
class PayoutResult(DeviceEvent):
    """A hopper finished a dispense: coins paid and unpaid, as its own counters said."""

    coin_yen: int
    paid: int
    unpaid: int


# -- XFS4IoT-shaped envelope ----------------------------------------------------------------


class Interface(enum.Enum):
    CASH_ACCEPTOR = "CashAcceptor"
    DOCUMENT_PRINTER = "DocumentPrinter"
    CARD_SLOT = "CardSlot"


class CompletionCode(enum.Enum):
    SUCCESS = "success"
    DEVICE_FAULT = "hardwareError"
    TIMEOUT = "timeOut"
    CANCELED = "canceled"
    UNSUPPORTED = "unsupportedCommand"


_request_ids = itertools.count(1)


@dataclass(frozen=True)
class Command:
    """A command to a device service, e.g. ``CashAcceptor.CashInStart``."""

    interface: Interface
    name: str
    payload: dict[str, Any] = field(default_factory=dict)
    request_id: int = field(default_factory=lambda: next(_request_ids))

    @property
    def qualified(self) -> str:
        return f"{self.interface.value}.{self.name}"


@dataclass(frozen=True)
class Message:
    """What a service sends back: ``kind`` is acknowledge, event, unsolicitedEvent or
    completion; ``request_id`` ties it to its command (0 for unsolicited events)."""

    kind: str
    name: str
    request_id: int
    payload: dict[str, Any] = field(default_factory=dict)
    code: CompletionCode | None = None


def event_message(event: DeviceEvent, request_id: int = 0) -> Message:
    """The XFS4IoT-shaped form of a device event (unsolicited when ``request_id`` is 0)."""
    names = {
        ItemEscrowed: "CashAcceptor.InsertItemsEvent",
        ItemSettled: "CashAcceptor.ItemsSettledEvent",
        ItemRejected: "CashAcceptor.InputRefuseEvent",
        Fault: "Common.ErrorEvent",
        CommunicationLost: "Common.StatusChangedEvent",
        CommunicationRestored: "Common.StatusChangedEvent",
        PayoutResult: "CashDispenser.PayoutEvent",
    }
    payload: dict[str, Any] = {
        k: (v.value if isinstance(v, enum.Enum) else v) for k, v in vars(event).items()
    }
    if isinstance(event, CommunicationLost):
        payload["device"] = event.device
        payload["status"] = "offline"
    elif isinstance(event, CommunicationRestored):
        payload["status"] = "online"
    return Message("event" if request_id else "unsolicitedEvent",
                   names.get(type(event), "Common.Event"), request_id, payload)


class DeviceService:
    """One device behind its own worker thread, driven from asyncio.

    ``handlers`` maps a command name to a blocking function (the thin adapter's method);
    ``poll`` is called between commands and returns the device's unsolicited events. The
    worker thread is the only one touching the adapter, so the adapter needs no locks; the
    event loop only ever awaits futures and queues, so a device that blocks forever blocks
    its own thread and nothing else.
    """

    def __init__(self, interface: Interface, *,
                 handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]],
                 poll: Callable[[], list[DeviceEvent]] | None = None,
                 poll_interval: float = 0.02) -> None:
        self.interface = interface
        self._handlers = handlers
        self._poll = poll
        self._poll_interval = poll_interval
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self._commands: queue.Queue[tuple[Command, asyncio.Future[Message]] | None] = (
            queue.Queue())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"device-{self.interface.value}",
                                        daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Ask the worker to finish; a wedged worker is abandoned (it is a daemon thread)."""
        self._stop.set()
        self._commands.put(None)

    async def execute(self, command: Command) -> Message:
        """Send a command; return its completion (events arrive on :attr:`messages`)."""
        if command.interface is not self.interface:
            return Message("completion", command.qualified, command.request_id,
                           code=CompletionCode.UNSUPPORTED)
        done: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._commands.put((command, done))
        return await done

    def _post(self, message: Message) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # loop closed at shutdown
            self._loop.call_soon_threadsafe(self.messages.put_nowait, message)

    def _complete(self, fut: asyncio.Future[Message], message: Message) -> None:
        assert self._loop is not None

        def resolve() -> None:
            if not fut.done():
                fut.set_result(message)

        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(resolve)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._commands.get(timeout=self._poll_interval)
            except queue.Empty:
                item = None
            if item is not None:
                command, fut = item
                self._post(Message("acknowledge", command.qualified, command.request_id))
                handler = self._handlers.get(command.name)
                if handler is None:
                    self._complete(fut, Message("completion", command.qualified,
                                                command.request_id,
                                                code=CompletionCode.UNSUPPORTED))
                    continue
                try:
                    result = handler(command.payload)
                    code = CompletionCode.SUCCESS
                except Exception as exc:  # the completion carries the failure
                    result = {"error": type(exc).__name__, "detail": str(exc)}
                    code = CompletionCode.DEVICE_FAULT
                self._complete(fut, Message("completion", command.qualified,
                                            command.request_id, result, code))
            if self._poll is not None and not self._stop.is_set():
                try:
                    events = self._poll()
                except Exception as exc:  # a device error must not end the worker
                    events = [Fault(self.interface.value, "poll-error",
                                    f"{type(exc).__name__}: {exc}")]
                    self._stop.wait(self._poll_interval)
                for event in events:
                    self._post(event_message(event))
