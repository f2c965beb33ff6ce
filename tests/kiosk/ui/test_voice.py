"""Spoken guidance rendered offline (issue 24): Open JTalk for Japanese, eSpeak NG for the
other languages, cached WAV clips served by catalogue key; in the page, a screen change
plays its clips, the card reminder repeats, 音声停止 stops the sound at once, and nothing
is fetched from anywhere but the kiosk."""

from __future__ import annotations

import asyncio
import struct
import threading
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from kiosk.ui.hub import WebHub, load_catalogue
from kiosk.ui.voice import Voice, speakable
from tests.kiosk.ui.screens import SCREEN_STATES
from tests.kiosk.ui.test_screen_fit import OFFLINE, chromium, render  # noqa: F401

pytestmark = pytest.mark.slow


def loudness(path: Path) -> tuple[float, float]:
    """Seconds and RMS of a 16-bit mono WAV: a clip that is silence is no clip."""
    with wave.open(str(path)) as w:
        n = w.getnframes()
        data = struct.unpack(f"<{n * w.getnchannels()}h", w.readframes(n))
        rate = w.getframerate()
    return n / rate, (sum(x * x for x in data) / max(1, len(data))) ** 0.5


@pytest.mark.parametrize("lang", ["ja", "en", "zh", "ko"])
def test_a_clip_is_rendered_once_and_is_speech(tmp_path: Path, lang: str) -> None:
    v = Voice(tmp_path / "cache")
    if not v.available(lang):
        pytest.skip(f"no synthesiser for {lang}: {v.missing()} (bash scripts/setup.sh)")
    p = v.path(lang, "screen.menu.title")
    assert p is not None and p.read_bytes()[:4] == b"RIFF"
    seconds, rms = loudness(p)
    assert 0.3 < seconds < 10 and rms > 300, (seconds, rms)
    mtime = p.stat().st_mtime_ns
    assert v.path(lang, "screen.menu.title") == p and p.stat().st_mtime_ns == mtime  # cached
    # only the catalogue's own texts, and only those without a placeholder
    assert v.path(lang, "no.such.key") is None
    assert "screen.pin-wrong.text" not in speakable(lang)  # "{n} tries left"
    assert v.path(lang, "screen.pin-wrong.text") is None
    assert v.path("xx", "screen.menu.title") is None
    assert len(list((tmp_path / "cache").rglob("*.wav"))) == 1


@pytest.fixture(scope="module")
def kiosk_page() -> Iterator[str]:
    """The kiosk's web app with its voice (clips cached where the kiosk keeps them)."""
    from kiosk.ui.app import UiServer

    v = Voice()
    if not v.available("ja"):
        pytest.skip(f"no Japanese synthesiser: {v.missing()} (bash scripts/setup.sh)")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = UiServer(WebHub(lang="ja"), voice=v)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(20)
    try:
        yield server.url
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_screens_speak_the_reminder_repeats_and_mute_stops(chromium: Any,  # noqa: F811
                                                           kiosk_page: str) -> None:
    ctx = chromium.new_context(viewport={"width": 1024, "height": 768}, bypass_csp=True)
    ctx.add_init_script(OFFLINE)
    page = ctx.new_page()
    hosts: set[str] = set()
    page.on("request", lambda r: hosts.add(urlparse(r.url).netloc))
    page.goto(kiosk_page)
    page.wait_for_function("document.getElementById('langs').children.length > 1")
    ja = load_catalogue("ja")
    try:
        render(page, "menu", "ja")
        # the menu's title is what plays, from the kiosk's own clip, and sound comes out
        page.wait_for_function("S.played.includes('screen.menu.title')")
        page.wait_for_function("!audio.paused && audio.currentTime > 0", timeout=15000)
        src = page.evaluate("audio.src")
        assert src.endswith("/voice/ja/screen.menu.title.wav") or \
            src.endswith("/voice/ja/screen.menu.text.wav"), src
        # the next screen replaces it: its own title
        render(page, "quote", "ja")
        page.wait_for_function("S.played[S.played.length - 1] === 'screen.quote.title'")
        # the card reminder: spoken from level 2, again and again
        card = {**SCREEN_STATES["card-out"], "remind": 2}
        page.evaluate("(st) => window.kioskRender(st)", card)
        page.wait_for_function(
            "S.played.filter(k => k === 'card.panel').length >= 2", timeout=20000)
        # 音声停止: silence at once, and no more reminders
        page.evaluate("document.getElementById('mute').click()")
        assert page.get_attribute("#mute", "aria-pressed") == "true"
        assert page.text_content("#mute") == ja["mute.on"]
        assert page.evaluate("audio.paused && S.queue.length === 0")
        n = page.evaluate("S.played.length")
        page.wait_for_timeout(6500)  # a reminder is due every 6 s: none comes
        render(page, "payment", "ja")  # nor does a new screen speak
        page.wait_for_timeout(500)
        assert page.evaluate("S.played.length") == n and page.evaluate("audio.paused")
    finally:
        ctx.close()
    assert hosts == {urlparse(kiosk_page).netloc}, hosts  # nothing from the network


@pytest.mark.parametrize("lang", ["ja", "en", "zh", "ko"])
def test_every_screen_has_its_clip(lang: str) -> None:
    """Each screen of the page (tests/kiosk/ui/screens.py) says at least its title."""
    v = Voice()
    if not v.available(lang):
        pytest.skip(f"no synthesiser for {lang}: {v.missing()} (bash scripts/setup.sh)")
    screens = {st["screen"] for st in SCREEN_STATES.values()}
    silent = [s for s in sorted(screens) if v.path(lang, f"screen.{s}.title") is None]
    assert not silent, silent
