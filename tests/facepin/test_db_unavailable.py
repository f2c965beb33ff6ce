"""No database connection to be had (psycopg_pool's ``PoolTimeout``, a server that went
away): facepin answers ``503`` with ``Retry-After`` — the app or kiosk tries again — not a
``500``, and neither the answer nor the log carries the driver's message (which can quote
values)."""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import PoolTimeout

with warnings.catch_warnings():  # starlette would rather have httpx2: not installed here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from facepin.service import ServiceConfig, create_app
from tests.pki_env import PkiEnv

SECRET = "resident 山田太郎 1985-01-01"


def _app(pki: PkiEnv, tmp_path: Path) -> Any:
    return create_app(ServiceConfig(database=f"sqlite:///{tmp_path / 'f.db'}",
                                    trust=pki.trust, master_key=pki.jlis.pin_reset_master(),
                                    clock=time.time, registry=pki.authority.card_of))


@pytest.mark.parametrize("error", [PoolTimeout(f"couldn't get a connection: {SECRET}"),
                                   psycopg.OperationalError(f"server closed: {SECRET}")])
def test_no_database_connection_is_a_503_with_retry_after(
        pki: PkiEnv, tmp_path: Path, error: Exception, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    app = _app(pki, tmp_path)

    def gone(*_a: object, **_k: object) -> None:
        raise error

    monkeypatch.setattr(app.state.store, "add_challenge", gone)
    with caplog.at_level(logging.DEBUG), \
            TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v1/challenges")
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) > 0
    assert r.json()["error"] == "unavailable"
    assert "山田" not in r.text and "山田" not in caplog.text
    app.state.store.close()


def test_the_live_capture_refuses_503_when_the_database_is_gone(
        pki: PkiEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The WebSocket's answer too: a typed ``refused`` 503, not a dropped connection."""

    app = _app(pki, tmp_path)

    def gone(*_a: object, **_k: object) -> None:
        raise PoolTimeout(f"couldn't get a connection: {SECRET}")

    monkeypatch.setattr(app.state.store, "take_challenge", gone)
    monkeypatch.setattr(app.state.store, "take_attempt", gone)
    body = {"challenge_id": "x" * 22, "card_serial": None, "auth_certificate": "AA==",
            "auth_signature": "AA==", "card_face": "AA==", "card_face_cv_certificate": "AA==",
            "card_face_signature": "AA=="}
    with TestClient(app) as client, client.websocket_connect("/v1/reservations/live") as ws:
        ws.send_text(json.dumps(body))
        msg = ws.receive_json()
    assert (msg["type"], msg["status"], msg["error"]) == ("refused", 503, "unavailable"), msg
    assert "山田" not in json.dumps(msg, ensure_ascii=False)
    app.state.store.close()
