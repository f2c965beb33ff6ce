"""The software My Number card: a sans-IO APDU processor.

``SoftwareCard.transmit(bytes) -> bytes`` is the whole interface; transports (in-process,
pyscard, vpcd) only move bytes. Behaviour follows ``shared/reference/mynumber-card.md``
§2-§7 and the emulator checklist in §10:

* applications selected by AID (``6A82`` for every other AID), EFs by FID or SFI;
* security state per DF, cleared by SELECT by AID and by reset;
* retry counters persisted in the card directory, decremented *before* the comparison
  so that pulling the card mid-VERIFY cannot be used to try PINs for free;
* READ BINARY returning ``min(Le, remaining)`` with ``9000`` and ``6B00`` past the end;
* ``80 2A`` P1 00-05, P2 ``80``, ``80|SFI`` and ``00``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from cardio import constants as c
from cardio import pinreset
from cardio.apdu.command import SHORT_MAX_LE, CommandApdu, ResponseApdu
from cardio.apdu.errors import MalformedApdu
from cardio.crypto import digest_info
from cardio.transport import CardRemovedError
from emulators.card.keys import raw_sign
from emulators.card.store import CardImage, CardStore, SecretState, key_name

FREE: frozenset[int] = frozenset()
NEVER: frozenset[int] = frozenset({-1})

J, T, V, C, K = c.AID_JPKI, c.AID_TEXT, c.AID_VISUAL, c.AID_COMMON, c.AID_JUKI

READ_RULES: dict[tuple[bytes, int], frozenset[int]] = {
    (J, c.JPKI_SIGN_CERT): frozenset({c.JPKI_SIGN_PIN}),
    (J, 0x0009): NEVER,
    (T, c.TEXT_MY_NUMBER): frozenset({c.TEXT_PIN, c.TEXT_CODE_A}),
    (T, c.TEXT_ATTRIBUTES): frozenset({c.TEXT_PIN, c.TEXT_CODE_B}),
    (T, c.TEXT_INTEGRITY): frozenset({c.TEXT_PIN, c.TEXT_CODE_A, c.TEXT_CODE_B}),
    (T, c.TEXT_SESSION_KEY): frozenset({c.TEXT_PIN, c.TEXT_CODE_A, c.TEXT_CODE_B}),
    (T, c.TEXT_SIGNED_PUBKEY): frozenset({c.TEXT_PIN, c.TEXT_CODE_A, c.TEXT_CODE_B}),
    (V, c.VISUAL_AGE): frozenset({c.VISUAL_BIRTH_KEY}),
    (V, c.VISUAL_FACE): frozenset({c.VISUAL_CODE_A, c.VISUAL_CODE_B}),
    (V, c.VISUAL_MY_NUMBER_IMAGE): frozenset({c.VISUAL_CODE_A}),
    (V, c.VISUAL_UNKNOWN_0006): frozenset({c.VISUAL_CODE_A, c.VISUAL_CODE_B}),
}
"""Which verified key opens a file (any one of them); files not listed are free."""

KEY_USE_RULES: dict[tuple[bytes, int], frozenset[int]] = {
    (J, c.JPKI_AUTH_KEY): frozenset({c.JPKI_AUTH_PIN}),
    (J, c.JPKI_SIGN_KEY): frozenset({c.JPKI_SIGN_PIN}),
    (T, c.TEXT_SIGN_KEY): FREE,
    (V, c.VISUAL_SIGN_KEY): FREE,
}
"""Which verified key allows ``80 2A`` with a private key."""

DEFAULT_SIGN_KEY = {T: c.TEXT_SIGN_KEY, V: c.VISUAL_SIGN_KEY}
INTERNAL_AUTH_KEYS = {(C, c.COMMON_AUTH_KEY)}
CHANGE_INS = {"pin4": 0x24, "sign": 0x24, "pin4k": 0x32}
_NEW_VALUE_RULES = {
    "pin4": re.compile(rb"[0-9]{4}"),
    "pin4k": re.compile(rb"[0-9]{4}"),
    "sign": re.compile(rb"(?=[A-Z0-9]*[A-Z])(?=[A-Z0-9]*[0-9])[A-Z0-9]{6,16}"),
}
UNUSED_JICSAP_INS = {0x8A, 0x50, 0x52, 0x54, 0x82}

SW_OK = 0x9000


class _Reply(Exception):
    """Raised inside a handler to answer with a status word."""

    def __init__(self, sw: int) -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw


@dataclass
class Faults:
    """Faults on demand, for reliability tests of the layers above.

    ``remove_after``: the card is pulled after this many more APDUs (the next one gets
    no answer); ``on_apdu``: a hook called with each command before it is processed.
    """

    remove_after: int | None = None
    on_apdu: Callable[[CommandApdu], None] | None = None


class CardRemoved(CardRemovedError):
    """The software card was pulled out (raised to the transport, never to the card)."""


@dataclass
class _Session:
    df: bytes | None = None
    ef: int | None = None
    verified: set[int] = field(default_factory=set)
    challenge: bytes | None = None


class SoftwareCard:
    """A personalised My Number card in software."""

    def __init__(self, image: CardImage, store: CardStore | None = None) -> None:
        self.image = image
        self.store = store
        self.atr = bytes.fromhex(image.meta.get("atr", c.ATR_CONTACT.hex()))
        self.faults = Faults()
        self.present = True
        self._session = _Session()
        self._apps: dict[bytes, set[int]] = {}
        for aid, fid in [*image.files, *image.records, *image.private_keys, *image.secrets]:
            self._apps.setdefault(aid, set()).add(fid)
        for aid in c.APPLICATIONS:
            self._apps.setdefault(aid, set())

    @classmethod
    def open(cls, path: Path | str) -> SoftwareCard:
        store = CardStore(Path(path))
        return cls(store.load(), store)

    # -- power ----------------------------------------------------------------------
    def reset(self) -> bytes:
        """Warm or cold reset: security state cleared, nothing selected. Returns the ATR."""
        self._session = _Session()
        return self.atr

    power_on = reset

    def power_off(self) -> None:
        self._session = _Session()

    def remove(self) -> None:
        self.present = False
        self._session = _Session()

    def insert(self) -> None:
        self.present = True
        self._session = _Session()

    # -- APDU entry point ------------------------------------------------------------
    def transmit(self, raw: bytes) -> bytes:
        """Process one command APDU and return the response APDU bytes."""
        if not self.present:
            raise CardRemoved("no card in the reader; insert it and retry")
        if self.faults.remove_after is not None:
            if self.faults.remove_after <= 0:
                self.faults.remove_after = None
                self.remove()
                raise CardRemoved("the card was removed during the command;"
                                  " insert it again and retry")
            self.faults.remove_after -= 1
        try:
            cmd = CommandApdu.parse(raw)
        except MalformedApdu:
            return ResponseApdu.status(0x6700).encode()
        if self.faults.on_apdu is not None:
            self.faults.on_apdu(cmd)
        try:
            data = self._dispatch(cmd)
        except _Reply as reply:
            return ResponseApdu.status(reply.sw).encode()
        return data + b"\x90\x00"

    def _dispatch(self, cmd: CommandApdu) -> bytes:
        cla = cmd.cla
        if cla & 0x03:
            raise _Reply(0x6881)  # only logical channel 0
        if cla == 0x0C and cmd.ins == 0x2C:
            return self._reset_retry_counter(cmd)
        if cla & 0x0C:
            raise _Reply(0x6882)  # secure messaging is not offered on this path
        if cla not in (0x00, 0x80):
            raise _Reply(0x6E00)
        ins = cmd.ins
        proprietary = cla == 0x80
        if ins == 0xA4 and not proprietary:
            return self._select(cmd)
        if ins == 0xB0 and not proprietary:
            return self._read_binary(cmd)
        if ins == 0xB2 and not proprietary:
            return self._read_record(cmd)
        if ins == 0x20 and not proprietary:
            return self._verify(cmd)
        if ins == 0x24 and not proprietary:
            return self._change(cmd, 0x24)
        if ins == 0x32 and proprietary:
            return self._change(cmd, 0x32)
        if ins == 0x2A and proprietary:
            return self._sign(cmd)
        if ins == 0x84 and not proprietary:
            return self._get_challenge(cmd)
        if ins == 0x88 and not proprietary:
            return self._internal_authenticate(cmd)
        if ins == 0xCA and not proprietary:
            return self._get_data(cmd)
        if ins == 0xC0:
            raise _Reply(0x6985)  # nothing pending: the card never answers 61xx
        if proprietary and ins == 0xA2:
            raise _Reply(0x6A86)
        if proprietary and ins == 0xFC:
            raise _Reply(0x6700)  # last-command indicator exists on phone tokens only
        if proprietary and ins == 0xAE:
            raise _Reply(0x66F1 if self._session.df in (C, V) else 0x6982)
        if proprietary and ins in UNUSED_JICSAP_INS:
            raise _Reply(0x6982)
        raise _Reply(0x6D00)

    # -- helpers ---------------------------------------------------------------------
    def _require_df(self) -> bytes:
        if self._session.df is None:
            raise _Reply(0x6A82)
        return self._session.df

    def _exists(self, df: bytes, fid: int) -> bool:
        return fid in self._apps.get(df, set())

    def _allowed(self, rule: frozenset[int]) -> bool:
        return not rule or bool(rule & self._session.verified)

    def _secret(self, df: bytes, fid: int) -> SecretState:
        st = self.image.secrets.get((df, fid))
        if st is None:
            raise _Reply(0x6A88)
        return st

    # -- SELECT ----------------------------------------------------------------------
    def _select(self, cmd: CommandApdu) -> bytes:
        s = self._session
        if cmd.p1 == 0x04:
            if cmd.p2 not in (0x00, 0x0C):
                raise _Reply(0x6A86)
            aid = cmd.data
            if aid == c.AID_GP_ISD:
                self._session = _Session()
                return b""
            if aid not in self._apps:
                raise _Reply(0x6A82)
            self._session = _Session(df=aid)
            return b""
        if cmd.p1 == 0x02:
            if cmd.p2 not in (0x00, 0x0C) or len(cmd.data) != 2:
                raise _Reply(0x6A86 if cmd.p2 not in (0x00, 0x0C) else 0x6700)
            df = self._require_df()
            fid = int.from_bytes(cmd.data, "big")
            if not self._exists(df, fid):
                raise _Reply(0x6A82)
            s.ef = fid
            return b""
        if cmd.p1 == 0x00:
            if cmd.data == b"\x3f\x00":
                raise _Reply(0x6A82)
            if cmd.data or s.df is None:
                raise _Reply(0x6A86)
            return b""  # stays in the current DF
        raise _Reply(0x6A86)

    # -- READ BINARY / READ RECORD -----------------------------------------------------
    def _read_binary(self, cmd: CommandApdu) -> bytes:
        if cmd.data or cmd.le is None:
            raise _Reply(0x6700)
        df = self._session.df
        if df is None:  # MF level: no EF is readable
            raise _Reply(0x6A82 if cmd.p1 & 0x80 else 0x6986)
        if cmd.p1 & 0x80:
            if cmd.p1 & 0x60:
                raise _Reply(0x6A86)
            fid = cmd.p1 & 0x1F
            offset = cmd.p2
            if not self._exists(df, fid):
                raise _Reply(0x6A82)
            self._session.ef = fid
        else:
            if self._session.ef is None:
                raise _Reply(0x6986)
            fid = self._session.ef
            offset = (cmd.p1 << 8) | cmd.p2
        data = self.image.files.get((df, fid))
        if data is None:
            raise _Reply(0x6981)  # key, record or internal EF
        if not self._allowed(READ_RULES.get((df, fid), FREE)):
            raise _Reply(0x6982)
        if offset >= len(data):
            raise _Reply(0x6B00)
        return data[offset : offset + cmd.le]

    def _read_record(self, cmd: CommandApdu) -> bytes:
        if cmd.data or cmd.le is None:
            raise _Reply(0x6700)
        df = self._require_df()
        if cmd.p2 & 0x07 != 0x04:
            raise _Reply(0x6A86)
        sfi = cmd.p2 >> 3
        fid = sfi if sfi else self._session.ef
        if fid is None or not self._exists(df, fid):
            raise _Reply(0x6A82)
        recs = self.image.records.get((df, fid))
        if recs is None:
            raise _Reply(0x6981)
        self._session.ef = fid
        if not 1 <= cmd.p1 <= len(recs):
            raise _Reply(0x6A83)
        if not self._allowed(READ_RULES.get((df, fid), FREE)):
            raise _Reply(0x6982)
        return recs[cmd.p1 - 1][: cmd.le]

    # -- VERIFY / CHANGE ---------------------------------------------------------------
    def _key_ref(self, cmd: CommandApdu) -> tuple[bytes, int]:
        df = self._require_df()
        if cmd.p2 == 0x80:
            fid = self._session.ef
            if fid is None or (df, fid) not in self.image.secrets:
                raise _Reply(0x6A88)
        elif cmd.p2 & 0x80 and not cmd.p2 & 0x60 and cmd.p2 & 0x1F:
            fid = cmd.p2 & 0x1F
            if (df, fid) not in self.image.secrets:
                raise _Reply(0x6A88)
        else:
            raise _Reply(0x6A86)
        return df, fid

    def _verify(self, cmd: CommandApdu) -> bytes:
        if cmd.p1 != 0x00:
            raise _Reply(0x6A86)
        df, fid = self._key_ref(cmd)
        if cmd.le is not None:
            raise _Reply(0x6700)
        if not cmd.data:
            # Empty VERIFY reads the counter and spends nothing.
            self._refresh(df, fid)
            raise _Reply(0x63C0 | self._secret(df, fid).tries)
        ok, tries = self._check_secret(df, fid, cmd.data)
        if ok:
            self._session.verified.add(fid)
            return b""
        self._session.verified.discard(fid)
        if tries is None:
            raise _Reply(0x6984)
        raise _Reply(0x63C0 | tries)

    def _refresh(self, df: bytes, fid: int) -> None:
        """Reload a counter that another process may have changed."""
        if self.store is not None:
            current = self.store.read_state().get(key_name(df, fid))
            if current is not None:
                self.image.secrets[(df, fid)] = current

    def _check_secret(self, df: bytes, fid: int, candidate: bytes) -> tuple[bool, int | None]:
        """Compare under the card lock. Returns (match, tries left after a failure);
        tries is None when the key was already blocked."""
        name = key_name(df, fid)
        if self.store is None:
            return self._check_in(self.image.secrets, (df, fid), candidate)
        with self.store.transaction() as state:
            st = state.get(name)
            if st is None:
                raise _Reply(0x6A88)
            if st.tries == 0:
                self.image.secrets[(df, fid)] = st
                return False, None
            # Decrement first and make it durable, then compare (anti-tearing).
            st.tries -= 1
            self.store._write_state(state)
            match = st.matches(candidate)
            if match:
                st.tries = st.max_tries
            self.image.secrets[(df, fid)] = st
            return match, st.tries

    @staticmethod
    def _check_in(secrets_map: dict[tuple[bytes, int], SecretState], key: tuple[bytes, int],
                  candidate: bytes) -> tuple[bool, int | None]:
        st = secrets_map[key]
        if st.tries == 0:
            return False, None
        st.tries -= 1
        if st.matches(candidate):
            st.tries = st.max_tries
            return True, st.tries
        return False, st.tries

    def _change(self, cmd: CommandApdu, ins: int) -> bytes:
        df = self._require_df()
        if ins == 0x24 and cmd.p1 != 0x01:
            raise _Reply(0x6A86)
        if ins == 0x32 and cmd.p1 != 0x00:
            raise _Reply(0x6A86)
        if cmd.p2 != 0x80:
            raise _Reply(0x6A86)
        fid = self._session.ef
        if fid is None or (df, fid) not in self.image.secrets:
            raise _Reply(0x6A88)
        st = self._secret(df, fid)
        if CHANGE_INS.get(st.value_rule) != ins:
            raise _Reply(0x6985 if st.value_rule in CHANGE_INS else 0x6982)
        if fid not in self._session.verified:
            raise _Reply(0x6982)
        if not cmd.data or not _NEW_VALUE_RULES[st.value_rule].fullmatch(cmd.data):
            raise _Reply(0x6A80)
        if self.store is None:
            st.set_secret(cmd.data)
            return b""
        with self.store.transaction() as state:
            stored = state[key_name(df, fid)]
            stored.set_secret(cmd.data)
            self.image.secrets[(df, fid)] = stored
        return b""

    # -- signing -------------------------------------------------------------------------
    def _private_key(self, df: bytes, fid: int) -> rsa.RSAPrivateKey:
        key = self.image.private_keys.get((df, fid))
        if key is None:
            raise _Reply(0x6A88)
        return key

    def _sign(self, cmd: CommandApdu) -> bytes:
        df = self._require_df()
        if cmd.p1 > 0x05:
            raise _Reply(0x6A86)
        if cmd.p2 == 0x00:
            fid = DEFAULT_SIGN_KEY.get(df)
            if fid is None:
                raise _Reply(0x6A88)
        elif cmd.p2 == 0x80:
            if self._session.ef is None:
                raise _Reply(0x6A88)
            fid = self._session.ef
        elif cmd.p2 & 0x80 and not cmd.p2 & 0x60:
            fid = cmd.p2 & 0x1F
        else:
            raise _Reply(0x6A86)
        if (df, fid) not in KEY_USE_RULES:
            raise _Reply(0x6A88 if (df, fid) not in self.image.private_keys else 0x6985)
        key = self._private_key(df, fid)
        if not self._allowed(KEY_USE_RULES[(df, fid)]):
            raise _Reply(0x6982)
        if cmd.p2 == 0x80 or cmd.p2 & 0x1F:
            self._session.ef = fid
        return _sign_scheme(key, cmd.p1, cmd.data)

    def _internal_authenticate(self, cmd: CommandApdu) -> bytes:
        df = self._require_df()
        if cmd.p1 != 0x00 or not cmd.p2 & 0x80 or cmd.p2 & 0x60:
            raise _Reply(0x6A86)
        fid = (cmd.p2 & 0x1F) or self._session.ef
        if fid is None or not self._exists(df, fid):
            raise _Reply(0x6A88)
        if (df, fid) not in INTERNAL_AUTH_KEYS:
            raise _Reply(0x6985 if (df, fid) in self.image.private_keys else 0x6982)
        if not cmd.data:
            raise _Reply(0x6700)
        key = self._private_key(df, fid)
        return key.sign(cmd.data, padding.PKCS1v15(), hashes.SHA256())

    # -- misc ------------------------------------------------------------------------------
    def _get_challenge(self, cmd: CommandApdu) -> bytes:
        if cmd.p1 or cmd.p2:
            raise _Reply(0x6A86)
        if cmd.le is None or cmd.data:
            raise _Reply(0x6700)
        if cmd.is_extended:
            raise _Reply(0x6985)
        challenge = secrets.token_bytes(cmd.le)
        self._session.challenge = challenge
        return challenge

    # -- issuer-authenticated reset (our design: cardio.pinreset) ---------------------------
    def _reset_retry_counter(self, cmd: CommandApdu) -> bytes:
        """``0C 2C 02 (80|SFI)``: set a new JPKI PIN and restore its counter, authorised
        by the issuer's MAC over the challenge this card just issued. The holder must have
        verified the *other* JPKI credential in this session."""
        challenge, self._session.challenge = self._session.challenge, None  # single use
        df = self._require_df()
        if df != J or cmd.p1 != pinreset.P1_NEW_REFERENCE:
            raise _Reply(0x6A86)
        target = {0x80 | sfi: name for name, sfi in pinreset.TARGET_SFI.items()}.get(cmd.p2)
        if target is None:
            raise _Reply(0x6A86)
        key_hex = self.image.meta.get("reset_key")
        if not key_hex:
            raise _Reply(0x6982)
        other = c.JPKI_AUTH_PIN if target == "sign" else c.JPKI_SIGN_PIN
        if other not in self._session.verified:
            raise _Reply(0x6982)
        try:
            value, mac = pinreset.parse_reset_data(cmd.data)
        except pinreset.ResetError:
            raise _Reply(0x6987) from None
        if challenge is None:
            raise _Reply(0x6985)  # no fresh challenge: nothing to bind the MAC to
        header = bytes((cmd.cla, cmd.ins, cmd.p1, cmd.p2))
        expected = pinreset.mac(bytes.fromhex(key_hex), header, challenge,
                                pinreset.value_hash(value))
        if not hmac.compare_digest(mac, expected):
            raise _Reply(0x6988)
        fid = cmd.p2 & 0x1F
        st = self._secret(df, fid)
        if not _NEW_VALUE_RULES[st.value_rule].fullmatch(value):
            raise _Reply(0x6A80)
        if self.store is None:
            st.set_secret(value)
            return b""
        with self.store.transaction() as state:
            stored = state[key_name(df, fid)]
            stored.set_secret(value)
            self.image.secrets[(df, fid)] = stored
        return b""

    def _get_data(self, cmd: CommandApdu) -> bytes:
        if cmd.le is None or cmd.data:
            raise _Reply(0x6700)
        if self._session.df is not None:
            raise _Reply(0x6A88)  # data objects answer at MF level only
        tag = (cmd.p1 << 8) | cmd.p2
        value = self.image.data_objects.get(tag)
        if value is None:
            raise _Reply(0x6A88)
        if len(value) > cmd.le or (len(value) > SHORT_MAX_LE and not cmd.is_extended):
            raise _Reply(0x6700)
        return value


def _sign_scheme(key: rsa.RSAPrivateKey, scheme: int, data: bytes) -> bytes:
    """``80 2A`` P1 schemes (reference §7.1)."""
    k = key.key_size // 8
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    if scheme == 0x00:
        if not 1 <= len(data) <= k - 11:
            raise _Reply(0x6985)
        return raw_sign(key, data)
    if scheme in (0x01, 0x03, 0x05):
        if not 1 <= len(data) <= 255:
            raise _Reply(0x6985)
        digest = hashlib.sha256(data).digest()
    else:
        if len(data) != 32:
            raise _Reply(0x6985)
        digest = data
    if scheme == 0x01:
        return raw_sign(key, digest)
    if scheme in (0x02, 0x03):
        return raw_sign(key, digest_info("sha256", digest))
    return key.sign(digest, pss, utils.Prehashed(hashes.SHA256()))
