"""The PIN-reset path through the kiosk's screen in headless Chromium: a resident who
reserved a reset in the app (facepin: the card and a live capture, against the real
reservation service) sets the card, enters the PIN, chooses the reset on the menu, types
the reservation number and the new signature password twice on the screen (a mismatch is
shown by its kind and the fields are emptied), the PIN again, and leaves with the card.
Checked on the card (the new password opens it), axe-core on the new screens in Japanese
and English, and the secrets searched for in every frame the page received, every DOM it
showed, the kiosk's output and its journal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cardio.apdu.errors import VerificationFailed
from cardio.jpki import JpkiApplication
from kiosk.ui.autopilot import Pilot
from tests.emulators.issuance.conftest import Service
from tests.emulators.issuance.kiosk_sim import Card
from tests.facepin.test_service import card_of
from tests.kiosk.test_runner_pin_reset import NEW_PASSWORD, Reset, facepin_url, reset  # noqa: F401
from tests.kiosk.ui.conftest import Kiosk, artifacts, journal_bytes, start_kiosk
from tests.kiosk.ui.test_browser import scan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reset_kiosk(backend: Service, lab: dict[str, Any], facepin_url: str,  # noqa: F811
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiosk]:
    k = start_kiosk(backend, lab, tmp_path_factory.mktemp("kiosk-reset"),
                    kiosk=f'facepin = "{facepin_url}"\n')
    yield k
    k.out.append({"event": "stderr", "text": k.stop()})


def test_pin_reset_through_the_screen(backend: Service, reset_kiosk: Kiosk, chromium: Any,
                                      reset: Reset) -> None:  # noqa: F811
    k = reset_kiosk
    ctx = chromium.new_context(viewport={"width": 1024, "height": 768}, bypass_csp=True)
    page = ctx.new_page()
    bodies: list[bytes] = []
    page.on("response", lambda r: bodies.append(r.body()) if r.request.resource_type
            != "websocket" else None)
    shots = artifacts() / "pin-reset"
    shots.mkdir(exist_ok=True)
    doms: list[str] = []
    violations: dict[str, Any] = {}

    def seen(screen: str) -> None:
        doms.append(page.content())
        bad = scan(page)
        if bad:
            violations[screen] = bad

    p = Pilot(page, screenshots=shots, prefix="ja-", on_screen=seen)
    try:
        p.open(k.url)
        p.wait("start", timeout=30)
        p.click("#btn-start")
        p.wait("notice")
        p.click("#btn-agree")
        p.wait("setcard")
        k.put(Card(reset.card, reset.auth_pin, "reset"))
        p.wait("pin")
        p.type_pin(reset.auth_pin)
        p.wait("menu")  # the reset is redeemed on the card: it stays in for now
        p.click("#screen button[data-doc='pin-reset']")
        p.wait("new-password")
        for lang in ("en", "ja"):  # both languages scanned and kept
            p.language(lang)
            page.screenshot(path=str(shots / f"new-password-{lang}.png"))
            bad = scan(page)
            if bad:
                violations[f"new-password/{lang}"] = bad
        # A mismatch: shown by its kind, the fields emptied, nothing sent back.
        page.fill("#reset-reservation", reset.reservation)
        page.fill("#reset-password", NEW_PASSWORD)
        page.fill("#reset-confirm", NEW_PASSWORD + "X")
        page.click("#btn-reset-next")
        page.wait_for_selector("#reset-error")
        assert page.input_value("#reset-password") == ""
        assert page.input_value("#reset-reservation") == ""
        doms.append(page.content())
        page.screenshot(path=str(shots / "new-password-mismatch-ja.png"))
        # Then right, with the keyboard's Enter submitting the form.
        page.fill("#reset-reservation", reset.reservation)
        page.fill("#reset-password", NEW_PASSWORD.lower())  # folded to upper case, as apps do
        page.fill("#reset-confirm", NEW_PASSWORD)
        page.press("#reset-confirm", "Enter")
        p.wait("pin-again")
        p.type_pin(reset.auth_pin)
        p.wait_any(lambda s: s == "take-card" or p.state.get("take_card") is True,
                   "the card reminder")
        k.take()
        p.wait("done")
        assert p.state["outcome"] == "pin_reset"
        session = k.session_end()
        assert session["outcome"] == "pin_reset"
    finally:
        ctx.close()
    assert not violations, violations
    # The card: the new signature password opens it, the old one no longer does.
    jpki = JpkiApplication(card_of(reset.card))
    with pytest.raises(VerificationFailed):
        jpki.verify_pin("sign", reset.sign_password)
    jpki.verify_pin("sign", NEW_PASSWORD)
    # The secrets: in no frame the server sent, no DOM, no response, no output, no journal.
    frames = [json.dumps(f) for f in p.frames]
    out = json.dumps(k.out)
    at_rest = b"".join(journal_bytes(Path(k.base)).values())
    for secret in (NEW_PASSWORD, NEW_PASSWORD.lower(), reset.reservation):
        for i, text in enumerate(frames + doms):
            assert secret not in text, f"frame or DOM {i}"
        assert all(secret.encode() not in b for b in bodies)
        assert secret not in out and secret.encode() not in at_rest
