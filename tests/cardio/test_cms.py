"""Detached CMS signatures made by the card: our verifier, openssl's, and tampering."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cardio.card import MyNumberCard
from cardio.cms import CmsError, parse, sign_detached, verify_detached
from cardio.jpki import JpkiApplication
from cardio.pki import CertificateValidator, Status
from cardio.transport import InProcessTransport
from emulators.card import SoftwareCard
from tests.pki_env import PkiEnv


def card_sign(path: Path, password: str, content: bytes, include_ca: bool = False) -> bytes:
    jpki = JpkiApplication(MyNumberCard(InProcessTransport(SoftwareCard.open(path))))
    jpki.verify_pin("sign", password)
    extra = (jpki.certificate_der("sign-ca"),) if include_ca else ()
    return sign_detached(content, jpki.certificate_der("sign"),
                         lambda di: jpki.sign_digest_info("sign", di), extra)


def test_sign_and_verify(pki: PkiEnv) -> None:
    path, profile = pki.new_card()
    content = "請求書 No. 42\n".encode()
    p7s = card_sign(path, profile.sign_password, content, include_ca=True)
    sig = verify_detached(p7s, content)
    assert sig.signing_time is not None and len(sig.certificates) == 2
    assert CertificateValidator(pki.trust).validate(sig.signer).status is Status.VALID
    with pytest.raises(CmsError, match="does not match"):
        verify_detached(p7s, content + b"x")
    tampered = bytearray(p7s)
    tampered[-5] ^= 0xFF  # inside the signature value
    with pytest.raises(CmsError, match="does not verify"):
        verify_detached(bytes(tampered), content)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")
def test_openssl_cms_verify_accepts_it(pki: PkiEnv, tmp_path: Path) -> None:
    path, profile = pki.new_card()
    doc = tmp_path / "doc.txt"
    doc.write_bytes(b"A contract signed with a software My Number card.\n")
    env = {**os.environ, "SP": profile.sign_password}
    res = subprocess.run([sys.executable, "-m", "cardio.cli", "--reader", f"emu:{path}", "jpki",
                          "cms", "sign", "--in", str(doc), "--out", str(tmp_path / "doc.p7s"),
                          "--pin-env", "SP"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    cmd = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in",
           str(tmp_path / "doc.p7s"), "-content", str(doc), "-CAfile",
           str(pki.roots / "sign-ca.pem"), "-purpose", "any", "-out", os.devnull]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "Verification successful" in res.stderr, res.stderr
    doc.write_bytes(b"changed")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    doc.write_bytes(b"A contract signed with a software My Number card.\n")
    res = subprocess.run([sys.executable, "-m", "cardio.cli", "jpki", "cms", "verify", "--in",
                          str(doc), "--sig", str(tmp_path / "doc.p7s"), "--trust",
                          str(pki.roots), "--json"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    pki.authority.revoke_card(path, "sign", "key_compromise")
    res = subprocess.run([sys.executable, "-m", "cardio.cli", "jpki", "cms", "verify", "--in",
                          str(doc), "--sig", str(tmp_path / "doc.p7s"), "--trust",
                          str(pki.roots)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 6 and "revoked" in res.stdout


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_parse_never_crashes(raw: bytes) -> None:
    with contextlib.suppress(CmsError):
        parse(raw)


def test_oversized_and_garbage() -> None:
    with pytest.raises(CmsError):
        parse(b"\x30" * (2 * 1024 * 1024))
    with pytest.raises(CmsError):
        verify_detached(b"\x30\x03\x02\x01\x01", b"")


@pytest.fixture(scope="module")
def signed(pki: PkiEnv) -> bytes:
    path, profile = pki.new_card()
    return card_sign(path, profile.sign_password, b"fuzz me")


@settings(max_examples=200, deadline=None,
          suppress_health_check=[__import__("hypothesis").HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), flips=st.integers(1, 6))
def test_fuzz_mutated_signatures(signed: bytes, seed: int, flips: int) -> None:
    import random

    rng = random.Random(seed)
    data = bytearray(signed)
    for _ in range(flips):
        data[rng.randrange(len(data))] = rng.randrange(256)
    with contextlib.suppress(CmsError):
        verify_detached(bytes(data), b"fuzz me")


def test_at_signing_time_says_loudly_that_the_time_is_the_signers_claim(
        pki: PkiEnv, tmp_path: Path) -> None:
    """Issue 8, item 8b: with --at-signing-time the certificate is checked at a time the
    signer claims; a key-compromise revocation after that claimed time does not show, and
    the output must say so (there is no timestamp token yet)."""
    import json

    path, profile = pki.new_card()
    content = b"contract"
    (tmp_path / "c.txt").write_bytes(content)
    (tmp_path / "c.p7s").write_bytes(card_sign(path, profile.sign_password, content))
    pki.authority.revoke_card(path, "sign", "key_compromise")

    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cardio.cli", "jpki", "cms", "verify",
                               "--in", str(tmp_path / "c.txt"), "--sig", str(tmp_path / "c.p7s"),
                               "--trust", str(pki.roots), "--json", *extra],
                              capture_output=True, text=True, timeout=60)

    now = verify()
    assert now.returncode == 6 and json.loads(now.stdout)["certificate"]["status"] == "revoked"
    assert json.loads(now.stdout)["time_source"].startswith("now")
    claimed = verify("--at-signing-time")
    out = json.loads(claimed.stdout)
    assert out["time_source"] == "signingTime (unauthenticated, claimed by the signer)"
    assert out["warnings"] and "backdate" in out["warnings"][0]
    assert "warning" in claimed.stderr and "compromised key" in claimed.stderr
    helptext = subprocess.run([sys.executable, "-m", "cardio.cli", "jpki", "cms", "verify",
                               "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "WARNING" in helptext and "not authenticated" in " ".join(helptext.split())
