"""An admitted live capture has a wall-clock deadline (``facepin.service.ATTEMPT_DEADLINE``)
well inside its attempt's lease (``facepin.store.ATTEMPT_LEASE``): a client that goes quiet
mid-capture is cut off and the attempt counted then, and an attempt that outlives its lease
is never recorded or acted on — so a card gets at most five evaluated attempts a day even
when held captures and a clock jump overlap."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import facepin.service
from facepin.client import gather_evidence
from facepin.service import ServiceConfig
from facepin.store import Store
from tests.facepin.live_data import genuine_chip
from tests.facepin.test_service import (
    DEV,
    _reservation_body,
    blank_jpeg,
    card_of,
    live,
    running,
    still,
)
from tests.pki_env import PkiEnv

pytestmark = pytest.mark.skipif(not (DEV / "labels.csv").exists(),
                                reason="../shared/data/faces is not beside the checkout")


class Svc:
    def __init__(self, url: str, clock: list[float], database: str) -> None:
        self.url, self.clock, self.database = url, clock, database

    def evaluated(self) -> list[int]:
        with Store(self.database) as store, store._conn() as db:
            rows = db.execute("SELECT ok FROM attempts ORDER BY at").fetchall()
        return [r[0] for r in rows]


@pytest.fixture
def svc(pki: PkiEnv, tmp_path: Path) -> Iterator[Svc]:
    database = f"sqlite:///{tmp_path / 'facepin.db'}"
    clock = [time.time()]
    config = ServiceConfig(database=database, trust=pki.trust,
                           master_key=pki.jlis.pin_reset_master(), clock=lambda: clock[0],
                           registry=pki.authority.card_of)
    with running(config) as base:
        yield Svc(base, clock, database)


def _bodies(pki: PkiEnv, svc: Svc, n: int, card: tuple[Path, Any] | None = None
            ) -> list[dict[str, object]]:
    import httpx

    path, p = card or pki.new_card(photo=genuine_chip())
    out = []
    with httpx.Client(base_url=svc.url, trust_env=False, timeout=60) as http:
        for _ in range(n):
            ch = http.post("/v1/challenges").json()
            ev = gather_evidence(card_of(path), base64.b64decode(ch["nonce"]), p.auth_pin,
                                 p.text_pin)
            out.append(_reservation_body(ch, ev, ev, ev.serial))
    return out


def _until(ws: object, kind: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        msg = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))  # type: ignore[attr-defined]
        if msg["type"] in (kind, "refused"):
            return dict(msg)


def test_a_quiet_client_is_cut_off_at_the_deadline_and_counted(
        pki: PkiEnv, svc: Svc, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: ``await receive()`` had no deadline, so a client that sent its evidence and
    then nothing kept the attempt open for ever (the recv below timed out)."""
    from websockets.sync.client import connect

    monkeypatch.setattr(facepin.service, "ATTEMPT_DEADLINE", 6.0, raising=False)
    (body,) = _bodies(pki, svc, 1)
    with connect(svc.url.replace("http://", "ws://") + "/v1/reservations/live", proxy=None,
                 max_size=1 << 20) as ws:
        ws.send(json.dumps(body))
        started = time.monotonic()
        msg = _until(ws, "refused", 30)            # no frame is ever sent
        took = time.monotonic() - started
    assert (msg["type"], msg["status"], msg["error"]) == ("refused", 408, "timeout")
    assert took < 6.0 + 5
    assert svc.evaluated() == [0]                  # finished (failed) at the deadline: counted


def test_a_capture_outliving_its_lease_is_not_evaluated(pki: PkiEnv, svc: Svc) -> None:
    """A capture held open past its lease (the clock advanced 601 s), while the card takes
    its five tries again: the held one's outcome is never recorded nor told — five
    evaluated attempts, not six."""
    from websockets.sync.client import connect

    card = pki.new_card(photo=genuine_chip())
    held = _bodies(pki, svc, 1, card)[0]
    blank = blank_jpeg((320, 240))
    with connect(svc.url.replace("http://", "ws://") + "/v1/reservations/live", proxy=None,
                 max_size=1 << 20) as ws:
        ws.send(json.dumps(held))
        assert _until(ws, "capture", 60)["type"] == "capture"
        svc.clock[0] += 601.0
        codes = [live(svc.url, b, still(blank))[0] for b in _bodies(pki, svc, 5, card)]
        assert codes == [422] * 5                  # the held attempt no longer counts
        for _ in range(40):                        # the held client now sends its frames
            ws.send(blank)
            time.sleep(1 / 15)
        ws.send(json.dumps({"type": "end"}))
        msg = _until(ws, "refused", 60)
    assert (msg["type"], msg["status"], msg["error"]) == ("refused", 408, "timeout")
    assert sorted(x for x in svc.evaluated() if x is not None) == [0] * 5
