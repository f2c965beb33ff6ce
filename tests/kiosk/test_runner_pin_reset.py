"""The PIN-reset path through the kiosk runner: a facepin reservation (made by the app
with the card and a live capture against the real reservation service) redeemed at the
kiosk — the core's RESET states, the runner's ``RedeemPinReset`` through
:func:`facepin.client.redeem` on the card in the slot, the real center for the session's
authentication, the journal. Checked on the card itself (the new signature password opens
it, the old does not), at the service (the reservation is spent), and in the journal
(nothing secret at rest)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cardio.apdu.errors import VerificationFailed
from cardio.jpki import JpkiApplication
from cardio.pki import CertificateValidator
from cardio.trust import TrustStore
from emulators.card import JlisHierarchy
from emulators.issuance.operator import issue_card
from emulators.jpki_ca import JpkiAuthority, export_roots
from facepin.client import ServiceRefused, redeem, reserve
from facepin.service import ServiceConfig
from kiosk.runner import (
    CardAdapter,
    CashAdapter,
    HeadlessUi,
    Keypad,
    PrinterAdapter,
    Runner,
    SessionResult,
)
from kiosk.session.journal import Journal
from tests.emulators.issuance.conftest import Service
from tests.facepin.test_service import card_of, probe, running
from tests.kiosk.test_runner import backend, lab  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.slow

NEW_PASSWORD = "KIOSK2026"


@dataclass
class Reset:
    url: str
    card: Path
    auth_pin: str
    sign_password: str
    reservation: str


@pytest.fixture(scope="module")
def facepin_url(backend: Service, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
                ) -> Iterator[str]:
    """The reservation service over the back end's J-LIS, on the back end's clock (it runs
    at a business day's 10:00, so certificates and OCSP answers are judged at that time)."""
    base = tmp_path_factory.mktemp("kiosk-facepin")
    jlis = JlisHierarchy.load_or_create(backend.jlis)
    export_roots(jlis, base / "roots")
    trust = TrustStore.from_dir(base / "roots")
    offset = backend.now.timestamp() - time.time()

    def now() -> dt.datetime:
        return dt.datetime.fromtimestamp(time.time() + offset, dt.UTC)

    config = ServiceConfig(database=f"sqlite:///{base / 'facepin.db'}", trust=trust,
                           master_key=jlis.pin_reset_master(),
                           clock=lambda: time.time() + offset,
                           registry=JpkiAuthority(jlis).card_of,
                           validator=CertificateValidator(trust, clock=now))
    with running(config) as url:
        yield url


@pytest.fixture
def reset(backend: Service, facepin_url: str, tmp_path: Path,  # noqa: F811
          monkeypatch: pytest.MonkeyPatch) -> Reset:
    """A resident's card with their own face on the chip, and a reservation made for it
    through the app (challenge, card evidence, a live capture of the same person: a real
    recording of them turning their head, ``tests/facepin/live_data.py``)."""
    from tests.facepin.live_data import depth_gates_off, genuine_chip

    depth_gates_off(monkeypatch)  # without the real clip: the stand-in, see live_data
    path = backend.card_dir / f"reset-{tmp_path.name}"  # beside the kiosks' card slots
    out = issue_card(backend.db, backend.jlis, path, None, keys=backend.pool,
                     photo=genuine_chip(), issued=backend.now.date())
    JpkiAuthority(JlisHierarchy.load_or_create(backend.jlis)).register_card(path)
    r = reserve(facepin_url, card_of(path), out["auth_pin"], out["text_pin"], probe())
    return Reset(facepin_url, path, out["auth_pin"], out["sign_password"],
                 r["reservation_id"])


def run_kiosk(backend: Service, lab: dict[str, Any], tmp: Path, reset: Reset,  # noqa: F811
              reservation: str, pin: str) -> tuple[SessionResult, HeadlessUi, Journal]:
    config = tomllib.loads(lab["toml"].read_text())
    journal = Journal(tmp / "journal.db")
    keypad = Keypad()
    ui = HeadlessUi(pin, "pin-reset", (), [], lambda _y: None,
                    reset=(NEW_PASSWORD, reservation))

    async def main() -> SessionResult:
        cash = CashAdapter(config)
        await cash.start()
        runner = Runner(journal, creds=backend.kiosk(1),
                        card=CardAdapter(f"emu:{reset.card}", keypad), cash=cash,
                        printer=PrinterAdapter(tmp / "out"), ui=ui, keypad=keypad,
                        tick=0.2, facepin_url=reset.url)
        try:
            return await runner.run_session(deadline=120)
        finally:
            await runner.aclose()
            cash.stop()

    return asyncio.run(main()), ui, journal


def test_a_reservation_is_redeemed_at_the_kiosk(backend: Service, lab: dict[str, Any],  # noqa: F811
                                                reset: Reset, tmp_path: Path) -> None:
    result, _ui, journal = run_kiosk(backend, lab, tmp_path, reset, reset.reservation,
                                     reset.auth_pin)
    assert (result.outcome, result.fee, result.paid, result.files) == ("pin_reset", 0, 0, [])
    # The card: the new signature password opens it, the old one no longer does.
    jpki = JpkiApplication(card_of(reset.card))
    with pytest.raises(VerificationFailed):
        jpki.verify_pin("sign", reset.sign_password)
    jpki.verify_pin("sign", NEW_PASSWORD)
    # The service: the reservation was single use.
    with pytest.raises(ServiceRefused):
        redeem(reset.url, card_of(reset.card), reset.reservation, reset.auth_pin, "AGAIN2026")
    # The journal: a closed session, no money, and no PIN, password or reservation at rest.
    book = journal.ledger()
    assert book.balanced and book.sessions_open == 0 and book.cash_in == 0
    journal.close()
    data = b"".join(f.read_bytes() for f in tmp_path.glob("journal.db*"))
    for secret in (NEW_PASSWORD, reset.reservation):
        assert secret.encode() not in data


def test_an_unknown_reservation_is_refused_with_the_services_reason(
        backend: Service, lab: dict[str, Any], reset: Reset, tmp_path: Path) -> None:  # noqa: F811
    result, _ui, journal = run_kiosk(backend, lab, tmp_path, reset, "no-such-reservation",
                                     reset.auth_pin)
    journal.close()
    assert result.outcome == "refused" and result.reason  # the service's code, shown
    JpkiApplication(card_of(reset.card)).verify_pin("sign", reset.sign_password)  # unchanged

