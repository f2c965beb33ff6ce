"""The issuance protocol, sans-IO: typed messages with strict JSON codecs, the document
binding and its kiosk-side check, and kiosk request signatures. Shared by the kiosk and
the emulated 証明書交付センター / 証明発行サーバ (``emulators/issuance``)."""

from kiosk.protocol.binding import (
    BadDocumentSignature,
    BindingMismatch,
    ExpectedSession,
    check_binding,
    sign_document,
)
from kiosk.protocol.codec import (
    PROTOCOL_VERSION,
    MalformedMessage,
    MessageTooLarge,
    ProtocolError,
    UnsupportedVersion,
    decode,
    encode,
)

__all__ = [
    "PROTOCOL_VERSION",
    "BadDocumentSignature",
    "BindingMismatch",
    "ExpectedSession",
    "MalformedMessage",
    "MessageTooLarge",
    "ProtocolError",
    "UnsupportedVersion",
    "check_binding",
    "decode",
    "encode",
    "sign_document",
]
