"""The card engine: a pure APDU processor driven by the applet specs.

``CardEngine.process(command, session, secrets) -> Outcome`` is the whole interface: a
command, the volatile session (what is selected, what is verified) and the persistent
state of the key references go in; the response bytes, the new session and the changed
key references come out. The engine keeps nothing between calls, opens no file, takes no
lock and logs nothing; :class:`emulators.card.card.SoftwareCard` does that around it
(reads the state from the card directory, makes the changes durable before the answer
leaves, and turns a store failure into ``6581``). Its only impure inputs are the random
bytes of GET CHALLENGE and of RSA-PSS salts (``rng`` is injectable).

Behaviour follows ``shared/reference/mynumber-card.md`` §2-§7 and the emulator checklist
in §10:

* applications selected by AID (``6A82`` for every other AID), EFs by FID or SFI;
* security state per DF, cleared by SELECT by AID and by reset;
* a VERIFY's outcome (the spent try, or the counter restored) is made durable by the
  adapter before the answer leaves, so pulling the card mid-VERIFY yields no answer and
  no free try;
* READ BINARY returning ``min(Le, remaining)`` with ``9000`` and ``6B00`` past the end;
* ``80 2A`` P1 00-05, P2 ``80``, ``80|SFI`` and ``00``.

Dispatch is one table keyed by (CLA class, INS); P1/P2 naming an EF or SFI is decoded in
one place (:func:`ef_reference`, :func:`read_binary_target`, :func:`record_reference`);
what may be read, signed or verified comes from :mod:`emulators.card.spec`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from cardio import constants as c
from cardio import pinreset
from cardio.apdu import builders as iso
from cardio.apdu.command import SHORT_MAX_LE, CommandApdu, ResponseApdu
from cardio.apdu.status import SW, tries_left
from cardio.crypto import digest_info
from emulators.card.keys import raw_sign
from emulators.card.spec import AppletSpec, CardSpec, CredentialSpec
from emulators.card.store import CardImage, KeyName, SecretState

# Instructions the ISO builder module does not name (JICSAP / phone-token extras).
INS_VERIFY_CERTIFICATE = 0xA2
INS_LAST_COMMAND = 0xFC
INS_SET_SESSION_KEY = 0xAE
INS_UNUSED_JICSAP = (0x8A, 0x50, 0x52, 0x54, 0x82)
"""MANAGE ATTRIBUTES, LOCK/UNLOCK DF, UNLOCK KEY, EXTERNAL AUTHENTICATE (reference §2)."""

SELECT_MF, SELECT_EF, SELECT_AID = 0x00, 0x02, 0x04
SELECT_P2_ALLOWED = (0x00, 0x0C)
FID_MF = b"\x3f\x00"
MAX_SIGN_SCHEME = 0x05
RECORD_BY_NUMBER = 0x04


class _Reply(Exception):
    """Raised inside a handler to answer with a status word."""

    def __init__(self, sw: SW | int) -> None:
        super().__init__(f"{sw:04X}")
        self.sw = int(sw)


class Session(NamedTuple):
    """The card's volatile state: lost on reset, power-off and removal. Immutable (a
    command yields a new one), and a tuple because one is made per APDU."""

    df: bytes | None = None
    ef: int | None = None
    verified: frozenset[int] = frozenset()
    challenge: bytes | None = None


class Outcome(NamedTuple):
    """What one command did: the response, the session after it and the key references
    whose persistent state changed (the adapter must make those durable first)."""

    response: bytes
    session: Session
    changes: dict[KeyName, SecretState]


class StateUse(Enum):
    """What a command needs of the persistent state: nothing, a fresh read (another
    process may have spent a try), or a locked read-modify-write."""

    NONE = "none"
    READ = "read"
    WRITE = "write"


class ClaClass(IntEnum):
    ISO = 0x00
    PROPRIETARY = 0x80
    SECURE_MESSAGING = 0x0C
    """ISO with secure messaging and an authenticated header: only the issuer's reset."""


_CLA_CLASSES = {kind.value: kind for kind in ClaClass}


def cla_class(cla: int) -> ClaClass:
    """CLA decoding, the one place: only logical channel 0, no chaining, secure messaging
    only for the commands that define it."""
    kind = _CLA_CLASSES.get(cla)
    if kind is not None:
        return kind
    if cla & 0x03:
        raise _Reply(SW.LOGICAL_CHANNEL_NOT_SUPPORTED)
    if cla & 0x0C:
        raise _Reply(SW.SECURE_MESSAGING_NOT_SUPPORTED)
    raise _Reply(SW.CLA_NOT_SUPPORTED)


# -- P1/P2 decoding: the one place ----------------------------------------------------------
CURRENT_EF = 0
_OK = SW.OK.trailer


def ef_reference(p: int) -> int:
    """A P1 or P2 naming an EF: ``80`` is the current EF (:data:`CURRENT_EF`), ``80|SFI``
    the EF with that short identifier; anything else is refused with 6A86."""
    if p & 0xE0 != 0x80:
        raise _Reply(SW.WRONG_P1_P2)
    return p & 0x1F


def read_binary_target(p1: int, p2: int) -> tuple[int | None, int]:
    """READ BINARY's (SFI, offset): P1 ``80|SFI`` with an 8-bit offset in P2, otherwise a
    15-bit offset into the current EF (SFI ``None``)."""
    if p1 & 0x80:
        return ef_reference(p1), p2
    return None, (p1 << 8) | p2


def record_reference(p2: int) -> int:
    """READ RECORD's P2: ``SFI << 3 | 4`` (record number in P1); SFI 0 is the current EF."""
    if p2 & 0x07 != RECORD_BY_NUMBER:
        raise _Reply(SW.WRONG_P1_P2)
    return p2 >> 3


# -- the engine -------------------------------------------------------------------------------
class _Ctx:
    """One command in progress: the session as it evolves, the state it may read, and the
    changes it makes."""

    __slots__ = ("changes", "secrets", "session")

    def __init__(self, session: Session, secrets: Mapping[KeyName, SecretState]) -> None:
        self.session = session
        self.secrets = secrets
        self.changes: dict[KeyName, SecretState] = {}

    def secret(self, name: KeyName) -> SecretState | None:
        return self.changes.get(name) or self.secrets.get(name)

    def verified(self, fid: int, ok: bool) -> None:
        v = self.session.verified
        self.session = self.session._replace(verified=v | {fid} if ok else v - {fid})


Handler = Callable[["CardEngine", _Ctx, CommandApdu], bytes]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    state: StateUse = StateUse.NONE


def _answer(sw: SW) -> Handler:
    """A command this card knows but refuses with a fixed status word."""
    def handler(_engine: CardEngine, _ctx: _Ctx, _cmd: CommandApdu) -> bytes:
        raise _Reply(sw)
    return handler


class CardEngine:
    """The processor of a personalised card described by ``spec``."""

    def __init__(self, spec: CardSpec, image: CardImage,
                 rng: Callable[[int], bytes] = _secrets.token_bytes) -> None:
        self.spec = spec
        self.image = image
        self.rng = rng
        # Which EFs exist is what personalisation wrote (and the spec's DFs exist even
        # when empty); it does not change while the card is in use.
        self._efs: dict[bytes, set[int]] = {a.aid: set() for a in spec.applets}
        for aid, fid in [*image.files, *image.records, *image.private_keys, *image.secrets]:
            self._efs.setdefault(aid, set()).add(fid)
        self._secret_refs = set(image.secrets)

    # -- entry points ----------------------------------------------------------------
    def command(self, cmd: CommandApdu) -> Command | None:
        try:
            kind = cla_class(cmd.cla)
        except _Reply:
            return None
        return COMMANDS.get((kind, cmd.ins))

    def state_use(self, cmd: CommandApdu) -> StateUse:
        """What ``cmd`` needs of the persistent state. A command that could write but
        carries no data cannot (an empty VERIFY only reads the counter)."""
        found = self.command(cmd)
        if found is None:
            return StateUse.NONE
        if found.state is StateUse.WRITE and not cmd.data:
            return StateUse.READ
        return found.state

    def process(self, cmd: CommandApdu, session: Session,
                secrets: Mapping[KeyName, SecretState]) -> Outcome:
        """Answer one command. Pure: ``session`` and ``secrets`` are not modified."""
        ctx = _Ctx(session, secrets)
        try:
            kind = cla_class(cmd.cla)
            found = COMMANDS.get((kind, cmd.ins))
            if found is None:
                raise _Reply(SW.SECURE_MESSAGING_NOT_SUPPORTED
                             if kind is ClaClass.SECURE_MESSAGING else SW.INS_NOT_SUPPORTED)
            data = found.handler(self, ctx, cmd)
        except _Reply as reply:
            return Outcome(ResponseApdu.status(reply.sw).encode(), ctx.session, ctx.changes)
        return Outcome(data + _OK, ctx.session, ctx.changes)

    # -- helpers ---------------------------------------------------------------------
    def _applet(self, ctx: _Ctx) -> AppletSpec:
        """The selected applet; 6A82 at MF level. A DF the card holds but the spec does
        not declare has free files and no keys or credentials."""
        df = ctx.session.df
        if df is None:
            raise _Reply(SW.FILE_NOT_FOUND)
        return self.spec.applet(df) or AppletSpec(df, df.hex().upper())

    def _by_sfi(self, ctx: _Ctx, sfi: int) -> int:
        """The FID a short EF identifier names in the selected applet (its spec)."""
        return self._applet(ctx).fid_for_sfi(sfi)

    def _exists(self, df: bytes, fid: int) -> bool:
        return fid in self._efs.get(df, set())

    def _credential(self, applet: AppletSpec, ctx: _Ctx, fid: int
                    ) -> tuple[CredentialSpec, SecretState]:
        spec = applet.credential(fid)
        st = ctx.secret((applet.aid, fid))
        if spec is None or st is None:
            raise _Reply(SW.REFERENCED_DATA_NOT_FOUND)
        return spec, st

    def _private_key(self, df: bytes, fid: int) -> rsa.RSAPrivateKey:
        key = self.image.private_keys.get((df, fid))
        if key is None:
            raise _Reply(SW.REFERENCED_DATA_NOT_FOUND)
        return key

    # -- SELECT ----------------------------------------------------------------------
    def select(self, ctx: _Ctx, cmd: CommandApdu) -> bytes:
        s = ctx.session
        if cmd.p1 == SELECT_AID:
            if cmd.p2 not in SELECT_P2_ALLOWED:
                raise _Reply(SW.WRONG_P1_P2)
            if cmd.data == c.AID_GP_ISD:
                ctx.session = Session()
                return b""
            if cmd.data not in self._efs:
                raise _Reply(SW.FILE_NOT_FOUND)
            ctx.session = Session(df=cmd.data)
            return b""
        if cmd.p1 == SELECT_EF:
            if cmd.p2 not in SELECT_P2_ALLOWED:
                raise _Reply(SW.WRONG_P1_P2)
            if len(cmd.data) != 2:
                raise _Reply(SW.WRONG_LENGTH)
            df = self._applet(ctx).aid
            fid = int.from_bytes(cmd.data, "big")
            if not self._exists(df, fid):
                raise _Reply(SW.FILE_NOT_FOUND)
            ctx.session = s._replace(ef=fid)
            return b""
        if cmd.p1 == SELECT_MF:
            if cmd.data == FID_MF:
                raise _Reply(SW.FILE_NOT_FOUND)
            if cmd.data or s.df is None:
                raise _Reply(SW.WRONG_P1_P2)
            return b""  # stays in the current DF
        raise _Reply(SW.WRONG_P1_P2)

    # -- READ BINARY / READ RECORD -----------------------------------------------------
    def read_binary(self, ctx: _Ctx, cmd: CommandApdu) -> bytes:
        if cmd.data or cmd.le is None:
            raise _Reply(SW.WRONG_LENGTH)
        df = ctx.session.df
        if df is None:  # MF level: no EF is readable
            raise _Reply(SW.FILE_NOT_FOUND if cmd.p1 & 0x80 else SW.NO_CURRENT_EF)
        sfi, offset = read_binary_target(cmd.p1, cmd.p2)
        if sfi is not None:
            fid = self._by_sfi(ctx, sfi) if sfi != CURRENT_EF else -1
            if not self._exists(df, fid):
                raise _Reply(SW.FILE_NOT_FOUND)
            ctx.session = ctx.session._replace(ef=fid)
        else:
            if ctx.session.ef is None:
                raise _Reply(SW.NO_CURRENT_EF)
            fid = ctx.session.ef
        data = self.image.files.get((df, fid))
        if data is None:
            raise _Reply(SW.INCOMPATIBLE_FILE_STRUCTURE)  # key, record or internal EF
        if not self._applet(ctx).read_access(fid).allows(ctx.session.verified):
            raise _Reply(SW.SECURITY_STATUS_NOT_SATISFIED)
        if offset >= len(data):
            raise _Reply(SW.OFFSET_OUT_OF_RANGE)
        return data[offset : offset + cmd.le]

    def read_record(self, ctx: _Ctx, cmd: CommandApdu) -> bytes:
        if cmd.data or cmd.le is None:
            raise _Reply(SW.WRONG_LENGTH)
        applet = self._applet(ctx)
        sfi = record_reference(cmd.p2)
        fid = self._by_sfi(ctx, sfi) if sfi != CURRENT_EF else ctx.session.ef
        if fid is None or not self._exists(applet.aid, fid):
            raise _Reply(SW.FILE_NOT_FOUND)
        recs = self.image.records.get((applet.aid, fid))
        if recs is None:
            raise _Reply(SW.INCOMPATIBLE_FILE_STRUCTURE)
        ctx.session = ctx.session._replace(ef=fid)
        if not 1 <= cmd.p1 <= len(recs):
            raise _Reply(SW.RECORD_NOT_FOUND)
        if not applet.read_access(fid).allows(ctx.session.verified):
            raise _Reply(SW.SECURITY_STATUS_NOT_SATISFIED)
        return recs[cmd.p1 - 1][: cmd.le]

    # -- VERIFY / CHANGE ---------------------------------------------------------------
    def _key_ref(self, ctx: _Ctx, p2: int) -> tuple[AppletSpec, int]:
        applet = self._applet(ctx)
        sfi = ef_reference(p2)
        fid = self._by_sfi(ctx, sfi) if sfi != CURRENT_EF else ctx.session.ef
        if fid is None or (applet.aid, fid) not in self._secret_refs:
            raise _Reply(SW.REFERENCED_DATA_NOT_FOUND)
        return applet, fid

    def verify(self, ctx: _Ctx, cmd: CommandApdu) -> bytes:
        if cmd.p1 != 0x00:
            raise _Reply(SW.WRONG_P1_P2)
        applet, fid = self._key_ref(ctx, cmd.p2)
        if cmd.le is not None:
            raise _Reply(SW.WRONG_LENGTH)
        name = (applet.aid, fid)
        st = ctx.secret(name)
        if st is None:
            raise _Reply(SW.REFERENCED_DATA_NOT_FOUND)
        if not cmd.data:
            # Empty VERIFY reads the counter and spends nothing.
            raise _Reply(tries_left(st.tries))
        if st.tries == 0:
            ctx.verified(fid, False)
            raise _Reply(SW.REFERENCE_DATA_BLOCKED)
        match = st.matches(cmd.data)
        ctx.changes[name] = dataclasses.replace(st, tries=st.max_tries if match else
                                                st.tries - 1)
        ctx.verified(fid, match)
        if not match:
            raise _Reply(tries_left(st.tries - 1))
        return b""

    def _set_value(self, ctx: _Ctx, applet: AppletSpec, fid: int, value: bytes) -> None:
        spec, st = self._credential(applet, ctx, fid)
        if not spec.rule.accepts(value):
            raise _Reply(SW.WRONG_DATA)
        ctx.changes[(applet.aid, fid)] = st.with_secret(value)

    def change(self, ctx: _Ctx, cmd: CommandApdu) -> bytes:
        """CHANGE REFERENCE DATA (``00 24 01 80``) and the JICSAP CHANGE KEY
        (``80 32 00 80``): a new value for the current key EF, after its VERIFY."""
        applet = self._applet(ctx)
        p1 = 0x01 if cmd.ins == iso.INS_CHANGE_REFERENCE_DATA else 0x00
        if cmd.p1 != p1 or cmd.p2 != 0x80:
            raise _Reply(SW.WRONG_P1_P2)
        fid = ctx.session.ef
        if fid is None or (applet.aid, fid) not in self._secret_refs:
            raise _Reply(SW.REFERENCED_DATA_NOT_FOUND)
        spec, _st = self._credential(applet, ctx, fid)
        if spec.rule.changed_by != cmd.ins:
            raise _Reply(SW.CONDITIONS_NOT_SATISFIED if spec.rule.changed_by is not None
                         else SW.SECURITY_STATUS_NOT_SATISFIED)
        if fid not in ctx.session.verified:
            raise _Reply(SW.SECURITY_STATUS_NOT_SATISFIED)
        if not cmd.data:
            raise _Reply(SW.WRONG_DATA)
        self._set_value(ctx, applet, fid, cmd.data)
        return b""

    # -- signing -------------------------------------------------------------------------
    def sign(self, ctx: _Ctx, cmd: CommandApdu) -> bytes:
        applet = self._applet(ctx)
        df = applet.aid
        if cmd.p1 > MAX_SIGN_SCHEME:
            raise _Reply(SW.WRONG_P1_P2)
        fid: int | None
        if cmd.p2 == 0x00:
            default = applet.default_key()
            fid = default.fid if default is not None else None
        else:
            sfi = ef_reference(cmd.p2)
            fid = self._by_sfi(ctx, sfi) if sfi != CURRENT_EF else ctx.session.ef
        if fid is None:
            raise _Reply(SW.REFERENCED_DATA_NOT_FOUND)
        spec = applet.key(fid)
        if spec is None or spec.sign is None:
            raise _Reply(SW.REFERENCED_DATA_NOT_FOUND if (df, fid) not in self.image.private_keys
                         else SW.CONDITIONS_NOT_SATISFIED)
        key = self._private_key(df, fid)
        if not spec.sign.allows(ctx.session.verified):
            raise _Reply(SW.SECURITY_STATUS_NOT_SATISFIED)
        if cmd.p2 != 0x00:
            ctx.session = ctx.session._replace(ef=fid)
        return self._sign_scheme(key, cmd.p1, cmd.data)

    def _sign_scheme(self, key: rsa.RSAPrivateKey, scheme: int, data: bytes) -> bytes:
        """``80 2A`` P1 schemes (reference §7.1)."""
        k = key.key_size // 8
        if scheme == 0x00:
            if not 1 <= len(data) <= k - 11:
                raise _Reply(SW.CONDITIONS_NOT_SATISFIED)
            return raw_sign(key, data)
        if scheme in (0x01, 0x03, 0x05):
            if not 1 <= len(data) <= 255:
                raise _Reply(SW.CONDITIONS_NOT_SATISFIED)
            digest = hashlib.sha256(data).digest()
        else:
            if len(data) != 32:
                raise _Reply(SW.CONDITIONS_NOT_SATISFIED)
            digest = data
        if scheme == 0x01:
            return raw_sign(key, digest)
        if scheme in (0x02, 0x03):
            return raw_sign(key, digest_info("sha256", digest))
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return key.sign(digest, pss, utils.Prehashed(hashes.SHA256()))

    def internal_authenticate(self, ctx: _Ctx, cmd: CommandApdu) -> bytes:
        applet = self._applet(ctx)
        if cmd.p1 != 0x00:
            raise _Reply(SW.WRONG_P1_P2)
        sfi = ef_reference(cmd.p2)
        fid = self._by_sfi(ctx, sfi) if sfi != CURRENT_EF else ctx.session.ef
        if fid is None or not self._exists(applet.aid, fid):
            raise _Reply(SW.REFERENCED_DATA_NOT_FOUND)
        spec = applet.key(fid)
        if spec is None or not spec.internal_authenticate:
            raise _Reply(SW.CONDITIONS_NOT_SATISFIED
                         if (applet.aid, fid) in self.image.private_keys
                         else SW.SECURITY_STATUS_NOT_SATISFIED)
        if not cmd.data:
            raise _Reply(SW.WRONG_LENGTH)
        key = self._private_key(applet.aid, fid)
        return key.sign(cmd.data, padding.PKCS1v15(), hashes.SHA256())

    # -- misc ------------------------------------------------------------------------------
    def get_challenge(self, ctx: _Ctx, cmd: CommandApdu) -> bytes:
        if cmd.p1 or cmd.p2:
            raise _Reply(SW.WRONG_P1_P2)
        if cmd.le is None or cmd.data:
            raise _Reply(SW.WRONG_LENGTH)
        if cmd.is_extended:
            raise _Reply(SW.CONDITIONS_NOT_SATISFIED)
        challenge = self.rng(cmd.le)
        ctx.session = ctx.session._replace(challenge=challenge)
        return challenge

    def get_data(self, ctx: _Ctx, cmd: CommandApdu) -> bytes:
        if cmd.le is None or cmd.data:
            raise _Reply(SW.WRONG_LENGTH)
        if ctx.session.df is not None:
            raise _Reply(SW.REFERENCED_DATA_NOT_FOUND)  # data objects answer at MF level only
        value = self.image.data_objects.get((cmd.p1 << 8) | cmd.p2)
        if value is None:
            raise _Reply(SW.REFERENCED_DATA_NOT_FOUND)
        if len(value) > cmd.le or (len(value) > SHORT_MAX_LE and not cmd.is_extended):
            raise _Reply(SW.WRONG_LENGTH)
        return value

    def set_session_key(self, ctx: _Ctx, cmd: CommandApdu) -> bytes:
        df = ctx.session.df
        applet = self.spec.applet(df) if df is not None else None
        raise _Reply(applet.set_session_key if applet is not None
                     else SW.SECURITY_STATUS_NOT_SATISFIED)

    # -- issuer-authenticated reset (our design: cardio.pinreset) ---------------------------
    def reset_retry_counter(self, ctx: _Ctx, cmd: CommandApdu) -> bytes:
        """``0C 2C 02 (80|SFI)``: set a new PIN and restore its counter, authorised by the
        issuer's MAC over the challenge this card just issued. The holder must have
        verified the applet's *other* credential in this session (spec: ``pin_reset``)."""
        challenge = ctx.session.challenge
        ctx.session = ctx.session._replace(challenge=None)  # single use
        applet = self._applet(ctx)
        reset = applet.pin_reset
        if reset is None or cmd.p1 != pinreset.P1_NEW_REFERENCE:
            raise _Reply(SW.WRONG_P1_P2)
        target = reset.targets.get(cmd.p2)
        if target is None:
            raise _Reply(SW.WRONG_P1_P2)
        fid, other = target
        key_hex = self.image.meta.get("reset_key")
        if not key_hex:
            raise _Reply(SW.SECURITY_STATUS_NOT_SATISFIED)
        if other not in ctx.session.verified:
            raise _Reply(SW.SECURITY_STATUS_NOT_SATISFIED)
        try:
            value, mac = pinreset.parse_reset_data(cmd.data)
        except pinreset.ResetError:
            raise _Reply(SW.SM_DATA_OBJECTS_MISSING) from None
        if challenge is None:
            raise _Reply(SW.CONDITIONS_NOT_SATISFIED)  # nothing to bind the MAC to
        header = bytes((cmd.cla, cmd.ins, cmd.p1, cmd.p2))
        expected = pinreset.mac(bytes.fromhex(key_hex), header, challenge,
                                pinreset.value_hash(value))
        if not hmac.compare_digest(mac, expected):
            raise _Reply(SW.SM_DATA_OBJECTS_INCORRECT)
        self._set_value(ctx, applet, fid, value)
        return b""


_ISO, _PROP, _SM = ClaClass.ISO, ClaClass.PROPRIETARY, ClaClass.SECURE_MESSAGING
COMMANDS: dict[tuple[ClaClass, int], Command] = {
    (_ISO, iso.INS_SELECT): Command("SELECT", CardEngine.select),
    (_ISO, iso.INS_READ_BINARY): Command("READ BINARY", CardEngine.read_binary),
    (_ISO, iso.INS_READ_RECORD): Command("READ RECORD", CardEngine.read_record),
    (_ISO, iso.INS_VERIFY): Command("VERIFY", CardEngine.verify, StateUse.WRITE),
    (_ISO, iso.INS_CHANGE_REFERENCE_DATA): Command("CHANGE REFERENCE DATA", CardEngine.change,
                                                   StateUse.WRITE),
    (_PROP, iso.INS_CHANGE_KEY): Command("CHANGE KEY", CardEngine.change, StateUse.WRITE),
    (_PROP, iso.INS_SIGN): Command("COMPUTE DIGITAL SIGNATURE", CardEngine.sign),
    (_ISO, iso.INS_GET_CHALLENGE): Command("GET CHALLENGE", CardEngine.get_challenge),
    (_ISO, iso.INS_INTERNAL_AUTHENTICATE): Command("INTERNAL AUTHENTICATE",
                                                   CardEngine.internal_authenticate),
    (_ISO, iso.INS_GET_DATA): Command("GET DATA", CardEngine.get_data),
    # Nothing is ever pending: the card never answers 61xx.
    (_ISO, iso.INS_GET_RESPONSE): Command("GET RESPONSE", _answer(SW.CONDITIONS_NOT_SATISFIED)),
    (_PROP, iso.INS_GET_RESPONSE): Command("GET RESPONSE",
                                           _answer(SW.CONDITIONS_NOT_SATISFIED)),
    (_PROP, INS_VERIFY_CERTIFICATE): Command("VERIFY CERTIFICATE", _answer(SW.WRONG_P1_P2)),
    # The last-command indicator exists on phone tokens only.
    (_PROP, INS_LAST_COMMAND): Command("LAST COMMAND", _answer(SW.WRONG_LENGTH)),
    (_PROP, INS_SET_SESSION_KEY): Command("SET SESSION KEY", CardEngine.set_session_key),
    **{(_PROP, ins): Command("JICSAP (unused)", _answer(SW.SECURITY_STATUS_NOT_SATISFIED))
       for ins in INS_UNUSED_JICSAP},
    (_SM, pinreset.INS_RESET_RETRY_COUNTER): Command("RESET RETRY COUNTER",
                                                    CardEngine.reset_retry_counter,
                                                    StateUse.WRITE),
}
"""Every command the card knows, by (CLA class, INS). A command not here answers 6D00
(6882 under secure messaging); everything a command may touch in the persistent state
is declared by its :class:`StateUse`."""
