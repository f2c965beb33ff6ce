"""No crossed documents under load: many concurrent simulated kiosks against 4 worker
processes, on SQLite and on PostgreSQL; every returned document is decoded and compared
with the register entry of the card's own resident.

CI runs a bounded size (400 issuances, 50 kiosks); ``CARDIO_ISSUANCE_FULL=1`` runs the
acceptance size (10,000 issuances, 200 kiosks).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest

from emulators.card.keys import KeyPool
from emulators.issuance.fleet import FleetResult, run_fleet
from tests.emulators.issuance.conftest import Service, start_service, stop_service

FULL = os.environ.get("CARDIO_ISSUANCE_FULL") == "1"
TOTAL, KIOSKS = (10_000, 200) if FULL else (400, 50)
WORKERS = 4


def _date(iso: str) -> str:
    d = dt.date.fromisoformat(iso)
    return f"{d.year}年{d.month}月{d.day}日"


def crossed(svc: Service, result: FleetResult) -> int:
    """Documents whose content is not the register entry of the requester's resident."""
    with svc.db.tx() as t:
        reg = {r[0]: (r[1], r[2], _date(r[3])) for r in t.all(
            "SELECT id, name, address, birth FROM residents WHERE id IN (SELECT resident_id"
            " FROM cert_serials)")}
    bad = 0
    for o in result.outcomes:
        name, address, birth = reg[o.resident_id]
        if o.names != [name] or o.addresses != [address] or o.births != [birth]:
            bad += 1
    return bad


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_no_crossed_documents_under_load(backend: str, tmp_path: Path, key_pool: KeyPool,
                                         default_photo: bytes, request: Any) -> None:
    url = (f"sqlite:///{tmp_path / 'issuance.db'}" if backend == "sqlite"
           else _fresh_pg_database(request.getfixturevalue("postgres_url"), tmp_path.name))
    svc = start_service(tmp_path, url, key_pool, default_photo, workers=WORKERS,
                        kiosks=KIOSKS, residents=max(2000, KIOSKS * 4))
    try:
        cards = [svc.card() for _ in range(KIOSKS)]
        kiosks = [svc.kiosk(i) for i in range(1, KIOSKS + 1)]
        result = asyncio.run(run_fleet(kiosks, cards, TOTAL, fresh_every=5))
        print(f"\n{backend}: {len(result.outcomes)} issuances from {KIOSKS} kiosks, "
              f"{WORKERS} workers in {result.seconds:.1f} s = {result.rate:.1f}/s, p50 "
              f"{result.latency(0.5) * 1000:.0f} ms, p99 {result.latency(0.99) * 1000:.0f} ms,"
              f" errors {len(result.errors)}")
        assert not result.errors, result.errors[:5]
        assert len(result.outcomes) == TOTAL
        assert crossed(svc, result) == 0
        with svc.db.tx() as t:
            assert t.one("SELECT COUNT(*) FROM issuances WHERE outcome='printed'")[0] == TOTAL
            assert t.one("SELECT COUNT(*) FROM incidents")[0] == 0
            assert t.one("SELECT COUNT(DISTINCT request_id) FROM issuances")[0] == TOTAL
    finally:
        assert stop_service(svc) == 0


def _fresh_pg_database(url: str, name: str) -> str:
    """A database of its own on the session's throw-away server."""
    import psycopg

    db = "load_" + "".join(c for c in name.lower() if c.isalnum())[:40]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {db}")
        conn.execute(f"CREATE DATABASE {db}")
    return url.replace("/postgres?", f"/{db}?")
