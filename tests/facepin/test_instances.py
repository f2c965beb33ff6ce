"""Several ``facepin serve`` instances on one PostgreSQL (issue 28, item 1): started at the
same moment on an empty database they all come up (the schema is created under an advisory
lock), each serves, their connections stay within their pools, and killing one leaves the
others serving."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from facepin.store import POOL_SIZE
from tests.facepin.pg import postgres_url  # noqa: F401  (fixture)
from tests.pki_env import PkiEnv

INSTANCES = 3


class Instance:
    def __init__(self, pki: PkiEnv, db_url: str, key_file: Path, go: threading.Event) -> None:
        self.lines: list[str] = []
        self.port = 0
        self.started = threading.Event()
        self.proc: subprocess.Popen[str] | None = None
        self._args = ([sys.executable, "-m", "cardio.cli", "facepin", "serve", "--db", db_url,
                       "--port", "0", "--trust", str(pki.roots),
                       "--card-registry", str(pki.jlis.path / "cards.json")],
                      {**os.environ, "CARDIO_FACEPIN_MASTER_KEY_FILE": str(key_file),
                       "CARDIO_JLIS_DIR": str(key_file.parent / "no-jlis")})
        self.thread = threading.Thread(target=self._run, args=(go,), daemon=True)
        self.thread.start()

    def _run(self, go: threading.Event) -> None:
        go.wait()
        args, env = self._args
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                self.started.set()
        self.started.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.mark.slow
def test_instances_started_together_on_an_empty_database(
        pki: PkiEnv, postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    name = "instances_" + tmp_path.name.lower().replace("-", "_")[-30:]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    db_url = postgres_url.replace("/postgres?", f"/{name}?")
    key_file = tmp_path / "master.key"
    key_file.write_bytes(pki.jlis.pin_reset_master())
    (tmp_path / "no-jlis").mkdir()
    if not (pki.jlis.path / "cards.json").exists():
        pki.new_card()
    go = threading.Event()
    instances = [Instance(pki, db_url, key_file, go) for _ in range(INSTANCES)]
    go.set()  # all at once, on a database with no tables
    try:
        for inst in instances:
            assert inst.started.wait(120), "an instance did not start in time"
            assert inst.port, "".join(inst.lines)
        with httpx.Client(timeout=30, trust_env=False) as http:
            for inst in instances:
                assert http.get(f"{inst.url}/health").json() == {"status": "ok"}
                for _ in range(5):
                    assert http.post(f"{inst.url}/v1/challenges").status_code == 200
            with psycopg.connect(db_url) as c:
                (challenges,) = c.execute("SELECT COUNT(*) FROM challenges").fetchone() or (0,)
                (conns,) = c.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE datname ="
                                     " current_database() AND pid <> pg_backend_pid()"
                                     ).fetchone() or (0,)
            assert challenges == 5 * INSTANCES
            assert conns <= INSTANCES * POOL_SIZE
            # One instance killed: the others go on serving.
            victim = instances[0].proc
            assert victim is not None
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            time.sleep(0.2)
            for inst in instances[1:]:
                assert http.post(f"{inst.url}/v1/challenges").status_code == 200
    finally:
        for inst in instances:
            inst.stop()
