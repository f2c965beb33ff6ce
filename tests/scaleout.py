"""Several instances of a service behind a real load balancer (issue 28): each instance an
independent process on its own loopback port, HAProxy (Debian's) in front with health
checks on ``/health``, for the multi-instance tests and ``bench/scaleout_bench.py``.

Everything runs on 127.0.0.1: separate network namespaces would stand for separate hosts
more faithfully, but the instances share nothing but the database and the balancer either
way (no state in memory between requests), which is what the tests are about.

HAProxy runs in the foreground (``-db``) as a child of the test, with an admin socket that
:meth:`Haproxy.servers` reads (``show stat``): which instances it sees up, and how many
requests each was given. Every answer carries ``X-Instance`` (the server's name), so a
client can tell where its request went.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.pki_env import free_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
UVICORN_PORT = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def need_haproxy() -> None:
    """Skip (not fail) where HAProxy is not installed: ``scripts/setup.sh`` installs it."""
    if not os.path.exists(HAPROXY):
        pytest.skip("HAProxy is not installed (bash scripts/setup.sh installs it)")


class Process:
    """A service process whose output is collected by a thread; ``port`` is read from
    uvicorn's start line (the instances are started with port 0)."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
                 port_line: re.Pattern[str] = UVICORN_PORT) -> None:
        self.name = name
        self.lines: list[str] = []
        self.port = 0
        self._started = threading.Event()
        self._port_line = port_line
        self.proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = self._port_line.search(line)
            if m and not self.port:
                self.port = int(m.group(1))
                self._started.set()
        self._started.set()

    def wait_started(self, timeout: float = 120.0) -> int:
        if not self._started.wait(timeout) or not self.port:
            self.kill()
            raise AssertionError(f"{self.name} did not start: {''.join(self.lines)[-3000:]}")
        return self.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as when a host or a container dies."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(5)
        return self.proc.returncode


@dataclass
class ServerStat:
    name: str
    status: str
    """``UP``, ``DOWN`` (health checks failing), ``MAINT``..."""
    requests: int
    """Requests (HTTP) or connections (WebSocket tunnels too) HAProxy gave this server."""
    current: int
    """Sessions open to it now."""


@dataclass
class Haproxy:
    """HAProxy in front of ``backends`` (name → port on 127.0.0.1), started by
    :meth:`start`; ``port`` is the balancer's."""

    backends: dict[str, int]
    port: int = 0
    check_interval_ms: int = 500
    balance: str = "roundrobin"
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cardio-lb-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        """Round robin over the instances; a server is taken out after 3 failed checks of
        ``GET /health`` (``check_interval_ms`` apart) and back after 1. A check may take 5 s:
        without ``timeout check`` HAProxy allows only the interval, and on a machine whose
        cores were busy measuring faces every live instance looked dead at once (503 for
        all); with 2 s, a lone center instance at saturation (p99 3.5 s) was taken out and
        217 of 400 issuances got 503. A killed instance refuses the check's connection at
        once, so it is out after the 3 checks all the same. A connection that
        cannot be made is retried on another server (``option redispatch``): a request that
        never reached an instance is safe to send elsewhere; one that reached it and lost
        its answer is not, and is answered 502 (the kiosk decides what to do)."""
        inter = self.check_interval_ms
        servers = "\n".join(f"    server {name} 127.0.0.1:{port}"
                            for name, port in self.backends.items())
        return f"""global
    maxconn 8192
    stats socket {self.base}/admin.sock mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 180s
    timeout server 180s
    timeout tunnel 180s
    timeout check 5s
    timeout http-keep-alive 10s
    retries 3
    option redispatch

frontend services
    bind 127.0.0.1:{self.port}
    default_backend instances

backend instances
    balance {self.balance}
    option httpchk GET /health
    http-check expect status 200
    default-server check inter {inter}ms fastinter {inter // 2}ms downinter {inter}ms fall 3 rise 1
    http-response set-header X-Instance %s
{servers}
"""

    def start(self, timeout: float = 30.0) -> Haproxy:
        need_haproxy()
        self.port = self.port or free_port()
        cfg = self.base / "haproxy.cfg"
        cfg.write_text(self.config())
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", str(cfg)], capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(self.base / "haproxy.err", "wb"))  # noqa: SIM115
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("haproxy exited: " + self.stderr())
            try:
                if all(s.status == "UP" for s in self.servers()):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"haproxy's servers did not all come up: {self.servers()}"
                             f" {self.stderr()}")

    def stderr(self) -> str:
        path = self.base / "haproxy.err"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.base / "admin.sock"))
            s.sendall(line.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def servers(self) -> list[ServerStat]:
        text = self.command("show stat")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        head = lines[0].lstrip("# ").split(",")
        out = []
        for ln in lines[1:]:
            row = dict(zip(head, ln.split(","), strict=False))
            if row.get("pxname") == "instances" and row.get("svname") not in ("BACKEND",
                                                                              "FRONTEND"):
                out.append(ServerStat(row["svname"], row["status"].split()[0],
                                      int(row.get("stot") or 0), int(row.get("scur") or 0)))
        return out

    def wait_status(self, name: str, status: str, timeout: float = 10.0) -> float:
        """Seconds until HAProxy reports ``name`` as ``status``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if any(s.name == name and s.status == status for s in self.servers()):
                return time.monotonic() - started
            time.sleep(0.02)
        raise AssertionError(f"{name} not {status} after {timeout} s: {self.servers()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.base, ignore_errors=True)


def fresh_pg_database(url: str, name: str) -> str:
    """A database of its own on the tests' throw-away PostgreSQL server
    (``tests/facepin/pg.py``), dropped first if a previous run left it."""
    import psycopg

    db = "so_" + "".join(c for c in name.lower() if c.isalnum())[:40]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {db}")
    return url.replace("/postgres?", f"/{db}?")
