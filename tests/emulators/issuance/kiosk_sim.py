"""A simulated kiosk for the issuance tests and the bench: a software card read through the
real card client (PIN verified on the card, the auth key signs the center's nonce), the
real center client, the kiosk-side binding check, finalize."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

from cardio.card import MyNumberCard
from cardio.jpki import JpkiApplication
from cardio.transport import InProcessTransport
from emulators.card import SoftwareCard
from kiosk.center_client import CenterClient
from kiosk.documents.model import Document
from kiosk.protocol.binding import ExpectedSession
from kiosk.protocol.messages import Authenticated, Menu, SessionOpened


@dataclass
class Card:
    """A software card and its auth PIN (the test knows it; a kiosk would ask for it)."""

    path: Path
    pin: str
    resident_id: str

    def jpki(self) -> JpkiApplication:
        return JpkiApplication(MyNumberCard(InProcessTransport(SoftwareCard.open(self.path))))

    def cert_and_signature(self, nonce: bytes) -> tuple[bytes, bytes]:
        app = self.jpki()
        app.verify_pin("auth", self.pin)
        return app.certificate_der("auth"), app.sign("auth", nonce)


@dataclass
class Issued:
    request_id: str
    session_id: str
    document: Document
    fee: int
    menu: Menu
    auth: Authenticated


def new_request_id() -> str:
    return "req-" + secrets.token_hex(8)


async def open_and_authenticate(client: CenterClient, card: Card,
                                request_id: str | None = None
                                ) -> tuple[SessionOpened, Authenticated, str]:
    opened = await client.open(request_id or new_request_id())
    cert, sig = card.cert_and_signature(base64.b64decode(opened.nonce))
    auth = await client.authenticate(opened, cert, sig)
    return opened, auth, hashlib.sha256(cert).hexdigest()


async def issue(client: CenterClient, card: Card, doc_type: str = "juminhyo",
                options: dict[str, str] | None = None, *, outcome: str = "printed") -> Issued:
    """open → authenticate → menu → request (checked) → finalize."""
    opened, auth, cert_sha = await open_and_authenticate(client, card)
    menu = await client.menu(opened.request_id, opened.session_id)
    expected = ExpectedSession(opened.request_id, opened.session_id, client.creds.kiosk_id,
                               cert_sha, auth.municipality_code, doc_type)
    doc, fee = await client.fetch_document(expected, options)
    await client.finalize(opened.request_id, opened.session_id, outcome)
    return Issued(opened.request_id, opened.session_id, doc, fee, menu, auth)
