"""A person at the kiosk's screen, played by headless Chromium: the driver ``cardio demo
kiosk`` runs one issuance with, and the core of the UI's browser tests.

It uses Debian's ``chromium`` through Playwright (``executable_path``; no browser is ever
downloaded) and touches the page only as a person would — buttons, the on-screen keypad —
while the things a person does with their hands go through callbacks: ``put_card`` and
``take_card`` (the card slot), ``insert`` (money into the acceptors; the demo and the tests
feed the emulated devices through their control socket). What it reports is what the page
was sent and showed: the screens in order, fee, credited amount, change.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cardio.errors import CardioError

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "BrowserMissing", "Pilot", "PilotError", "browser",
           "drive_issuance"]

CHROMIUM = "/usr/bin/chromium"
#: The kiosk's browser speaks without a tap first (a kiosk's guidance starts on its own):
#: ``--autoplay-policy=no-user-gesture-required``, as a kiosk-mode launcher sets it.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required")

#: Screens where the session went no further (the pilot reports them, it does not wait on).
ENDINGS = frozenset({"refused", "cancelled", "not-issued", "pin-locked", "pin-wrong", "done",
                     "call-staff", "item-refused"})


class BrowserMissing(CardioError):
    """Chromium or Playwright is not installed."""

    exit_code = 27


class PilotError(CardioError):
    """The page did not reach the screen the pilot waited for (it says which it saw)."""

    exit_code = 28


def asks_for_card(screen: str, state: dict[str, Any]) -> bool:
    """The page asks the person to take the card: the take-card screen, its panel beside a
    notice, or the reminder on the printing screen (a printer's job starts only once the
    card is out)."""
    return screen in ("take-card", "card-out") or state.get("take_card") is True or (
        screen == "printing" and bool(state.get("remind")))


class _ProfileBrowser:
    """A persistent-profile Chromium context that answers ``new_page`` as a ``Browser``
    does: the kiosk's screen as a kiosk runs it, with its profile (cache, storage) in a
    directory that stays — so a test can search what the screen left on disk."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def new_page(self, *, viewport: dict[str, int] | None = None, **_kw: Any) -> Any:
        page = self.context.new_page()
        if viewport:
            page.set_viewport_size(viewport)
        return page

    def close(self) -> None:
        self.context.close()


@contextlib.contextmanager
def browser(executable: str = CHROMIUM, *, user_data_dir: Path | None = None
            ) -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``) for as long as the block runs; with
    ``user_data_dir``, on that persistent profile (as a kiosk's browser runs)."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise BrowserMissing("Playwright is not installed: run bash scripts/setup.sh") from None
    if not Path(executable).exists() and shutil.which(executable) is None:
        raise BrowserMissing(f"no Chromium at {executable}: run bash scripts/setup.sh (it"
                             " installs the Debian packages chromium and chromium-driver)")
    with sync_playwright() as pw:
        b: Any
        try:
            if user_data_dir is not None:
                b = _ProfileBrowser(pw.chromium.launch_persistent_context(
                    str(user_data_dir), executable_path=executable, args=list(CHROMIUM_ARGS)))
            else:
                b = pw.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        except PlaywrightError as e:
            raise BrowserMissing(f"Chromium at {executable} did not start ({str(e)[:200]}):"
                                 " run bash scripts/setup.sh") from None
        try:
            yield b
        finally:
            b.close()


#: In the page: the centre of a control if a person can press it there (inside the
#: viewport, the topmost element at that point), else why not.
_REACH = """(sel) => {
  const e = document.querySelector(sel);
  if (!e) return "not on the page";
  const r = e.getBoundingClientRect();
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  if (r.left < 0 || r.top < 0 || r.right > innerWidth || r.bottom > innerHeight)
    return `outside the ${innerWidth}x${innerHeight} viewport (top ${Math.round(r.top)},`
      + ` bottom ${Math.round(r.bottom)})`;
  const hit = document.elementFromPoint(x, y);
  const lbl = e.labels && e.labels.length ? e.labels[0] : null;
  if (!hit || !(hit === e || e.contains(hit) || (lbl && lbl.contains(hit))))
    return "covered by " + (hit ? hit.tagName + "#" + hit.id : "nothing");
  return [x, y];
}"""


class Pilot:
    """One page of the kiosk UI: follows its screens (``body[data-screen]``), keeps every
    state the server sent (WebSocket frames), screenshots each new screen when asked."""

    def __init__(self, page: Any, *, screenshots: Path | None = None, prefix: str = "",
                 on_screen: Callable[[str], None] | None = None) -> None:
        self.page = page
        self.frames: list[dict[str, Any]] = []
        self.seen: list[str] = []
        self.shots: dict[str, Path] = {}
        self.screenshots = screenshots
        self.prefix = prefix
        self.on_screen = on_screen
        page.on("websocket", self._ws)

    def _ws(self, ws: Any) -> None:
        def frame(payload: str | bytes) -> None:
            with contextlib.suppress(ValueError, TypeError):
                data = json.loads(payload)
                if isinstance(data, dict) and "screen" in data:
                    self.frames.append(data)
        ws.on("framereceived", frame)

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.wait_any(lambda s: bool(s), "a screen")

    def language(self, lang: str) -> None:
        self.click(f"#langs button[data-lang='{lang}']")
        self.page.wait_for_function("(l) => document.documentElement.lang === l", arg=lang)

    @property
    def screen(self) -> str:
        value: str = self.page.evaluate("document.body.dataset.screen || ''")
        return value

    @property
    def state(self) -> dict[str, Any]:
        return self.frames[-1] if self.frames else {}

    def poll(self) -> str:
        s = self.screen
        if s and (not self.seen or self.seen[-1] != s):
            self.seen.append(s)
            if self.screenshots is not None and s not in self.shots:
                path = self.screenshots / f"{self.prefix}{len(self.shots):02d}-{s}.png"
                self.page.screenshot(path=str(path))
                self.shots[s] = path
            if self.on_screen is not None:
                self.on_screen(s)
        return s

    def wait_any(self, pred: Callable[[str], bool], what: str, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        while True:
            s = self.poll()
            if pred(s):
                return s
            if time.monotonic() > end:
                raise PilotError(f"the kiosk page never showed {what}; it showed"
                                 f" {' → '.join(self.seen[-12:])}")
            self.page.wait_for_timeout(50)

    def wait(self, *screens: str, timeout: float = 60) -> str:
        return self.wait_any(lambda s: s in screens, " or ".join(screens), timeout)

    def click(self, selector: str, timeout: float = 30) -> None:
        """Press ``selector`` where a finger would: at the centre of its rectangle, with the
        mouse, as the page lays it out — never scrolled into view first (a kiosk has no
        scrolling hand; Playwright's own click scrolls, which hid controls below the fold).
        A control outside the viewport or covered by something else is :class:`PilotError`."""
        self.page.wait_for_selector(selector, state="visible", timeout=timeout * 1000)
        where = self.page.evaluate(_REACH, selector)
        if not isinstance(where, list):
            raise PilotError(f"{selector} cannot be pressed on the screen: {where}")
        self.page.mouse.click(where[0], where[1])

    def type_pin(self, pin: str) -> None:
        """On the on-screen keypad, one button per digit, then 確定."""
        for d in pin:
            self.click(f"#key-{d}")
        self.page.wait_for_function(
            "(n) => (document.getElementById('pin-dots')||{}).textContent"
            " ?.split('●').length - 1 === n", arg=min(len(pin), 4))
        self.click("#key-ok")


def drive_issuance(url: str, *, pin: str, document: str, options: Sequence[str] = (),
                   copies: int = 1,
                   insert: Callable[[int], None], put_card: Callable[[], None],
                   take_card: Callable[[], None], yen: Sequence[int],
                   screenshots: Path | None = None, lang: str = "ja",
                   timeout: float = 120, executable: str = CHROMIUM,
                   user_data_dir: Path | None = None) -> dict[str, Any]:
    """One issuance through the kiosk's screen: start → 注意事項 (同意) → set card
    (``put_card``) → PIN on the keypad → when 「カードをお取りください」 shows, ``take_card``
    (the card leaves as soon as it has been used) → ``document`` → ``options`` → ``copies``
    → confirm → ``insert`` each of ``yen`` → printing → done.

    Returns ``outcome`` (the done screen's), ``fee``, ``credited``, ``change``, ``refund``,
    ``reason`` (when it did not print), ``screens`` (in order), ``final_screenshot`` and
    ``screenshots`` (screen → file) when ``screenshots`` is a directory. A session that
    ends early (wrong PIN, refusal) is reported, not raised; a page that stops moving is
    :class:`PilotError`. Called from a thread with a running event loop (or another sync
    Playwright), it runs on a worker thread and blocks the caller all the same."""
    def run() -> dict[str, Any]:
        return _drive(url, pin=pin, document=document, options=options, copies=copies,
                      insert=insert,
                      put_card=put_card, take_card=take_card, yen=yen,
                      screenshots=screenshots, lang=lang, timeout=timeout,
                      executable=executable, user_data_dir=user_data_dir)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    # Playwright's sync API refuses to run beside an event loop (or another sync
    # Playwright) in the same thread: the caller gets the same blocking call, on a thread.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="autopilot") as ex:
        return ex.submit(run).result()


def _drive(url: str, *, pin: str, document: str, options: Sequence[str], copies: int,
           insert: Callable[[int], None], put_card: Callable[[], None],
           take_card: Callable[[], None], yen: Sequence[int], screenshots: Path | None,
           lang: str, timeout: float, executable: str,
           user_data_dir: Path | None = None) -> dict[str, Any]:
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    end = time.monotonic() + timeout

    def left() -> float:
        return max(1.0, end - time.monotonic())

    with browser(executable, user_data_dir=user_data_dir) as b:
        page = b.new_page(viewport={"width": 1024, "height": 768}, locale=lang)
        p = Pilot(page, screenshots=screenshots)
        p.open(url)
        p.wait("start", timeout=left())  # the kiosk's own language comes back at the start
        p.seen = ["start"]  # what an earlier customer left on the screen is not this run's
        p.language(lang)
        p.click("#btn-start")
        p.wait("notice", timeout=left())
        p.click("#btn-agree")
        p.wait("setcard", timeout=left())
        put_card()
        taken = False
        s = p.wait("pin", *ENDINGS, timeout=left())
        if s == "pin":
            p.type_pin(pin)
            s = p.wait("card-out", "menu", *ENDINGS, timeout=left())
        if s == "card-out":
            take_card()
            taken = True
            s = p.wait("menu", *ENDINGS, timeout=left())
        if s == "menu":
            p.click(f"#screen button[data-doc='{document}']")
            s = p.wait("options", *ENDINGS, timeout=left())
        if s == "options":
            for o in options:
                p.click(f"#opt-{o}")
            p.click("#btn-next")
            s = p.wait("copies", *ENDINGS, timeout=left())
        if s == "copies":
            for _ in range(copies - 1):
                p.click("#btn-plus")
            p.click("#btn-next")
            s = p.wait("quote", *ENDINGS, timeout=left())
        if s == "quote":
            p.click("#btn-accept")
            s = p.wait("payment", *ENDINGS, timeout=left())
        if s == "payment":
            for y in yen:
                insert(y)
            s = p.wait("printing", "take-card", "done", *ENDINGS, timeout=left())
        figures = dict(p.state)
        s = p.wait_any(lambda x: x == "done" or (not taken and asks_for_card(x, p.state)),
                       "take-card or done", timeout=left())
        if s != "done":
            figures = dict(p.state)
            take_card()
        p.wait("done", timeout=left())
        final = dict(p.state)
        shot = None
        if screenshots is not None:
            shot = screenshots / "final.png"
            page.screenshot(path=str(shot))
        page.close()
    notice = final.get("notice") or {}
    return {"outcome": final.get("outcome", ""), "fee": final.get("fee", figures.get("fee", 0)),
            "credited": max((f.get("credited", 0) for f in p.frames), default=0),
            "change": final.get("change", 0), "refund": final.get("refund", 0),
            "reason": notice.get("reason", ""), "screens": p.seen,
            "final_screenshot": str(shot) if shot else None,
            "screenshots": {k: str(v) for k, v in p.shots.items()}}
