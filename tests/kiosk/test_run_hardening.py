"""Core dumps keep no certificate (review of issue 22, finding 4): ``kiosk run``, ``kiosk
issue`` and ``facepin serve`` make their process non-dumpable with ``RLIMIT_CORE`` 0 before
anything else, so a SIGQUIT under ``ulimit -c unlimited`` leaves no core file.

Each command runs through the real ``cardio`` entry point in a process of its own; the
first step after the hardening (config loading, argument parsing) is replaced by a probe
that reports the process's limits and, on request, sends itself SIGQUIT."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="prctl(PR_SET_DUMPABLE) is Linux")

PROBE = """
import json, os, resource, signal, sys
from cardio.cli.host import main
from cardio.hardening import is_dumpable
import facepin.cli, kiosk.run, kiosk.runner_cli

def probe(*_args, **_kw):
    print(json.dumps({"core": resource.getrlimit(resource.RLIMIT_CORE),
                      "dumpable": is_dumpable()}), flush=True)
    if os.environ.get("PROBE_QUIT"):
        os.kill(os.getpid(), signal.SIGQUIT)
    raise SystemExit(0)

kiosk.run.load_run_config = probe       # kiosk run: the step after the hardening
kiosk.runner_cli._yen_list = probe      # kiosk issue
facepin.cli.port_number = probe         # facepin serve
if os.environ.get("PROBE_UNHARDENED"):  # the control: a core file is written here
    kiosk.run.no_core_dumps = lambda: None
sys.exit(main(sys.argv[1:]))
"""

COMMANDS = {
    "kiosk run": ["kiosk", "run", "--config", "kiosk.toml"],
    "kiosk issue": ["kiosk", "issue", "--reader", "emu:card", "--center", "http://127.0.0.1:9",
                    "--document", "juminhyo", "--pin-env", "PIN", "--insert", "1000",
                    "--journal", "j.db", "--devices", "devices.toml"],
    "facepin serve": ["facepin", "serve", "--port", "0"],
}


def _unlimited_cores() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def _run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, text=True,
                          capture_output=True, timeout=120, preexec_fn=_unlimited_cores,
                          env={**os.environ, **env})


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_command_runs_without_core_dumps(command: str, tmp_path: Path) -> None:
    res = _run(COMMANDS[command], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.splitlines()[-1])
    assert report == {"core": [0, 0], "dumpable": False}


def _cores(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name == "core" or p.name.startswith("core.")]


def test_sigquit_leaves_no_core_file(tmp_path: Path) -> None:
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"cores go to {pattern!r} here, not to the working directory")
    control, hardened = tmp_path / "control", tmp_path / "hardened"
    control.mkdir()
    hardened.mkdir()
    res = _run(COMMANDS["kiosk run"], control, PROBE_QUIT="1", PROBE_UNHARDENED="1")
    assert res.returncode == -signal.SIGQUIT, res.stderr[-2000:]
    if not _cores(control):
        pytest.skip("this machine writes no core file even unhardened (a container's"
                    " kernel settings): nothing to compare")
    res = _run(COMMANDS["kiosk run"], hardened, PROBE_QUIT="1")
    assert res.returncode == -signal.SIGQUIT, res.stderr[-2000:]
    assert json.loads(res.stdout.splitlines()[-1])["core"] == [0, 0]
    assert _cores(hardened) == []
