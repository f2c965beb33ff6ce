"""PC/SC readers through pyscard: list readers with card presence, connect shared or
exclusive, transmit, reconnect, wait for insertion and removal.

Errors become typed: :class:`PcscUnavailable` when ``pcscd`` is not running,
:class:`ReaderGone` when the reader disappeared, :class:`CardRemovedError` when the card
left. PC/SC return codes are named in the message (0x80100069 and friends) so an
integrator can look them up.

pyscard is imported lazily so the rest of ``cardio`` works without it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cardio.errors import CardioError
from cardio.transport import CardRemovedError, CardResetError, NoCardError, TransportError

SCARD_E_NO_SERVICE = 0x8010001D
SCARD_E_SERVICE_STOPPED = 0x8010001E
SCARD_E_NO_READERS_AVAILABLE = 0x8010002E
SCARD_E_UNKNOWN_READER = 0x80100009
SCARD_E_READER_UNAVAILABLE = 0x80100017
SCARD_E_NO_SMARTCARD = 0x8010000C
SCARD_W_REMOVED_CARD = 0x80100069
SCARD_W_RESET_CARD = 0x80100068
SCARD_E_NOT_TRANSACTED = 0x80100016
SCARD_E_SHARING_VIOLATION = 0x8010000B
SCARD_E_TIMEOUT = 0x8010000A
SCARD_W_UNPOWERED_CARD = 0x80100067

SCARD_ATTR_MAXINPUT = 0x0007A007
"""The longest command the reader takes (PC/SC Part 3 attribute, in bytes)."""
SHORT_APDU_MAX_BYTES = 4 + 1 + 255 + 1
"""The longest short command APDU: a reader taking no more passes no extended ones."""

# SCardGetStatusChange reader states
STATE_UNAWARE = 0x0000
STATE_CHANGED = 0x0002
STATE_UNKNOWN = 0x0004
STATE_UNAVAILABLE = 0x0008
STATE_EMPTY = 0x0010
STATE_PRESENT = 0x0020
STATE_INUSE = 0x0100
STATE_EXCLUSIVE = 0x0080


class PcscUnavailable(TransportError):
    """pcscd is not running (or not reachable)."""


class ReaderGone(TransportError):
    """The reader is unknown or was unplugged."""


class ReaderBusy(TransportError):
    """Another process holds the card exclusively."""


def _hresult(exc: BaseException) -> int:
    value = getattr(exc, "hresult", -1)
    return int(value) & 0xFFFFFFFF if isinstance(value, int) and value != -1 else -1


def translate(exc: BaseException, reader: str = "") -> TransportError:
    """A pyscard exception as one of ours."""
    code = _hresult(exc)
    where = f"reader {reader!r}: " if reader else ""
    tag = f" (0x{code:08X})" if code != -1 else ""
    if code in (SCARD_E_NO_SERVICE, SCARD_E_SERVICE_STOPPED):
        return PcscUnavailable(f"pcscd is not running{tag}; start it (pcscd or "
                               "systemctl start pcscd.socket) and retry")
    if code in (SCARD_E_UNKNOWN_READER, SCARD_E_READER_UNAVAILABLE):
        return ReaderGone(f"{where}the reader is not available{tag}; check the cable or"
                          " pick another with 'cardio readers'")
    if code == SCARD_W_RESET_CARD:
        return CardResetError(f"{where}the card was reset by another program or the"
                              f" reader{tag}; retry (any PIN must be verified again)")
    if code in (SCARD_W_REMOVED_CARD, SCARD_E_NOT_TRANSACTED, SCARD_W_UNPOWERED_CARD):
        return CardRemovedError(f"{where}the card was removed{tag}; insert it again and"
                                " retry (the PIN must be verified again)")
    if "no valid response" in str(exc):
        # The reader got no status word at all: the card stopped answering mid-command.
        return CardRemovedError(f"{where}the card did not answer (removed or lost contact);"
                                " insert it again and retry (the PIN must be verified again)")
    if code == SCARD_E_NO_SMARTCARD or type(exc).__name__ == "NoCardException":
        return NoCardError(f"{where}there is no card in the reader{tag}; insert the card")
    if code == SCARD_E_SHARING_VIOLATION:
        return ReaderBusy(f"{where}another program holds the card exclusively{tag};"
                          " close it and retry")
    return TransportError(f"{where}{exc}{tag}")


@dataclass(frozen=True)
class ReaderInfo:
    index: int
    name: str
    card_present: bool
    atr: bytes | None = None


def _scard() -> Any:
    try:
        from smartcard import scard
    except ImportError as exc:
        raise TransportError("PC/SC support needs pyscard: pip install pyscard") from exc
    return scard


class _Context:
    """An SCard context, released on exit."""

    def __init__(self) -> None:
        self.scard = _scard()
        hresult, self.handle = self.scard.SCardEstablishContext(self.scard.SCARD_SCOPE_USER)
        if hresult != self.scard.SCARD_S_SUCCESS:
            raise translate(_Err(hresult))

    def __enter__(self) -> _Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.scard.SCardReleaseContext(self.handle)

    def readers(self) -> list[str]:
        hresult, names = self.scard.SCardListReaders(self.handle, [])
        if hresult & 0xFFFFFFFF == SCARD_E_NO_READERS_AVAILABLE:
            return []
        if hresult != self.scard.SCARD_S_SUCCESS:
            raise translate(_Err(hresult))
        return list(names)

    def states(self, names: list[str], timeout_ms: int = 0,
               known: dict[str, int] | None = None) -> dict[str, tuple[int, bytes]]:
        query = [(n, (known or {}).get(n, STATE_UNAWARE)) for n in names]
        hresult, result = self.scard.SCardGetStatusChange(self.handle, timeout_ms, query)
        if hresult != self.scard.SCARD_S_SUCCESS:
            raise translate(_Err(hresult))
        return {name: (state, bytes(atr)) for name, state, atr in result}


class _Err(Exception):
    def __init__(self, hresult: int) -> None:
        super().__init__(f"PC/SC error 0x{hresult & 0xFFFFFFFF:08X}")
        self.hresult = hresult


def list_readers() -> list[ReaderInfo]:
    """Every PC/SC reader, with whether a card is present (and its ATR)."""
    with _Context() as ctx:
        names = ctx.readers()
        if not names:
            return []
        states = ctx.states(names)
    out = []
    for i, name in enumerate(names):
        state, atr = states[name]
        present = bool(state & STATE_PRESENT)
        out.append(ReaderInfo(i, name, present, atr if present else None))
    return out


def resolve_reader(spec: str) -> str:
    """A reader by exact name, by index, or by a unique substring."""
    with _Context() as ctx:
        names = ctx.readers()
    if spec in names:
        return spec
    if spec.isdigit() and int(spec) < len(names):
        return names[int(spec)]
    matches = [n for n in names if spec.lower() in n.lower()]
    if len(matches) == 1:
        return matches[0]
    if not names:
        raise ReaderGone("no PC/SC readers are connected")
    raise ReaderGone(f"no single reader matches {spec!r}; readers: {', '.join(names)}")


def _states(ctx: _Context, reader: str, known: int, deadline: float
            ) -> Iterator[tuple[int, bytes]]:
    """Each new (state, ATR) of ``reader`` reported by SCardGetStatusChange until the
    deadline: blocking in pcscd, no polling here."""
    while (remaining := deadline - time.monotonic()) > 0:
        hresult, result = ctx.scard.SCardGetStatusChange(
            ctx.handle, int(remaining * 1000), [(reader, known)])
        if hresult == ctx.scard.SCARD_E_TIMEOUT:
            continue
        if hresult != ctx.scard.SCARD_S_SUCCESS:
            raise translate(_Err(hresult), reader)
        _name, state, atr = result[0]
        known = state & ~STATE_CHANGED
        yield state, bytes(atr)


def wait_for(reader: str, present: bool = True, timeout: float = 10.0) -> bytes | None:
    """Block until a card is (or is no longer) in ``reader``: the ATR when one arrived.
    :class:`TimeoutError` after ``timeout`` seconds."""
    with _Context() as ctx:
        for state, atr in _states(ctx, reader, STATE_UNAWARE, time.monotonic() + timeout):
            if bool(state & STATE_PRESENT) == present and not state & STATE_UNAVAILABLE:
                return atr if present else None
    raise TimeoutError(f"reader {reader!r}: no card {'insertion' if present else 'removal'}"
                       f" within {timeout} s")


def watch(reader: str, timeout: float, max_events: int | None = None, *,
          on_ready: Callable[[], None] | None = None) -> Iterator[str]:
    """Yield ``"inserted"`` and ``"removed"`` events for ``reader`` until ``timeout``
    seconds have passed (or ``max_events`` were seen). ``on_ready`` is called once the
    current state is known, so a change after it is never missed (a watcher on another
    thread signals readiness with it)."""
    seen = 0
    with _Context() as ctx:
        known = ctx.states([reader])[reader][0] & ~STATE_CHANGED
        was = bool(known & STATE_PRESENT)
        if on_ready is not None:
            on_ready()
        for state, _atr in _states(ctx, reader, known, time.monotonic() + timeout):
            now = bool(state & STATE_PRESENT)
            if now != was:
                yield "inserted" if now else "removed"
                seen += 1
                if max_events is not None and seen >= max_events:
                    return
            was = now


MAX_RESETS_WAITING = 64
"""How many resets by other programs one :meth:`PcscTransport.begin_transaction` absorbs
before giving up. Each is another program's PIN session ending (it resets the card on
its way out); nothing of ours was on the card yet, so reconnecting and waiting again
is always safe, but a card reset in a loop is a fault worth reporting."""


class PcscTransport:
    """A :class:`~cardio.transport.SharedTransport` over a pyscard ``CardConnection``.

    ``connection`` may be a real reader's or an in-process emulated one (pyscard's
    ``Reader``/``CardConnection`` API); PC/SC transactions need the real one (a
    ``hcard``) and are skipped otherwise.

    Sharing the card with other programs, as OpenSC does with its card lock:

    * the connection is shared (``SCARD_SHARE_SHARED``); every multi-APDU sequence runs
      inside ``SCardBeginTransaction``/``SCardEndTransaction``, and an APDU sent outside
      one gets a transaction of its own, so no other program's APDU lands between a
      SELECT and the READ BINARY that depends on it;
    * a transaction ends with ``SCARD_LEAVE_CARD`` (the card stays as it is: cheap, and
      harmless when nothing was unlocked), or with ``SCARD_RESET_CARD`` after a session
      that verified a PIN, so the next program never finds the card unlocked;
    * ``SCARD_W_RESET_CARD`` when a transaction begins means another program reset the
      card since we last held it: reconnect with ``SCARD_LEAVE_CARD`` (which clears the
      warning without resetting again) and begin again; the caller learns that its
      selection is gone from ``begin_transaction``'s return value;
    * the connection is released with ``SCARD_LEAVE_CARD``, or with ``SCARD_RESET_CARD``
      while a PIN is verified (``unlocked``), so even a process that dies between the
      PIN and the end of its session leaves a reset card behind (pcscd also resets the
      card of a client that vanished).

    ``exclusive=True`` connects with ``SCARD_SHARE_EXCLUSIVE`` instead: nobody else can
    even connect while it is open.
    """

    def __init__(self, connection: Any, *, exclusive: bool = False, reader: str = "") -> None:
        self._extended: bool | None = None
        self._extended_asked = False
        self.connection = connection
        self.reader = reader or str(getattr(connection, "reader", ""))
        self.exclusive = exclusive
        self.in_transaction = False
        self.resets_absorbed = 0
        """Resets by other programs seen (and absorbed) when beginning transactions."""
        self._unlocked = False

    @classmethod
    def open(cls, reader: str, *, exclusive: bool = False) -> PcscTransport:
        """Connect to the card in the named reader (name, index or unique substring)."""
        scard = _scard()
        from smartcard.pcsc.PCSCReader import PCSCReader

        name = resolve_reader(reader)
        conn = PCSCReader(name).createConnection()
        mode = scard.SCARD_SHARE_EXCLUSIVE if exclusive else scard.SCARD_SHARE_SHARED
        try:
            conn.connect(mode=mode, disposition=scard.SCARD_LEAVE_CARD)
        except Exception as exc:
            raise translate(exc, name) from exc
        return cls(conn, exclusive=exclusive, reader=name)

    @property
    def supports_extended(self) -> bool | None:
        """Whether the reader passes extended-length APDUs, from its
        ``SCARD_ATTR_MAXINPUT`` (the CCID driver answers it; vpcd and many others do
        not): ``None`` when it does not say, and the card client then probes."""
        if not self._extended_asked:
            self._extended_asked = True
            hcard = self._hcard
            if hcard is not None:
                try:
                    hresult, value = _scard().SCardGetAttrib(hcard, SCARD_ATTR_MAXINPUT)
                except Exception:  # an old pyscard or a reader error: it does not say
                    hresult, value = -1, []
                if hresult == 0 and len(value) >= 4:
                    self._extended = int.from_bytes(bytes(value[:4]), "little") \
                        > SHORT_APDU_MAX_BYTES
        return self._extended

    @property
    def atr(self) -> bytes:
        try:
            return bytes(self.connection.getATR())
        except Exception as exc:
            raise translate(exc, self.reader) from exc

    @property
    def _raw(self) -> Any:
        """The innermost pyscard connection (``createConnection`` wraps it in decorators)."""
        conn = self.connection
        for _ in range(16):
            inner = getattr(conn, "component", None)
            if inner is None:
                break
            conn = inner
        return conn

    @property
    def _hcard(self) -> Any:
        return getattr(self._raw, "hcard", None)

    def _mode(self, scard: Any) -> int:
        return int(scard.SCARD_SHARE_EXCLUSIVE if self.exclusive else scard.SCARD_SHARE_SHARED)

    def _check(self, hresult: int) -> None:
        if hresult != 0:
            raise translate(_Err(hresult), self.reader)

    # -- transactions --------------------------------------------------------------------
    def begin_transaction(self) -> bool:
        """Wait until this connection has the card to itself (pcscd polls for the lock
        while another program holds it). True when another program may have used the
        card since (always, for a shared connection)."""
        if self.in_transaction:
            return False
        hcard = self._hcard
        if hcard is not None:
            scard = _scard()
            for _ in range(MAX_RESETS_WAITING):
                hresult = scard.SCardBeginTransaction(hcard)
                if hresult & 0xFFFFFFFF != SCARD_W_RESET_CARD:
                    self._check(hresult)
                    break
                self.resets_absorbed += 1
                self.recover_from_reset()
            else:
                raise CardResetError(f"reader {self.reader!r}: the card was reset"
                                     f" {MAX_RESETS_WAITING} times while waiting for it;"
                                     " something resets it in a loop")
        self.in_transaction = True
        return not self.exclusive

    def end_transaction(self, *, reset: bool = False) -> None:
        """Let other programs in; ``reset=True`` resets the card first (after a PIN)."""
        if not self.in_transaction:
            if reset:
                self._reset_now()
            return
        self.in_transaction = False
        hcard = self._hcard
        if hcard is None:
            if reset:
                self._reset_now()
            return
        scard = _scard()
        disposition = scard.SCARD_RESET_CARD if reset else scard.SCARD_LEAVE_CARD
        hresult = scard.SCardEndTransaction(hcard, disposition)
        code = hresult & 0xFFFFFFFF
        if code in (SCARD_W_REMOVED_CARD, SCARD_E_NO_SMARTCARD, SCARD_W_RESET_CARD):
            # Gone or already reset: nothing is unlocked any more, and pcscd has
            # released our lock along with the card.
            self.unlocked = False
            return
        self._check(hresult)
        if reset:
            self.unlocked = False

    def _reset_now(self) -> None:
        """Reset outside a transaction (the in-process pyscard reader, or a caller that
        verified a PIN without one)."""
        scard = _scard()
        try:
            self.connection.reconnect(mode=self._mode(scard),
                                      disposition=scard.SCARD_RESET_CARD)
        except Exception as exc:
            err = translate(exc, self.reader)
            if not isinstance(err, CardRemovedError | NoCardError):
                raise err from exc
        self.unlocked = False

    def recover_from_reset(self) -> None:
        """After ``SCARD_W_RESET_CARD``: reconnect without resetting again. A transaction
        this connection holds stays held (pcscd keeps the lock across a reconnect)."""
        scard = _scard()
        hcard = self._hcard
        if hcard is None:
            return
        # Raw call: pyscard's reconnect() drops the handle on any failure.
        hresult, _protocol = scard.SCardReconnect(hcard, self._mode(scard),
                                                  scard.SCARD_PROTOCOL_T0
                                                  | scard.SCARD_PROTOCOL_T1,
                                                  scard.SCARD_LEAVE_CARD)
        self._check(hresult)

    @property
    def unlocked(self) -> bool:
        """A PIN is verified on this connection: it is released with a reset."""
        return self._unlocked

    @unlocked.setter
    def unlocked(self, value: bool) -> None:
        self._unlocked = value
        # pyscard disconnects with this disposition, also from its finaliser.
        scard = _scard()
        self._raw.disposition = scard.SCARD_RESET_CARD if value else scard.SCARD_LEAVE_CARD

    # -- APDUs ---------------------------------------------------------------------------
    def transmit(self, apdu: bytes) -> bytes:
        """One APDU; outside a transaction it gets one of its own."""
        if not self.in_transaction and self._hcard is not None:
            self.begin_transaction()
            try:
                return self._transmit(apdu)
            finally:
                self.end_transaction()
        return self._transmit(apdu)

    def _transmit(self, apdu: bytes) -> bytes:
        try:
            data, sw1, sw2 = self.connection.transmit(list(apdu))
        except Exception as exc:
            raise translate(exc, self.reader) from exc
        return bytes(data) + bytes((sw1, sw2))

    def reconnect(self, *, exclusive: bool | None = None, reset: bool = True) -> None:
        """Reconnect (after a reset by another process, or to change the sharing mode).
        ``reset=False`` keeps the card powered, and with it the security state."""
        scard = _scard()
        if exclusive is not None:
            self.exclusive = exclusive
        disposition = scard.SCARD_RESET_CARD if reset else scard.SCARD_LEAVE_CARD
        try:
            self.connection.reconnect(mode=self._mode(scard), disposition=disposition)
        except Exception as exc:
            raise translate(exc, self.reader) from exc
        if reset:
            self.unlocked = False
        else:
            # pyscard stores the reconnect disposition as the one to disconnect with.
            self.unlocked = self._unlocked

    def close(self) -> None:
        """End any transaction (resetting the card if a PIN is verified) and disconnect,
        releasing the PC/SC context too."""
        try:
            if self.in_transaction or self.unlocked:
                self.end_transaction(reset=self.unlocked)
            self.connection.disconnect()
        except CardioError as ours:
            if not isinstance(ours, CardRemovedError | NoCardError | CardResetError):
                raise
        except Exception as exc:
            err = translate(exc, self.reader)
            if not isinstance(err, CardRemovedError | NoCardError | CardResetError):
                raise err from exc
        finally:
            release = getattr(self._raw, "release", None)
            if callable(release) and getattr(self._raw, "hcontext", None) is not None:
                with contextlib.suppress(Exception):
                    release()
