"""``issuance serve``: the emulated J-LIS side on loopback — the 証明書交付センター (with the
municipalities behind it) as N stateless uvicorn worker processes sharing one database, and
the JPKI CA's OCSP/CRL server of issue 4.

The parent binds and listens on the socket before the workers start (connections wait in
the backlog), records the CA's URL in the database (cards issued later carry it in their
certificates), enrols the emulated kiosks under ``$CARDIO_JLIS_DIR/kiosks/<id>/``, and
prints its URLs once a worker answers ``/health``. SIGTERM stops workers and CA cleanly.

Workers get their configuration through one environment variable (uvicorn spawns them),
and build everything else from the database: no state passes between requests in memory.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from cardio.trust import TrustStore
from emulators.card import JlisHierarchy
from emulators.issuance.center import CenterConfig, create_app
from emulators.issuance.db import Database
from emulators.issuance.http11 import REVOCATION_CONNECTIONS
from emulators.issuance.municipality import ensure_document_issuers
from emulators.issuance.operator import ensure_kiosk
from emulators.issuance.population import seed
from emulators.issuance.rules import JST
from emulators.jpki_ca import MAX_CONNECTIONS, CaServer, JpkiAuthority

__all__ = ["ENV", "app_from_env", "parse_now", "serve", "shifted_clock"]

ENV = "CARDIO_ISSUANCE_CONFIG"
SERVER_OPTIONS: dict[str, Any] = {"http": "httptools", "loop": "uvloop"}
"""uvicorn's C parser and event loop for the center's workers: a tenth of a worker's CPU
per issuance less than h11 on asyncio's loop (``bench/issuance_bench.py``)."""
log = logging.getLogger("emulators.issuance")


def parse_now(value: str) -> dt.datetime:
    """``--now``: ISO 8601; a time without zone is Japan time."""
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as e:
        from cardio.errors import UsageError

        raise UsageError(f"--now must be an ISO 8601 time: {e}") from None
    return when if when.tzinfo else when.replace(tzinfo=JST)


def shifted_clock(start: dt.datetime | None, wall_start: float) -> Callable[[], dt.datetime]:
    """The services' clock: the real time (JST), or ``start`` running on from
    ``wall_start``. Every worker computes the same time from the same two numbers."""
    if start is None:
        return lambda: dt.datetime.now(JST)
    base = start.astimezone(JST)
    return lambda: base + dt.timedelta(seconds=time.time() - wall_start)


def _config_from(env: dict[str, Any]) -> CenterConfig:
    now = dt.datetime.fromisoformat(env["now"]) if env.get("now") else None
    return CenterConfig(database=env["db"], trust=TrustStore.from_dir(Path(env["trust"])),
                        clock=shifted_clock(now, float(env["wall_start"])),
                        jlis_dir=Path(env["trust"]))


def app_from_env() -> FastAPI:
    """The uvicorn factory each worker process calls."""
    env = json.loads(os.environ[ENV])
    _logging(env.get("log_level", "warning"))
    app = create_app(_config_from(env))
    profile_dir = os.environ.get("CARDIO_ISSUANCE_PROFILE")
    if profile_dir:  # bench/issuance_bench.py --profile: where one worker spends its time
        import cProfile

        prof = cProfile.Profile()
        prof.enable()

        def dump() -> None:
            prof.disable()
            prof.dump_stats(str(Path(profile_dir) / f"worker-{os.getpid()}.pstats"))

        app.router.on_shutdown.append(dump)
    return app


class _DefaultRequestId(logging.Filter):
    """Every line names its request id ("-" for lines outside a request, e.g. uvicorn's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = "-"
        return True


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(process)d %(name)s"
                        " %(levelname)s [%(request_id)s] %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DefaultRequestId())


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(db_url: str, *, workers: int = 1, host: str = "127.0.0.1", port: int = 0,
          now: dt.datetime | None = None, jlis_dir: Path | None = None, kiosks: int = 1,
          seed_residents: int = 1000, on_ready: Callable[[dict[str, Any]], None],
          log_level: str = "warning") -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    wall_start = time.time()
    clock = shifted_clock(now, wall_start)
    db = Database(db_url)
    with db.tx() as t:
        seeded = t.one("SELECT COUNT(*) FROM municipalities")[0] > 0
    if not seeded:
        seed(db, seed_residents, 4, today=clock().date())
    jlis = JlisHierarchy.load_or_create(jlis_dir)
    authority = JpkiAuthority(jlis, clock=lambda: clock().astimezone(dt.UTC))
    ca = None
    # Every worker keeps up to REVOCATION_CONNECTIONS connections to the OCSP responder;
    # room for all of them and for other relying parties besides.
    ca_slots = max(MAX_CONNECTIONS, workers * REVOCATION_CONNECTIONS + 32)
    previous = db.info("ca_url")
    if previous is not None:  # keep the URL the issued cards already point at
        try:
            ca = CaServer(authority, host, int(previous.rsplit(":", 1)[1]),
                          max_connections=ca_slots).start()
        except OSError:
            ca = None
    if ca is None:
        ca = CaServer(authority, host, 0, max_connections=ca_slots).start()
    db.set_info("ca_url", ca.url)
    sock = _listen(host, port)
    center = f"http://{host}:{sock.getsockname()[1]}"
    db.set_info("center_url", center)  # credentials name their status list under it
    kiosk_root = jlis.path / "kiosks"
    enrolled = []
    for i in range(1, kiosks + 1):
        kid = f"kiosk-{i:04d}"
        ensure_kiosk(db, kid, center, kiosk_root / kid)
        enrolled.append(kid)
    ensure_document_issuers(db, jlis.path)  # before any worker: one key per municipality
    db.close()
    env = {"db": db_url, "trust": str(jlis.path), "now": now.isoformat() if now else None,
           "wall_start": wall_start, "log_level": log_level}
    os.environ[ENV] = json.dumps(env)
    info = {"center": center, "ca": ca.url, "database": db.kind, "workers": workers,
            "kiosks_dir": str(kiosk_root), "kiosks": enrolled, "jlis_dir": str(jlis.path),
            "now": clock().isoformat(), "pid": os.getpid()}

    def announce() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                        center + "/health", timeout=2) as r:
                    if r.status == 200:
                        on_ready(info)
                        return
            except OSError:
                time.sleep(0.1)

    threading.Thread(target=announce, daemon=True).start()
    _logging(log_level)
    try:
        if workers > 1:
            config = uvicorn.Config("emulators.issuance.server:app_from_env", factory=True,
                                    workers=workers, log_level=log_level, access_log=False,
                                    timeout_graceful_shutdown=5, **SERVER_OPTIONS)
            Multiprocess(config, sockets=[sock]).run()
        else:
            config = uvicorn.Config(create_app(_config_from(env)), log_level=log_level,
                                    access_log=False, timeout_graceful_shutdown=5,
                                    **SERVER_OPTIONS)
            # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal into the
            # handler it found: make that one a no-op so the CA stops too and we exit 0.
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: None)
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        ca.stop()
        sock.close()
    return 0
