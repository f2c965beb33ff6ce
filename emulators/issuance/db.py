"""The one shared piece of the emulated J-LIS side: a SQL database, SQLite by default and
PostgreSQL by URL, holding the municipal registers (住民基本台帳, 印鑑登録, 課税, 戸籍,
附票, the certificate-serial mapping J-LIS notifies) and the center's tables (kiosks,
sessions, issuances, incidents, audit).

Workers hold no state of their own between requests: everything that ties one request to
the next is a row here, written in a transaction, which is what lets any number of worker
processes serve one kiosk's session in turn (the Takamatsu misissuance came from a
single-server build deployed on several servers).

Connections come from a small per-process pool — ``psycopg_pool`` on PostgreSQL (bounded,
each connection checked before it is handed out, so one the server dropped never reaches a
request), a queue of SQLite connections otherwise; ``?`` parameter markers work on both back
ends. SQLite runs in WAL mode with ``synchronous=NORMAL`` and write transactions take the
write lock up front (``BEGIN IMMEDIATE``) so two workers never deadlock on an upgrade.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cardio.errors import CardioError

__all__ = ["SCHEMA", "Database", "DatabaseError", "Tx"]


class DatabaseError(CardioError):
    """A database URL that cannot be used, or a back end that is missing."""


SCHEMA = [
    # -- municipal registers (証明発行サーバ) -------------------------------------------
    """CREATE TABLE IF NOT EXISTS municipalities (
        code TEXT PRIMARY KEY, name TEXT NOT NULL, mayor TEXT NOT NULL,
        seal_text TEXT NOT NULL, settings TEXT NOT NULL, signing_key TEXT NOT NULL,
        stopped INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS households (
        id TEXT PRIMARY KEY, municipality TEXT NOT NULL, address TEXT NOT NULL,
        head_id TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS residents (
        id TEXT PRIMARY KEY, municipality TEXT NOT NULL, household_id TEXT NOT NULL,
        name TEXT NOT NULL, kana TEXT NOT NULL, birth TEXT NOT NULL, sex TEXT NOT NULL,
        relationship TEXT NOT NULL, address TEXT NOT NULL, status TEXT NOT NULL,
        moved_in TEXT NOT NULL, support_measure INTEGER NOT NULL,
        gaiji_pending INTEGER NOT NULL, my_number TEXT NOT NULL, juminhyo_code TEXT NOT NULL,
        honseki TEXT NOT NULL, hittousha TEXT NOT NULL, honseki_code TEXT NOT NULL,
        koseki_registered INTEGER NOT NULL, father TEXT NOT NULL, mother TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS residents_household ON residents(household_id)",
    """CREATE TABLE IF NOT EXISTS inkan (
        resident_id TEXT PRIMARY KEY, reg_number TEXT NOT NULL, impression TEXT NOT NULL,
        registered TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tax_records (
        resident_id TEXT NOT NULL, year INTEGER NOT NULL, income INTEGER NOT NULL,
        taxable INTEGER NOT NULL, tax INTEGER NOT NULL, PRIMARY KEY (resident_id, year))""",
    """CREATE TABLE IF NOT EXISTS fuhyo (
        resident_id TEXT NOT NULL, seq INTEGER NOT NULL, address TEXT NOT NULL,
        since TEXT NOT NULL, PRIMARY KEY (resident_id, seq))""",
    """CREATE TABLE IF NOT EXISTS cert_serials (
        serial_hex TEXT PRIMARY KEY, resident_id TEXT NOT NULL, registered {real} NOT NULL)""",
    # -- 証明書交付センター ---------------------------------------------------------------
    """CREATE TABLE IF NOT EXISTS kiosks (
        kiosk_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, operator TEXT NOT NULL,
        active INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS kiosk_nonces (
        kiosk_id TEXT NOT NULL, nonce TEXT NOT NULL, at {real} NOT NULL,
        PRIMARY KEY (kiosk_id, nonce))""",
    """CREATE TABLE IF NOT EXISTS sessions (
        session_id TEXT PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, kiosk_id TEXT NOT NULL,
        nonce {blob} NOT NULL, created {real} NOT NULL, expires {real} NOT NULL,
        state TEXT NOT NULL, cert_sha256 TEXT, resident_id TEXT, municipality TEXT,
        certificate {blob})""",
    """CREATE TABLE IF NOT EXISTS issuances (
        request_id TEXT PRIMARY KEY, session_id TEXT NOT NULL UNIQUE, kiosk_id TEXT NOT NULL,
        municipality TEXT NOT NULL, doc_type TEXT NOT NULL, fee INTEGER NOT NULL,
        issued_at TEXT NOT NULL, doc_sha256 TEXT NOT NULL, outcome TEXT,
        finalized {real})""",
    """CREATE TABLE IF NOT EXISTS incidents (
        id {serial}, municipality TEXT NOT NULL, request_id TEXT NOT NULL,
        kiosk_id TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
        at {real} NOT NULL, cleared {real})""",
    """CREATE TABLE IF NOT EXISTS audit (
        id {serial}, at {real} NOT NULL, request_id TEXT NOT NULL, kiosk_id TEXT NOT NULL,
        municipality TEXT, doc_type TEXT, event TEXT NOT NULL, outcome TEXT NOT NULL,
        ms {real} NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS service_info (
        key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    # -- the resident's wallet (emulators.issuance.wallet, docs/credentials.md) -----------
    """CREATE TABLE IF NOT EXISTS wallet_sessions (
        session_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, nonce TEXT NOT NULL,
        created {real} NOT NULL, expires {real} NOT NULL, state TEXT NOT NULL)""",
    # One row per issued credential: its status-list entry, never its content.
    """CREATE TABLE IF NOT EXISTS credentials (
        municipality TEXT NOT NULL, idx INTEGER NOT NULL, resident_id TEXT NOT NULL,
        issued {real} NOT NULL, expires {real} NOT NULL, status INTEGER NOT NULL,
        sha256 TEXT NOT NULL, revoked {real}, PRIMARY KEY (municipality, idx))""",
    "CREATE INDEX IF NOT EXISTS credentials_resident ON credentials(resident_id)",
]

_ADDED_COLUMNS = [
    # The card's 利用者証明用 certificate (DER) of an authenticated session, for the document
    # step's second revocation check; cleared when the session ends. It carries no 4情報.
    ("sessions", "certificate", "{blob}"),
]

_TYPES = {
    "sqlite": {"blob": "BLOB", "real": "REAL", "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "pg": {"blob": "BYTEA", "real": "DOUBLE PRECISION", "serial": "BIGSERIAL PRIMARY KEY"},
}
POOL_SIZE = 8
POOL_WAIT = 30.0
"""Seconds a transaction waits for a pooled PostgreSQL connection before failing, by
default (command-line tools, benches). The center passes a much shorter ``pool_wait``: its
steps run on the event loop, where a wait blocks every request of the instance."""


class Tx:
    """One open transaction; ``execute`` takes ``?`` markers on both back ends."""

    def __init__(self, conn: Any, pg: bool) -> None:
        self._conn = conn
        self._pg = pg
        self.after_commit: list[Callable[[], None]] = []
        """Run once the transaction has committed (not when it rolls back)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self._pg:
            return self._conn.execute(sql.replace("?", "%s"), tuple(params))
        return self._conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self._pg:
            with self._conn.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), rows)
        else:
            self._conn.executemany(sql, rows)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.execute(sql, params).fetchall())


class Database:
    """``sqlite:///PATH`` or ``postgresql://...``."""

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE, create: bool = True,
                 busy_timeout: float = 30.0, pool_wait: float = POOL_WAIT) -> None:
        self.url = url
        self.busy_timeout = busy_timeout
        """Seconds a statement waits for a lock another process holds (SQLite's write lock,
        a PostgreSQL row or table lock) before failing with a back-end error (the center
        answers 503)."""
        self.pg = url.startswith(("postgresql://", "postgres://"))
        if self.pg:
            try:
                import psycopg  # noqa: F401
                import psycopg_pool  # noqa: F401
            except ImportError as exc:
                raise DatabaseError("PostgreSQL needs psycopg and psycopg_pool: pip install"
                                    " 'psycopg[binary]' psycopg-pool") from exc
        elif url.startswith("sqlite:///"):
            self.path = url[len("sqlite:///"):]
            if self.path == ":memory:" or not self.path:
                raise DatabaseError("an in-memory SQLite database cannot be shared by"
                                    " workers; give a file: sqlite:///PATH")
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        else:
            raise DatabaseError("database URL must be sqlite:///PATH or postgresql://...")
        self._pool: queue.LifoQueue[Any] = queue.LifoQueue()
        self._slots = threading.Semaphore(pool_size)
        self._pg_pool: Any = None
        if self.pg:
            from psycopg_pool import ConnectionPool

            # Opened after the schema (created on a connection of its own, so that a server
            # that is down fails at once with its own reason).
            self._pg_pool = ConnectionPool(
                url, min_size=1, max_size=pool_size, open=False, timeout=pool_wait,
                check=ConnectionPool.check_connection, name="issuance",
                kwargs={"connect_timeout": 10,
                        "options": f"-c lock_timeout={int(self.busy_timeout * 1000)}"})
        try:
            if create:
                self.create_schema()
            if self._pg_pool is not None:
                self._pg_pool.open(wait=False)
        except Exception as exc:
            self.close()
            # Not a database, a read-only directory, a server that is down: the
            # operator's configuration in one line (exit 1), not a bug (70). The URL is
            # left out: a PostgreSQL URL may carry a password.
            pg_module = sys.modules.get("psycopg")
            if not (isinstance(exc, sqlite3.Error)
                    or (pg_module is not None and isinstance(exc, pg_module.Error))):
                raise
            where = "PostgreSQL" if self.pg else f"SQLite {self.path}"
            raise DatabaseError(f"cannot open the database ({where}): "
                                f"{' '.join(str(exc).split())}") from None

    @property
    def kind(self) -> str:
        return "postgresql" if self.pg else "sqlite"

    def _connect(self) -> Any:
        if self.pg:
            import psycopg

            # lock_timeout: the same bound on waiting for another session's lock as
            # SQLite's busy_timeout (PostgreSQL would wait for ever).
            return psycopg.connect(self.url, connect_timeout=10,
                                   options=f"-c lock_timeout={int(self.busy_timeout * 1000)}")
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        return conn

    @contextlib.contextmanager
    def tx(self, *, write: bool = False, direct: bool = False) -> Iterator[Tx]:
        """One transaction on a pooled connection; committed on success, rolled back on
        any exception (which propagates). ``direct``: on PostgreSQL, a connection of its
        own (the schema's transaction, before the pool is open)."""
        if self.pg:
            if direct:
                conn_cm: Any = contextlib.closing(self._connect())
            else:
                conn_cm = self._pg_pool.connection()
            with conn_cm as conn:
                tx = Tx(conn, True)
                # The pool rolls back and discards a connection returned broken.
                with conn.transaction():
                    yield tx
            for hook in tx.after_commit:
                hook()
            return
        self._slots.acquire()
        try:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                conn = self._connect()
            ok = False
            tx = Tx(conn, self.pg)
            try:
                if self.pg:
                    with conn.transaction():
                        yield tx
                else:
                    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    try:
                        yield tx
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                ok = True
            finally:
                if ok or self._healthy(conn):
                    self._pool.put(conn)
                else:
                    with contextlib.suppress(Exception):
                        conn.close()
        finally:
            self._slots.release()
        for hook in tx.after_commit:
            hook()

    def _healthy(self, conn: Any) -> bool:
        if self.pg:
            return not conn.closed and conn.info.transaction_status == 0  # IDLE
        return not conn.in_transaction

    def create_schema(self) -> None:
        types = _TYPES["pg" if self.pg else "sqlite"]
        with self.tx(write=True, direct=True) as t:
            if self.pg:  # several workers may start at once
                t.execute("SELECT pg_advisory_xact_lock(4242)")
            for stmt in SCHEMA:
                t.execute(stmt.format(**types))
            for table, column, kind in _ADDED_COLUMNS:
                self._add_column(t, table, column, kind.format(**types))

    def _add_column(self, t: Tx, table: str, column: str, kind: str) -> None:
        """A column added after databases of this schema were deployed: ``CREATE TABLE IF
        NOT EXISTS`` leaves an existing table as it was, so it is added here."""
        if self.pg:
            t.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
            return
        if column not in {row[1] for row in t.all(f"PRAGMA table_info({table})")}:
            t.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        if self._pg_pool is not None:
            self._pg_pool.close()
        while True:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                conn.close()

    def backend_errors(self) -> tuple[type[BaseException], ...]:
        """What the back end raises when it is unreachable, gone or failing."""
        if self.pg:
            import psycopg

            return (psycopg.Error, sqlite3.Error)
        return (sqlite3.Error,)

    def integrity_error(self) -> tuple[type[BaseException], ...]:
        """The exception a duplicate key raises on this back end."""
        if self.pg:
            import psycopg

            return (psycopg.errors.UniqueViolation,)
        return (sqlite3.IntegrityError,)

    # -- small shared helpers ----------------------------------------------------------
    def info(self, key: str) -> str | None:
        with self.tx() as t:
            row = t.one("SELECT value FROM service_info WHERE key=?", (key,))
        return None if row is None else str(row[0])

    def set_info(self, key: str, value: str) -> None:
        with self.tx(write=True) as t:
            t.execute("DELETE FROM service_info WHERE key=?", (key,))
            t.execute("INSERT INTO service_info (key, value) VALUES (?, ?)", (key, value))
