"""Scale-out of the issuance center (issue 28, item 2): 1, 2 and 4 center instances behind
HAProxy on one PostgreSQL, against 1 instance without the balancer, end to end (open →
authenticate with a fresh OCSP check → menu → document → finalize, real JPKI signatures by
software cards), and what one issuance costs the PostgreSQL primary.

Every instance, the balancer, the database and the load generator share this machine's
cores, so more instances cannot mean more cores: the honest figure is the ratio against
one instance without a balancer (what the balancer and the extra processes cost, and
whether anything serialises), not a speed-up. What does carry over to a real deployment
is the database's share per issuance — commits, statements (``pg_stat_statements``, loaded
for this throw-away server) and server CPU — and from it, how far one primary goes at the
national peak (~15 issuances/s, ``reference/kiosk-domain.md`` §1.5).

    .venv/bin/python bench/scaleout_bench.py [--instances 1,2,4] [--kiosks 32]
        [--issuances 600]

The instances are the center's app as uvicorn runs it (``emulators.issuance.server
:app_from_env``), each its own process and port; ``issuance serve`` sets the world up and
keeps the JPKI CA (OCSP/CRL) running; HAProxy (Debian's) balances round robin with health
checks on ``/health`` (``tests/scaleout.py``). Prints figures; never fails for being slow.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import glob
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from issuance_bench import ARGV, cpu_seconds, opening_clock, process_cpu  # noqa: E402

from emulators.card import JlisHierarchy  # noqa: E402
from emulators.card.images import photo_jp2  # noqa: E402
from emulators.card.keys import KeyPool  # noqa: E402
from emulators.issuance.db import Database  # noqa: E402
from emulators.issuance.fleet import Card, FleetResult, run_fleet  # noqa: E402
from emulators.issuance.operator import issue_card  # noqa: E402
from emulators.issuance.server import ENV, SERVER_OPTIONS  # noqa: E402
from kiosk.center_client import KioskCredentials  # noqa: E402
from tests.scaleout import HAPROXY, Haproxy, Process  # noqa: E402

PEAK = 15.0
"""Issuances per second at the national peak (reference/kiosk-domain.md §1.5)."""


def start_postgres(base: Path) -> tuple[str, list[str], Path]:
    """A throw-away server on a Unix socket with ``pg_stat_statements`` loaded; (URL, the
    command that stops it, its data directory)."""
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
                    "-o", f"-k {pg} -c listen_addresses='' -F -c max_connections=200"
                    " -c shared_preload_libraries=pg_stat_statements"
                    " -c pg_stat_statements.track=all",
                    "start"], check=True, capture_output=True, timeout=120)
    stop = [*wrap, f"{bindir}/pg_ctl", "-D", str(data), "-m", "fast", "stop"]
    url = f"postgresql://cardio@/postgres?host={pg}"
    import psycopg

    # Where the extension is not installed, commits and server CPU are still counted.
    with psycopg.connect(url, autocommit=True) as c, contextlib.suppress(psycopg.Error):
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return url, stop, data


@dataclasses.dataclass
class DbCounters:
    commits: int
    rollbacks: int
    statements: int
    """Statements executed (pg_stat_statements' calls, the bench's own queries left out)."""
    cpu: float


def db_counters(url: str, data: Path) -> DbCounters:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SELECT pg_stat_clear_snapshot()")
        row = c.execute("SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE"
                        " datname = current_database()").fetchone()
        try:
            calls = c.execute("SELECT COALESCE(SUM(calls), 0) FROM pg_stat_statements WHERE"
                              " query NOT ILIKE '%pg_stat%'").fetchone()
        except psycopg.Error:  # pg_stat_statements is not available
            calls = (-1,)
    assert row is not None and calls is not None
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        cpu = cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        cpu = 0.0
    return DbCounters(int(row[0]), int(row[1]), int(calls[0]), cpu)


def center_instance(name: str, db_url: str, jlis: Path, now: str) -> Process:
    env = {"db": db_url, "trust": str(jlis), "now": now, "wall_start": time.time(),
           "log_level": "warning"}
    return Process(name, [sys.executable, "-m", "uvicorn",
                          "emulators.issuance.server:app_from_env", "--factory",
                          "--host", "127.0.0.1", "--port", "0", "--log-level", "info",
                          "--no-access-log", "--http", SERVER_OPTIONS["http"],
                          "--loop", SERVER_OPTIONS["loop"]],
                   {ENV: json.dumps(env), "CARDIO_JLIS_DIR": str(jlis)})


@dataclasses.dataclass
class Row:
    label: str
    result: FleetResult
    per_issuance_ms: dict[str, float]
    commits: float
    statements: float


def run_config(label: str, n_instances: int, balanced: bool, ctx: dict[str, Any],
               args: argparse.Namespace) -> Row:
    instances = [center_instance(f"center-{i}", ctx["url"], ctx["jlis"], ctx["now"])
                 for i in range(n_instances)]
    lb: Haproxy | None = None
    try:
        for p in instances:
            p.wait_started()
        if balanced:
            lb = Haproxy({f"c{i}": p.port for i, p in enumerate(instances)}).start()
        target = lb.url if lb is not None else instances[0].url
        kiosks = [dataclasses.replace(k, center_url=target) for k in ctx["kiosks"]]
        asyncio.run(run_fleet(kiosks, ctx["cards"], min(60, args.issuances)))  # warm-up
        before = db_counters(ctx["url"], ctx["data"])
        inst0 = sum(process_cpu(p.proc.pid) for p in instances)
        lb0 = process_cpu(lb.proc.pid) if lb is not None and lb.proc is not None else 0.0
        ca0 = process_cpu(ctx["serve"].pid)
        gen0 = time.process_time()
        result = asyncio.run(run_fleet(kiosks, ctx["cards"], args.issuances))
        gen = time.process_time() - gen0
        after = db_counters(ctx["url"], ctx["data"])
        n = max(1, len(result.outcomes))
        per = {"center instances": (sum(process_cpu(p.proc.pid) for p in instances) - inst0),
               "HAProxy": ((process_cpu(lb.proc.pid) if lb is not None and lb.proc is not None
                            else 0.0) - lb0),
               "JPKI CA (OCSP)": process_cpu(ctx["serve"].pid) - ca0,
               "PostgreSQL server": after.cpu - before.cpu,
               "load generator": gen}
        return Row(label, result, {k: v / n * 1000 for k, v in per.items()},
                   (after.commits - before.commits) / n,
                   (after.statements - before.statements) / n)
    finally:
        if lb is not None:
            lb.stop()
        for p in instances:
            p.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", default="1,2,4", help="instance counts behind HAProxy")
    ap.add_argument("--kiosks", type=int, default=32)
    ap.add_argument("--issuances", type=int, default=600)
    ap.add_argument("--residents", type=int, default=2000)
    args = ap.parse_args()
    if not os.path.exists(HAPROXY):
        raise SystemExit("HAProxy is not installed (bash scripts/setup.sh installs it)")
    counts = [int(x) for x in args.instances.split(",") if x.strip()]
    base = Path(tempfile.mkdtemp(prefix="cardio-scaleout-bench-"))
    os.chmod(base, 0o755)  # the PostgreSQL server runs as its own user
    shm = Path("/dev/shm")
    card_base = Path(tempfile.mkdtemp(prefix="cardio-bench-cards-",
                                      dir=shm if shm.is_dir() else base))
    stop_pg: list[str] | None = None
    serve: subprocess.Popen[bytes] | None = None
    try:
        url, stop_pg, data = start_postgres(base)
        pool, photo = KeyPool(10), photo_jp2()
        jlis = base / "jlis"
        JlisHierarchy.load_or_create(jlis, keys=pool)
        env = {**os.environ, "CARDIO_JLIS_DIR": str(jlis)}
        subprocess.run([*ARGV, "seed", "--db", url, "--residents", str(args.residents)],
                       env=env, check=True, capture_output=True, timeout=300)
        serve = subprocess.Popen([*ARGV, "serve", "--json", "--db", url, "--workers", "1",
                                  "--kiosks", str(args.kiosks), "--now",
                                  opening_clock().isoformat()],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        assert serve.stdout is not None
        select.select([serve.stdout], [], [], 120)
        info = json.loads(serve.stdout.readline())
        db = Database(url, create=False)
        cards = []
        try:
            for i in range(args.kiosks):
                out = issue_card(db, jlis, card_base / f"card{i}", None, keys=pool,
                                 photo=photo)
                cards.append(Card(card_base / f"card{i}", out["auth_pin"],
                                  out["resident_id"]))
        finally:
            db.close()
        kiosks = [KioskCredentials.load(Path(info["kiosks_dir"]) / f"kiosk-{i:04d}")
                  for i in range(1, args.kiosks + 1)]
        ctx = {"url": url, "data": data, "jlis": jlis, "now": info["now"], "cards": cards,
               "kiosks": kiosks, "serve": serve}
        rows = [run_config("1 instance, no balancer", 1, False, ctx, args)]
        rows += [run_config(f"{n} instance{'s' if n > 1 else ''} behind HAProxy", n, True,
                            ctx, args) for n in counts]
        report(rows, args)
    finally:
        if serve is not None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(60)
            except subprocess.TimeoutExpired:
                serve.kill()
        if stop_pg:
            subprocess.run(stop_pg, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(card_base, ignore_errors=True)


def report(rows: list[Row], args: argparse.Namespace) -> None:
    base = rows[0].result.rate or float("nan")
    print(f"\nissuance center on one PostgreSQL, {args.kiosks} kiosks, {args.issuances}"
          f" issuances per configuration, {os.cpu_count()} cores shared by everything")
    print(f"  {'configuration':<28} {'issuances/s':>11} {'ratio':>6} {'p50 ms':>7}"
          f" {'p99 ms':>7} {'errors':>6} {'commits':>8} {'stmts':>6}  (per issuance)")
    for r in rows:
        res = r.result
        print(f"  {r.label:<28} {res.rate:11.1f} {res.rate / base:6.2f}"
              f" {res.latency(0.5) * 1000:7.0f} {res.latency(0.99) * 1000:7.0f}"
              f" {len(res.errors):6d} {r.commits:8.1f} {r.statements:6.1f}")
    for r in rows:
        if r.result.errors:
            kinds = Counter(e.split(":")[0] for e in r.result.errors)
            print(f"    errors of '{r.label}': {dict(kinds)}; first: {r.result.errors[0]}")
    print("  CPU per issuance (ms):")
    parts = list(rows[0].per_issuance_ms)
    print(f"    {'configuration':<28} " + " ".join(f"{p[:18]:>18}" for p in parts)
          + f" {'total':>7}")
    for r in rows:
        print(f"    {r.label:<28} " + " ".join(f"{r.per_issuance_ms[p]:18.1f}" for p in parts)
              + f" {sum(r.per_issuance_ms.values()):7.1f}")
    # The wall-clock rate moves with whatever else the machine runs; the CPU an issuance
    # costs does much less, and says what the same two cores would give if dedicated.
    cpu0 = sum(rows[0].per_issuance_ms.values())
    print("  what the CPU per issuance implies on 2 dedicated cores (2000 ms / total):")
    for r in rows:
        total = sum(r.per_issuance_ms.values())
        print(f"    {r.label:<28} {2000 / total:6.0f} issuances/s  ratio {cpu0 / total:.2f}")
    pg_ms = sum(r.per_issuance_ms["PostgreSQL server"] for r in rows) / len(rows)
    commits = sum(r.commits for r in rows) / len(rows)
    stmts = sum(r.statements for r in rows) / len(rows)
    print(f"\none PostgreSQL primary: {commits:.1f} commits and {stmts:.1f} statements per"
          f" issuance, {pg_ms:.1f} ms of server CPU (this machine, fsync off: -F)")
    print(f"  at the national peak ({PEAK:.0f} issuances/s): {commits * PEAK:.0f} commits/s,"
          f" {stmts * PEAK:.0f} statements/s, {pg_ms * PEAK / 1000:.2f} of a core;"
          f" one core of the primary's CPU alone would carry ~{1000 / pg_ms:.0f} issuances/s"
          f" (x{1000 / pg_ms / PEAK:.0f} the peak) before commit latency (fsync, replicas)"
          " is counted")


if __name__ == "__main__":
    main()
