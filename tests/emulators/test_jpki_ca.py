"""``cardio emu ca serve`` as a real process on loopback, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509

from tests.pki_env import free_port


def test_ca_serve_process(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "CARDIO_JLIS_DIR": str(tmp_path / "jlis")}
    proc = subprocess.Popen([sys.executable, "-m", "cardio.cli", "emu", "ca", "serve",
                             "--port", str(port)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        body = b""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            try:
                with opener.open(f"http://127.0.0.1:{port}/crl/auth.crl", timeout=2) as r:
                    body = r.read()
                break
            except OSError:
                time.sleep(0.1)
        crl = x509.load_der_x509_crl(body)
        assert "JPKI for user authentication" in crl.issuer.rfc4514_string()
        with opener.open(f"http://127.0.0.1:{port}/nope", timeout=2) as r:
            raise AssertionError(f"expected 404, got {r.status}")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "stopped" in out
