"""PostgreSQL connections come from a pool (psycopg_pool), not one per transaction
(issue 28: a challenge cost one new server connection, a reservation attempt three, and
180 concurrent attempts on 3 instances reached 65 of 100 server connections)."""

from __future__ import annotations

import threading

import psycopg

from facepin.store import POOL_SIZE, Store
from tests.facepin.pg import postgres_url  # noqa: F401  (fixture)


def sessions_started(url: str) -> int:
    """Server sessions ever opened to the database (pg_stat_database.sessions, PG 14+),
    read over a connection of its own (counted too, so callers subtract theirs)."""
    with psycopg.connect(url) as c:
        c.execute("SELECT pg_stat_clear_snapshot()")
        row = c.execute("SELECT sessions FROM pg_stat_database"
                        " WHERE datname=current_database()").fetchone()
    assert row is not None
    return int(row[0])


def test_operations_reuse_pooled_connections(postgres_url: str) -> None:  # noqa: F811
    store = Store(postgres_url)
    try:
        before = sessions_started(postgres_url)
        for i in range(30):
            store.add_challenge(f"pool-{i}-{threading.get_ident()}", b"n", 1.0)
            store.take_challenge(f"pool-{i}-{threading.get_ident()}", 1.0, 300)
        aid = store.take_attempt("pool-fp", 1.0, 0.0, 100)
        assert aid is not None
        store.finish_attempt(aid, True)
        threads = [threading.Thread(target=lambda: [store.attempts_since("pool-fp", 0.0)
                                                    for _ in range(10)]) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        opened = sessions_started(postgres_url) - before - 1  # minus the counting one
        # 140 transactions, 8 threads at once: at most the pool's connections.
        assert opened <= POOL_SIZE, opened
    finally:
        store.close()


def test_a_connection_dropped_by_the_server_is_not_handed_out(postgres_url: str  # noqa: F811
                                                               ) -> None:
    store = Store(postgres_url)
    try:
        store.add_challenge("dropped-1", b"n", 1.0)
        with store._conn() as db:
            (pid,) = db.execute("SELECT pg_backend_pid()").fetchone()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert store.take_challenge("dropped-1", 1.0, 300) == (b"n", "")
    finally:
        store.close()
