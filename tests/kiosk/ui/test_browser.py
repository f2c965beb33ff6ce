"""The kiosk's touch screen in headless Chromium against the real stack (see conftest):
every path of an issuance in Japanese and English — success with change, wrong PIN,
locked PIN, refusal (転出者), cancel with money returned, time-out, card pulled, printer
jam after payment (未交付) — a keyboard-only issuance, axe-core on every screen the flows
reach, and at the end a gallery: every screen, re-rendered from the very state the server
sent during these runs, in both languages, screenshotted and scanned.

The PIN is searched for in everything the browser received (HTTP bodies, WebSocket
frames), every DOM the page showed, the kiosk's stdout/stderr and its journal."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulators.devices.lab import control
from kiosk.ui.autopilot import Pilot, asks_for_card
from kiosk.ui.hub import catalogue_languages, load_catalogue
from tests.emulators.issuance.conftest import Service
from tests.emulators.issuance.kiosk_sim import Card
from tests.kiosk.test_runner import pages_of, printed_pages
from tests.kiosk.ui.conftest import (
    AXE,
    CARDIO,
    Kiosk,
    artifacts,
    journal_bytes,
    start_kiosk,
)

pytestmark = pytest.mark.slow

#: Every path runs in these languages; CARDIO_UI_LANGS=all runs them in every catalogue's
#: language (the full-size run), or a comma-separated list.
_LANGS_ENV = os.environ.get("CARDIO_UI_LANGS", "ja,en")
LANGS = tuple(catalogue_languages()) if _LANGS_ENV == "all" else tuple(
    x.strip() for x in _LANGS_ENV.split(",") if x.strip())
#: A PIN no amount can equal (amounts are multiples of ten), set on the cards whose
#: sessions are searched for it.
PIN = "8642"

#: A page that never connects (the gallery feeds it states itself; a live state from the
#: kiosk must not interleave).
OFFLINE = ("window.WebSocket = class {"
           " constructor() { this.readyState = 0; } send() {} close() {} };")

GALLERY: dict[str, dict[str, Any]] = {}  # screen -> the first real state that showed it
SCANNED: dict[str, list[Any]] = {}  # "lang/screen" -> serious/critical axe violations
LEAKS: list[str] = []


@pytest.fixture(scope="module")
def kiosk(backend: Service, lab: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Kiosk]:
    k = start_kiosk(backend, lab, tmp_path_factory.mktemp("kiosk-web"))
    yield k
    err = k.stop()
    k.out.append({"event": "stderr", "text": err})


def scan(page: Any) -> list[dict[str, Any]]:
    """axe-core on the page as it is: serious and critical violations."""
    if not AXE.exists():
        pytest.skip("axe-core is not installed (bash scripts/setup.sh installs it)")
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => ({id: v.id, impact: v.impact, targets: v.nodes.map(n => n.target)}))")
    return found


class Flow:
    """One person at the kiosk in one language: a fresh page, axe on every new screen, the
    PIN searched for in every DOM, response body and frame the page saw."""

    def __init__(self, browser: Any, kiosk: Kiosk, lang: str, name: str,
                 pin: str | None = None) -> None:
        self.kiosk, self.lang, self.pin = kiosk, lang, pin
        self.catalogue = load_catalogue(lang)
        self.ctx = browser.new_context(viewport={"width": 1024, "height": 768},
                                       bypass_csp=True)  # axe is injected as a script
        self.page = self.ctx.new_page()
        self.bodies: list[bytes] = []
        self.sent: list[str] = []
        self.page.on("response", self._response)
        self.page.on("websocket", lambda ws: ws.on("framesent", self._sent))
        self.shots = artifacts() / "flows"
        self.shots.mkdir(exist_ok=True)
        self.p = Pilot(self.page, screenshots=self.shots, prefix=f"{name}-{lang}-",
                       on_screen=self._screen)
        self.p.open(kiosk.url)

    def _response(self, response: Any) -> None:
        with contextlib.suppress(Exception):  # a WebSocket upgrade has no body
            self.bodies.append(response.body())

    def _sent(self, payload: str | bytes) -> None:
        self.sent.append(payload if isinstance(payload, str) else payload.decode())

    def _screen(self, screen: str) -> None:
        st = self.p.state
        if st.get("screen") == screen:
            GALLERY.setdefault(screen, st)
        bad = scan(self.page)
        if bad:
            SCANNED[f"{self.lang}/{screen}"] = bad
        if self.pin and self.pin in self.page.content():
            LEAKS.append(f"DOM of {screen}")

    def start(self) -> None:
        self.p.wait("start", "done")
        self.p.wait("start", timeout=20)
        self.p.language(self.lang)
        self.p.click("#btn-start")
        self.p.wait("notice")  # 注意事項 first; the card is asked for after 同意
        self.p.click("#btn-agree")
        self.p.wait("setcard")
        assert self.page.evaluate("document.documentElement.lang") == self.lang
        assert self.page.text_content("#screen-title") == self.catalogue["screen.setcard.title"]

    def close(self) -> None:
        if self.pin:
            ids = [m.get(k, "") for m in self.kiosk.out for k in ("txn", "request_id")]
            for i, data in enumerate(self.bodies):
                assert self.pin.encode() not in data, f"response {i}"
            for frame in self.p.frames:
                text = json.dumps({k: v for k, v in frame.items() if k != "v"})
                for x in ids:
                    text = text.replace(str(x), "")
                assert self.pin not in text, "a frame the server sent"
            for s in self.sent:  # one key per frame: never the whole PIN
                assert self.pin not in s, "a frame the page sent"
            assert not LEAKS, LEAKS
        self.ctx.close()


@pytest.fixture
def flows(chromium: Any, kiosk: Kiosk) -> Iterator[list[Flow]]:
    made: list[Flow] = []
    yield made
    for f in made:
        f.close()
    kiosk.take()


def flow(flows: list[Flow], chromium: Any, kiosk: Kiosk, lang: str, name: str,
         pin: str | None = None) -> Flow:
    f = Flow(chromium, kiosk, lang, name, pin)
    flows.append(f)
    return f


def feeder(lab: dict[str, Any]) -> Any:
    from kiosk.runner import lab_feeder

    return lab_feeder(lab["control"])


def repin(card: Card, pin: str) -> Card:
    card.jpki().change_pin("auth", card.pin, pin)
    card.pin = pin
    return card


def to_menu(f: Flow, kiosk: Kiosk, card: Card) -> None:
    """Start, 同意, the card, the PIN; the card is asked back at once (card-out) and taken;
    then the menu."""
    f.start()
    kiosk.put(card)
    f.p.wait("pin")
    f.p.type_pin(card.pin)
    f.p.wait("card-out")
    kiosk.take()
    f.p.wait("menu")


def finish(f: Flow, kiosk: Kiosk, *, take: bool = True) -> dict[str, Any]:
    """Take the card when the page asks, wait for the done screen and the session line."""
    if take and kiosk.card is not None:  # still in: it was never used (refused, locked)
        f.p.wait_any(lambda s: asks_for_card(s, f.p.state), "the card reminder")
        kiosk.take()
    f.p.wait("done")
    return kiosk.session_end()


def bought(f: Flow, kiosk: Kiosk, lab: dict[str, Any], yen: list[int],
           options: tuple[str, ...] = (), copies: int = 1) -> None:
    f.p.click("#screen button[data-doc='juminhyo']")
    f.p.wait("options")
    for o in options:
        f.p.click(f"#opt-{o}")
    f.p.click("#btn-next")
    f.p.wait("copies")
    for _ in range(copies - 1):
        f.p.click("#btn-plus")
    f.p.click("#btn-next")
    f.p.wait("quote")
    f.p.click("#btn-accept")
    f.p.wait("payment")
    feed = feeder(lab)
    for y in yen:
        feed(y)


@pytest.mark.parametrize("lang", LANGS)
def test_issuance_with_change(backend: Service, lab: dict[str, Any], kiosk: Kiosk,
                              chromium: Any, flows: list[Flow], lang: str) -> None:
    """The whole path: PIN on the keypad (only the count comes back), menu with fees, an
    option, quote, ¥1000 for a smaller fee, the change shown, printing, 「カードをお取り
    ください」 before the pages, done. The figures on screen are the session's."""
    card = repin(backend.card(), PIN)
    pages_before = printed_pages(lab)
    f = flow(flows, chromium, kiosk, lang, "success", pin=PIN)
    to_menu(f, kiosk, card)
    assert f.p.state["pin"]["count"] == 0 and all(i["fee"] > 0 for i in f.p.state["menu"]
                                                  if not i["refusal"])
    bought(f, kiosk, lab, [1000], ("honseki",))
    f.p.wait("printing", "done")
    end = finish(f, kiosk)
    assert end["outcome"] == "printed" and end["paid"] == 1000
    st = f.p.state
    assert (st["outcome"], st["fee"], st["change"]) == ("printed", end["fee"], end["change"])
    assert end["change"] == 1000 - end["fee"]
    change = f.page.text_content("#done-change") or ""
    assert str(end["change"]) in change.replace(",", "")
    seen = f.p.seen[len(f.p.seen) - 1 - f.p.seen[::-1].index("start"):]  # this customer's
    order = ["notice", "setcard", "pin", "card-out", "menu", "options", "copies", "quote",
             "payment", "done"]
    assert [x for x in seen if x in order] == order, seen
    assert "take-card" not in seen  # the card was out long before the payment
    assert [p.read_bytes()[:5] for p in pages_of(lab, end, pages_before)] == [b"%PDF-"]
    pays = [fr for fr in f.p.frames if fr["screen"] == "payment"]
    assert pays[-1]["credited"] == 1000 or any(fr["credited"] == 1000 for fr in f.p.frames)


def test_card_out_interlock_then_two_copies(backend: Service, lab: dict[str, Any],
                                            kiosk: Kiosk, chromium: Any,
                                            flows: list[Flow]) -> None:
    """Once used, the card must leave: while it stays on card-out the session does not go
    on (a choice sent by the page is refused; the reminder escalates); taken, the menu
    names the municipality. Two copies of a 住民票: the fee twice, two pages in one job,
    the books balanced."""
    card = repin(backend.card(), PIN)
    pages_before = printed_pages(lab)
    f = flow(flows, chromium, kiosk, "ja", "copies", pin=PIN)
    f.start()
    kiosk.put(card)
    f.p.wait("pin")
    f.p.type_pin(card.pin)
    f.p.wait("card-out")
    assert f.p.state["take_card"] is True
    f.page.evaluate("S.ws.send(JSON.stringify({op: 'choose', item: 'juminhyo'}))")
    f.page.wait_for_function("document.body.dataset.remind === '2'", timeout=20000)
    assert f.p.screen == "card-out" and f.p.state["menu"]  # held: not one step further
    kiosk.take()
    f.p.wait("menu")
    name = f.p.state["municipality"]
    assert name and name in (f.page.text_content("#municipality") or "")
    unit = next(i["fee"] for i in f.p.state["menu"] if i["doc"] == "juminhyo")
    bought(f, kiosk, lab, [1000], copies=2)
    quote = [fr for fr in f.p.frames if fr["screen"] == "quote"][-1]
    assert (quote["copies"], quote["fee"]) == (2, 2 * unit)
    end = finish(f, kiosk)
    assert (end["outcome"], end["fee"], end["paid"], end["change"]) == (
        "printed", 2 * unit, 1000, 1000 - 2 * unit)
    import pypdfium2 as pdfium

    files = pages_of(lab, end, pages_before)
    assert len(files) == 1  # one job
    pdf = pdfium.PdfDocument(files[0].read_bytes())
    texts = [pdf[i].get_textpage().get_text_range() for i in range(len(pdf))]
    half = len(texts) // 2
    assert len(texts) == 2 * half >= 2 and texts[:half] == texts[half:], len(texts)
    res = subprocess.run([*CARDIO, "kiosk", "ledger", "--journal",
                          str(kiosk.base / "journal.db"), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and json.loads(res.stdout)["balanced"], res.stdout


@pytest.mark.parametrize("lang", LANGS)
def test_wrong_pin_then_right_then_escape(backend: Service, kiosk: Kiosk, chromium: Any,
                                          flows: list[Flow], lang: str) -> None:
    """A wrong PIN shows the tries left and the keypad again; backspace and clear work on
    the count; the right PIN goes on; Escape cancels."""
    card = repin(backend.card(), PIN)
    f = flow(flows, chromium, kiosk, lang, "wrong-pin", pin=PIN)
    f.start()
    kiosk.put(card)
    f.p.wait("pin")
    for key in "99":
        f.p.click(f"#key-{key}")
    f.page.wait_for_function("document.getElementById('pin-dots').textContent"
                             ".startsWith('●●○')")
    f.p.click("#key-ok")  # two digits never reach the card
    f.p.wait("pin-incomplete")
    assert f.p.state["pin"]["count"] == 2
    f.p.click("#key-back")
    f.page.wait_for_function("document.getElementById('pin-dots').textContent"
                             ".startsWith('●○')")
    f.p.click("#key-clear")
    f.page.wait_for_function("document.getElementById('pin-dots').textContent === '○○○○'")
    f.p.type_pin("1357")
    f.p.wait("pin-wrong")
    assert f.p.state["pin"]["tries_left"] == 2
    assert "2" in (f.page.text_content("#screen .lead") or "")
    f.p.type_pin(card.pin)
    f.p.wait("card-out")
    kiosk.take()
    f.p.wait("menu")
    f.page.keyboard.press("Escape")
    f.p.wait("cancelled", "done")  # the card is out: the ending takes no time
    assert f.p.state["notice"]["reason"] == "user_cancel"
    end = finish(f, kiosk)
    assert end["outcome"] == "cancelled" and end["paid"] == 0
    assert card.jpki().tries_left("auth") == 3  # the right PIN reset the counter


@pytest.mark.parametrize("lang", LANGS)
def test_locked_pin(backend: Service, kiosk: Kiosk, chromium: Any, flows: list[Flow],
                    lang: str) -> None:
    """One try left: the PIN screen warns; a wrong PIN locks the card, the locked screen
    says what to do, and the kiosk never tries the PIN again."""
    from cardio.apdu.errors import VerificationFailed

    card = backend.card()
    for _ in range(2):
        with pytest.raises(VerificationFailed):
            card.jpki().verify_pin("auth", "0000" if card.pin != "0000" else "1111")
    f = flow(flows, chromium, kiosk, lang, "locked")
    f.start()
    kiosk.put(card)
    f.p.wait("pin")
    assert f.p.state["pin"]["tries_left"] == 1
    assert f.page.locator("#screen .reason").count() == 1  # the last-try warning
    f.p.type_pin("0000" if card.pin != "0000" else "1111")
    f.p.wait("pin-locked")
    end = finish(f, kiosk)
    assert (end["outcome"], end["reason"]) == ("refused", "pin_locked")
    kiosk.take()
    assert card.jpki().tries_left("auth") == 0


@pytest.mark.parametrize("lang", LANGS)
def test_moved_out_is_refused(backend: Service, kiosk: Kiosk, chromium: Any,
                              flows: list[Flow], lang: str) -> None:
    """A 転出者 (status ``moved_out`` in the register): nothing can be issued, the screen
    says why and what to do, no money is asked for."""
    card = backend.card()
    with backend.db.tx(write=True) as t:
        t.execute("UPDATE residents SET status='moved_out' WHERE id=?", (card.resident_id,))
    f = flow(flows, chromium, kiosk, lang, "refused")
    f.start()
    kiosk.put(card)
    f.p.wait("pin")
    f.p.type_pin(card.pin)
    f.p.wait("refused")
    assert f.p.state["notice"]["reason"] == "moved_out"
    assert f.page.text_content("#reason") not in ("", "reason.moved_out")
    end = finish(f, kiosk)
    assert (end["outcome"], end["reason"], end["paid"]) == ("refused", "moved_out", 0)


@pytest.mark.parametrize("lang", LANGS)
def test_refused_item_then_cancel_returns_money(backend: Service, lab: dict[str, Any],
                                                kiosk: Kiosk, chromium: Any,
                                                flows: list[Flow], lang: str) -> None:
    """The menu shows a refused item with its reason (印鑑登録証明書 without a registered
    seal); choosing it explains, back to the menu; then ¥100 for a larger fee and Cancel:
    the money comes back (the coin acceptor's escrow/hoppers say so)."""
    with backend.db.tx() as t:
        rid = t.one("SELECT r.id FROM residents r WHERE r.id NOT IN"
                    " (SELECT resident_id FROM inkan) AND r.birth < '1990-01-01'"
                    " AND r.status = 'active' AND r.support_measure = 0"
                    " AND r.gaiji_pending = 0 ORDER BY r.id LIMIT 1 OFFSET ?",
                    (LANGS.index(lang),))[0]
    card = backend.card(rid)
    f = flow(flows, chromium, kiosk, lang, "cancel")
    to_menu(f, kiosk, card)
    refused = [i for i in f.p.state["menu"] if i["refusal"]]
    assert {"doc": "inkan", "refusal": "no_inkan"}.items() <= next(
        i for i in refused if i["doc"] == "inkan").items()
    f.p.click("#screen button[data-doc='inkan']")
    f.p.wait("item-refused")
    f.p.click("#btn-menu")
    f.p.wait("menu")
    bought(f, kiosk, lab, [100])
    f.page.wait_for_function("document.getElementById('pay-credited').textContent"
                             ".includes('100')")
    f.p.click("#btn-cancel")  # money is in: asked once
    f.page.wait_for_selector("#confirm:not([hidden])")
    assert "100" in (f.page.text_content("#confirm-text") or "")
    f.p.click("#confirm-no")  # not yet: the payment goes on
    f.page.wait_for_selector("#confirm", state="hidden")
    assert f.p.screen == "payment"
    f.p.click("#btn-cancel")
    f.p.click("#confirm-yes")
    f.p.wait("cancelled", "done")
    assert f.p.state["notice"]["amount"] == 100
    f.page.wait_for_selector("#returned")
    assert "100" in (f.page.text_content("#returned") or "")  # says how much came back
    end = finish(f, kiosk)
    assert (end["outcome"], end["paid"], end["refund_due"]) == ("cancelled", 100, 0)
    assert end["files"] == []


def test_cancel_at_payment_with_nothing_inserted(backend: Service, lab: dict[str, Any],
                                                 kiosk: Kiosk, chromium: Any,
                                                 flows: list[Flow]) -> None:
    """Cancel on the payment screen before any money: the acceptors are closed again, so
    the next customer can pay (an acceptor left open would refuse the next cash-in)."""
    card = backend.card()
    f = flow(flows, chromium, kiosk, "ja", "cancel-empty")
    to_menu(f, kiosk, card)
    bought(f, kiosk, lab, [])
    f.p.click("#btn-cancel")
    f.p.wait("cancelled", "done")
    end = finish(f, kiosk)
    assert (end["outcome"], end["paid"]) == ("cancelled", 0)
    nxt = backend.card()
    g = flow(flows, chromium, kiosk, "ja", "after-empty")
    to_menu(g, kiosk, nxt)
    bought(g, kiosk, lab, [1000])
    end = finish(g, kiosk)
    assert (end["outcome"], end["reason"], end["paid"]) == ("printed", "", 1000), end


@pytest.mark.parametrize("lang", LANGS)
def test_card_pulled_mid_session(backend: Service, lab: dict[str, Any], kiosk: Kiosk,
                                 chromium: Any, flows: list[Flow], lang: str) -> None:
    """The card leaves the slot before it was used (on the PIN screen): cancelled, no
    card reminder (the card is already out), nothing paid."""
    card = backend.card()
    f = flow(flows, chromium, kiosk, lang, "pulled")
    f.start()
    kiosk.put(card)
    f.p.wait("pin")
    kiosk.take()
    f.p.wait("cancelled", "done")
    end = finish(f, kiosk, take=False)
    assert (end["outcome"], end["reason"], end["paid"]) == ("cancelled", "card_removed", 0)
    assert "take-card" not in f.p.seen


@pytest.mark.parametrize("lang", LANGS)
def test_printer_jam_after_payment(backend: Service, lab: dict[str, Any], kiosk: Kiosk,
                                   chromium: Any, flows: list[Flow], lang: str) -> None:
    """The printer jams once the money is taken (the card asked for first: the job starts
    once it is out): the 未交付 screen with the refund and the slip's number; no
    certificate."""
    if not lab["printer"]:
        pytest.skip("the emulated IPP printer cannot run on this machine")
    card = backend.card()
    f = flow(flows, chromium, kiosk, lang, "jam")
    to_menu(f, kiosk, card)
    control(lab["control"], device="printer", op="fault", fault="jam")
    try:
        bought(f, kiosk, lab, [1000])
        f.p.wait("not-issued", timeout=90)
    finally:
        control(lab["control"], device="printer", op="clear")
    st = f.p.state
    assert st["notice"]["reason"].startswith("print_failed") and st["txn"]
    assert st["notice"]["amount"] == st["fee"] > 0
    assert st["txn"] in (f.page.text_content("#slip-txn") or "")
    end = finish(f, kiosk, take=False)
    assert end["outcome"] == "failed_refund_due" and end["refund_due"] == end["fee"]
    # The jammed printer cannot print the slip either; the refund is in the journal, and
    # the kiosk writes nothing of it to disk.
    assert end["files"] == []


def test_keyboard_only_issuance(backend: Service, lab: dict[str, Any], kiosk: Kiosk,
                                chromium: Any, flows: list[Flow]) -> None:
    """No pointer at all: Tab and Enter through every screen, the PIN from the keyboard's
    digits, Space for an option."""
    card = repin(backend.card(), PIN)
    f = flow(flows, chromium, kiosk, "en", "keyboard", pin=PIN)
    kb = f.page.keyboard

    def tab_to(selector: str) -> None:
        for _ in range(40):
            if f.page.evaluate("(s) => document.activeElement === document.querySelector(s)",
                               selector):
                return
            kb.press("Tab")
        raise AssertionError(f"Tab never reached {selector}")

    f.p.wait("start", "done")
    f.p.wait("start", timeout=20)
    tab_to("#langs button[data-lang='en']")  # the language switch, by keyboard too
    kb.press("Enter")
    f.page.wait_for_function("document.documentElement.lang === 'en'")
    tab_to("#btn-start")
    ring = f.page.evaluate("(() => { const s = getComputedStyle(document.activeElement);"
                           " return [s.outlineStyle, parseFloat(s.outlineWidth),"
                           " s.boxShadow]; })()")
    assert ring[0] != "none" and ring[1] >= 3 and ring[2] != "none", ring  # visible focus
    size = f.page.evaluate("(() => { const r = document.activeElement"
                           ".getBoundingClientRect(); return [r.width, r.height]; })()")
    assert min(size) >= 44, size  # a large target
    kb.press("Enter")
    f.p.wait("notice")
    tab_to("#btn-agree")
    kb.press("Enter")
    f.p.wait("setcard")
    kiosk.put(card)
    f.p.wait("pin")
    kb.type(card.pin)
    f.page.wait_for_function("document.getElementById('pin-dots').textContent === '●●●●'")
    f.page.focus("#screen-title")
    kb.press("Enter")
    f.p.wait("card-out")
    kiosk.take()
    f.p.wait("menu")
    tab_to("#screen button[data-doc='juminhyo']")
    kb.press("Enter")
    f.p.wait("options")
    tab_to("#opt-relationship")
    kb.press("Space")
    tab_to("#btn-next")
    kb.press("Enter")
    f.p.wait("copies")
    tab_to("#btn-next")
    kb.press("Enter")
    f.p.wait("quote")
    assert f.p.state["options"] == ["relationship"]
    tab_to("#btn-accept")
    kb.press("Enter")
    f.p.wait("payment")
    feeder(lab)(1000)
    end = finish(f, kiosk)
    assert end["outcome"] == "printed" and end["change"] == 1000 - end["fee"]


@pytest.fixture(scope="module")
def quick_kiosk(backend: Service, lab: dict[str, Any],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiosk]:
    """A second kiosk whose user screens warn after 3 s and give up after 9 s (without
    cash devices: the first kiosk keeps the lab's serial lines to itself)."""
    k = start_kiosk(backend, lab, tmp_path_factory.mktemp("kiosk-quick"),
                    timeouts="timeouts = {warn = 3, wipe = 9}\n", devices="")
    yield k
    k.stop()


@pytest.mark.parametrize("lang", LANGS)
def test_timeout_warning_continue_then_wipe(backend: Service, quick_kiosk: Kiosk,
                                            chromium: Any, flows: list[Flow],
                                            lang: str) -> None:
    """Idle on the menu: the warning dialog (focus on 続ける) — Continue keeps the session;
    idle again until the wipe: cancelled for time-out, card reminder, done."""
    card = backend.card()
    f = flow(flows, chromium, quick_kiosk, lang, "timeout")
    to_menu(f, quick_kiosk, card)
    f.page.wait_for_selector("#warning:not([hidden])", timeout=15000)
    assert f.page.evaluate("document.activeElement.id") == "warning-continue"
    f._screen("timeout-warning")  # scanned and kept like any screen
    GALLERY.setdefault("timeout-warning", dict(f.p.state))
    f.page.screenshot(path=str(f.shots / f"timeout-{lang}-warning.png"))
    f.page.keyboard.press("Enter")
    f.page.wait_for_selector("#warning", state="hidden")
    assert f.p.state["screen"] == "menu"
    f.page.wait_for_selector("#warning:not([hidden])", timeout=15000)
    f.p.wait("cancelled", "done", timeout=20)
    assert f.p.state["notice"]["reason"] == "timeout"
    end = finish(f, quick_kiosk)
    assert (end["outcome"], end["reason"]) == ("cancelled", "timeout")


def test_autopilot_drives_an_issuance(backend: Service, lab: dict[str, Any], kiosk: Kiosk,
                                      tmp_path: Path) -> None:
    """The demo's driver: its own browser, the card and the money through callbacks; it
    reports what the screens showed, and that agrees with the kiosk's session line."""
    from kiosk.ui.autopilot import drive_issuance

    card = repin(backend.card(), PIN)
    res = drive_issuance(kiosk.url, pin=card.pin, document="juminhyo", options=("honseki",),
                         insert=feeder(lab), put_card=lambda: kiosk.put(card),
                         take_card=kiosk.take, yen=[1000], screenshots=tmp_path,
                         lang="en", timeout=90)
    end = kiosk.session_end()
    assert res["outcome"] == end["outcome"] == "printed", (end, res)
    assert (res["fee"], res["credited"], res["change"]) == (end["fee"], 1000, end["change"])
    order = [s for s in res["screens"] if s in ("start", "notice", "setcard", "pin",
                                                 "card-out", "payment", "take-card", "done")]
    assert order == ["start", "notice", "setcard", "pin", "card-out", "payment", "done"], \
        res["screens"]
    assert Path(res["final_screenshot"]).read_bytes()[:4] == b"\x89PNG"


#: Every screen the page has (hub.py's and the core's); the gallery must show them all.
ALL_SCREENS = {"start", "notice", "setcard", "pin", "pin-wrong", "pin-incomplete", "pin-locked",
               "working", "card-out", "menu", "item-refused", "options", "copies", "quote",
               "payment", "printing", "done", "refused", "not-issued", "timeout-warning"}


@pytest.mark.parametrize("lang", LANGS)
def test_gallery_every_screen(chromium: Any, kiosk: Kiosk, lang: str) -> None:
    """Every screen the flows reached, re-rendered from the state the server really sent,
    screenshotted into the artifacts and scanned by axe-core — plus the axe findings of
    the live flows: 0 serious or critical violations anywhere."""
    if len(GALLERY) < 4:
        pytest.skip("the gallery shows the states of this module's flows: run them too")
    missing = ALL_SCREENS - set(GALLERY)
    assert not missing, f"no flow reached {sorted(missing)}"
    # Screens no flow here can hold still long enough (or at all: a cash device that never
    # answers) are shown from a real state with only the screen changed — labelled so.
    base = GALLERY["working"]
    states = dict(GALLERY)
    for screen, detail in (("reading", ""), ("take-pages", ""), ("call-staff", "stacking"),
                           ("take-card", "")):
        states.setdefault(screen, {**base, "screen": screen, "detail": detail,
                                   "constructed": True})
    # With the card out early, a cancel without money ends at once: its screen may have
    # gone before the pilot looked (then shown from a real state, the notice added).
    states.setdefault("cancelled", {**base, "screen": "cancelled", "constructed": True,
                                    "notice": {"kind": "cancelled", "reason": "user_cancel",
                                               "amount": 100}})
    out = artifacts() / "screens"
    out.mkdir(exist_ok=True)
    ctx = chromium.new_context(viewport={"width": 1024, "height": 768}, bypass_csp=True)
    ctx.add_init_script(OFFLINE)
    page = ctx.new_page()
    page.goto(kiosk.url)
    page.wait_for_function("document.getElementById('langs').children.length > 1")
    page.click(f"#langs button[data-lang='{lang}']")
    page.wait_for_function("(l) => document.documentElement.lang === l", arg=lang)
    # axe itself first: a page with a known serious violation must be reported.
    page.evaluate("document.body.append(Object.assign(document.createElement('img'),"
                  " {id: 'canary', src: 'data:,'}))")
    assert any(v["id"] == "image-alt" for v in scan(page)), "axe did not see the canary"
    page.evaluate("document.getElementById('canary').remove()")
    title = load_catalogue(lang)["app.title"]
    for screen, st in sorted(states.items()):
        # As if this kiosk's language were the gallery's (else the start screen would
        # bring the page back to the language the flows' kiosk had).
        page.evaluate("(st) => window.kioskRender(st)", {**st, "lang": lang})
        page.wait_for_function("(s) => document.body.dataset.screen === s",
                               arg=st["screen"])
        assert page.evaluate("document.documentElement.lang") == lang, screen
        assert page.text_content("#app-title") == title, screen
        page.screenshot(path=str(out / f"{lang}-{screen}.png"))
        bad = scan(page)
        if bad:
            SCANNED[f"gallery/{lang}/{screen}"] = bad
        text = page.inner_text("#screen")
        assert "screen." not in text and "reason." not in text, (screen, text)
        small = page.evaluate(
            "[...document.querySelectorAll('button, .choice')]"
            ".filter(e => e.getClientRects().length)"
            ".map(e => { const r = e.getBoundingClientRect();"
            " return [e.id || e.textContent.trim().slice(0, 20), Math.min(r.width, r.height)]; })"
            ".filter(x => x[1] < 44)")
        assert not small, (screen, small)  # every target at least 44 CSS px
    ctx.close()
    assert not SCANNED, SCANNED


def test_spoken_prompts_and_mute(chromium: Any, kiosk: Kiosk) -> None:
    """On the states the kiosk really sent: each new screen plays its clip (rendered
    offline by the kiosk, kiosk/ui/voice.py), the card reminder from level 2 on, again and
    again; 音声停止 silences everything (tests/kiosk/ui/test_voice.py checks the clips)."""
    if "card-out" not in GALLERY:
        pytest.skip("uses the states of this module's flows: run them too")
    ctx = chromium.new_context(viewport={"width": 1024, "height": 768}, bypass_csp=True)
    ctx.add_init_script(OFFLINE)
    page = ctx.new_page()
    page.goto(kiosk.url)
    page.wait_for_selector("#langs button[data-lang='ja']")
    take = {**GALLERY["card-out"], "lang": "ja", "remind": 1}
    page.evaluate("(st) => window.kioskRender(st)", {**GALLERY["menu"], "lang": "ja"})
    page.wait_for_function("S.played.includes('screen.menu.title')")
    page.evaluate("(st) => window.kioskRender(st)", take)
    page.wait_for_function("S.played[S.played.length - 1] !== 'screen.menu.text'"
                           " && S.played.includes('screen.card-out.title')")
    page.evaluate("(st) => window.kioskRender(st)", {**take, "remind": 2})
    page.wait_for_function("S.played.filter(k => k === 'card.panel').length >= 2",
                           timeout=20000)
    page.evaluate("document.getElementById('mute').click()")
    assert page.get_attribute("#mute", "aria-pressed") == "true"
    assert page.evaluate("audio.paused && S.queue.length === 0")
    n = page.evaluate("S.played.length")
    page.wait_for_timeout(6500)  # the reminder repeats every 6 s: silenced now
    page.evaluate("(st) => window.kioskRender(st)", {**GALLERY["payment"], "lang": "ja"})
    page.wait_for_function("document.body.dataset.screen === 'payment'")
    assert page.evaluate("S.played.length") == n
    ctx.close()


def test_pin_is_nowhere_in_the_kiosk(kiosk: Kiosk) -> None:
    """Last: stop the kiosk (SIGTERM: it says stopped, books balanced) and search for
    :data:`PIN`, used by several flows above, in its stdout and stderr (ids the kiosk made
    up are taken out first) and in its journal and output files."""
    err = kiosk.stop()
    assert kiosk.proc.returncode == 0, err[-2000:]
    stopped = kiosk.until(lambda m: m["event"] == "stopped", 10)[-1]
    assert stopped["ledger"]["balanced"]
    text = "\n".join(json.dumps(m, ensure_ascii=False) for m in kiosk.out)
    ids = [str(m.get(k, "")) for m in kiosk.out for k in ("txn", "request_id")]
    blobs = {"stdout": text.encode(), "stderr": err.encode(), **journal_bytes(kiosk.base)}
    for name, data in blobs.items():
        for i in ids:
            if i:
                data = data.replace(i.encode(), b"")
        assert PIN.encode() not in data, name
