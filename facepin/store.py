"""Storage of the reservation service: challenges, reservations and attempts.

SQLite by default (WAL, one connection per operation, serialised in-process). The SQL is
plain and portable; PostgreSQL support is designed for (``postgresql://`` URL, the same
schema) but not wired or tested yet, so such a URL is refused with a clear error instead
of half-working.

What is stored: random ids, a nonce, the SHA-256 fingerprint of the card's
authentication certificate, the card serial, times. No image, no PIN, no name.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cardio.apdu.errors import CardioError

SCHEMA = """
CREATE TABLE IF NOT EXISTS challenges (
    id TEXT PRIMARY KEY, nonce BLOB NOT NULL, created REAL NOT NULL, used INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY, cert_fp TEXT NOT NULL, serial TEXT NOT NULL,
    created REAL NOT NULL, expires REAL NOT NULL, used_at REAL
);
CREATE INDEX IF NOT EXISTS reservations_cert ON reservations(cert_fp);
CREATE TABLE IF NOT EXISTS attempts (cert_fp TEXT NOT NULL, at REAL NOT NULL, ok INTEGER);
CREATE INDEX IF NOT EXISTS attempts_cert ON attempts(cert_fp, at);
"""


class StoreError(CardioError):
    pass


@dataclass
class Reservation:
    id: str
    cert_fp: str
    serial: str
    created: float
    expires: float
    used_at: float | None


class Store:
    def __init__(self, url: str) -> None:
        if url.startswith(("postgresql://", "postgres://")):
            raise StoreError("PostgreSQL storage is not available in this version;"
                             " use sqlite:///PATH")
        if not url.startswith("sqlite:///"):
            raise StoreError("database URL must be sqlite:///PATH (or sqlite:///:memory:)")
        self.path = url[len("sqlite:///"):]
        self._lock = threading.Lock()
        self._memory: sqlite3.Connection | None = None
        if self.path == ":memory:":
            self._memory = sqlite3.connect(":memory:", check_same_thread=False)
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self._conn() as db:
            if self._memory is None:
                db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._memory or sqlite3.connect(self.path, timeout=10)
            try:
                with db:  # one transaction
                    yield db
            finally:
                if self._memory is None:
                    db.close()

    # -- challenges -------------------------------------------------------------------
    def add_challenge(self, cid: str, nonce: bytes, now: float) -> None:
        with self._conn() as db:
            db.execute("INSERT INTO challenges VALUES (?, ?, ?, 0)", (cid, nonce, now))

    def take_challenge(self, cid: str, now: float, ttl: float) -> bytes | None:
        """The nonce, once: a second use (or an expired one) gets None."""
        with self._conn() as db:
            row = db.execute("SELECT nonce, created FROM challenges WHERE id=? AND used=0",
                             (cid,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE challenges SET used=1 WHERE id=?", (cid,))
            nonce, created = row
            return bytes(nonce) if now - created <= ttl else None

    # -- attempts / rate limit -----------------------------------------------------------
    def record_attempt(self, cert_fp: str, now: float, ok: bool) -> None:
        with self._conn() as db:
            db.execute("INSERT INTO attempts VALUES (?, ?, ?)", (cert_fp, now, int(ok)))

    def attempts_since(self, cert_fp: str, since: float) -> int:
        with self._conn() as db:
            (n,) = db.execute("SELECT COUNT(*) FROM attempts WHERE cert_fp=? AND at>=?",
                              (cert_fp, since)).fetchone()
            return int(n)

    # -- reservations ----------------------------------------------------------------------
    def add_reservation(self, r: Reservation) -> None:
        with self._conn() as db:
            db.execute("INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?)",
                       (r.id, r.cert_fp, r.serial, r.created, r.expires, r.used_at))

    def get_reservation(self, rid: str) -> Reservation | None:
        with self._conn() as db:
            row = db.execute("SELECT id, cert_fp, serial, created, expires, used_at FROM"
                             " reservations WHERE id=?", (rid,)).fetchone()
        return Reservation(*row) if row else None

    def use_reservation(self, rid: str, now: float) -> bool:
        """Mark used, atomically: True for exactly one caller."""
        with self._conn() as db:
            cur = db.execute("UPDATE reservations SET used_at=? WHERE id=? AND used_at IS NULL"
                             " AND expires>?", (now, rid, now))
            return cur.rowcount == 1
