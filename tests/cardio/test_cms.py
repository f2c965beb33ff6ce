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


# -- issue 15: asn1crypto models, attached signatures, a mutation corpus --------------------
CMS_MUTANTS = 10_000 if os.environ.get("CARDIO_CMS_FULL") == "1" else 400
"""Mutated SignedData per corpus: 400 in CI, 10,000 with CARDIO_CMS_FULL=1."""


def card_sign_attached(path: Path, password: str, content: bytes) -> bytes:
    from cardio.cms import sign_attached

    jpki = JpkiApplication(MyNumberCard(InProcessTransport(SoftwareCard.open(path))))
    jpki.verify_pin("sign", password)
    return sign_attached(content, jpki.certificate_der("sign"),
                         lambda di: jpki.sign_digest_info("sign", di),
                         (jpki.certificate_der("sign-ca"),))


def test_cms_module_has_no_der_encoder() -> None:
    """The hand-written encoder is gone: cms.py builds through asn1crypto's models."""
    import cardio.cms as m

    source = Path(m.__file__).read_text()
    for name in ("def seq(", "def set_of(", "def oid(", "def integer(", "def utc_time(",
                 "cardio.apdu import tlv"):
        assert name not in source


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")
def test_openssl_verifies_attached_and_detached(pki: PkiEnv, tmp_path: Path) -> None:
    from cardio.cms import verify

    path, profile = pki.new_card()
    content = "契約書: 甲と乙は以下の通り合意する。\n".encode()
    attached = card_sign_attached(path, profile.sign_password, content)
    detached = card_sign(path, profile.sign_password, content, include_ca=True)
    assert verify(attached).content == content
    assert verify(detached, content).content is None
    with pytest.raises(CmsError, match="must be given"):
        verify(detached)
    with pytest.raises(CmsError, match="differs"):
        verify(attached, content + b"!")
    (tmp_path / "a.p7m").write_bytes(attached)
    (tmp_path / "d.p7s").write_bytes(detached)
    (tmp_path / "c.txt").write_bytes(content)
    base = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-CAfile",
            str(pki.roots / "sign-ca.pem"), "-purpose", "any"]
    res = subprocess.run([*base, "-in", str(tmp_path / "a.p7m"), "-out",
                          str(tmp_path / "out.txt")], capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out.txt").read_bytes() == content
    res = subprocess.run([*base, "-in", str(tmp_path / "d.p7s"), "-content",
                          str(tmp_path / "c.txt"), "-out", os.devnull],
                         capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    # openssl's view of the signed attributes: the ESS signing-certificate-v2 is there
    res = subprocess.run(["openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in",
                          str(tmp_path / "d.p7s")], capture_output=True, text=True, timeout=30)
    assert "id-smime-aa-signingCertificateV2" in res.stdout


def test_ess_certificate_must_be_the_signers(pki: PkiEnv) -> None:
    """A signature whose certificates were swapped for another with the same key would
    still verify by RSA; the ESS hash catches it."""
    from cardio.cms import check_signature

    path, profile = pki.new_card()
    sig = parse(card_sign(path, profile.sign_password, b"x"))
    sig.signing_certificate_hash = b"\x00" * 32
    with pytest.raises(CmsError, match="ESS"):
        check_signature(sig, b"x")


def _mutants(signed: bytes, n: int, seed: int) -> list[bytes]:
    """Byte flips, truncations, insertions, length-byte damage and splices of the DER."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        data = bytearray(signed)
        kind = rng.randrange(5)
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 1:
            del data[rng.randrange(len(data)):]
        elif kind == 2:
            at = rng.randrange(len(data))
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind == 3:  # damage a byte right after a tag-looking byte (a length)
            tags = [i for i, b in enumerate(data[:-1]) if b in (0x30, 0x31, 0xA0, 0x04, 0x02)]
            i = rng.choice(tags) + 1
            data[i] = rng.choice((0x00, 0x7F, 0x80, 0x81, 0x84, 0xFF, data[i] ^ 1))
        else:  # splice: a chunk of the signature copied over another place
            a, b = sorted(rng.sample(range(len(data)), 2))
            chunk = data[a:b][: rng.randint(1, 64)]
            at = rng.randrange(len(data))
            data[at:at + len(chunk)] = chunk
        out.append(bytes(data))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("attached", [False, True])
def test_mutation_corpus_gives_typed_errors_only(pki: PkiEnv, attached: bool) -> None:
    """Every mutant either verifies (the mutation hit nothing signed, e.g. the unsigned
    certificate order) or raises CmsError; any other exception fails the test."""
    from cardio.cms import verify

    path, profile = pki.new_card()
    content = b"mutate me"
    signed = (card_sign_attached(path, profile.sign_password, content) if attached
              else card_sign(path, profile.sign_password, content, include_ca=True))
    outcomes = {"error": 0, "verified": 0}
    for mutant in _mutants(signed, CMS_MUTANTS, seed=15 + attached):
        try:
            verify(mutant, None if attached else content)
            outcomes["verified"] += 1
        except CmsError:
            outcomes["error"] += 1
    assert outcomes["error"] > CMS_MUTANTS * 0.9, outcomes


def test_signatures_from_the_old_hand_written_encoder_still_verify() -> None:
    """Byte-level compatibility: ``data/old-encoder.p7s`` was made by the hand-written
    encoder this module had before issue 15 (software card, fictitious holder). The
    asn1crypto parser verifies it over the signed attributes exactly as encoded."""
    data = Path(__file__).parent / "data"
    p7s, content = (data / "old-encoder.p7s").read_bytes(), (data / "old-encoder.txt"
                                                             ).read_bytes()
    sig = verify_detached(p7s, content)
    assert sig.signing_time is not None and sig.signing_time.year == 2026
    assert sig.signing_certificate_hash is not None and len(sig.certificates) == 2
    with pytest.raises(CmsError, match="does not match"):
        verify_detached(p7s, content + b" ")
