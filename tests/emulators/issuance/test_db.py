"""Opening the issuance database: a bad ``--db`` is a typed error, never exit 70."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulators.issuance.db import Database, DatabaseError


def test_a_file_that_is_not_a_database_is_a_database_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(DatabaseError, match=r"cannot open the database.*not a database"):
        Database(f"sqlite:///{junk}")
    assert junk.read_bytes() == b"this is not an SQLite database" * 100


def test_an_unreachable_postgres_is_a_database_error_without_the_password(
        tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://u:SECRETPW@/nodb?host={tmp_path}/nowhere&connect_timeout=2"
    with pytest.raises(DatabaseError, match="cannot open the database") as info:
        Database(url)
    assert "SECRETPW" not in str(info.value)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_lock_held_elsewhere_fails_after_busy_timeout(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The center runs its statements on its event loop: waiting for another process's
    lock is bounded by ``busy_timeout`` on both back ends (PostgreSQL's default is to wait
    for ever), and the failure is one of ``backend_errors()`` — a 503, not a hang."""
    import time

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'lock.db'}"
    else:
        pytest.importorskip("psycopg")
        url = request.getfixturevalue("postgres_url")
    holder, waiter = Database(url), Database(url, busy_timeout=1.0, create=False)
    holder.set_info("lock-test", "a")
    with holder.tx(write=True) as t:
        t.execute("UPDATE service_info SET value='b' WHERE key='lock-test'")
        t0 = time.monotonic()
        with pytest.raises(waiter.backend_errors()), waiter.tx(write=True) as w:
            w.execute("UPDATE service_info SET value='c' WHERE key='lock-test'")
        took = time.monotonic() - t0
    assert 0.8 < took < 3.0, took
    assert holder.info("lock-test") == "b"  # the holder's write stands, the waiter's does not
    holder.close()
    waiter.close()
