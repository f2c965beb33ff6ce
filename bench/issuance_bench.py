"""Issuance back end, end to end: issuances/s and p50/p99 latency of open → authenticate →
menu → request → finalize over real HTTP, with real JPKI signatures by software cards and a
fresh OCSP check per authentication, against ``issuance serve`` with N workers on SQLite
and on PostgreSQL (a throw-away server on a Unix socket); the load generator runs on the
same machine.

Besides wall-clock figures (which depend on what else the shared machine runs), it prints
the CPU time each part spends per issuance — server workers, the serve parent (the JPKI
CA's OCSP responder), the load generator (cards and kiosk client) — and the rate those
imply on two dedicated cores. Baseline in the same process: the plain HTTP round trip
(``/health``) at the same concurrency.

    .venv/bin/python bench/issuance_bench.py [--db sqlite|postgresql|both] [--workers 4]
        [--kiosks 50] [--issuances 1000] [--profile]

With PostgreSQL the CPU of the database server (postmaster and backends) is counted too:
it shares the cores. The simulated kiosks speak through the lean HTTP/1.1 client of
``emulators.issuance.http11`` (httpx would cost the load generator a millisecond of CPU
per request, as much as the center spends serving it).

``--profile`` profiles the workers (cProfile) and prints where one of them spends its time.
Prints figures; never fails for being slow.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import glob
import json
import os
import pstats
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emulators.card import JlisHierarchy  # noqa: E402
from emulators.card.images import photo_jp2  # noqa: E402
from emulators.card.keys import KeyPool  # noqa: E402
from emulators.issuance.db import Database  # noqa: E402
from emulators.issuance.fleet import Card, run_fleet  # noqa: E402
from emulators.issuance.http11 import Http11Client  # noqa: E402
from emulators.issuance.operator import issue_card  # noqa: E402
from emulators.issuance.rules import JST, Settings, closed_reason  # noqa: E402
from emulators.kiosk_demo import service_clock  # noqa: E402
from kiosk.center_client import KioskCredentials  # noqa: E402
from kiosk.documents.model import DocumentType  # noqa: E402

ARGV = [sys.executable, "-m", "cardio.cli", "emu", "issuance"]
TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """utime+stime of one process (from /proc); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process and its live children (from /proc)."""
    try:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        kids = []
    return sum(process_cpu(p) for p in [pid, *kids])


def worker_cpu(pid: int) -> tuple[float, float]:
    """(serve parent, all workers) CPU seconds."""
    own = process_cpu(pid)
    return own, cpu_seconds(pid) - own


def postgres_cpu(base: Path) -> float:
    """CPU seconds of the PostgreSQL server (postmaster and its backends): on this machine
    the database shares the two cores with the services and the load generator."""
    pidfile = base / "pg" / "data" / "postmaster.pid"
    try:
        return cpu_seconds(int(pidfile.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return 0.0


def start_postgres(base: Path) -> tuple[str, list[str]]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise SystemExit("PostgreSQL server binaries are not installed")
    bindir = os.path.dirname(found[-1])
    pg = base / "pg"
    pg.mkdir()
    os.chmod(pg, 0o755)
    wrap: list[str] = []
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(pg, pw.pw_uid, pw.pw_gid)
        wrap = ["runuser", "-u", "postgres", "--"]
    data = pg / "data"
    subprocess.run([*wrap, f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "cardio",
                    "--no-sync"], check=True, capture_output=True, timeout=120)
    subprocess.run([*wrap, f"{bindir}/pg_ctl", "-D", str(data), "-w", "-l", str(pg / "log"),
                    "-o", f"-k {pg} -c listen_addresses='' -F -c max_connections=200",
                    "start"], check=True, capture_output=True, timeout=120)
    stop = [*wrap, f"{bindir}/pg_ctl", "-D", str(data), "-m", "fast", "stop"]
    return f"postgresql://cardio@/postgres?host={pg}", stop


def opening_clock() -> dt.datetime:
    """The services' clock for the run: outside service hours (6:30-23:00 JST, closed at
    the year end) every issuance would be refused ``outside_hours``, which measures
    nothing; so the clock starts at the next opening, as the demo's does."""
    settings = Settings(fees={})
    start, _ = service_clock(dt.datetime.now(JST), lambda when: closed_reason(
        settings, DocumentType.JUMINHYO, when) is not None)
    return start or dt.datetime.now(JST)


def run_one(backend: str, args: argparse.Namespace, pool: KeyPool, photo: bytes) -> None:
    base = Path(tempfile.mkdtemp(prefix="cardio-issuance-bench-"))
    os.chmod(base, 0o755)  # the PostgreSQL server runs as its own user
    stop_pg: list[str] | None = None
    proc = None
    card_base: Path | None = None
    try:
        if backend == "postgresql":
            url, stop_pg = start_postgres(base)
        else:
            url = f"sqlite:///{base / 'issuance.db'}"
        jlis = base / "jlis"
        JlisHierarchy.load_or_create(jlis, keys=pool)
        env = {**os.environ, "CARDIO_JLIS_DIR": str(jlis)}
        if args.profile:
            (base / "prof").mkdir()
            env["CARDIO_ISSUANCE_PROFILE"] = str(base / "prof")
        t = time.perf_counter()
        subprocess.run([*ARGV, "seed", "--db", url, "--residents", str(args.residents)],
                       env=env, check=True, capture_output=True, timeout=300)
        seed_s = time.perf_counter() - t
        proc = subprocess.Popen([*ARGV, "serve", "--json", "--db", url, "--workers",
                                 str(args.workers), "--kiosks", str(args.kiosks),
                                 "--now", args.now],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        assert proc.stdout is not None
        select.select([proc.stdout], [], [], 120)
        info = json.loads(proc.stdout.readline())
        db = Database(url, create=False)
        # Cards on tmpfs when there is one: a software card makes its retry counter
        # durable (fsync) on every VERIFY, as a card's EEPROM would; that is the card's
        # cost, not the back end's.
        shm = Path("/dev/shm")
        card_base = Path(tempfile.mkdtemp(prefix="cardio-bench-cards-",
                                          dir=shm if shm.is_dir() else base))
        cards = []
        for i in range(args.kiosks):
            out = issue_card(db, jlis, card_base / f"card{i}", None, keys=pool, photo=photo)
            cards.append(Card(card_base / f"card{i}", out["auth_pin"], out["resident_id"]))
        kiosks = [KioskCredentials.load(Path(info["kiosks_dir"]) / f"kiosk-{i:04d}")
                  for i in range(1, args.kiosks + 1)]
        asyncio.run(run_fleet(kiosks, cards, min(50, args.issuances)))  # warm-up

        async def health(n: int) -> float:
            """GET /health from as many kept-alive clients as there are kiosks, through
            the same lean client the kiosks use: the plain HTTP round trip."""
            clients = [Http11Client(info["center"]) for _ in range(args.kiosks)]
            left = [n]

            async def loop(c: Http11Client) -> None:
                while left[0] > 0:
                    left[0] -= 1
                    await c.get("/health")

            t0 = time.perf_counter()
            await asyncio.gather(*(loop(c) for c in clients))
            rate = n / (time.perf_counter() - t0)
            for c in clients:
                await c.aclose()
            return rate

        floor = asyncio.run(health(2000))
        own0, workers0 = worker_cpu(proc.pid)
        pg0 = postgres_cpu(base)
        gen0 = time.process_time()
        result = asyncio.run(run_fleet(kiosks, cards, args.issuances))
        gen = time.process_time() - gen0
        own1, workers1 = worker_cpu(proc.pid)
        pg1 = postgres_cpu(base)
        n = len(result.outcomes)
        if n == 0:
            print(f"\n== {backend}: no issuance succeeded ({len(result.errors)} errors, first:"
                  f" {result.errors[:1]}); nothing to measure (is the services' clock"
                  f" {args.now} inside service hours?)")
            return
        per = {"server workers": (workers1 - workers0) / n * 1000,
               "serve parent (JPKI OCSP/CRL)": (own1 - own0) / n * 1000,
               "load generator (cards, kiosk client)": gen / n * 1000}
        if backend == "postgresql":
            per["PostgreSQL server"] = (pg1 - pg0) / n * 1000
        total_ms = sum(per.values())
        print(f"\n== {backend}, {args.workers} workers, {args.kiosks} kiosks, {n} issuances"
              f" ({len(result.errors)} errors); seeded {args.residents} residents in"
              f" {seed_s:.1f} s")
        print(f"  end to end: {result.rate:.1f} issuances/s, p50"
              f" {result.latency(0.5) * 1000:.0f} ms, p99 {result.latency(0.99) * 1000:.0f} ms")
        print(f"  baseline: GET /health {floor:.0f}/s at the same concurrency;"
              f" ratio issuance/health-request {result.rate / floor:.3f}")
        print("  CPU per issuance:")
        for k, v in per.items():
            print(f"    {k:<40} {v:7.1f} ms  ({v / total_ms:5.1%})")
        print(f"    {'total':<40} {total_ms:7.1f} ms -> {2000 / total_ms:.0f} issuances/s on"
              " two dedicated cores")
        load = os.getloadavg()
        print(f"  machine load average during the run: {load[0]:.1f} (2 cores)")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.profile:
            stats = sorted(glob.glob(str(base / "prof" / "*.pstats")))
            if stats:
                print(f"  profile of one worker ({Path(stats[0]).name}), top by own time:")
                st = pstats.Stats(stats[0])
                st.sort_stats("tottime").print_stats(18)
                st.sort_stats("cumulative").print_stats(25)
        if stop_pg:
            subprocess.run(stop_pg, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
        if card_base is not None:
            shutil.rmtree(card_base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--kiosks", type=int, default=50)
    ap.add_argument("--issuances", type=int, default=1000)
    ap.add_argument("--residents", type=int, default=5000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--now", default=None,
                    help="start the services' clock at this ISO time (default: now if the"
                         " service is open, else the next day it opens, at 10:00 JST)")
    args = ap.parse_args()
    if args.now is None:
        args.now = opening_clock().isoformat()
    pool, photo = KeyPool(10), photo_jp2()
    for backend in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
        run_one(backend, args, pool, photo)


if __name__ == "__main__":
    main()
