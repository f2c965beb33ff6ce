"""The storage contract on both back ends: SQLite, and a real PostgreSQL server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from facepin.store import Reservation, Store, StoreError
from tests.facepin.pg import postgres_url  # noqa: F401  (fixture)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path / 'facepin.db'}")
    url = request.getfixturevalue("postgres_url")
    s = Store(url)
    with s._conn() as db:  # a clean slate per test
        for table in ("challenges", "reservations", "attempts"):
            db.execute(f"DELETE FROM {table}")
    return s


def test_challenge_is_single_use_and_expires(store: Store) -> None:
    store.add_challenge("c1", b"\x00\x01nonce", 1000.0, "turn_left,turn_right")
    assert store.take_challenge("c1", 1001.0, 300) == (b"\x00\x01nonce",
                                                       "turn_left,turn_right")
    assert store.take_challenge("c1", 1001.0, 300) is None
    store.add_challenge("c2", b"n", 1000.0)
    assert store.take_challenge("c2", 1400.0, 300) is None
    assert store.take_challenge("nope", 1000.0, 300) is None


def test_reservation_is_used_once_even_concurrently(store: Store) -> None:
    store.add_reservation(Reservation("r1", "fp", "4" * 15, 0.0, 100.0, None))
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(store.use_reservation("r1", 5.0)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    got = store.get_reservation("r1")
    assert got is not None and got.used_at == 5.0
    store.add_reservation(Reservation("r2", "fp", "4" * 15, 0.0, 100.0, None))
    assert store.use_reservation("r2", 100.0) is False  # expired


def test_attempts_window(store: Store) -> None:
    for t in (10.0, 20.0, 30.0):
        store.record_attempt("fp", t, False)
    store.record_attempt("other", 25.0, True)
    assert store.attempts_since("fp", 15.0) == 2
    assert store.attempts_since("fp", 0.0) == 3


def test_bad_urls() -> None:
    with pytest.raises(StoreError):
        Store("mysql://x")


def test_rate_limit_is_one_atomic_step_across_workers(store: Store) -> None:
    """Issue 8, item 4: 20 workers (each its own Store, as separate processes would be)
    try at once for one card: exactly 5 get a slot. Counting then recording, as before
    issue 8, let 8–18 through."""
    url = f"sqlite:///{store.path}" if not store.postgres else store.url
    workers = [Store(url) for _ in range(20)]
    start = threading.Barrier(20)
    got: list[str | None] = []

    def attempt(s: Store) -> None:
        start.wait()
        got.append(s.take_attempt("card-fp", 1000.0, 1000.0 - 86400, 5))

    threads = [threading.Thread(target=attempt, args=(s,)) for s in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 20 and sum(a is not None for a in got) == 5
    assert store.attempts_since("card-fp", 0.0) == 5
    # Outside the window the card may try again; the outcome is recorded on the row.
    later = store.take_attempt("card-fp", 1000.0 + 86401, 1001.0, 5)
    assert later is not None
    store.finish_attempt(later, True)
    with store._conn() as db:
        assert db.execute("SELECT ok FROM attempts WHERE id=?", (later,)).fetchone()[0] == 1


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    """A damaged or wrong ``--db`` file is the operator's configuration (StoreError, exit
    1), not an internal error (70)."""
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(StoreError, match=r"cannot open the database.*not a database"):
        Store(f"sqlite:///{junk}")
    assert junk.read_bytes() == b"this is not an SQLite database" * 100  # nothing lost


def test_an_unreachable_postgres_is_a_store_error_without_the_password(
        tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://u:SECRETPW@/nodb?host={tmp_path}/nowhere&connect_timeout=2"
    with pytest.raises(StoreError, match="cannot open the database") as info:
        Store(url)
    assert "SECRETPW" not in str(info.value)
