"""What the card holds, declared once: one spec per applet (reference §4, §5, §10).

Every fact about an applet's files (FID, SFI, access rule), keys (what a signature needs,
which key is the default, which answers INTERNAL AUTHENTICATE) and credentials (key
reference, retry limit, value format rule, how a new value is set, what a verified value
opens) lives in this table. The personaliser reads it to write the card's secrets and to
check that it writes no undeclared file; the card engine reads it to decide every access.
Neither has an ``if aid == ...`` of its own: a quirk of one applet is a named field here.

Adding an applet means a new :class:`AppletSpec` (and its client and commands); the
engine does not change — ``tests/emulators/card/test_spec.py`` proves it with a toy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from cardio import constants as c
from cardio import pinreset
from cardio.apdu import builders as ins
from cardio.apdu.status import SW
from cardio.errors import CardioError
from cardio.identity import is_four_digit_pin, is_sign_password


class SpecMismatch(CardioError):
    """A card image and its spec disagree (a personalisation bug, not user input)."""


@dataclass(frozen=True)
class Access:
    """Who may use a file or key: free, any one of some verified key references in the
    current DF, or nobody."""

    keys: frozenset[int] = frozenset()
    never: bool = False

    def allows(self, verified: Iterable[int]) -> bool:
        if self.never:
            return False
        return not self.keys or not self.keys.isdisjoint(verified)


FREE = Access()
NEVER = Access(never=True)


def any_of(*key_fids: int) -> Access:
    return Access(frozenset(key_fids))


@dataclass(frozen=True)
class ValueRule:
    """The format of a credential's value, checked when a new value is set, and the
    instruction that sets it (``None``: the value is printed on the card or derived, and
    never changes). ``name`` is what ``state.json`` records."""

    name: str
    accepts: Callable[[bytes], bool]
    changed_by: int | None


def _never(_value: bytes) -> bool:
    return False


FOUR_DIGITS = ValueRule("pin4", is_four_digit_pin, ins.INS_CHANGE_REFERENCE_DATA)
FOUR_DIGITS_KEY = ValueRule("pin4k", is_four_digit_pin, ins.INS_CHANGE_KEY)
"""A 4-digit PIN set with the JICSAP CHANGE KEY (共通AP, 住基AP)."""
SIGN_PASSWORD = ValueRule("sign", is_sign_password, ins.INS_CHANGE_REFERENCE_DATA)
FIXED = ValueRule("fixed", _never, None)
"""照合番号A/B and the birth-date key: printed or derived, never changed."""
NO_VALUE = ValueRule("none", _never, None)
"""A key reference without a value: it ships blocked (text ``0012``)."""

VALUE_RULES: dict[str, ValueRule] = {
    r.name: r for r in (FOUR_DIGITS, FOUR_DIGITS_KEY, SIGN_PASSWORD, FIXED, NO_VALUE)}


def default_sfi(fid: int) -> int | None:
    """ISO 7816-4's default: an EF whose FID is 1..30 is also reachable by that SFI (every
    SFI this card answers to, reference §6)."""
    return fid if 1 <= fid <= MAX_SFI else None


MAX_SFI = 30


@dataclass(frozen=True)
class FileSpec:
    """An EF: its short identifier and read access for READ BINARY / READ RECORD. Which
    EFs exist on a card is what personalisation wrote; files not declared here are
    refused by the personaliser."""

    fid: int
    label: str
    read: Access = FREE
    sfi: int | None = None
    """``None``: :func:`default_sfi`."""


@dataclass(frozen=True)
class KeySpec:
    """A private key. ``sign``: who may use it with ``80 2A`` (``None``: the key does not
    sign that way, 6985); ``default``: the key ``80 2A`` with P2=00 uses;
    ``internal_authenticate``: the key answers INTERNAL AUTHENTICATE."""

    fid: int
    label: str
    sign: Access | None = None
    default: bool = False
    internal_authenticate: bool = False
    sfi: int | None = None


@dataclass(frozen=True)
class CredentialSpec:
    """A key reference verified with VERIFY: a PIN, a password or a 照合番号."""

    fid: int
    label: str
    rule: ValueRule
    max_tries: int
    credential: c.Credential | None = None
    sfi: int | None = None

    @classmethod
    def of(cls, credential: c.Credential, rule: ValueRule) -> CredentialSpec:
        """The spec of a credential the client knows, with its retry limit."""
        return cls(credential.fid, credential.label, rule, credential.default_tries, credential)


@dataclass(frozen=True)
class PinResetSpec:
    """The issuer-authenticated RESET RETRY COUNTER (our design, :mod:`cardio.pinreset`):
    per target P2, the key reference reset and the one the holder must have verified."""

    targets: Mapping[int, tuple[int, int]]


@dataclass(frozen=True)
class AppletSpec:
    """One application (DF) of the card."""

    aid: bytes
    name: str
    files: tuple[FileSpec, ...] = ()
    keys: tuple[KeySpec, ...] = ()
    credentials: tuple[CredentialSpec, ...] = ()
    set_session_key: SW = SW.SECURITY_STATUS_NOT_SATISFIED
    """What ``80 AE`` (SET SESSION KEY) answers: this card does not offer secure
    messaging, and APs without key delivery say so with 66F1 (reference §8)."""
    pin_reset: PinResetSpec | None = None
    _files: dict[int, FileSpec] = field(init=False, repr=False, compare=False)
    _keys: dict[int, KeySpec] = field(init=False, repr=False, compare=False)
    _credentials: dict[int, CredentialSpec] = field(init=False, repr=False, compare=False)
    _sfis: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_files", {f.fid: f for f in self.files})
        object.__setattr__(self, "_keys", {k.fid: k for k in self.keys})
        object.__setattr__(self, "_credentials", {x.fid: x for x in self.credentials})
        sfis: dict[int, int] = {}
        declared: list[tuple[int | None, int]] = [
            *((f.sfi, f.fid) for f in self.files), *((k.sfi, k.fid) for k in self.keys),
            *((x.sfi, x.fid) for x in self.credentials)]
        for explicit, fid in declared:
            sfi = explicit if explicit is not None else default_sfi(fid)
            if sfi is None:
                continue
            if not 1 <= sfi <= MAX_SFI or sfis.setdefault(sfi, fid) != fid:
                raise SpecMismatch(f"{self.name}: SFI {sfi} is invalid or used twice")
        object.__setattr__(self, "_sfis", sfis)

    def fid_for_sfi(self, sfi: int) -> int:
        """The EF a short identifier names; -1 (no EF) when none is declared with it."""
        return self._sfis.get(sfi, -1)

    def file(self, fid: int) -> FileSpec | None:
        return self._files.get(fid)

    def read_access(self, fid: int) -> Access:
        spec = self._files.get(fid)
        return spec.read if spec is not None else FREE

    def key(self, fid: int) -> KeySpec | None:
        return self._keys.get(fid)

    def default_key(self) -> KeySpec | None:
        return next((k for k in self.keys if k.default), None)

    def credential(self, fid: int) -> CredentialSpec | None:
        return self._credentials.get(fid)


@dataclass(frozen=True)
class CardSpec:
    """A card: its applets by AID."""

    applets: tuple[AppletSpec, ...]
    _by_aid: dict[bytes, AppletSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_aid", {a.aid: a for a in self.applets})

    def applet(self, aid: bytes) -> AppletSpec | None:
        return self._by_aid.get(aid)


# -- the My Number card ----------------------------------------------------------------------
Cred = c.Credential

JPKI = AppletSpec(
    c.AID_JPKI, c.APPLICATIONS[c.AID_JPKI],
    files=(
        FileSpec(c.JPKI_SIGN_CERT, "署名用電子証明書", any_of(c.JPKI_SIGN_PIN)),
        FileSpec(c.JPKI_SIGN_CA_CERT, "署名用認証局証明書"),
        FileSpec(c.JPKI_TOKEN, "token information"),
        FileSpec(c.JPKI_CERT_AVAILABILITY, "certificate availability"),
        FileSpec(c.JPKI_UNKNOWN_0009, "unknown EF 0009", NEVER),
        FileSpec(c.JPKI_AUTH_CERT, "利用者証明用電子証明書"),
        FileSpec(c.JPKI_AUTH_CA_CERT, "利用者証明用認証局証明書"),
    ),
    keys=(
        KeySpec(c.JPKI_AUTH_KEY, "利用者証明用秘密鍵", sign=any_of(c.JPKI_AUTH_PIN)),
        KeySpec(c.JPKI_SIGN_KEY, "署名用秘密鍵", sign=any_of(c.JPKI_SIGN_PIN)),
    ),
    credentials=(
        CredentialSpec.of(Cred.AUTH, FOUR_DIGITS),
        CredentialSpec.of(Cred.SIGN, SIGN_PASSWORD),
    ),
    # Resetting one JPKI credential needs the other one verified in this session.
    pin_reset=PinResetSpec({
        0x80 | pinreset.TARGET_SFI["sign"]: (c.JPKI_SIGN_PIN, c.JPKI_AUTH_PIN),
        0x80 | pinreset.TARGET_SFI["auth"]: (c.JPKI_AUTH_PIN, c.JPKI_SIGN_PIN),
    }),
)

_TEXT_ANY = any_of(c.TEXT_PIN, c.TEXT_CODE_A, c.TEXT_CODE_B)
TEXT = AppletSpec(
    c.AID_TEXT, c.APPLICATIONS[c.AID_TEXT],
    files=(
        FileSpec(c.TEXT_MY_NUMBER, "個人番号", any_of(c.TEXT_PIN, c.TEXT_CODE_A)),
        FileSpec(c.TEXT_ATTRIBUTES, "基本4情報", any_of(c.TEXT_PIN, c.TEXT_CODE_B)),
        FileSpec(c.TEXT_INTEGRITY, "digests and signature", _TEXT_ANY),
        FileSpec(c.TEXT_CV_CERT, "CV certificate"),
        FileSpec(c.TEXT_BASIC_INFO, "basic information"),
        FileSpec(c.TEXT_SESSION_KEY, "session-key public key", _TEXT_ANY),
        FileSpec(c.TEXT_SIGNED_PUBKEY, "signed presence key", _TEXT_ANY),
        FileSpec(c.TEXT_UNKNOWN_0008, "unknown EF 0008"),
    ),
    keys=(KeySpec(c.TEXT_SIGN_KEY, "card-presence key", sign=FREE, default=True),),
    credentials=(
        CredentialSpec.of(Cred.TEXT, FOUR_DIGITS),
        CredentialSpec(c.TEXT_BLOCKED_0012, "key 0012 (ships blocked)", NO_VALUE, 3),
        CredentialSpec.of(Cred.TEXT_A, FIXED),
        CredentialSpec.of(Cred.TEXT_B, FIXED),
    ),
)

_VISUAL_AB = any_of(c.VISUAL_CODE_A, c.VISUAL_CODE_B)
VISUAL = AppletSpec(
    c.AID_VISUAL, c.APPLICATIONS[c.AID_VISUAL],
    files=(
        FileSpec(c.VISUAL_AGE, "birth date and presence key", any_of(c.VISUAL_BIRTH_KEY)),
        FileSpec(c.VISUAL_FACE, "券面 (card face)", _VISUAL_AB),
        FileSpec(c.VISUAL_BASIC_INFO, "basic information"),
        FileSpec(c.VISUAL_CV_CERT, "CV certificate"),
        FileSpec(c.VISUAL_MY_NUMBER_IMAGE, "個人番号 image", any_of(c.VISUAL_CODE_A)),
        FileSpec(c.VISUAL_UNKNOWN_0006, "unknown EF 0006", _VISUAL_AB),
    ),
    keys=(KeySpec(c.VISUAL_SIGN_KEY, "card-presence key", sign=FREE, default=True),),
    credentials=(
        CredentialSpec.of(Cred.VISUAL_BIRTH, FIXED),
        CredentialSpec.of(Cred.VISUAL_B, FIXED),
        CredentialSpec.of(Cred.VISUAL_A, FIXED),
    ),
    set_session_key=SW.SESSION_KEY_NOT_CONFIGURED,
)

COMMON = AppletSpec(
    c.AID_COMMON, c.APPLICATIONS[c.AID_COMMON],
    files=(
        FileSpec(c.COMMON_CARD_INFO, "card information (record)"),
        FileSpec(c.COMMON_KEY_ID, "card key ID"),
    ),
    keys=(KeySpec(c.COMMON_AUTH_KEY, "card authentication key", internal_authenticate=True),),
    credentials=(CredentialSpec.of(Cred.COMMON, FOUR_DIGITS_KEY),),
    set_session_key=SW.SESSION_KEY_NOT_CONFIGURED,
)

JUKI = AppletSpec(
    c.AID_JUKI, c.APPLICATIONS[c.AID_JUKI],
    files=(FileSpec(c.JUKI_RECORD, "card key ID (record)"),),
    credentials=(CredentialSpec.of(Cred.JUKI, FOUR_DIGITS_KEY),),
)

MY_NUMBER_CARD = CardSpec((JPKI, TEXT, VISUAL, COMMON, JUKI))
"""The five applets of the 個人番号カード."""
