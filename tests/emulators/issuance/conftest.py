"""Fixtures for the issuance back end: the real ``issuance serve`` process on loopback
(SQLite or a throw-away PostgreSQL), software cards for registered residents, enrolled
kiosks' clients."""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from emulators.card.keys import KeyPool
from emulators.issuance.db import Database
from emulators.issuance.operator import issue_card
from emulators.issuance.population import HOLIDAYS_2026
from emulators.issuance.rules import JST
from kiosk.center_client import CenterClient, KioskCredentials
from tests.emulators.issuance.kiosk_sim import Card
from tests.facepin.pg import postgres_url  # noqa: F401  (session fixture)

ISSUANCE_ARGV = [sys.executable, "-m", "cardio.cli", "emu", "issuance"]
"""How tests run ``cardio emu issuance`` (the interpreter under test, not a PATH lookup)."""


def business_day(after: dt.date | None = None, hour: int = 10) -> dt.datetime:
    """A weekday, not a holiday, not the year end, at least a day ahead, at ``hour`` JST:
    every service (戸籍 included) is open, whatever the real date and hour."""
    day = (after or dt.datetime.now(JST).date()) + dt.timedelta(days=1)
    while day.weekday() >= 5 or day.isoformat() in HOLIDAYS_2026 or \
            (day.month == 12 and day.day >= 29) or (day.month == 1 and day.day <= 3) or \
            day.isoformat() == "2026-12-20":
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(hour, 0), JST)


@dataclass
class Service:
    """A running ``issuance serve`` and what tests need to drive it."""

    info: dict[str, Any]
    db_url: str
    jlis: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    base: Path
    pool: KeyPool
    now: dt.datetime
    photo: bytes
    cards: list[Card] = field(default_factory=list)

    @functools.cached_property
    def card_dir(self) -> Path:
        """Cards on tmpfs where there is one: a software card fsyncs its retry counter on
        every VERIFY (as an EEPROM write), which would otherwise dominate load tests."""
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK):
            import tempfile

            return Path(tempfile.mkdtemp(prefix="cardio-issuance-cards-", dir=shm))
        return self.base / "cards"

    @functools.cached_property
    def db(self) -> Database:
        return Database(self.db_url, create=False)

    def kiosk(self, n: int = 1) -> KioskCredentials:
        return KioskCredentials.load(Path(self.info["kiosks_dir"]) / f"kiosk-{n:04d}")

    def client(self, n: int = 1, **kw: Any) -> CenterClient:
        return CenterClient(self.kiosk(n), **kw)

    def card(self, resident_id: str | None = None, **kw: Any) -> Card:
        path = self.card_dir / f"card{len(self.cards)}"
        out = issue_card(self.db, self.jlis, path, resident_id, keys=self.pool,
                         photo=self.photo, issued=self.now.date(), **kw)
        card = Card(path, out["auth_pin"], out["resident_id"])
        self.cards.append(card)
        return card

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ISSUANCE_ARGV, *args, "--db", self.db_url, "--jlis",
                               str(self.jlis)], capture_output=True, text=True, env=self.env,
                              timeout=120)

    def stderr_text(self) -> str:
        return (self.base / "server.err").read_text(errors="replace")


def start_service(base: Path, db_url: str, pool: KeyPool, photo: bytes, *, workers: int = 2,
                  kiosks: int = 4, residents: int = 600, extra: tuple[str, ...] = ()
                  ) -> Service:
    jlis = base / "jlis"
    env = {**os.environ, "CARDIO_JLIS_DIR": str(jlis)}
    now = business_day()
    # Hierarchy first (with the shared key pool: RSA generation would dominate).
    from emulators.card import JlisHierarchy

    JlisHierarchy.load_or_create(jlis, keys=pool)
    seeded = subprocess.run([*ISSUANCE_ARGV, "seed", "--db", db_url, "--jlis", str(jlis),
                             "--residents", str(residents), "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert seeded.returncode == 0, seeded.stderr
    err = open(base / "server.err", "wb")  # noqa: SIM115 (kept for the process lifetime)
    proc = subprocess.Popen([*ISSUANCE_ARGV, "serve", "--json", "--db", db_url, "--jlis",
                             str(jlis), "--workers", str(workers), "--kiosks", str(kiosks),
                             "--now", now.isoformat(), *extra],
                            stdout=subprocess.PIPE, stderr=err, env=env)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 90)
    line = proc.stdout.readline() if ready else b""
    if not line:
        proc.kill()
        raise AssertionError("issuance serve did not start: " +
                             (base / "server.err").read_text()[-2000:])
    info = json.loads(line)
    return Service(info, db_url, jlis, proc, env, base, pool, now, photo)


def stop_service(svc: Service) -> int:
    import shutil

    if "card_dir" in svc.__dict__ and str(svc.card_dir).startswith("/dev/shm/"):
        shutil.rmtree(svc.card_dir, ignore_errors=True)
    if "db" in svc.__dict__:  # the tests' own connections (a pool on PostgreSQL)
        svc.db.close()
    svc.proc.send_signal(signal.SIGTERM)
    try:
        return svc.proc.wait(30)
    except subprocess.TimeoutExpired:
        svc.proc.kill()
        svc.proc.wait(10)
        return -9


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, key_pool: KeyPool,
            default_photo: bytes) -> Iterator[Service]:
    base = tmp_path_factory.mktemp("issuance")
    svc = start_service(base, f"sqlite:///{base / 'issuance.db'}", key_pool, default_photo,
                        extra=("--log-level", "info"))
    try:
        yield svc
    finally:
        stop_service(svc)


def wait_until(pred: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False
