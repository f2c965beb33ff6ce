"""The 証明書交付センター (with the municipalities behind it) as two independent instances on
one PostgreSQL behind HAProxy (issue 28, item 1): one document per session when the same
session's document is asked for at once through both instances, zero crossed documents
under a fleet of kiosks, and an instance killed (SIGKILL) mid-load.

``issuance serve`` sets the world up once (registers, kiosks, document issuers) and keeps
running the JPKI CA (OCSP/CRL) that both instances ask; the instances are the center's
ASGI app as uvicorn runs it (``emulators.issuance.server:app_from_env``, the factory each
``issuance serve`` worker calls), each its own process on its own port, configured from the
same database. The kiosks reach them only through the balancer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from emulators.card.keys import KeyPool
from emulators.issuance.fleet import FleetResult, open_and_authenticate, run_fleet
from emulators.issuance.server import ENV, SERVER_OPTIONS
from kiosk.center_client import CenterClient, IssuanceRefused, KioskCredentials
from tests.emulators.issuance.conftest import Service, start_service, stop_service
from tests.emulators.issuance.test_load import crossed
from tests.facepin.pg import postgres_url  # noqa: F401  (fixture)
from tests.scaleout import Haproxy, Process, fresh_pg_database, need_haproxy

INSTANCES = 2
KIOSKS = 16
pytestmark = pytest.mark.slow


def center_instance(name: str, svc: Service) -> Process:
    """One center instance: the app every ``issuance serve`` worker runs, configured from
    the same database, J-LIS directory and business clock as ``svc``."""
    env = {"db": svc.db_url, "trust": str(svc.jlis), "now": svc.info["now"],
           "wall_start": time.time(), "log_level": "warning"}
    return Process(name, [sys.executable, "-m", "uvicorn",
                          "emulators.issuance.server:app_from_env", "--factory",
                          "--host", "127.0.0.1", "--port", "0", "--log-level", "info",
                          "--no-access-log", "--http", SERVER_OPTIONS["http"],
                          "--loop", SERVER_OPTIONS["loop"]],
                   {ENV: json.dumps(env), "CARDIO_JLIS_DIR": str(svc.jlis)})


@dataclass
class Centers:
    svc: Service
    instances: list[Process]
    lb: Haproxy

    def kiosk(self, n: int) -> KioskCredentials:
        """Kiosk ``n``'s credentials, pointed at the balancer."""
        return dataclasses.replace(self.svc.kiosk(n), center_url=self.lb.url)

    def requests_per_instance(self) -> list[int]:
        """Kiosk requests each live instance answered (its ``/metrics``)."""
        out = []
        for p in self.instances:
            if p.proc.poll() is not None:
                out.append(-1)
                continue
            text = httpx.get(p.url + "/metrics", trust_env=False, timeout=10).text
            out.append(sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                           if line.startswith("cardio_worker_requests_total{")))
        return out


@pytest.fixture(scope="module")
def centers(tmp_path_factory: pytest.TempPathFactory, key_pool: KeyPool, default_photo: bytes,
            postgres_url: str) -> Iterator[Centers]:  # noqa: F811
    need_haproxy()
    base = tmp_path_factory.mktemp("issuance-scaleout")
    url = fresh_pg_database(postgres_url, "issuance" + base.name)
    svc = start_service(base, url, key_pool, default_photo, workers=1, kiosks=KIOSKS,
                        residents=400)
    instances: list[Process] = []
    lb: Haproxy | None = None
    try:
        instances = [center_instance(f"center-{i}", svc) for i in range(INSTANCES)]
        for p in instances:
            p.wait_started()
        lb = Haproxy({f"c{i}": p.port for i, p in enumerate(instances)}).start()
        yield Centers(svc, instances, lb)
    finally:
        if lb is not None:
            lb.stop()
        for p in instances:
            p.stop()
        stop_service(svc)


def _count(svc: Service, sql: str, params: tuple[Any, ...] = ()) -> int:
    with svc.db.tx() as t:
        return int(t.one(sql, params)[0])


def test_one_document_per_session_across_instances(centers: Centers) -> None:
    """Each round: a session opened and authenticated through the balancer, then its
    document asked for six times at once, each on a connection of its own (so both
    instances get some). Exactly one is issued; the others are refused before any
    municipal work."""
    svc = centers.svc
    card = svc.card()
    rounds, copies = 12, 6
    before = _count(svc, "SELECT COUNT(*) FROM issuances")
    served: Counter[str] = Counter()

    async def note(response: httpx.Response) -> None:
        served[response.headers.get("x-instance", "?")] += 1

    async def one_round(c: CenterClient) -> list[tuple[int, str]]:
        opened, _auth, _sha = await open_and_authenticate(c, card)
        clients = [CenterClient(centers.kiosk(1), http=httpx.AsyncClient(
            base_url=centers.lb.url, timeout=60, trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
            event_hooks={"response": [note]})) for _ in range(copies)]

        async def ask(k: CenterClient) -> tuple[int, str]:
            try:
                await k.request_document(opened.request_id, opened.session_id, "juminhyo")
                return 200, "ok"
            except IssuanceRefused as e:
                return e.status, e.code

        try:
            return list(await asyncio.gather(*(ask(k) for k in clients)))
        finally:
            for k in clients:
                await k.aclose()

    async def go() -> list[list[tuple[int, str]]]:
        async with CenterClient(centers.kiosk(1), http=httpx.AsyncClient(
                base_url=centers.lb.url, timeout=60, trust_env=False)) as c:
            return [await one_round(c) for _ in range(rounds)]

    results = asyncio.run(go())
    issued = [sum(a == (200, "ok") for a in answers) for answers in results]
    print(f"\none document per session: {copies} simultaneous requests per session over"
          f" {INSTANCES} instances, {rounds} sessions: documents per session {issued};"
          f" requests per instance {dict(sorted(served.items()))}")
    for answers in results:
        assert sorted(answers) == [(200, "ok")] + [(409, "already_requested")] * (copies - 1)
    assert _count(svc, "SELECT COUNT(*) FROM issuances") == before + rounds
    assert all(served[f"c{i}"] > 0 for i in range(INSTANCES)), served


def _fleet(centers: Centers, total: int, kiosks: int = KIOSKS) -> FleetResult:
    svc = centers.svc
    while len(svc.cards) < kiosks:
        svc.card()
    creds = [centers.kiosk(i) for i in range(1, kiosks + 1)]
    # fresh_every=2: half the kiosks use the real kiosk's httpx client, a new connection per
    # request, the others a kept-alive one (HAProxy balances each request either way).
    return asyncio.run(run_fleet(creds, svc.cards[:kiosks], total, fresh_every=2))


def test_zero_crossed_documents_across_instances(centers: Centers) -> None:
    total = 240
    before = centers.requests_per_instance()
    result = _fleet(centers, total)
    after = centers.requests_per_instance()
    spread = [a - b for a, b in zip(after, before, strict=True)]
    bad = crossed(centers.svc, result)
    print(f"\nfleet over {INSTANCES} instances behind HAProxy: {len(result.outcomes)}"
          f" issuances from {KIOSKS} kiosks in {result.seconds:.1f} s = {result.rate:.0f}/s,"
          f" errors {len(result.errors)}, crossed {bad}; kiosk requests per instance {spread}")
    assert not result.errors, result.errors[:5]
    assert len(result.outcomes) == total
    assert bad == 0
    assert all(n > total for n in spread), spread  # ~5 steps per issuance, both serve


def test_an_instance_killed_mid_load(centers: Centers) -> None:
    """One instance SIGKILLed while the fleet runs: the balancer takes it out and the
    other serves the rest; what the killed one was doing is either done with its audit row
    (one transaction) or not done at all; no document is crossed or issued twice. Run
    last: the module has one instance fewer afterwards."""
    svc = centers.svc
    total = 400
    done_before = _count(svc, "SELECT COUNT(*) FROM issuances")
    unfinalized_before = _count(svc, "SELECT COUNT(*) FROM issuances WHERE outcome IS NULL")
    holder: list[FleetResult] = []
    runner = threading.Thread(target=lambda: holder.append(_fleet(centers, total)))
    runner.start()
    deadline = time.monotonic() + 120
    while _count(svc, "SELECT COUNT(*) FROM issuances") < done_before + total // 4 and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    victim = centers.instances[1]
    victim.kill()
    down_after = centers.lb.wait_status("c1", "DOWN")
    at_kill = _count(svc, "SELECT COUNT(*) FROM issuances") - done_before
    runner.join(300)
    result = holder[0]
    bad = crossed(svc, result)
    kinds = Counter(e.split(":")[0] for e in result.errors)
    with svc.db.tx() as t:
        requested_without_document = t.one(
            "SELECT COUNT(*) FROM sessions s WHERE s.state='requested' AND NOT EXISTS"
            " (SELECT 1 FROM issuances i WHERE i.session_id = s.session_id)")[0]
        unfinalized = t.one("SELECT COUNT(*) FROM issuances WHERE outcome IS NULL")[0] \
            - unfinalized_before
        # Every effect has its audit row: they are written in one transaction.
        sessions = t.one("SELECT COUNT(*) FROM sessions")[0]
        open_rows = t.one("SELECT COUNT(*) FROM audit WHERE event='open' AND outcome='ok'")[0]
        issuances = t.one("SELECT COUNT(*) FROM issuances")[0]
        doc_rows = t.one("SELECT COUNT(DISTINCT request_id) FROM audit WHERE"
                         " event='documents' AND outcome='ok'")[0]
        no_doc_row = t.one("SELECT COUNT(*) FROM issuances i WHERE NOT EXISTS (SELECT 1 FROM"
                           " audit a WHERE a.request_id = i.request_id AND"
                           " a.event='documents' AND a.outcome='ok')")[0]
        printed = t.one("SELECT COUNT(*) FROM issuances WHERE outcome='printed'")[0]
        fin_rows = t.one("SELECT COUNT(DISTINCT request_id) FROM audit WHERE"
                         " event='finalize' AND outcome='ok'")[0]
        twice = t.one("SELECT COUNT(*) FROM (SELECT session_id FROM issuances GROUP BY"
                      " session_id HAVING COUNT(*) > 1) x")[0]
    print(f"\nkill: c1 SIGKILLed after {at_kill} of {total} issuances; HAProxy marked it DOWN"
          f" after {down_after * 1000:.0f} ms; {len(result.outcomes)} issued, "
          f"{len(result.errors)} failed {dict(kinds)}; crossed {bad}; sessions cut mid-"
          f"document (refused from then on, no document): {requested_without_document};"
          f" documents issued but never finalized: {unfinalized}; sessions {sessions} /"
          f" open audit rows {open_rows}; issuances {issuances} / document audit rows"
          f" {doc_rows}; printed {printed} / finalize audit rows {fin_rows}")
    assert len(result.outcomes) + len(result.errors) == total
    assert len(result.errors) <= KIOSKS  # at most one request in flight per kiosk
    assert len(result.outcomes) > at_kill  # the balancer moved on to the other instance
    assert bad == 0 and twice == 0
    assert sessions == open_rows and no_doc_row == 0 and issuances == doc_rows
    assert printed == fin_rows
    assert unfinalized <= len(result.errors)
    # A session cut mid-document gets no document later either (one per session).
    assert requested_without_document <= len(result.errors)
