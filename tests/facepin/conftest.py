"""Every ``facepin.store.Store`` a facepin test opens is closed when the test ends.

A store on PostgreSQL holds a ``psycopg_pool`` with worker threads. Left to the garbage
collector, the pool is closed in whichever thread collects it — sometimes one of its own
workers, which cannot join itself ("RuntimeError: cannot join current thread", reported
as a PytestUnraisableExceptionWarning in a later, unrelated test) — and its server
sessions stay open until then. Tests open stores freely (one per simulated worker, one to
look at the database); this closes them, as the service closes its own at shutdown.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from facepin.store import Store


@pytest.fixture(autouse=True)
def _stores_opened_by_the_test_are_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    opened: list[Store] = []
    init = Store.__init__

    def recording(self: Store, url: str) -> None:
        init(self, url)
        opened.append(self)

    monkeypatch.setattr(Store, "__init__", recording)
    yield
    for store in opened:
        store.close()
