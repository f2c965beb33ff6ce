"""The issuance database's PostgreSQL connections come from psycopg_pool (issue 28): a
bounded number per process however many threads, and a pooled connection the server has
dropped (a restart, a failover, an idle timeout) is replaced before a request gets it."""

from __future__ import annotations

import asyncio
import threading

import psycopg

from cardio.trust import TrustStore
from emulators.issuance.db import POOL_SIZE, Database
from tests.facepin.pg import postgres_url  # noqa: F401  (fixture)


def _sessions(url: str) -> int:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT sessions FROM pg_stat_database"
                        " WHERE datname=current_database()").fetchone()
    assert row is not None
    return int(row[0])


def test_threads_share_a_bounded_pool(postgres_url: str) -> None:  # noqa: F811
    db = Database(postgres_url)
    try:
        before = _sessions(postgres_url)

        done: list[int] = []

        def work(i: int) -> None:
            for n in range(20):
                db.set_info(f"pool-test-{i}", str(n))
                assert db.info(f"pool-test-{i}") == str(n)
            done.append(i)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(done) == list(range(12))
        assert _sessions(postgres_url) - before - 1 <= POOL_SIZE
    finally:
        db.close()


def test_a_connection_dropped_by_the_server_is_not_handed_out(postgres_url: str  # noqa: F811
                                                               ) -> None:
    db = Database(postgres_url)
    try:
        db.set_info("pool-test", "before")
        with db.tx() as t:
            (pid,) = t.one("SELECT pg_backend_pid()")
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # The next transaction gets a working connection: no error reaches the caller.
        assert db.info("pool-test") == "before"
        db.set_info("pool-test", "after")
        assert db.info("pool-test") == "after"
    finally:
        db.close()


def test_the_center_closes_its_pool_when_it_shuts_down(postgres_url: str,  # noqa: F811
                                                        trust: TrustStore) -> None:
    """Closed at shutdown, not left to the garbage collector (which may run it in one of
    the pool's own threads: "cannot join current thread")."""
    from emulators.issuance.center import CenterConfig, create_app
    from tests.facepin.test_store_pool import run_lifespan

    app = create_app(CenterConfig(database=postgres_url, trust=trust))
    pool = app.state.center.db._pg_pool
    seen = asyncio.run(run_lifespan(app, lambda: not pool.closed))
    assert seen == [True] and pool.closed


def test_the_center_fails_fast_when_its_database_is_gone(postgres_url: str,  # noqa: F811
                                                          trust: TrustStore) -> None:
    """The center's steps run on the event loop: a transaction waiting for a pooled
    connection that can never be made (the database dropped, the server gone) blocks the
    whole instance. It fails within a few seconds (a 503 to the kiosk), not after
    psycopg_pool's default 30 s (which timed out test_the_database_vanishing_...)."""
    import time

    import pytest

    from emulators.issuance.center import CenterConfig, create_app
    from tests.emulators.issuance.test_load import _fresh_pg_database

    url = _fresh_pg_database(postgres_url, "poolwait")
    app = create_app(CenterConfig(database=url, trust=trust))
    db = app.state.center.db
    try:
        assert db.info("nothing") is None
        name = url.split("?")[0].rsplit("/", 1)[1]
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        started = time.monotonic()
        with pytest.raises(db.backend_errors()):
            db.info("nothing")
        assert time.monotonic() - started < 6.0
    finally:
        db.close()
