"""The card session: what every applet client shares.

It selects applications (and remembers which one is selected, so it does not spend an
APDU re-selecting it), reads EFs with as few APDUs as the card allows, verifies
credentials and reads retry counters, and turns status words into typed errors that name
the credential or file involved.

Reading strategy (reference §6): one READ BINARY with a short EF identifier selects the
EF and returns its first 256 bytes (or, with extended length, the whole file); the BER
header in those bytes gives the total size, and the rest follows in ≤256-byte chunks from
where the first read stopped. Extended length is used when both the reader and the card
take it (:attr:`MyNumberCard.extended`): the reader says so through the transport
(``supports_extended``: True, False or unknown), the card through its ATR's
card-capabilities object (:func:`cardio.apdu.atr.extended_length`); where either is
unknown — the contact ATR in OpenSC's table says nothing, a contactless ATR never does —
the first whole-file read is the probe: an extended Le, and on any answer but ``9000``
(``6700``, ``6985``, ``6D00``, ... or a reader error) the same read again in short form;
its success makes the connection short-only (its failure is the file's, and the next read
probes again). A card that answers
costs no APDU more than the read itself; one that refuses costs one, once. (GET DATA
``5F51`` would give the contact ATR but costs two or three APDUs, more than the probe.)

Sharing the card with other programs (PC/SC, see :class:`cardio.pcsc.PcscTransport`):
every multi-APDU sequence here runs inside :meth:`MyNumberCard.atomic` — one PC/SC
transaction — so no other program's APDU lands between a SELECT and the commands that
depend on it. A caller's unit of work (a CLI command, a kiosk step) is a
:meth:`MyNumberCard.session`: the transaction, once begun, is held until the session
ends. Once a PIN is verified the card stays this connection's until the session ends or
the connection closes, and is then reset before anyone else may use it: no other program
inherits the unlocked state. A session that verified nothing ends with the card left as
it is (``SCARD_LEAVE_CARD``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from cardio import constants as c
from cardio.apdu import atr, builders, tlv
from cardio.apdu.command import EXTENDED_MAX_LE, SHORT_MAX_LE, CommandApdu, ResponseApdu
from cardio.apdu.errors import (
    SW_OK,
    MalformedApdu,
    PinBlocked,
    TlvError,
    VerificationFailed,
    check_status,
    error_for_status,
)
from cardio.records import RecordError
from cardio.transport import (
    CardResetError,
    SharedTransport,
    Transport,
    TransportError,
    transport_atr,
)

MAX_SFI = 30


def extended_at_start(transport: Transport) -> bool | None:
    """Extended length as far as the reader and the ATR tell: False when either rules it
    out, True when both offer it, ``None`` (probe) otherwise."""
    reader = transport.supports_extended
    card = atr.extended_length(transport_atr(transport) or b"")
    if reader is False or card is False:
        return False
    if reader and card:
        return True
    return None

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _HasCard(Protocol):
    card: MyNumberCard


_C = TypeVar("_C", bound=_HasCard)


def atomic(method: Callable[Concatenate[_C, _P], _R]) -> Callable[Concatenate[_C, _P], _R]:
    """Decorator for an applet client's method (an object with ``.card``) that sends
    several APDUs which must not be interleaved with another program's: the method runs
    inside ``self.card.atomic()``."""

    @functools.wraps(method)
    def wrapper(self: _C, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self.card.atomic():
            return method(self, *args, **kwargs)

    return wrapper


_M = TypeVar("_M", bound="MyNumberCard")


def _atomic(method: Callable[Concatenate[_M, _P], _R]) -> Callable[Concatenate[_M, _P], _R]:
    @functools.wraps(method)
    def wrapper(self: _M, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self.atomic():
            return method(self, *args, **kwargs)

    return wrapper


class MyNumberCard:
    """A connection to a My Number card through any :class:`Transport`."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.selected: bytes | None = None
        self.current_ef: int | None = None
        """The EF the card has current (by SELECT or a short-EF read), to restore it
        after a reset."""
        self.unlocked = False
        """A PIN or 照合番号 was verified on this connection and the card not reset since."""
        self._shared = transport if isinstance(transport, SharedTransport) else None
        self._held = False
        self._ops = 0
        self._sessions = 0
        self._replaying = False
        self.extended: bool | None = extended_at_start(transport)
        """Whether READ BINARY uses extended Le: decided from the reader and the ATR, or
        by the first whole-file read when they do not tell (``None`` until then)."""

    # -- sessions (PC/SC transactions) --------------------------------------------------
    @contextmanager
    def atomic(self) -> Iterator[None]:
        """The APDUs inside belong together: one transaction (re-entrant). Outside a
        session it ends with the block, unless a PIN was verified in it."""
        self._ops += 1
        try:
            if not self._held:
                if self._shared is not None and self._shared.begin_transaction():
                    self.forget_selection()  # another program may have selected since
                self._held = True
            yield
        finally:
            self._ops -= 1
            self._release_if_idle()

    @contextmanager
    def session(self) -> Iterator[MyNumberCard]:
        """A unit of work: the transaction begins with its first APDU and is held to the
        end; then the card is reset if a PIN was verified, and left as it is if not."""
        self.begin_session()
        try:
            yield self
        finally:
            self.end_session()

    def begin_session(self) -> None:
        self._sessions += 1

    def end_session(self) -> None:
        self._sessions = max(0, self._sessions - 1)
        if self._sessions:
            return
        if self.unlocked:
            self.relock()
        else:
            self._release_if_idle()

    def relock(self) -> None:
        """Reset the card (every verified PIN is forgotten) and let other programs in."""
        was_held, self._held = self._held, False
        self.unlocked = False
        self.forget_selection()
        if self._shared is not None and (was_held or self._shared.unlocked):
            self._shared.end_transaction(reset=True)

    def close(self) -> None:
        """End the session (resetting the card if a PIN is verified) and disconnect."""
        self._sessions = 0
        try:
            if self.unlocked:
                self.relock()
            else:
                self._release_if_idle()
        finally:
            if self._shared is not None:
                self._shared.close()

    def _release_if_idle(self) -> None:
        if self._held and not self._ops and not self._sessions and not self.unlocked:
            self._held = False
            if self._shared is not None:
                self._shared.end_transaction()

    def _mark_unlocked(self) -> None:
        self.unlocked = True
        if self._shared is not None:
            self._shared.unlocked = True

    # -- raw exchange ------------------------------------------------------------------
    def send(self, cmd: CommandApdu) -> ResponseApdu:
        with self.atomic():
            raw = self._transmit(cmd.encode())
        try:
            return ResponseApdu.parse(raw)
        except MalformedApdu as exc:
            raise MalformedApdu(f"the reader returned a malformed response: {exc}") from exc

    def _transmit(self, apdu: bytes) -> bytes:
        """Send one APDU. If the card was reset under us (nothing of the APDU reached
        it), retry once: reconnect, select again what was selected, resend. Not when a
        PIN was verified: that state is gone and only the user can give the PIN again."""
        try:
            return self.transport.transmit(apdu)
        except CardResetError:
            if self._shared is None or self._replaying:
                raise
            self._shared.recover_from_reset()
            if self.unlocked:
                self.unlocked = False
                self._shared.unlocked = False
                self.forget_selection()
                raise CardResetError("the card was reset by another program or the reader"
                                     " after a PIN was verified; run the command again (the"
                                     " PIN must be verified again)") from None
        self._replay_selection()
        return self.transport.transmit(apdu)

    def _replay_selection(self) -> None:
        aid, ef = self.selected, self.current_ef
        self.forget_selection()
        self._replaying = True
        try:
            if aid is not None:
                self.select(aid)
            if ef is not None:
                self.select_ef(ef)
        finally:
            self._replaying = False

    def send_checked(self, cmd: CommandApdu, context: str = "") -> bytes:
        """Send and raise the typed error for any status other than 9000; the data on
        success. (:meth:`send` is the unchecked exchange, for status words a caller
        handles itself.)"""
        resp = self.send(cmd)
        check_status(resp.sw, context)
        return resp.data

    # -- selection ---------------------------------------------------------------------
    def select(self, aid: bytes, *, force: bool = False) -> None:
        """Select an application. Selecting clears its security state, so an
        already-selected application is not selected again unless ``force``."""
        if self.selected == aid and not force:
            return
        self.selected = None
        self.current_ef = None
        self.send_checked(builders.select_aid(aid), f"SELECT {c.APPLICATIONS.get(aid, aid.hex())}")
        self.selected = aid

    def select_ef(self, fid: int) -> None:
        self.current_ef = None
        self.send_checked(builders.select_ef(fid), f"SELECT EF {fid:04X}")
        self.current_ef = fid

    def forget_selection(self) -> None:
        """Call after a reset or reconnect: the card has nothing selected any more."""
        self.selected = None
        self.current_ef = None

    # -- reading -------------------------------------------------------------------------
    def _first_read(self, fid: int, le: int) -> CommandApdu:
        if fid <= MAX_SFI:
            self.current_ef = None
            return builders.read_binary_sfi(fid, 0, le)
        self.select_ef(fid)
        return builders.read_binary(0, le)

    def _first_chunk(self, fid: int, context: str, want: int | None = None) -> bytes:
        """The first READ BINARY of an EF (by SFI where it has one, which also selects
        it): ``want`` bytes when the caller knows how many (≤256), else the whole file
        with extended Le, or 256 bytes. Probes extended length when it is unknown."""
        if want is not None and want <= SHORT_MAX_LE:
            le = want
        else:
            le = SHORT_MAX_LE if self.extended is False else EXTENDED_MAX_LE
        cmd = self._first_read(fid, le)
        if le > SHORT_MAX_LE and self.extended is None:
            try:
                resp = self.send(cmd)
            except CardResetError:
                raise
            except TransportError:
                resp = None  # the reader could not pass it: short from now on
            if resp is not None and resp.sw == 0x9000:
                self.extended = True
                if fid <= MAX_SFI:
                    self.current_ef = fid
                return resp.data
            # Any other answer — 6700, 6Cxx, 6F00, but also 6985, 6A86, 6D00, ... from a
            # card that does not parse an extended Le — or a reader error: the same read
            # once in short form. Only if that succeeds is the card short-only; if it
            # fails too, the failure is the file's (not found, its PIN not verified) and
            # is raised as such, the question left open for the next whole-file read.
            data = self.send_checked(self._first_read(fid, SHORT_MAX_LE), context)
            self.extended = False
            if fid <= MAX_SFI:
                self.current_ef = fid
            return data
        data = self.send_checked(cmd, context)
        if fid <= MAX_SFI:
            self.current_ef = fid
        return data

    def _read_from(self, data: bytearray, total: int, context: str) -> bytes:
        le_max = EXTENDED_MAX_LE - 1 if self.extended else SHORT_MAX_LE
        while len(data) < total:
            want = min(total - len(data), le_max)
            chunk = self.send_checked(builders.read_binary(len(data), want), context)
            if not chunk:
                raise RecordError(f"{context}: the card returned no data before the end")
            data += chunk
        return bytes(data[:total])

    @_atomic
    def read_tlv_ef(self, aid: bytes, fid: int, what: str) -> bytes:
        """Read one BER object from an EF: its exact bytes, without the filler."""
        self.select(aid)
        context = f"reading {what} (EF {fid:04X})"
        first = self._first_chunk(fid, context)
        try:
            total = tlv.total_size(first)
        except TlvError as exc:
            raise RecordError(f"{context}: {exc}") from exc
        return self._read_from(bytearray(first), total, context)

    @_atomic
    def read_ef(self, aid: bytes, fid: int, length: int, what: str) -> bytes:
        """Read a fixed number of bytes from the start of an EF (physical content,
        filler included)."""
        self.select(aid)
        context = f"reading {what} (EF {fid:04X})"
        first = self._first_chunk(fid, context, length)
        if len(first) >= length:
            return first[:length]
        if len(first) < min(length, SHORT_MAX_LE):
            return first  # the EF is shorter than asked for
        return self._read_from(bytearray(first), length, context)

    @_atomic
    def read_record(self, aid: bytes, fid: int, record: int, what: str) -> bytes:
        self.select(aid)
        return self.send_checked(builders.read_record(record, fid), f"reading {what}")

    # -- credentials ---------------------------------------------------------------------
    @_atomic
    def tries_left(self, credential: c.Credential) -> int | None:
        """The retry counter, read with an empty VERIFY (no try is spent). ``None`` when
        the card answers 9000 (some cards do while the key is verified)."""
        self.select(credential.aid)
        resp = self.send(builders.verify(None, sfi=credential.fid))
        if resp.sw == SW_OK:
            return None
        if resp.sw & 0xFFF0 == 0x63C0:
            return resp.sw & 0x0F
        if resp.sw == 0x6984:
            return 0
        raise error_for_status(resp.sw, f"reading the counter of {credential.label}")

    @_atomic
    def verify(self, credential: c.Credential, secret: bytes) -> None:
        """VERIFY a PIN or 照合番号 (by SFI, without selecting the key EF).

        Raises :class:`VerificationFailed` with ``tries_left`` on a wrong value and
        :class:`PinBlocked` when the key is blocked. The secret never appears in the
        error."""
        self.select(credential.aid)
        # Unlocked until the card says otherwise: if the answer is lost (a reader timeout,
        # an exception after the APDU went out), the card may have taken the PIN, so the
        # session must end with a reset. A definite refusal restores what was before.
        before = (self.unlocked, self._shared.unlocked if self._shared is not None else False)
        self._mark_unlocked()
        resp = self.send(builders.verify(secret, sfi=credential.fid))
        if resp.sw == SW_OK:
            return
        self.unlocked = before[0]
        if self._shared is not None:
            self._shared.unlocked = before[1]
        self._release_if_idle()  # held while the answer was pending; nothing to reset
        err = error_for_status(resp.sw, credential.label)
        if isinstance(err, VerificationFailed) and err.tries_left == 0:
            raise PinBlocked(resp.sw, credential.label,
                             advice="that was the last try: the credential is now blocked; "
                             + PinBlocked.advice)
        raise err

    @_atomic
    def change_reference_data(self, credential: c.Credential, old: bytes, new: bytes) -> None:
        """Verify the old value, then set the new one. The key EF is selected first
        because ``00 24 01 80`` (and ``80 32 00 80``) act on the current key."""
        self.select(credential.aid, force=True)
        self.select_ef(credential.fid)
        self.verify(credential, old)
        if credential in (c.Credential.COMMON, c.Credential.JUKI):
            cmd = builders.change_key(new)
        else:
            cmd = builders.change_reference_data(new)
        self.send_checked(cmd, f"changing {credential.label}")

    def get_challenge(self, length: int = 8) -> bytes:
        return self.send_checked(builders.get_challenge(length), "GET CHALLENGE")

    @_atomic
    def get_data(self, tag: int) -> bytes:
        """GET DATA at MF level (selects the GP ISD first); retried with an extended Le
        when the object is too large for a short one."""
        self.forget_selection()
        self.send_checked(builders.select_aid(c.AID_GP_ISD), "SELECT MF level")
        resp = self.send(builders.get_data(tag))
        if resp.sw == 0x6700 and self.extended is not False:
            resp = self.send(builders.get_data(tag, EXTENDED_MAX_LE, extended=True))
        check_status(resp.sw, f"GET DATA {tag:04X}")
        return resp.data
