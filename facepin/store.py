"""Storage of the reservation service: challenges, reservations and attempts.

SQLite by default (``sqlite:///PATH``: WAL, one connection per operation, serialised
in-process); PostgreSQL with a ``postgresql://`` URL (psycopg 3; the shared database of
stateless workers behind a load balancer), its connections from a per-process
``psycopg_pool`` of at most :data:`POOL_SIZE` (a new server connection per transaction cost
a fork on the server each time, and 180 concurrent attempts on 3 instances held 65 of the
server's 100). The SQL is the same for both; only the parameter marker and two column types
differ.

What is stored: random ids, a nonce, the SHA-256 fingerprint of the card's
authentication certificate, the card serial, times. No image, no PIN, no name.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cardio.apdu.errors import CardioError

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS challenges (
        id TEXT PRIMARY KEY, nonce {blob} NOT NULL, created {real} NOT NULL,
        used INTEGER NOT NULL, prompts TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS reservations (
        id TEXT PRIMARY KEY, cert_fp TEXT NOT NULL, serial TEXT NOT NULL,
        created {real} NOT NULL, expires {real} NOT NULL, used_at {real})""",
    "CREATE INDEX IF NOT EXISTS reservations_cert ON reservations(cert_fp)",
    """CREATE TABLE IF NOT EXISTS attempts (
        cert_fp TEXT NOT NULL, at {real} NOT NULL, ok INTEGER, id TEXT)""",
    "CREATE INDEX IF NOT EXISTS attempts_cert ON attempts(cert_fp, at)",
    # One row per card, locked (PostgreSQL: SELECT ... FOR UPDATE) while a worker counts
    # that card's attempts and records a new one, so two workers cannot both take the
    # last slot.
    "CREATE TABLE IF NOT EXISTS attempt_cards (cert_fp TEXT PRIMARY KEY)",
]
#: The key of the PostgreSQL advisory lock that serialises schema creation and migration
#: (any constant of our own; "facepin" in ASCII).
_SCHEMA_LOCK = 0x66616365_70696E
MIGRATIONS = {
    # attempts.id came with the atomic rate limit; older databases lack it.
    "sqlite": ["ALTER TABLE attempts ADD COLUMN id TEXT"],
    "postgres": ["ALTER TABLE attempts ADD COLUMN IF NOT EXISTS id TEXT"],
}


POOL_SIZE = 8
"""PostgreSQL connections one process keeps at most (threads wait for one beyond that)."""
POOL_WAIT = 30.0
"""Seconds a transaction waits for a pooled connection before failing (a 503)."""
ATTEMPT_LEASE = 600.0
"""Seconds an attempt without an outcome keeps its slot. An attempt is taken before the
live capture and finished after it (``facepin.service.ATTEMPT_DEADLINE`` cuts a capture off
after 105 s); one still open after this long was abandoned — its instance was
killed mid-capture — and stops counting against the card's tries (its row stays, for the
audit). Until then it counts, so attempts running at once on any number of instances
still get at most the limit."""


class StoreError(CardioError):
    pass


class _PgAdapter:
    """psycopg with sqlite3's ``?`` parameter markers."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), params)


@dataclass
class Reservation:
    id: str
    cert_fp: str
    serial: str
    created: float
    expires: float
    used_at: float | None


def _is_db_error(exc: BaseException) -> bool:
    """sqlite3's or psycopg's error class (psycopg imported only when it is in use)."""
    if isinstance(exc, sqlite3.Error):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.Error)


class Store:
    def __init__(self, url: str) -> None:
        self._lock = threading.Lock()
        self._memory: sqlite3.Connection | None = None
        self._pool: Any = None
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        if self.postgres:
            try:
                import psycopg  # noqa: F401
                from psycopg_pool import ConnectionPool
            except ImportError as exc:
                raise StoreError("PostgreSQL needs psycopg and psycopg_pool: pip install"
                                 " 'psycopg[binary]' psycopg-pool") from exc
            self.url = url
            # Opened once the schema is there: the schema's transaction uses a connection of
            # its own, so a server that is down fails at once with its own reason.
            self._pool = ConnectionPool(url, min_size=1, max_size=POOL_SIZE, open=False,
                                        timeout=POOL_WAIT, kwargs={"connect_timeout": 10},
                                        check=ConnectionPool.check_connection,
                                        name="facepin")
            types = {"blob": "BYTEA", "real": "DOUBLE PRECISION"}
        elif url.startswith("sqlite:///"):
            if sqlite3.sqlite_version_info < (3, 35):  # UPDATE … RETURNING (the claims)
                raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old: 3.35 or later"
                                 " is needed")
            self.path = url[len("sqlite:///"):]
            if self.path == ":memory:":
                self._memory = sqlite3.connect(":memory:", check_same_thread=False)
            else:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            types = {"blob": "BLOB", "real": "REAL"}
        else:
            raise StoreError("database URL must be sqlite:///PATH or postgresql://...")
        try:
            self._create(types)
            if self._pool is not None:
                self._pool.open(wait=False)
        except Exception as exc:
            self.close()
            # The file is not a database, the directory is read-only, the server is down:
            # the operator's configuration, said in one line (exit 1), not a bug (70). The
            # URL itself is left out: a PostgreSQL URL may carry a password.
            if not (_is_db_error(exc) or type(exc).__module__.startswith("psycopg_pool")):
                raise
            where = "PostgreSQL" if self.postgres else f"SQLite {self.path}"
            raise StoreError(f"cannot open the database ({where}): "
                             f"{' '.join(str(exc).split())}") from None

    def _create(self, types: dict[str, str]) -> None:
        with self._conn(direct=True) as db:
            if self.postgres:
                # Workers started together on an empty database all run CREATE TABLE IF
                # NOT EXISTS; PostgreSQL's check and create are not one step, so two of
                # them collide on the catalogue's unique index and 19 of 20 failed to
                # start. One schema change at a time, held until this transaction ends.
                db.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            elif self._memory is None:
                db.execute("PRAGMA journal_mode=WAL")
            for stmt in SCHEMA:
                db.execute(stmt.format(**types))
            if self.postgres:  # under the same lock (IF NOT EXISTS: nothing to catch)
                for stmt in MIGRATIONS["postgres"]:
                    db.execute(stmt)
                return
        for stmt in MIGRATIONS["sqlite"]:
            try:
                with self._conn() as db:
                    db.execute(stmt)
            except sqlite3.OperationalError as exc:  # the column is already there
                if "duplicate column" not in str(exc):
                    raise

    @contextlib.contextmanager
    def _conn(self, *, immediate: bool = False, direct: bool = False) -> Iterator[Any]:
        """One transaction. The yielded object's ``execute`` takes ``?`` markers on both
        back ends. ``immediate``: on SQLite, take the database's write lock at BEGIN
        (``BEGIN IMMEDIATE``), so a read-then-write in the transaction cannot interleave
        with another process's; PostgreSQL callers lock rows explicitly instead.
        ``direct``: on PostgreSQL, a connection of its own instead of a pooled one."""
        if self.postgres and direct:
            import psycopg

            with psycopg.connect(self.url, connect_timeout=10) as pg, pg.transaction():
                yield _PgAdapter(pg)
            return
        if self.postgres:
            # The pool rolls back and discards a connection returned broken or mid-
            # transaction, so a failed transaction never poisons the next one.
            with self._pool.connection() as pg, pg.transaction():
                yield _PgAdapter(pg)
            return
        with self._lock:
            db = self._memory or sqlite3.connect(self.path, timeout=30)
            try:
                if immediate:
                    old, db.isolation_level = db.isolation_level, None
                    try:
                        db.execute("BEGIN IMMEDIATE")
                        try:
                            yield db
                        except BaseException:
                            db.execute("ROLLBACK")
                            raise
                        db.execute("COMMIT")
                    finally:
                        db.isolation_level = old
                else:
                    with db:  # one transaction
                        yield db
            finally:
                if self._memory is None:
                    db.close()

    def close(self) -> None:
        """Close the pooled PostgreSQL connections (nothing to do on SQLite). Call it (or
        use the store as a context manager): a pool left to the garbage collector is
        closed in whichever thread collects it, possibly one of its own workers, which
        cannot join itself ("cannot join current thread")."""
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- challenges -------------------------------------------------------------------
    def add_challenge(self, cid: str, nonce: bytes, now: float, prompts: str = "") -> None:
        with self._conn() as db:
            db.execute("INSERT INTO challenges VALUES (?, ?, ?, 0, ?)",
                       (cid, nonce, now, prompts))

    def take_challenge(self, cid: str, now: float, ttl: float) -> tuple[bytes, str] | None:
        """(nonce, liveness prompts), once: a second use (or an expired one) gets None.

        The claim is one conditional ``UPDATE … WHERE used=0 RETURNING``, so of any number
        of simultaneous callers (threads, processes, workers on one PostgreSQL) exactly
        one gets the row: SQLite runs writers one at a time, and PostgreSQL makes a second
        UPDATE of the row wait for the first to commit and then re-checks ``used=0``.
        Reading "not used" first and marking it afterwards let 1–11 of 20 simultaneous
        claims through on PostgreSQL and 5–20 of 20 on SQLite with a connection per worker
        (issue 22, item 10). An expired challenge is spent by its claim as well."""
        with self._conn() as db:
            rows = db.execute("UPDATE challenges SET used=1 WHERE id=? AND used=0"
                              " RETURNING nonce, created, prompts", (cid,)).fetchall()
        if not rows:
            return None
        nonce, created, prompts = rows[0]
        return (bytes(nonce), str(prompts)) if now - created <= ttl else None

    # -- attempts / rate limit -----------------------------------------------------------
    def take_attempt(self, cert_fp: str, now: float, since: float, limit: int,
                     lease: float = ATTEMPT_LEASE) -> str | None:
        """Count this card's attempts since ``since`` and, when fewer than ``limit``,
        record a new one — one atomic step (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: the
        card's row in ``attempt_cards`` locked ``FOR UPDATE``), so N concurrent callers on
        any number of workers get at most ``limit`` slots. An attempt counts when it was
        evaluated (its outcome recorded) or may still be running (taken less than
        ``lease`` seconds ago): one abandoned by a killed instance gives the try back
        after its lease. Returns the attempt's id, or None when the limit is reached."""
        aid = secrets.token_hex(12)
        with self._conn(immediate=True) as db:
            if self.postgres:
                db.execute("INSERT INTO attempt_cards VALUES (?) ON CONFLICT DO NOTHING",
                           (cert_fp,))
                db.execute("SELECT cert_fp FROM attempt_cards WHERE cert_fp=? FOR UPDATE",
                           (cert_fp,))
            (n,) = db.execute("SELECT COUNT(*) FROM attempts WHERE cert_fp=? AND at>=?"
                              " AND (ok IS NOT NULL OR at>=?)",
                              (cert_fp, since, now - lease)).fetchone()
            if int(n) >= limit:
                return None
            db.execute("INSERT INTO attempts (cert_fp, at, ok, id) VALUES (?, ?, NULL, ?)",
                       (cert_fp, now, aid))
        return aid

    def finish_attempt(self, attempt_id: str, ok: bool, now: float | None = None,
                       lease: float = ATTEMPT_LEASE) -> bool:
        """Record the outcome of an attempt taken with :meth:`take_attempt`. With ``now``,
        only while the attempt is within its lease: once the lease has run out the card
        may already have taken its try again, so recording (and acting on) this outcome
        would make one more evaluated attempt than the limit. False when not recorded."""
        with self._conn() as db:
            if now is None:
                cur = db.execute("UPDATE attempts SET ok=? WHERE id=?", (int(ok), attempt_id))
            else:
                cur = db.execute("UPDATE attempts SET ok=? WHERE id=? AND at>=?",
                                 (int(ok), attempt_id, now - lease))
            return bool(cur.rowcount == 1)

    def record_attempt(self, cert_fp: str, now: float, ok: bool) -> None:
        with self._conn() as db:
            db.execute("INSERT INTO attempts (cert_fp, at, ok) VALUES (?, ?, ?)",
                       (cert_fp, now, int(ok)))

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
            return bool(cur.rowcount == 1)
