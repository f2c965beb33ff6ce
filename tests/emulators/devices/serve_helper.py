"""How tests start the emulated peripherals as a process: ``cardio emu devices serve`` run
by the interpreter under test (the one place the argv prefix lives)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

SERVE_ARGV = [sys.executable, "-m", "cardio.cli", "emu", "devices", "serve"]


def start_serve(*args: str, timeout: float = 30.0) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``serve --json`` and return the process with its one ready line, parsed."""
    proc = subprocess.Popen([*SERVE_ARGV, "--json", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        _, err = proc.communicate(timeout=timeout)
        raise AssertionError(f"serve did not start: {err[-2000:]}")
    return proc, json.loads(line)
