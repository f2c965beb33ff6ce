"""The kiosk's card phase at its minimum of APDUs (issue 28, item 3): the retry counter
and the authentication certificate before the PIN, VERIFY, and the signature over the
center's nonce — counted at the transport, with extended-length reads (the emulated
reader) and with a short-APDU reader."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cardio import constants as c
from cardio import readers
from cardio.apdu import tlv
from cardio.transport import CountingTransport, InProcessTransport
from emulators.card import Profile, SoftwareCard
from kiosk.runner import CardAdapter, Keypad
from kiosk.session import events as E


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[CountingTransport]]:
    """Every reader the adapter opens, wrapped to count its APDUs."""
    opened: list[CountingTransport] = []
    real = readers.open_reader

    def open_counted(spec: str | None, *args: object, **kw: object) -> readers.OpenReader:
        r = real(spec, *args, **kw)  # type: ignore[arg-type]
        t = CountingTransport(r.transport)
        opened.append(t)
        return readers.OpenReader(r.name, t, r.trust)

    monkeypatch.setattr(readers, "open_reader", open_counted)
    yield opened


def card_phase(card: Path, profile: Profile) -> tuple[list[E.Event], bytes, bytes]:
    keypad = Keypad()
    adapter = CardAdapter(f"emu:{card}", keypad)

    async def run() -> tuple[list[E.Event], bytes, bytes]:
        events = [await adapter.read("k1")]
        keypad.enter(profile.auth_pin)
        keypad.submit()
        events.append(await adapter.verify("k2"))
        cert, sig = await adapter.cert_and_sign(b"center nonce 0123456789abcdef")
        adapter.close()
        return events, cert, sig

    return asyncio.run(run())


def check(card: Path, events: list[E.Event], cert: bytes, sig: bytes) -> None:
    raw = SoftwareCard.open(card).image.files[(c.AID_JPKI, c.JPKI_AUTH_CERT)]
    assert cert == raw[: tlv.total_size(raw)]
    read, verified = events
    assert isinstance(read, E.CardRead) and read.tries_left == 3
    assert read.cert_sha256 == hashlib.sha256(cert).hexdigest()
    assert isinstance(verified, E.PinResult) and verified.verified and verified.tries_left == 3
    key = x509.load_der_x509_certificate(cert).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(sig, b"center nonce 0123456789abcdef", padding.PKCS1v15(), hashes.SHA256())


def test_card_phase_in_five_apdus(card_dir: tuple[Path, Profile],
                                  counted: list[CountingTransport]) -> None:
    events, cert, sig = card_phase(*card_dir)
    check(card_dir[0], events, cert, sig)
    # SELECT JPKI, empty VERIFY (counter), READ BINARY by SFI (extended), VERIFY, SIGN.
    assert [t.stats.apdus for t in counted] == [5]


def test_card_phase_with_a_short_apdu_reader(card_dir: tuple[Path, Profile],
                                             counted: list[CountingTransport],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(InProcessTransport, "__init__", _short_only)
    events, cert, sig = card_phase(*card_dir)
    check(card_dir[0], events, cert, sig)
    chunks = -(-len(cert) // 256)
    assert [t.stats.apdus for t in counted] == [4 + chunks]


_original_init = InProcessTransport.__init__


def _short_only(self: InProcessTransport, card: object, *, supports_extended: bool | None = False
                ) -> None:
    _original_init(self, card, supports_extended=False)  # type: ignore[arg-type]
