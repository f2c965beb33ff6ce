"""The kiosk UI's real stack: ``cardio emu issuance serve`` (center, municipalities, seeded
residents), ``cardio emu devices serve`` (bill validator, coin acceptor and hoppers on
ptys, IPP printer), ``cardio kiosk run`` with ``[web]`` on an ephemeral loopback port, and
Debian's Chromium through Playwright. One of each per module.

The card slot is a directory (``emu:SLOT``): a test puts a resident's software card in by
renaming its directory to SLOT and takes it out by renaming it back (same file system)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from emulators.card.keys import KeyPool
from tests.emulators.devices.serve_helper import start_serve
from tests.emulators.issuance.conftest import Service, start_service, stop_service
from tests.emulators.issuance.kiosk_sim import Card
from tests.kiosk.test_runner import Lines

CARDIO = [sys.executable, "-m", "cardio.cli"]
AXE = Path(__file__).resolve().parents[3] / ".cache/npm/node_modules/axe-core/axe.min.js"


def artifacts() -> Path:
    """Where screenshots go: ``$CARDIO_ARTIFACTS/ui`` or ``.artifacts/ui`` (git-ignored)."""
    base = os.environ.get("CARDIO_ARTIFACTS")
    root = Path(base) if base else Path(__file__).resolve().parents[3] / ".artifacts"
    out = root / "ui"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, key_pool: KeyPool,
            default_photo: bytes) -> Iterator[Service]:
    base = tmp_path_factory.mktemp("ui-backend")
    svc = start_service(base, f"sqlite:///{base / 'issuance.db'}", key_pool, default_photo,
                        workers=1, kiosks=1, residents=80)
    try:
        yield svc
    finally:
        stop_service(svc)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from emulators.devices.printer import unavailable_reason

    printer = unavailable_reason() is None
    proc, info = start_serve() if printer else start_serve("--no-printer")
    hoppers = "".join(f"[[hopper]]\naddress = {a}\ncoin = {c}\n"
                      for a, c in ((3, 500), (4, 100), (5, 50), (6, 10)))
    toml = (f'[bill_validator]\nport = "{info["bill_validator"]}"\n'
            f'[coin_acceptor]\nport = "{info["coin_acceptor"]}"\n{hoppers}'
            f'[emulator]\ncontrol = "{info["control"]}"\n' +
            (f'[printer]\nurl = "{info["printer"]}"\n' if printer else ""))
    try:
        yield {**info, "devices_toml": toml}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@dataclass
class Kiosk:
    """A running ``cardio kiosk run`` with ``[web]``."""

    proc: subprocess.Popen[str]
    lines: Lines
    url: str
    slot: Path
    base: Path
    out: list[dict[str, Any]] = field(default_factory=list)
    card: Card | None = None
    _err: str | None = None

    def put(self, card: Card) -> None:
        assert self.card is None and not self.slot.exists()
        card.path.rename(self.slot)
        self.card = card

    def take(self) -> None:
        if self.card is not None and self.slot.exists():
            self.slot.rename(self.card.path)
        self.card = None

    def until(self, pred: Any, timeout: float = 60) -> list[dict[str, Any]]:
        seen = self.lines.until(pred, timeout)
        self.out += seen
        return seen

    def session_end(self, timeout: float = 90) -> dict[str, Any]:
        return self.until(lambda m: m["event"] == "session", timeout)[-1]

    def stop(self) -> str:
        """SIGTERM (once) and the stderr; the stdout lines up to the end stay readable."""
        self.take()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._err is None:
            self._err = self.proc.stderr.read() if self.proc.stderr else ""
        return self._err


def start_kiosk(backend: Service, lab: dict[str, Any], base: Path, *,
                timeouts: str = "", web: str = 'listen = "127.0.0.1:0"\nlang = "ja"\n',
                devices: str | None = None, kiosk: str = "",
                env: dict[str, str] | None = None) -> Kiosk:
    """``devices``: the device sections (default: the lab's). Two kiosks must not share
    the lab's serial lines — both would poll them — so a second kiosk gets none.
    ``kiosk``: more ``[kiosk]`` keys (e.g. ``facepin = "URL"``)."""
    base.mkdir(parents=True, exist_ok=True)
    slot = backend.card_dir / f"slot-{base.name}"
    config = base / "kiosk.toml"
    devices_text = lab["devices_toml"] if devices is None else devices
    config.write_text(devices_text + f'''
[kiosk]
journal = "{base / 'journal.db'}"
{"" if "[printer]" in devices_text else f'tray = "{base / "out"}"'}
center = "{backend.info['center']}"
reader = "emu:{slot}"
tick = 1.0
{kiosk}
{timeouts}
[web]
{web}''')
    proc = subprocess.Popen([*CARDIO, "kiosk", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**backend.env, **(env or {})})
    lines = Lines(proc)
    k = Kiosk(proc, lines, "", slot, base)
    try:
        ready = k.until(lambda m: m["event"] == "ready")[-1]
    except AssertionError:
        proc.kill()
        raise AssertionError(f"kiosk run did not start: {proc.communicate()[1][-3000:]}"
                             ) from None
    k.url = ready["ui"]
    return k


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from kiosk.ui.autopilot import browser

    with browser() as b:
        yield b


def journal_bytes(base: Path) -> dict[str, bytes]:
    return {str(f): f.read_bytes() for f in base.rglob("*")
            if f.is_file() and f.suffix not in (".pdf", ".png")}


def dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)
