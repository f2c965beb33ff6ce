"""RFC 3161 time-stamps on CMS signatures made by the card (issue 15, step 2): the
emulated TSA over real HTTP on loopback, openssl as an independent token verifier, and
the two acceptance cases — genTime, not signingTime, decides "valid at signing time"."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cardio.card import MyNumberCard
from cardio.cms import CmsSignature, add_timestamp, parse, sign, verify
from cardio.jpki import JpkiApplication
from cardio.transport import InProcessTransport
from cardio.trust import TrustStore
from cardio.tsp import (
    STAMPED,
    TimestampError,
    TimeStampResponse,
    TsaClient,
    TsaUnavailable,
    request_der,
    signing_time_of,
    verify_token,
)
from emulators.card import SoftwareCard
from tests.pki_env import PkiEnv


def _sign(pki: PkiEnv, path: Path, password: str, content: bytes, *, tsa: bool = True,
          signing_time: dt.datetime | None = None) -> bytes:
    jpki = JpkiApplication(MyNumberCard(InProcessTransport(SoftwareCard.open(path))))
    jpki.verify_pin("sign", password)
    return sign(content, jpki.certificate_der("sign"),
                lambda di: jpki.sign_digest_info("sign", di),
                extra_certs=(jpki.certificate_der("sign-ca"),), signing_time=signing_time,
                timestamper=TsaClient(pki.server.url + "/tsa") if tsa else None)


def _cli_verify(pki: PkiEnv, tmp_path: Path, p7s: bytes, content: bytes, *extra: str,
                trust: Path | None = None) -> tuple[int, dict[str, object], str]:
    (tmp_path / "c.txt").write_bytes(content)
    (tmp_path / "c.p7s").write_bytes(p7s)
    res = subprocess.run([sys.executable, "-m", "cardio.cli", "jpki", "cms", "verify",
                          "--in", str(tmp_path / "c.txt"), "--sig", str(tmp_path / "c.p7s"),
                          "--trust", str(trust or pki.roots), "--json", *extra],
                         capture_output=True, text=True, timeout=60)
    return res.returncode, (json.loads(res.stdout) if res.stdout else {}), res.stderr


def test_token_from_the_emulated_tsa(pki: PkiEnv, tmp_path: Path) -> None:
    token = TsaClient(pki.server.url + "/tsa", trust=pki.trust)(b"signature bytes")
    info = verify_token(token, b"signature bytes", pki.trust)
    assert abs(info.gen_time - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    eku = info.tsa.extensions.get_extension_for_oid(
        __import__("cryptography").x509.oid.ExtensionOID.EXTENDED_KEY_USAGE)
    assert eku.critical
    with pytest.raises(TimestampError, match="other data"):
        verify_token(token, b"other bytes", pki.trust)
    only_jpki = tmp_path / "jpki-only"
    only_jpki.mkdir()
    for f in pki.roots.glob("*.pem"):
        if f.name != "tsa-root.pem":
            shutil.copy(f, only_jpki / f.name)
    with pytest.raises(TimestampError, match="trust anchor"):
        verify_token(token, b"signature bytes", TrustStore.from_dir(only_jpki))
    if shutil.which("openssl"):  # an independent verifier of the token
        (tmp_path / "data").write_bytes(b"signature bytes")
        (tmp_path / "tok").write_bytes(token)
        res = subprocess.run(["openssl", "ts", "-verify", "-data", str(tmp_path / "data"),
                              "-in", str(tmp_path / "tok"), "-token_in", "-CAfile",
                              str(pki.roots / "tsa-root.pem")],
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0 and "Verification: OK" in res.stdout, res.stdout + res.stderr


def test_tsa_refuses_bad_requests(pki: PkiEnv) -> None:
    from asn1crypto import tsp as asn1_tsp

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post(body: bytes, ctype: str = "application/timestamp-query") -> bytes:
        req = urllib.request.Request(pki.server.url + "/tsa", data=body, method="POST",
                                     headers={"Content-Type": ctype})
        with opener.open(req, timeout=10) as r:
            assert r.headers["Content-Type"] == "application/timestamp-reply"
            return bytes(r.read())

    bad = TimeStampResponse.load(post(b"\x30\x03\x02\x01\x01"))  # status only
    assert bad["status"]["status"].native == "rejection"
    assert "bad_data_format" in bad["status"]["fail_info"].native
    sha1 = asn1_tsp.TimeStampReq({"version": "v1", "message_imprint": {
        "hash_algorithm": {"algorithm": "sha1"}, "hashed_message": b"\x00" * 20}})
    assert "bad_alg" in TimeStampResponse.load(post(sha1.dump()))[
        "status"]["fail_info"].native
    with pytest.raises(urllib.error.HTTPError) as exc:
        post(request_der(b"x", 1), "application/ocsp-request")
    assert exc.value.code == 415
    with pytest.raises(TsaUnavailable):
        TsaClient(pki.server.url + "/nowhere")(b"x")


def test_token_after_revocation_defeats_a_backdated_signing_time(
        pki: PkiEnv, tmp_path: Path) -> None:
    """Acceptance: the key is revoked (key compromise); whoever holds it signs afterwards
    with signingTime set back before it. The token's genTime is after the revocation, so the
    signature is not valid at signing time — whereas the claimed time alone would pass."""
    path, profile = pki.new_card()
    content = b"backdated contract"
    revocation = pki.authority.revoke_card(path, "sign", "key_compromise")
    from emulators.jpki_ca import card_certificate

    # before the revocation, but within the certificate's validity
    backdated = max(revocation.time - dt.timedelta(minutes=30),
                    card_certificate(path, "sign").not_valid_before_utc + dt.timedelta(
                        seconds=1))
    p7s = _sign(pki, path, profile.sign_password, content, signing_time=backdated)
    sig = verify(p7s, content)
    assert sig.signing_time is not None and sig.signing_time < backdated + dt.timedelta(
        seconds=1)
    assert sig.timestamp_token is not None
    code, out, _ = _cli_verify(pki, tmp_path, p7s, content, "--at-signing-time")
    assert code == 6 and out["time_source"] == STAMPED, out
    assert out["certificate"]["status"] == "revoked"  # type: ignore[index]
    code, out, _ = _cli_verify(pki, tmp_path, p7s, content)  # the token is the default
    assert code == 6 and out["time_source"] == STAMPED
    # The same signature without its token: only the signer's claim, and it passes (with
    # the warning) — the very hole the token closes.
    bare = _sign(pki, path, profile.sign_password, content, tsa=False, signing_time=backdated)
    code, out, err = _cli_verify(pki, tmp_path, bare, content, "--at-signing-time")
    assert code == 0 and "backdate" in out["warnings"][0] and "warning" in err  # type: ignore[index]


def test_token_before_revocation_stays_valid_at_signing_time(
        pki: PkiEnv, tmp_path: Path) -> None:
    """Acceptance: signed and time-stamped, then the key is revoked: valid at the token's
    genTime (exit 0), revoked now (exit 6 with --at now)."""
    path, profile = pki.new_card()
    content = "契約書 第15条".encode()
    p7s = _sign(pki, path, profile.sign_password, content)
    time.sleep(1.1)  # revocation times have one-second resolution
    pki.authority.revoke_card(path, "sign", "key_compromise")
    code, out, _ = _cli_verify(pki, tmp_path, p7s, content)
    assert code == 0 and out["time_source"] == STAMPED, out
    assert out["certificate"]["status"] == "valid"  # type: ignore[index]
    assert out["timestamp"]["tsa"].startswith("CN=cardio test TSA,")  # type: ignore[index]
    now = dt.datetime.now(dt.UTC).isoformat()
    code, out, _ = _cli_verify(pki, tmp_path, p7s, content, "--at", now)
    assert code == 6 and out["certificate"]["status"] == "revoked"  # type: ignore[index]


def test_swapped_or_untrusted_token_is_refused(pki: PkiEnv, tmp_path: Path) -> None:
    """A token taken from another signature, or from a TSA nobody trusts, is an error
    (exit 6) — never a silent fall-back to signingTime."""
    path, profile = pki.new_card()
    a = _sign(pki, path, profile.sign_password, b"a")
    b = _sign(pki, path, profile.sign_password, b"b", tsa=False)
    token_a = parse(a).timestamp_token
    assert token_a is not None
    b_with_a_token = add_timestamp(b, lambda _sig: token_a)
    verify(b_with_a_token, b"b")  # the signed part is intact ...
    with pytest.raises(TimestampError, match="other data"):
        signing_time_of(parse(b_with_a_token), pki.trust)  # ... the token is not for it
    code, _, err = _cli_verify(pki, tmp_path, b_with_a_token, b"b")
    assert code == 6 and "other data" in err
    only_jpki = tmp_path / "jpki-only"
    only_jpki.mkdir()
    for f in pki.roots.glob("*.pem"):
        if f.name != "tsa-root.pem":
            shutil.copy(f, only_jpki / f.name)
    code, _, err = _cli_verify(pki, tmp_path, a, b"a", trust=only_jpki)
    assert code == 6 and "trust anchor" in err


def test_cli_sign_with_tsa_and_timestamp_later(pki: PkiEnv, tmp_path: Path) -> None:
    import os

    path, profile = pki.new_card()
    doc = tmp_path / "doc.txt"
    doc.write_bytes(b"attached and stamped")
    env = {**os.environ, "SP": profile.sign_password}
    base = [sys.executable, "-m", "cardio.cli", "--reader", f"emu:{path}", "jpki", "cms"]
    res = subprocess.run([*base, "sign", "--in", str(doc), "--out", str(tmp_path / "d.p7m"),
                          "--attached", "--tsa", pki.server.url + "/tsa", "--pin-env", "SP"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    sig: CmsSignature = verify((tmp_path / "d.p7m").read_bytes())
    assert sig.content == b"attached and stamped" and sig.timestamp_token is not None
    res = subprocess.run([*base, "verify", "--sig", str(tmp_path / "d.p7m"), "--trust",
                          str(pki.roots), "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and json.loads(res.stdout)["attached"] is True, res.stderr
    res = subprocess.run([*base, "sign", "--in", str(doc), "--out", str(tmp_path / "d.p7s"),
                          "--pin-env", "SP"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert res.returncode == 0 and parse((tmp_path / "d.p7s").read_bytes()).timestamp_token \
        is None
    res = subprocess.run([*base, "timestamp", "--sig", str(tmp_path / "d.p7s"), "--tsa",
                          pki.server.url + "/tsa"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    stamped = verify((tmp_path / "d.p7s").read_bytes(), doc.read_bytes())
    assert signing_time_of(stamped, pki.trust).source == STAMPED
    assert "Verification successful" in subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in",
         str(tmp_path / "d.p7s"), "-content", str(doc), "-CAfile",
         str(pki.roots / "sign-ca.pem"), "-purpose", "any", "-out", "/dev/null"],
        capture_output=True, text=True, timeout=30).stderr


def test_tsa_roots_vouch_for_times_only(pki: PkiEnv) -> None:
    """tsa-*.pem anchors go to TrustStore.tsa_roots: the TSA's own certificate (issued by
    such a root) does not pass as a JPKI certificate, and a JPKI root does not make a
    TSA trusted."""
    from cardio.pki import CertificateValidator, Status

    assert pki.trust.tsa_roots and all(
        "TSA" in r.subject.rfc4514_string() for r in pki.trust.tsa_roots)
    token = TsaClient(pki.server.url + "/tsa")(b"x")
    info = verify_token(token, b"x", pki.trust)
    assert CertificateValidator(pki.trust).validate(info.tsa).status is Status.UNTRUSTED
    swapped = TrustStore(x509_roots=pki.trust.tsa_roots, tsa_roots=pki.trust.x509_roots)
    with pytest.raises(TimestampError, match="TSA trust anchor"):
        verify_token(token, b"x", swapped)


def test_ca_serve_process_answers_timestamp_queries(tmp_path: Path) -> None:
    """``cardio emu ca serve`` (a real process, port 0) serves the TSA beside OCSP/CRL."""
    import os
    import signal

    env = {**os.environ, "CARDIO_JLIS_DIR": str(tmp_path / "jlis")}
    proc = subprocess.Popen([sys.executable, "-m", "cardio.cli", "emu", "ca", "serve",
                             "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "TSA under /tsa" in line
        url = line.split(" at ")[1].split(";")[0]
        token = TsaClient(url + "/tsa")(b"served")
        res = subprocess.run([sys.executable, "-m", "cardio.cli", "emu", "ca", "roots",
                              "--out", str(tmp_path / "roots")], env=env, capture_output=True,
                             timeout=60)
        assert res.returncode == 0
        info = verify_token(token, b"served", TrustStore.from_dir(tmp_path / "roots"))
        assert info.policy == "2.999.15.1"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


TOKEN_MUTANTS = 5000 if os.environ.get("CARDIO_CMS_FULL") == "1" else 300


def test_mutated_stamped_signatures_give_typed_errors_only(pki: PkiEnv) -> None:
    """Mutations of a time-stamped signature (the token is most of its bytes): parsing,
    verifying and reading the signing time raise CmsError or TimestampError only (300 in
    CI, 5,000 with CARDIO_CMS_FULL=1)."""
    import random

    from cardio.cms import CmsError

    path, profile = pki.new_card()
    stamped = _sign(pki, path, profile.sign_password, b"stamp me")
    rng = random.Random(3161)
    outcomes: dict[str, int] = {}
    for _ in range(TOKEN_MUTANTS):
        data = bytearray(stamped)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            sig = verify(bytes(data), b"stamp me")
            signing_time_of(sig, pki.trust)
            outcome = "valid"
        except (CmsError, TimestampError) as exc:
            outcome = type(exc).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("TimestampError", 0) > 0 and outcomes.get("CmsError", 0) > 0, outcomes
