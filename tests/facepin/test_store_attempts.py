"""An attempt that never finished (its instance killed mid-capture) stops counting against
the card's 5 tries once its lease is over, and counts while it may still be running, so
concurrent attempts on any number of instances still get at most 5 slots (issue 28)."""

from __future__ import annotations

from pathlib import Path

import pytest

from facepin.store import ATTEMPT_LEASE, Store
from tests.facepin.pg import postgres_url  # noqa: F401  (fixture)

DAY = 24 * 3600.0


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path / 'facepin.db'}")
    s = Store(request.getfixturevalue("postgres_url"))
    with s._conn() as db:
        for table in ("challenges", "reservations", "attempts", "attempt_cards"):
            db.execute(f"DELETE FROM {table}")
    return s


def take(store: Store, now: float) -> str | None:
    return store.take_attempt("fp", now, now - DAY, 5)


def test_unfinished_attempts_count_while_they_may_run(store: Store) -> None:
    t0 = 1_000_000.0
    ids = [take(store, t0 + i) for i in range(5)]
    assert all(ids)
    assert take(store, t0 + 10) is None               # five in flight: no sixth
    assert take(store, t0 + ATTEMPT_LEASE - 1) is None


def test_an_abandoned_attempt_gives_the_try_back_after_its_lease(store: Store) -> None:
    t0 = 1_000_000.0
    ids = [take(store, t0 + i) for i in range(5)]
    for aid in ids[:3]:
        assert aid is not None
        store.finish_attempt(aid, False)              # three evaluated and failed
    # Two never finished: the instance running them was killed. After the lease they no
    # longer count; the three evaluated ones do, for the whole day.
    later = t0 + ATTEMPT_LEASE + 10
    assert take(store, later) is not None
    assert take(store, later + 1) is not None
    assert take(store, later + 2) is None
    # The abandoned rows stay (audit): five rows then two more.
    with store._conn() as db:
        (n,) = db.execute("SELECT COUNT(*) FROM attempts WHERE cert_fp='fp'").fetchone()
        (open_,) = db.execute("SELECT COUNT(*) FROM attempts WHERE cert_fp='fp'"
                              " AND ok IS NULL").fetchone()
    assert (int(n), int(open_)) == (7, 4)


def test_evaluated_attempts_count_all_day(store: Store) -> None:
    t0 = 1_000_000.0
    for i in range(5):
        aid = take(store, t0 + i)
        assert aid is not None
        store.finish_attempt(aid, i == 4)
    assert take(store, t0 + ATTEMPT_LEASE + 10) is None
    assert take(store, t0 + DAY + 5) is not None
