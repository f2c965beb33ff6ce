"""Commands out of the issuance session: what the runner must have the card, the center, the
cash devices, the printer and the UI do.

Every command carries an idempotency key (``<txn>:<n>:<kind>``, unique per session and
deterministic), which the adapters pass on as the device's or the server's own idempotency
handle (IPP job name, ccTalk event counter, the center's request id): performing a command a
second time with the same key — as recovery does after a crash — must not act twice, only
report the first outcome. Commands that expect an answer are answered by a
:class:`~kiosk.session.events.Reply` with the same key.

:meth:`Command.journal_fields` is what the journal may store: ids, amounts, reason codes. The
only command that carries personal data, :class:`PrintDocument`, keeps its document out of the
repr and out of the journal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields

__all__ = [
    "Authenticate",
    "Command",
    "EndCashIn",
    "Finalize",
    "LoadMenu",
    "PayChange",
    "PrintDocument",
    "PrintSlip",
    "ReadCard",
    "RedeemPinReset",
    "ReleasePages",
    "RemindCard",
    "ReportIncident",
    "RequestDocument",
    "ReturnEscrow",
    "Screen",
    "Show",
    "StackEscrow",
    "StartCashIn",
    "VerifyPin",
    "Wipe",
]


@dataclass(frozen=True, slots=True)
class Command:
    """Base of everything the session asks for."""

    key: str

    #: Whether a :class:`~kiosk.session.events.Reply` with this key is expected.
    expects_reply = False
    #: Whether the command moves money or paper (never abandoned, replayed by recovery).
    physical = False

    def journal_fields(self) -> dict[str, int | str]:
        """Journal-safe fields: everything except opaque payloads (declared ``repr=False``)."""
        out: dict[str, int | str] = {}
        for f in fields(self):
            if f.name == "key" or not f.repr:
                continue
            v = getattr(self, f.name)
            if isinstance(v, enum.Enum):
                v = v.value
            if isinstance(v, tuple):
                v = ",".join(str(x) for x in v)
            if isinstance(v, bool):
                v = int(v)
            if isinstance(v, (int, str)):
                out[f.name] = v
        return out


# -- card ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadCard(Command):
    """Read the auth-PIN retry counter (without VERIFY) and the auth certificate's digest."""

    expects_reply = True


@dataclass(frozen=True, slots=True)
class VerifyPin(Command):
    """The keypad adapter sends the PIN it holds to the card (VERIFY) and then forgets it."""

    expects_reply = True


@dataclass(frozen=True, slots=True)
class RedeemPinReset(Command):
    """PIN-reset path (facepin, ``docs/pin-reset-protocol.md``): with the card present, verify
    the auth PIN the keypad holds, have the reservation service authorise the new signature
    password the keypad holds, send the reset to the card; both values then dropped."""

    target: str = "sign"
    expects_reply = True


# -- center ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    """Open a center session, have the card sign the center's nonce with the auth key, send
    certificate and signature (issuance protocol: open + authenticate)."""

    request_id: str = ""
    expects_reply = True


@dataclass(frozen=True, slots=True)
class LoadMenu(Command):
    request_id: str = ""
    session_id: str = ""
    expects_reply = True


@dataclass(frozen=True, slots=True)
class RequestDocument(Command):
    request_id: str = ""
    session_id: str = ""
    doc_type: str = ""
    options: tuple[str, ...] = ()
    expects_reply = True


@dataclass(frozen=True, slots=True)
class ReportIncident(Command):
    """A binding mismatch or bad signature: the center stops that municipality."""

    request_id: str = ""
    session_id: str = ""
    kind: str = ""


@dataclass(frozen=True, slots=True)
class Finalize(Command):
    """Tell the center the outcome (``printed``, ``failed``, ``cancelled``)."""

    request_id: str = ""
    session_id: str = ""
    outcome: str = ""
    expects_reply = True


# -- cash ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartCashIn(Command):
    """Enable the acceptors for a payment of ``fee`` (CashInStart)."""

    fee: int = 0


@dataclass(frozen=True, slots=True)
class EndCashIn(Command):
    """Inhibit the acceptors; what is in escrow stays there (CashInEnd)."""


@dataclass(frozen=True, slots=True)
class StackEscrow(Command):
    """Move the escrow into the cash box: the payment is taken."""

    yen: int = 0
    expects_reply = True
    physical = True


@dataclass(frozen=True, slots=True)
class ReturnEscrow(Command):
    """Hand the escrow back (CashInRollback)."""

    yen: int = 0
    expects_reply = True
    physical = True


@dataclass(frozen=True, slots=True)
class PayChange(Command):
    yen: int = 0
    expects_reply = True
    physical = True


# -- printer -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrintDocument(Command):
    """Print the verified document into the held output. ``document`` is the opaque object the
    center sent (the runner renders it); only ``digest`` is journalled."""

    document: object = field(default=None, repr=False, compare=False)
    digest: str = ""
    copies: int = 1  # 通数: the same verified document, this many times, in one job
    expects_reply = True
    physical = True


@dataclass(frozen=True, slots=True)
class PrintSlip(Command):
    """The 未交付 slip: transaction id, amount to refund, reason — no personal data."""

    txn: str = ""
    yen: int = 0
    reason: str = ""
    expects_reply = True
    physical = True


@dataclass(frozen=True, slots=True)
class ReleasePages(Command):
    """Open the held output to the user — only ever after the card left the slot."""

    expects_reply = True
    physical = True


# -- UI and housekeeping -----------------------------------------------------------------


class Screen(enum.StrEnum):
    """What the UI shows; the UI (next issue) owns the words, in every language."""

    IDLE = "idle"
    READING = "reading"
    PIN = "pin"
    PIN_WRONG = "pin-wrong"
    PIN_INCOMPLETE = "pin-incomplete"
    WORKING = "working"
    MENU = "menu"
    OPTIONS = "options"
    QUOTE = "quote"
    PAYMENT = "payment"
    PRINTING = "printing"
    NEW_PASSWORD = "new-password"
    PIN_AGAIN = "pin-again"
    REFUSED = "refused"
    CANCELLED = "cancelled"
    NOT_ISSUED = "not-issued"  # 未交付: refund due, slip printed
    TIMEOUT_WARNING = "timeout-warning"
    CALL_STAFF = "call-staff"  # a device has not answered: 係員をお呼びください
    TAKE_CARD = "take-card"  # 「カードをお取りください」
    CARD_OUT = "card-out"  # the card has been used: take it before going on (取り忘れ防止)
    TAKE_PAGES = "take-pages"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Show(Command):
    """Put a screen up. ``detail``: a count, an amount or a reason code — nothing personal."""

    screen: Screen = Screen.IDLE
    detail: str = ""
    amount: int = 0


@dataclass(frozen=True, slots=True)
class RemindCard(Command):
    """The card-left-behind reminder, escalating: 1 visual, 2 spoken, 3 spoken louder and
    repeated (until 音声停止 or removal)."""

    level: int = 1


@dataclass(frozen=True, slots=True)
class Wipe(Command):
    """Drop every personal buffer of this session (keypad, certificate, document, rendered
    pages). Issued when a session ends, aborts or times out."""
