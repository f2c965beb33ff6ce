"""The storage contract on both back ends: SQLite, and a real PostgreSQL server."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from facepin.store import Reservation, Store, StoreError
from tests.facepin.pg import postgres_url  # noqa: F401  (fixture)

T = TypeVar("T")


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


def _at_once(n: int, fn: Callable[[int], T]) -> list[T]:
    """``fn(0..n-1)`` on n threads released together by a barrier; the results."""
    start = threading.Barrier(n)
    got: list[T] = []

    def run(i: int) -> None:
        start.wait()
        got.append(fn(i))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == n
    return got


def _workers(store: Store, n: int) -> list[Store]:
    """n Stores on one database: separate connections and no shared lock, as n worker
    processes behind a load balancer would be."""
    return [Store(store.url if store.postgres else f"sqlite:///{store.path}")
            for _ in range(n)]


def test_a_challenge_is_claimed_once_by_simultaneous_workers(store: Store) -> None:
    """Issue 22, item 10: 20 copies of one request, each on its own worker, claim one
    challenge at once — exactly one gets the nonce, in every round. Reading "not used"
    and then marking it used let 1–11 of 20 through on PostgreSQL and 5–20 of 20 on
    SQLite (separate connections)."""
    workers = _workers(store, 20)
    for k in range(5):
        store.add_challenge(f"c{k}", b"nonce%d" % k, 1000.0, "blink")
        got = _at_once(20, lambda i, k=k: workers[i].take_challenge(f"c{k}", 1001.0, 300))
        assert [g for g in got if g is not None] == [(b"nonce%d" % k, "blink")], k
    # An expired challenge is spent by its first claim too, and still gives nothing.
    store.add_challenge("old", b"n", 1000.0)
    assert _at_once(8, lambda i: workers[i].take_challenge("old", 1400.0, 300)) == [None] * 8
    with store._conn() as db:
        assert db.execute("SELECT used FROM challenges WHERE id=?", ("old",)).fetchone()[0] == 1


def _claim_in_a_process(url: str, cid: str, start: Any, out: Any) -> None:
    """A worker process: its own Store, then one claim when all are ready."""
    store = Store(url)
    start.wait()
    out.put(store.take_challenge(cid, 1001.0, 300) is not None)


def test_a_challenge_is_claimed_once_by_simultaneous_processes(store: Store) -> None:
    """The same with 10 processes (separate interpreters, as the service's workers are):
    one claim succeeds, 9 are refused."""
    ctx = multiprocessing.get_context("spawn")
    url = store.url if store.postgres else f"sqlite:///{store.path}"
    store.add_challenge("cp", b"nonce", 1000.0)
    start, out = ctx.Barrier(10), ctx.Queue()
    procs = [ctx.Process(target=_claim_in_a_process, args=(url, "cp", start, out))
             for _ in range(10)]
    for proc in procs:
        proc.start()
    got = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
    assert sorted(got) == [False] * 9 + [True], f"{sum(got)} of 10 claims succeeded"


def test_reservation_is_redeemed_once_by_simultaneous_workers(store: Store) -> None:
    """The redeem step is one conditional UPDATE already; this holds it to that with 20
    workers of their own (the test above shares one Store, whose lock serialises SQLite)."""
    workers = _workers(store, 20)
    store.add_reservation(Reservation("r", "fp", "4" * 15, 0.0, 100.0, None))
    got = _at_once(20, lambda i: (workers[i].use_reservation("r", 5.0 + i), 5.0 + i))
    winners = [at for ok, at in got if ok]
    assert len(winners) == 1
    used = store.get_reservation("r")
    assert used is not None and used.used_at == winners[0]  # the winner's time stays


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_workers_starting_at_once_on_a_fresh_database_all_open_it(
        backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """20 workers started together against an empty database (a deployment's first
    start) each create the tables IF NOT EXISTS. On PostgreSQL two concurrent CREATE
    TABLEs of one name collide in the catalogue (pg_type's unique index), and 19 of 20
    workers failed to start; the schema is now created under a transaction-level
    advisory lock."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        import psycopg

        base = request.getfixturevalue("postgres_url")
        name = "fresh_" + tmp_path.name.lower().replace("-", "_")[-40:]
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
            admin.execute(f"CREATE DATABASE {name}")
        url = base.replace("/postgres?", f"/{name}?")

    def start(i: int) -> str:
        try:
            Store(url)
        except StoreError as exc:
            return str(exc)
        return ""

    failures = [e for e in _at_once(20, start) if e]
    assert failures == []
    s = Store(url)
    s.add_challenge("c", b"n", 1.0)
    assert s.take_challenge("c", 1.0, 300) == (b"n", "")


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
