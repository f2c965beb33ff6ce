"""``cardio emu ca serve`` as a real process on loopback, stopped by SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from cardio import constants as c
from emulators.card import SoftwareCard
from tests.pki_env import PkiEnv, free_port


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


# -- issue 8, item 5: bounded requests; item 7: ports; item 1: the card registry -------------
def _post_head(path: str, *headers: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\n"
            + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


def test_body_limits_are_enforced_before_reading(pki: PkiEnv) -> None:
    from emulators.jpki_ca import MAX_REQUEST
    from tests.http_probe import exchange, status_of

    host, port = pki.server.httpd.server_address[:2]
    big = 8 << 20  # what a client would keep streaming if the server kept reading
    cases = {
        "negative length": (("Content-Length: -1",), 400),
        "non-numeric length": (("Content-Length: 12abc",), 400),
        "two lengths": (("Content-Length: 5", "Content-Length: 6"), 400),
        "missing length": ((), 411),
        "chunked": (("Transfer-Encoding: chunked",), 411),
        "oversized length": ((f"Content-Length: {MAX_REQUEST + 1}",), 413),
        "huge length": (("Content-Length: 99999999999999999999999999",), 413),
    }
    for name, (headers, want) in cases.items():
        answer = exchange(str(host), port, _post_head("/ocsp/auth", *headers), stream=big)
        assert status_of(answer) == want, (name, answer[:80])


def test_slow_body_is_cut_off(pki: PkiEnv) -> None:
    from emulators.jpki_ca import CaServer
    from tests.http_probe import status_of

    with CaServer(pki.authority, body_timeout=1.0) as server:
        host, port = server.httpd.server_address[:2]
        with socket.create_connection((str(host), port), timeout=10) as s:
            s.sendall(_post_head("/ocsp/auth", "Content-Length: 1000"))
            start = time.monotonic()
            answer = b""
            for _ in range(30):  # one byte every 0.1 s: never 1000 bytes within 1 s
                try:
                    s.sendall(b"x")
                except OSError:
                    break
                time.sleep(0.1)
            s.settimeout(5)
            with contextlib.suppress(OSError):
                answer = s.recv(4096)
        assert status_of(answer) == 408 and time.monotonic() - start < 4


def test_unknown_hash_oid_is_malformed_request_not_a_closed_connection(pki: PkiEnv) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp

    from cardio.pki import http_fetch, parse_ocsp_response

    path, _ = pki.new_card()
    cert = x509.load_der_x509_certificate(
        SoftwareCard.open(path).image.files[(c.AID_JPKI, c.JPKI_AUTH_CERT)])
    der = ocsp.OCSPRequestBuilder().add_certificate(cert, pki.jlis.auth_ca.cert,
                                                    hashes.SHA1()).build().public_bytes(
        serialization.Encoding.DER)
    sha1_oid = bytes.fromhex("06052b0e03021a")
    assert sha1_oid in der
    unknown = der.replace(sha1_oid, bytes.fromhex("06052b0e03021b"))  # 1.3.14.3.2.27
    for body in (unknown, der[:-3], der + b"\x00\x00"):
        raw = http_fetch(f"{pki.server.url}/ocsp/auth", body, "application/ocsp-request",
                         65536)
        with pytest.raises(Exception, match="MALFORMED_REQUEST"):
            parse_ocsp_response(raw)


@pytest.mark.parametrize("port", ["99999", "-1", "abc", "65536"])
def test_bad_port_is_a_one_line_usage_error(port: str, tmp_path: Path) -> None:
    env = {**os.environ, "CARDIO_JLIS_DIR": str(tmp_path / "jlis")}
    res = subprocess.run([sys.executable, "-m", "cardio.cli", "emu", "ca", "serve",
                          "--port", port], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "--port" in res.stderr and "Traceback" not in res.stderr


def test_card_registry(pki: PkiEnv) -> None:
    from cardio.pinreset import public_key_fingerprint
    from cardio.records import CardFace

    path, _ = pki.new_card()  # registers it
    image = SoftwareCard.open(path).image
    cert = x509.load_der_x509_certificate(image.files[(c.AID_JPKI, c.JPKI_AUTH_CERT)])
    face = CardFace.parse(image.files[(c.AID_VISUAL, c.VISUAL_FACE)])
    from cryptography.hazmat.primitives import hashes

    assert pki.authority.card_of(cert.fingerprint(hashes.SHA256()).hex()) == (
        image.meta["serial"], public_key_fingerprint(face.public_key))
    assert pki.authority.card_of("00" * 32) is None


@pytest.mark.slow
def test_server_memory_stays_bounded_under_hostile_bodies(tmp_path: Path) -> None:
    """The real ``cardio emu ca serve`` process, sent oversized, negative-length, chunked
    and slow bodies (bounded: up to 64 MB streamed per case, 40 slow connections for 3 s;
    ``CARDIO_FULL_SIZE=1``: 300 MB and 100):
    its resident memory must not grow by more than the bound. Before issue 8, one
    ``Content-Length: -1`` request streaming 64 MB grew it by about 64 MB."""
    from tests.http_probe import (
        HOSTILE_STREAM,
        SLOW_SENDERS,
        RssSampler,
        exchange,
        rss_kib,
        slow_sender,
        status_of,
    )

    env = {**os.environ, "CARDIO_JLIS_DIR": str(tmp_path / "jlis")}
    proc = subprocess.Popen([sys.executable, "-m", "cardio.cli", "emu", "ca", "serve",
                             "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" at ")[1].split(";")[0]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        assert status_of(exchange(host, int(port), b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                         ) == 200
        time.sleep(0.5)
        before = rss_kib(proc.pid)
        stream = HOSTILE_STREAM
        statuses: list[int] = []
        with RssSampler(proc.pid) as sampler:
            for headers in (("Content-Length: 1000000000",), ("Content-Length: -1",),
                            ("Transfer-Encoding: chunked",)):
                for _ in range(3):
                    statuses.append(status_of(exchange(host, int(port), _post_head(
                        "/ocsp/auth", *headers), stream=stream, timeout=15)))
            done = threading.Event()
            answers: list[int] = []
            slow = [slow_sender(host, int(port), _post_head(
                "/ocsp/auth", "Content-Length: 60000"), 3.0, done, answers)
                for _ in range(SLOW_SENDERS)]
            time.sleep(1.5)
            # Every slot is held: idle probe connections (sending nothing, so the server's
            # answer is not lost to a reset) get 503 at once, up to a free slot or two.
            probes = [socket.create_connection((host, int(port)), timeout=2)
                      for _ in range(4)]
            probe_answers = []
            for p in probes:
                with p:
                    try:
                        probe_answers.append(p.recv(100))
                    except OSError:
                        probe_answers.append(b"")
            for t in slow:
                t.join(10)
            done.set()
        time.sleep(0.5)
        after = rss_kib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    print(f"\nCA server RSS: before {before} KiB, peak {sampler.peak} KiB"
          f" (+{sampler.peak - before}), after {after} KiB (+{after - before})")
    assert statuses == [413] * 3 + [400] * 3 + [411] * 3
    # At most MAX_CONNECTIONS (32) connections are served; the others get 503 at once.
    assert len(answers) == SLOW_SENDERS
    assert any(status_of(a) == 503 for a in probe_answers), probe_answers
    bound = 16 * 1024  # KiB: 32 connection threads × (64 KiB body + stack in use) and slack
    assert sampler.peak - before < bound and after - before < bound


def test_revoking_another_jlis_card_is_refused(pki: PkiEnv, tmp_path: Path,
                                               key_pool: object) -> None:
    """`cardio emu ca revoke CARD --jlis OTHER` used to "revoke" the serial in a hierarchy
    that never issued the card: exit 0, yet the card's own CA still answered "good"."""
    from emulators.card import JlisHierarchy
    from emulators.jpki_ca import CaError, JpkiAuthority

    path, _profile = pki.new_card()
    other = JpkiAuthority(JlisHierarchy.load_or_create(tmp_path / "other",
                                                       keys=key_pool))  # type: ignore[arg-type]
    with pytest.raises(CaError, match="was not issued by the emulated J-LIS"):
        other.revoke_card(path, "auth")
    assert other.revocations("auth") == []
    assert pki.authority.revoke_card(path, "auth").serial  # its own J-LIS still can


def test_an_idle_kept_alive_connection_is_closed_after_two_seconds(pki: PkiEnv) -> None:
    """HTTP/1.1: two requests on one connection; left idle, the connection (and the slot
    it holds among the server's bounded connections) is given back after KEEP_ALIVE_IDLE."""
    import socket

    from emulators.jpki_ca import KEEP_ALIVE_IDLE

    host, port = pki.server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        for _ in range(2):
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while not got.endswith(b"ok\n"):
                chunk = s.recv(4096)
                assert chunk, got
                got += chunk
            assert got.startswith(b"HTTP/1.1 200") and b"Connection: close" not in got
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed by the server
        assert KEEP_ALIVE_IDLE - 0.5 < time.monotonic() - t0 < KEEP_ALIVE_IDLE + 2
