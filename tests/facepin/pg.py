"""A throw-away PostgreSQL server on a Unix socket in a temporary directory (no TCP at
all), for the storage tests. Skips when the server binaries are not installed."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL server binaries are not installed")
    bindir = os.path.dirname(found[-1])
    base = tempfile.mkdtemp(prefix="cardio-pg-")
    os.chmod(base, 0o755)
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no postgres system user to run the server as")
        os.chown(base, pw.pw_uid, pw.pw_gid)
    data = os.path.join(base, "data")
    run = lambda *c: subprocess.run(_as_postgres(list(c)), check=True,  # noqa: E731
                                    capture_output=True, timeout=120)
    run(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "cardio", "--no-sync")
    run(f"{bindir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(base, "log"), "-o",
        f"-k {base} -c listen_addresses='' -F", "start")
    try:
        yield f"postgresql://cardio@/postgres?host={base}"
    finally:
        subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
