"""The messages of the issuance protocol (``cardio-issuance/1``, our design; J-LIS's own is
closed — see ``docs/issuance-protocol.md``).

kiosk ↔ 証明書交付センター: :class:`OpenSession` → :class:`SessionOpened` (the center's
nonce); :class:`Authenticate` (the card's 利用者証明用 certificate and its signature over
the nonce) → :class:`Authenticated`; :class:`MenuQuery` → :class:`Menu` (what this resident
may get here and now, with fees, and what not, with reasons); :class:`DocumentRequest` →
:class:`IssuedDocument` (a :class:`SignedDocument` bound to the session); :class:`Finalize`
→ :class:`Finalized`; :class:`IncidentReport` when the kiosk-side binding check fails.

center ↔ 証明発行サーバ: :class:`ResolveResident` → :class:`ResidentRef`;
:class:`EligibilityQuery` → :class:`Menu`; :class:`BuildDocument` → :class:`SignedDocument`.

Every message carries the kiosk's ``request_id``: one id per issuance attempt, from the
kiosk's first message to the audit line of the last. Identifiers are validated on decode
(``[A-Za-z0-9_-]``, bounded), so nothing odd reaches a log line or a SQL parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from kiosk.documents.model import DocumentType
from kiosk.protocol.codec import PROTOCOL_VERSION, MalformedMessage, Message

__all__ = [
    "OUTCOMES",
    "Authenticate",
    "Authenticated",
    "Binding",
    "BuildDocument",
    "DocumentRequest",
    "EligibilityQuery",
    "ErrorReply",
    "Finalize",
    "Finalized",
    "IncidentRecorded",
    "IncidentReport",
    "IssuedDocument",
    "Menu",
    "MenuItem",
    "MenuQuery",
    "MenuRefusal",
    "OpenSession",
    "ResidentRef",
    "ResolveResident",
    "SessionOpened",
    "SignedDocument",
    "check_id",
]

_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_CODE = re.compile(r"[0-9]{6}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
OUTCOMES = ("printed", "failed", "cancelled")
INCIDENT_KINDS = ("binding_mismatch", "bad_signature", "malformed_document")


def check_id(value: str, what: str) -> str:
    """Request, session and kiosk ids: 8–64 characters of ``[A-Za-z0-9_-]``."""
    if not _ID.fullmatch(value):
        raise MalformedMessage(f"{what} must be 8-64 characters of A-Z a-z 0-9 _ -")
    return value


def _code(value: str) -> None:
    if not _CODE.fullmatch(value):
        raise MalformedMessage("municipality_code is a six-digit 全国地方公共団体コード")


def _doc_type(value: str) -> None:
    try:
        DocumentType(value)
    except ValueError:
        raise MalformedMessage(f"unknown document type {value[:20]!r}") from None


@dataclass(frozen=True)
class OpenSession(Message):
    request_id: str
    kiosk_id: str
    v: str = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        check_id(self.request_id, "request_id")
        check_id(self.kiosk_id, "kiosk_id")


@dataclass(frozen=True)
class SessionOpened(Message):
    request_id: str
    session_id: str
    nonce: str  # base64 of 32 random bytes; the card signs exactly these bytes
    expires_at: str  # ISO 8601
    v: str = PROTOCOL_VERSION


@dataclass(frozen=True)
class Authenticate(Message):
    request_id: str
    session_id: str
    certificate: str  # base64 DER of the card's 利用者証明用 certificate
    signature: str  # base64 PKCS#1 v1.5 SHA-256 signature by the card's auth key over nonce
    v: str = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        check_id(self.request_id, "request_id")
        check_id(self.session_id, "session_id")


@dataclass(frozen=True)
class Authenticated(Message):
    request_id: str
    session_id: str
    municipality_code: str
    municipality_name: str
    v: str = PROTOCOL_VERSION


@dataclass(frozen=True)
class MenuQuery(Message):
    request_id: str
    session_id: str
    v: str = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        check_id(self.request_id, "request_id")
        check_id(self.session_id, "session_id")


@dataclass(frozen=True)
class MenuItem(Message):
    doc_type: str
    title: str
    fee: int  # yen, per copy
    options: dict[str, list[str]]  # option name -> allowed values (first is the default)
    #: The most copies (通数) one request may print, the municipality's own limit; absent
    #: (a server before it was added): one.
    max_copies: int = 1
    v: str = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if not 1 <= self.max_copies <= 99:
            raise MalformedMessage("max_copies is 1 to 99")


@dataclass(frozen=True)
class MenuRefusal(Message):
    doc_type: str
    reason: str  # a code from the eligibility table
    message: str  # what the kiosk shows (Japanese)
    message_en: str
    v: str = PROTOCOL_VERSION


@dataclass(frozen=True)
class Menu(Message):
    request_id: str
    session_id: str
    items: list[MenuItem]
    refused: list[MenuRefusal]
    v: str = PROTOCOL_VERSION


@dataclass(frozen=True)
class DocumentRequest(Message):
    request_id: str
    session_id: str
    doc_type: str
    options: dict[str, str] = field(default_factory=dict)
    v: str = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        check_id(self.request_id, "request_id")
        check_id(self.session_id, "session_id")
        _doc_type(self.doc_type)


@dataclass(frozen=True)
class Binding(Message):
    """What ties a document to one kiosk session (the misissuance guard)."""

    request_id: str
    session_id: str
    kiosk_id: str
    cert_sha256: str  # hex SHA-256 of the requester's 利用者証明用 certificate (DER)
    municipality_code: str
    doc_type: str
    issued_at: str  # ISO 8601, the document's issue time
    v: str = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        check_id(self.request_id, "request_id")
        check_id(self.session_id, "session_id")
        check_id(self.kiosk_id, "kiosk_id")
        if not _HEX64.fullmatch(self.cert_sha256):
            raise MalformedMessage("cert_sha256 is 64 lower-case hex digits")
        _code(self.municipality_code)
        _doc_type(self.doc_type)


@dataclass(frozen=True)
class SignedDocument(Message):
    """A document and its binding, signed by the municipality (ECDSA P-256, SHA-256) over
    :func:`kiosk.protocol.binding.signed_bytes`."""

    binding: Binding
    document: dict[str, Any]
    signature: str  # base64 DER ECDSA signature
    key_id: str  # "<municipality code>:<first 16 hex of SHA-256(SubjectPublicKeyInfo)>"
    seal: str = ""
    """base64 COSE_Sign1 for the page's 2D code (issue 12, ``kiosk.documents.seal``), by the
    municipality's document-sealing key: what ``cardio doc verify`` checks offline. Not
    covered by ``signature``; the kiosk checks it seals this very content before printing."""
    scramble_key: str = ""
    """hex, 32 bytes: the municipality's スクランブル画像 key for the back of the page."""
    v: str = PROTOCOL_VERSION


@dataclass(frozen=True)
class IssuedDocument(Message):
    request_id: str
    session_id: str
    fee: int
    signed: SignedDocument
    v: str = PROTOCOL_VERSION


@dataclass(frozen=True)
class Finalize(Message):
    request_id: str
    session_id: str
    outcome: str  # printed | failed | cancelled
    v: str = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        check_id(self.request_id, "request_id")
        check_id(self.session_id, "session_id")
        if self.outcome not in OUTCOMES:
            raise MalformedMessage(f"outcome is one of {', '.join(OUTCOMES)}")


@dataclass(frozen=True)
class Finalized(Message):
    request_id: str
    outcome: str
    v: str = PROTOCOL_VERSION


@dataclass(frozen=True)
class IncidentReport(Message):
    """The kiosk's binding check refused a document: nothing printed; the center stops
    the municipality until an operator clears it."""

    request_id: str
    session_id: str
    kind: str  # binding_mismatch | bad_signature | malformed_document
    detail: str  # which check failed (never document content)
    v: str = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        check_id(self.request_id, "request_id")
        check_id(self.session_id, "session_id")
        if self.kind not in INCIDENT_KINDS:
            raise MalformedMessage(f"kind is one of {', '.join(INCIDENT_KINDS)}")
        if len(self.detail) > 200:
            raise MalformedMessage("detail is at most 200 characters")


@dataclass(frozen=True)
class IncidentRecorded(Message):
    incident_id: int
    municipality_code: str
    stopped: bool
    v: str = PROTOCOL_VERSION


@dataclass(frozen=True)
class ErrorReply(Message):
    """Every refusal: a stable code the kiosk maps to a screen, and a message."""

    error: str
    message: str
    request_id: str | None = None
    v: str = PROTOCOL_VERSION


# -- center ↔ municipality ---------------------------------------------------------------
@dataclass(frozen=True)
class ResolveResident(Message):
    """Which resident holds this 利用者証明用 certificate (J-LIS notifies municipalities of
    the serial → resident mapping; the certificate itself carries no 基本4情報)."""

    request_id: str
    serial_hex: str
    v: str = PROTOCOL_VERSION


@dataclass(frozen=True)
class ResidentRef(Message):
    request_id: str
    resident_id: str
    municipality_code: str
    v: str = PROTOCOL_VERSION


@dataclass(frozen=True)
class EligibilityQuery(Message):
    request_id: str
    session_id: str
    resident_id: str
    at: str  # ISO 8601 (the center's clock)
    v: str = PROTOCOL_VERSION


@dataclass(frozen=True)
class BuildDocument(Message):
    resident_id: str
    options: dict[str, str]
    binding: Binding
    v: str = PROTOCOL_VERSION
