"""Events into the issuance session: what the user, the devices, the center and the clock say.

These types are the contract the runner's adapters implement (issue 10's center client, issue
11's devices, the keypad, the UI). They carry ids, counts, amounts and reason codes — never a
PIN: the keypad adapter keeps the digits itself, tells the core only *how many* were typed
(:class:`PinDigits`) and that the user pressed OK (:class:`PinSubmitted`), and hands the value to
the card when the core asks it to (:class:`~kiosk.session.commands.VerifyPin`).

A *reply* carries the idempotency key of the command it answers, so a late, duplicated or
foreign reply is recognised instead of being mistaken for the current one. Time arrives as
:class:`Tick` events (one per second, from the runner's timer): the core has no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Authenticated",
    "Cancel",
    "CardFailed",
    "CardInserted",
    "CardRead",
    "CardRemoved",
    "CashCredited",
    "ChangePaid",
    "Choose",
    "DeviceFault",
    "DocumentReceived",
    "EscrowReturned",
    "EscrowStacked",
    "Event",
    "Extend",
    "Finalized",
    "MenuItem",
    "MenuReceived",
    "OptionsConfirmed",
    "PagesReleased",
    "PinDigits",
    "PinResetDone",
    "PinResetRefused",
    "PinResult",
    "PinSubmitted",
    "PrintDone",
    "PrintFailed",
    "QuoteAccepted",
    "QuoteBack",
    "Reply",
    "SecretEntered",
    "ServerRefused",
    "ServerUnavailable",
    "Tick",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base of everything the session accepts."""


# -- the person at the kiosk ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CardInserted(Event):
    """The card slot saw a card (PC/SC reader state: present)."""


@dataclass(frozen=True, slots=True)
class CardRemoved(Event):
    """The card left the slot — at any moment, including mid-command."""


@dataclass(frozen=True, slots=True)
class PinDigits(Event):
    """The keypad now holds ``count`` digits (0 after a clear). The digits stay in the keypad
    adapter; the core only shows ``count`` masks."""

    count: int


@dataclass(frozen=True, slots=True)
class PinSubmitted(Event):
    """The user pressed 確認 on the PIN keypad."""


@dataclass(frozen=True, slots=True)
class SecretEntered(Event):
    """The new signature password (PIN-reset path) was typed and confirmed twice in the keypad
    adapter, which holds it; the core sees only that it is ready."""


@dataclass(frozen=True, slots=True)
class Cancel(Event):
    """The user pressed 取消 / 中止."""


@dataclass(frozen=True, slots=True)
class Extend(Event):
    """The user answered the time-out warning (「操作を続けますか」) — or touched anything."""


@dataclass(frozen=True, slots=True)
class Choose(Event):
    """A menu item: a document type identifier (``juminhyo``…) or ``pin-reset``."""

    item: str


@dataclass(frozen=True, slots=True)
class OptionsConfirmed(Event):
    """The options the user ticked (e.g. ``honseki``, ``setainushi``); a subset of the menu
    item's options — and how many copies (通数), 1 to the item's ``max_copies``."""

    options: tuple[str, ...] = ()
    copies: int = 1


@dataclass(frozen=True, slots=True)
class QuoteAccepted(Event):
    """The user accepted the fee shown and will pay."""


@dataclass(frozen=True, slots=True)
class QuoteBack(Event):
    """戻る/訂正 on the quote: back to the options and copies, nothing paid yet."""


@dataclass(frozen=True, slots=True)
class CashCredited(Event):
    """A bill or coin was validated and is held in escrow (returnable until stacked)."""

    yen: int
    item: str = ""  # the device's item id, for the adapter's own de-duplication


@dataclass(frozen=True, slots=True)
class Tick(Event):
    """One second passed (the runner's timer). The only notion of time the core has."""


@dataclass(frozen=True, slots=True)
class DeviceFault(Event):
    """An unsolicited device fault (``device``: ``cash``, ``printer``, ``card``; ``kind`` a
    stable keyword such as ``jam``). A fault *while a command is pending* is reported through
    that command's reply instead."""

    device: str
    kind: str


# -- replies to commands (each names the command's idempotency key) ----------------------


@dataclass(frozen=True, slots=True)
class Reply(Event):
    """Base of the answers to commands."""

    key: str


@dataclass(frozen=True, slots=True)
class CardRead(Reply):
    """The card answered: how many auth-PIN tries remain (from the card's own counter, without
    a VERIFY) and the SHA-256 (hex) of its 利用者証明用 certificate."""

    tries_left: int
    cert_sha256: str


@dataclass(frozen=True, slots=True)
class CardFailed(Reply):
    """The card or reader failed the command (removed mid-APDU, mute, unexpected SW)."""

    reason: str


@dataclass(frozen=True, slots=True)
class PinResult(Reply):
    """The card's answer to VERIFY: ``verified``, or wrong with ``tries_left`` (0 = locked)."""

    verified: bool
    tries_left: int


@dataclass(frozen=True, slots=True)
class Authenticated(Reply):
    """The center checked the card's certificate and its signature over the center's nonce."""

    session_id: str
    municipality_code: str
    municipality_name: str = ""  # shown on the document choice (「○○市の証明書」)


@dataclass(frozen=True, slots=True)
class MenuItem:
    """One line of the menu: what this resident may get here and now, for which fee. A
    non-empty ``refusal`` is the reason code the kiosk shows when it is chosen."""

    doc_type: str
    fee: int  # per copy
    options: tuple[str, ...] = ()
    refusal: str = ""
    max_copies: int = 1  # the municipality's limit of copies (通数) in one request


@dataclass(frozen=True, slots=True)
class MenuReceived(Reply):
    items: tuple[MenuItem, ...]


@dataclass(frozen=True, slots=True)
class DocumentReceived(Reply):
    """The signed document came back. ``document`` is opaque to the core (it holds personal
    data, is handed to the binding check and the printer, and is never journalled or shown in
    a repr); ``digest`` is its SHA-256 (hex)."""

    document: object = field(repr=False, compare=False)
    digest: str = ""


@dataclass(frozen=True, slots=True)
class ServerRefused(Reply):
    """The center (or the reservation service) said no, with its reason code."""

    reason: str


@dataclass(frozen=True, slots=True)
class ServerUnavailable(Reply):
    """The server could not be reached or answered nonsense (the adapter's bounded retries are
    exhausted)."""


@dataclass(frozen=True, slots=True)
class EscrowStacked(Reply):
    """The escrow went into the cash box; ``yen`` as the devices counted it."""

    yen: int


@dataclass(frozen=True, slots=True)
class EscrowReturned(Reply):
    """The escrow was handed back; ``yen`` actually returned (less if an item stuck: the rest is
    held by the machine and becomes a refund due)."""

    yen: int


@dataclass(frozen=True, slots=True)
class ChangePaid(Reply):
    """The hopper paid ``yen`` of the change asked (less when it ran empty)."""

    yen: int


@dataclass(frozen=True, slots=True)
class PrintDone(Reply):
    """The job (document or 未交付 slip) printed completely; pages wait in the held output."""


@dataclass(frozen=True, slots=True)
class PrintFailed(Reply):
    """The job did not print completely (jam, paper out, offline): never counted as printed."""

    reason: str


@dataclass(frozen=True, slots=True)
class PagesReleased(Reply):
    """The held output was opened to the user."""


@dataclass(frozen=True, slots=True)
class Finalized(Reply):
    """The center recorded the session's outcome (idempotent by request id)."""


@dataclass(frozen=True, slots=True)
class PinResetDone(Reply):
    """The facepin reservation was redeemed and the card accepted the new value."""


@dataclass(frozen=True, slots=True)
class PinResetRefused(Reply):
    """The reservation service refused (no reservation, expired, used) — its reason code."""

    reason: str
