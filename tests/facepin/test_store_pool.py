"""PostgreSQL connections come from a pool (psycopg_pool), not one per transaction
(issue 28: a challenge cost one new server connection, a reservation attempt three, and
180 concurrent attempts on 3 instances reached 65 of 100 server connections)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from cardio.trust import TrustStore
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


def test_the_service_closes_its_pool_when_it_shuts_down(postgres_url: str,  # noqa: F811
                                                         trust: TrustStore) -> None:
    """A pool left open at shutdown is closed by the garbage collector in whichever thread
    happens to collect it — one of its own workers, which then cannot join itself
    ("RuntimeError: cannot join current thread", a PytestUnraisableExceptionWarning in the
    service tests) — and its server connections stay open until then."""
    from facepin.service import ServiceConfig, create_app

    app = create_app(ServiceConfig(database=postgres_url, trust=trust, master_key=b"k" * 32))
    pool = app.state.store._pool
    seen = asyncio.run(run_lifespan(app, lambda: not pool.closed))
    assert seen == [True] and pool.closed


async def run_lifespan(app: Any, while_up: Callable[[], object]) -> list[object]:
    """The ASGI lifespan as a server drives it (startup, then shutdown), ``while_up()``
    evaluated between the two; its value in a list."""
    up = asyncio.Event()
    seen: list[object] = []
    messages: list[str] = []

    async def receive() -> dict[str, Any]:
        if not up.is_set():
            up.set()
            return {"type": "lifespan.startup"}
        seen.append(while_up())
        return {"type": "lifespan.shutdown"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert messages == ["lifespan.startup.complete", "lifespan.shutdown.complete"], messages
    return seen


def test_a_store_closes_its_pool_as_a_context_manager(postgres_url: str  # noqa: F811
                                                       ) -> None:
    with Store(postgres_url) as store:
        store.add_challenge("ctx-" + str(threading.get_ident()), b"n", 0.0)
        pool = store._pool
    assert pool.closed
