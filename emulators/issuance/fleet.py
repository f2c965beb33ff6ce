"""Simulated kiosks for tests and the bench: each reads a software card through the real
card client (the PIN verified on the card, the 利用者証明用 key signing the center's
nonce), talks to the center through the real :class:`~kiosk.center_client.CenterClient`,
runs the kiosk-side binding check and finalizes.

:func:`run_fleet` drives many kiosks concurrently and keeps, per issuance, only what an
independent check needs (who asked, what the document says) and the latency.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cardio.card import MyNumberCard
from cardio.jpki import JpkiApplication
from cardio.transport import InProcessTransport
from emulators.card import SoftwareCard
from emulators.issuance.http11 import Http11Client
from kiosk.center_client import CenterClient
from kiosk.documents.model import Document
from kiosk.protocol.binding import ExpectedSession
from kiosk.protocol.credentials import KioskCredentials
from kiosk.protocol.messages import Authenticated, Menu, SessionOpened

__all__ = ["Card", "FleetResult", "Issued", "issue", "open_and_authenticate", "run_fleet"]


@dataclass
class Card:
    """A software card, its auth PIN (a kiosk would ask the resident) and, for the checks,
    the resident it was issued to."""

    path: Path
    pin: str
    resident_id: str
    _app: JpkiApplication | None = field(default=None, repr=False)

    def jpki(self) -> JpkiApplication:
        return JpkiApplication(MyNumberCard(InProcessTransport(SoftwareCard.open(self.path))))

    def cert_and_signature(self, nonce: bytes) -> tuple[bytes, bytes]:
        if self._app is None:
            self._app = self.jpki()
        self._app.verify_pin("auth", self.pin)
        return self._app.certificate_der("auth"), self._app.sign("auth", nonce)


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
    """open → authenticate → menu → request (binding checked) → finalize."""
    opened, auth, cert_sha = await open_and_authenticate(client, card)
    menu = await client.menu(opened.request_id, opened.session_id)
    expected = ExpectedSession(opened.request_id, opened.session_id, client.creds.kiosk_id,
                               cert_sha, auth.municipality_code, doc_type)
    doc, fee = await client.fetch_document(expected, options)
    await client.finalize(opened.request_id, opened.session_id, outcome)
    return Issued(opened.request_id, opened.session_id, doc, fee, menu, auth)


@dataclass
class Outcome:
    resident_id: str
    names: list[str]
    addresses: list[str]
    births: list[str]
    seconds: float


@dataclass
class FleetResult:
    outcomes: list[Outcome]
    errors: list[str]
    seconds: float

    def latency(self, q: float) -> float:
        xs = sorted(o.seconds for o in self.outcomes)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    @property
    def rate(self) -> float:
        return len(self.outcomes) / self.seconds if self.seconds else 0.0


async def run_fleet(kiosks: list[KioskCredentials], cards: list[Card], total: int,
                    doc_type: str = "juminhyo", *, fresh_every: int = 0) -> FleetResult:
    """``total`` issuances from ``len(kiosks)`` concurrent kiosks; kiosk ``i`` serves the
    card ``i % len(cards)``.

    Kiosks speak through the lean :class:`~emulators.issuance.http11.Http11Client` over a
    kept-alive connection, so the load generator costs little of the machine it shares
    with the services. With ``fresh_every`` N, every N-th kiosk instead uses the real
    kiosk's httpx client with a new TCP connection per request: its sessions' steps spread
    over the worker processes, and the production client is part of the load too."""
    remaining = [total]
    outcomes: list[Outcome] = []
    errors: list[str] = []
    # One TLS context for the whole fleet: httpx builds a new one per client otherwise,
    # loading the CA bundle (~25 ms of CPU each) even for http:// — a real kiosk pays that
    # once at start, and so should each simulated one.
    tls = ssl.create_default_context()

    async def kiosk(i: int, creds: KioskCredentials) -> None:
        card = cards[i % len(cards)]
        fresh = fresh_every > 0 and i % fresh_every == 0
        http: httpx.AsyncClient | Http11Client
        if fresh:
            http = httpx.AsyncClient(base_url=creds.center_url, verify=tls,
                                     limits=httpx.Limits(max_keepalive_connections=0),
                                     timeout=httpx.Timeout(120.0, connect=30.0))
        else:
            http = Http11Client(creds.center_url, timeout=120.0)
        async with CenterClient(creds, http=http) as client:
            while remaining[0] > 0:
                remaining[0] -= 1
                started = time.perf_counter()
                try:
                    done = await issue(client, card, doc_type)
                except Exception as e:  # counted, reported by the caller
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                    continue
                doc = done.document
                outcomes.append(Outcome(card.resident_id, doc.find("name"),
                                        doc.find("address"), doc.find("birth"),
                                        time.perf_counter() - started))

    started = time.perf_counter()
    await asyncio.gather(*(kiosk(i, c) for i, c in enumerate(kiosks)))
    return FleetResult(outcomes, errors, time.perf_counter() - started)
