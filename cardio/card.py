"""The card session: what every applet client shares.

It selects applications (and remembers which one is selected, so it does not spend an
APDU re-selecting it), reads EFs with as few APDUs as the card allows, verifies
credentials and reads retry counters, and turns status words into typed errors that name
the credential or file involved.

Reading strategy (reference §6): one READ BINARY with a short EF identifier selects the
EF and returns its first 256 bytes (or, where the reader passes extended APDUs, the whole
file); the BER header in those bytes gives the total size, and the rest follows in
≤256-byte chunks from where the first read stopped.
"""

from __future__ import annotations

from cardio import constants as c
from cardio.apdu import builders, tlv
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
from cardio.transport import Transport

MAX_SFI = 30


class MyNumberCard:
    """A connection to a My Number card through any :class:`Transport`."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.selected: bytes | None = None

    # -- raw exchange ------------------------------------------------------------------
    def send(self, cmd: CommandApdu) -> ResponseApdu:
        try:
            raw = self.transport.transmit(cmd.encode())
            return ResponseApdu.parse(raw)
        except MalformedApdu as exc:
            raise MalformedApdu(f"the reader returned a malformed response: {exc}") from exc

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
        self.send_checked(builders.select_aid(aid), f"SELECT {c.APPLICATIONS.get(aid, aid.hex())}")
        self.selected = aid

    def select_ef(self, fid: int) -> None:
        self.send_checked(builders.select_ef(fid), f"SELECT EF {fid:04X}")

    def forget_selection(self) -> None:
        """Call after a reset or reconnect: the card has nothing selected any more."""
        self.selected = None

    # -- reading -------------------------------------------------------------------------
    def _first_chunk(self, fid: int, context: str) -> bytes:
        le = EXTENDED_MAX_LE if self.transport.supports_extended else SHORT_MAX_LE
        if fid <= MAX_SFI:
            return self.send_checked(builders.read_binary_sfi(fid, 0, le), context)
        self.select_ef(fid)
        return self.send_checked(builders.read_binary(0, le), context)

    def _read_from(self, data: bytearray, total: int, context: str) -> bytes:
        le_max = EXTENDED_MAX_LE - 1 if self.transport.supports_extended else SHORT_MAX_LE
        while len(data) < total:
            want = min(total - len(data), le_max)
            chunk = self.send_checked(builders.read_binary(len(data), want), context)
            if not chunk:
                raise RecordError(f"{context}: the card returned no data before the end")
            data += chunk
        return bytes(data[:total])

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

    def read_ef(self, aid: bytes, fid: int, length: int, what: str) -> bytes:
        """Read a fixed number of bytes from the start of an EF (physical content,
        filler included)."""
        self.select(aid)
        context = f"reading {what} (EF {fid:04X})"
        first = self._first_chunk(fid, context)
        if len(first) >= length:
            return first[:length]
        if len(first) < min(length, SHORT_MAX_LE):
            return first  # the EF is shorter than asked for
        return self._read_from(bytearray(first), length, context)

    def read_record(self, aid: bytes, fid: int, record: int, what: str) -> bytes:
        self.select(aid)
        return self.send_checked(builders.read_record(record, fid), f"reading {what}")

    # -- credentials ---------------------------------------------------------------------
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

    def verify(self, credential: c.Credential, secret: bytes) -> None:
        """VERIFY a PIN or 照合番号 (by SFI, without selecting the key EF).

        Raises :class:`VerificationFailed` with ``tries_left`` on a wrong value and
        :class:`PinBlocked` when the key is blocked. The secret never appears in the
        error."""
        self.select(credential.aid)
        resp = self.send(builders.verify(secret, sfi=credential.fid))
        if resp.sw == SW_OK:
            return
        err = error_for_status(resp.sw, credential.label)
        if isinstance(err, VerificationFailed) and err.tries_left == 0:
            raise PinBlocked(resp.sw, credential.label,
                             advice="that was the last try: the credential is now blocked; "
                             + PinBlocked.advice)
        raise err

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

    def get_data(self, tag: int) -> bytes:
        """GET DATA at MF level (selects the GP ISD first); retried with an extended Le
        when the object is too large for a short one."""
        self.send_checked(builders.select_aid(c.AID_GP_ISD), "SELECT MF level")
        self.selected = None
        resp = self.send(builders.get_data(tag))
        if resp.sw == 0x6700 and self.transport.supports_extended:
            resp = self.send(builders.get_data(tag, EXTENDED_MAX_LE, extended=True))
        check_status(resp.sw, f"GET DATA {tag:04X}")
        return resp.data
