"""Certificate validation against the emulated J-LIS CAs, through their real HTTP
OCSP responder and CRL server on loopback."""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardio import constants as c
from cardio.pki import (
    CertificateError,
    CertificateValidator,
    RevocationSourceError,
    Status,
    http_fetch,
    load_certificate,
    parse_ocsp_response,
)
from cardio.trust import TrustStore
from emulators.card import SoftwareCard
from emulators.jpki_ca import card_certificate
from tests.pki_env import PkiEnv


def cert_of(path: Path, which: str = "auth") -> x509.Certificate:
    return card_certificate(path, which)


def failing(kind: str):  # type: ignore[no-untyped-def]
    """A fetcher whose OCSP (or CRL) requests fail as if that server were down."""
    def fetch(url: str, body: bytes | None, ctype: str, limit: int) -> bytes:
        if (kind == "ocsp" and "/ocsp/" in url) or (kind == "crl" and "/crl/" in url) \
                or kind == "both":
            raise RevocationSourceError(f"{url}: connection refused")
        return http_fetch(url, body, ctype, limit)
    return fetch


def test_a_crl_saved_before_a_revocation_vouches_only_within_max_crl_age(
        pki: PkiEnv) -> None:
    """OCSP down, and the CRL served is one saved before the card was revoked (within its
    nextUpdate for a day): with ``max_crl_age`` a grant decision does not take it."""
    path, _ = pki.new_card()
    cert = cert_of(path, "auth")
    saved = http_fetch(f"{pki.server.url}/crl/auth.crl", None, "", 1 << 20)
    pki.authority.revoke_card(path, "auth", "key_compromise")

    def replay(url: str, body: bytes | None, ctype: str, limit: int) -> bytes:
        if "/ocsp/" in url:
            raise RevocationSourceError(f"{url}: 503")
        return saved

    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    lax = CertificateValidator(pki.trust, fetch=replay, clock=lambda: later)
    assert lax.validate(cert).status is Status.VALID  # the attack, without a bound
    strict = CertificateValidator(pki.trust, fetch=replay, clock=lambda: later,
                                  max_crl_age=dt.timedelta(minutes=10))
    v = strict.validate(cert)
    assert v.status is Status.UNKNOWN and "too old for this decision" in v.reason
    # a CRL issued now is taken, and says revoked
    now = CertificateValidator(pki.trust, fetch=failing("ocsp"),
                               max_crl_age=dt.timedelta(minutes=10)).validate(cert)
    assert (now.status, now.revocation_source) == (Status.REVOKED, "crl")


def test_valid_by_ocsp(pki: PkiEnv) -> None:
    path, _ = pki.new_card()
    for which, purpose in (("auth", "auth"), ("sign", "sign")):
        v = CertificateValidator(pki.trust).validate(cert_of(path, which), purpose=purpose)
        assert v.status is Status.VALID, v.reason
        assert v.revocation_source == "ocsp" and v.checks == ["chain", "validity", "key_usage",
                                                              "ocsp"]


def test_expired_and_not_yet_valid(pki: PkiEnv) -> None:
    path, _ = pki.new_card()
    cert = cert_of(path)
    later = cert.not_valid_after_utc + dt.timedelta(seconds=1)
    v = CertificateValidator(pki.trust).validate(cert, at=later)
    assert v.status is Status.EXPIRED and "expired at" in v.reason
    earlier = cert.not_valid_before_utc - dt.timedelta(days=1)
    assert CertificateValidator(pki.trust).validate(cert, at=earlier).status is \
        Status.NOT_YET_VALID
    # A certificate whose validity already ended, checked now.
    old = pki.jlis.issue_jpki_certificate(
        "auth", pki.pool.new_key().public_key(),
        not_before=dt.datetime(2015, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    assert CertificateValidator(pki.trust).validate(old).status is Status.EXPIRED


def test_revoked_by_ocsp_on_the_next_request(pki: PkiEnv) -> None:
    path, _ = pki.new_card()
    cert = cert_of(path)
    assert CertificateValidator(pki.trust).validate(cert).status is Status.VALID
    pki.authority.revoke_card(path, "auth", "key_compromise")
    v = CertificateValidator(pki.trust).validate(cert)
    assert v.status is Status.REVOKED and "OCSP" in v.reason and "keyCompromise" in v.reason


def test_revoked_by_crl_when_ocsp_is_down(pki: PkiEnv) -> None:
    path, _ = pki.new_card()
    cert = cert_of(path, "sign")
    pki.authority.revoke_card(path, "sign", "affiliation_changed")
    v = CertificateValidator(pki.trust, fetch=failing("ocsp")).validate(cert)
    assert v.status is Status.REVOKED and v.revocation_source == "crl"
    assert "affiliationChanged" in v.reason


def test_crl_fallback_valid_and_both_down_is_unknown(pki: PkiEnv) -> None:
    path, _ = pki.new_card()
    cert = cert_of(path)
    v = CertificateValidator(pki.trust, fetch=failing("ocsp")).validate(cert)
    assert (v.status, v.revocation_source) == (Status.VALID, "crl")
    v = CertificateValidator(pki.trust, fetch=failing("both")).validate(cert)
    assert v.status is Status.UNKNOWN
    assert v.reason.startswith("revocation unknown") and "OCSP" in v.reason and "CRL" in v.reason


def test_real_server_down(pki: PkiEnv) -> None:
    """Certificates pointing at a port where nothing listens: unknown, never valid."""
    from emulators.card import JlisHierarchy
    from tests.pki_env import free_port

    jlis = JlisHierarchy._load(pki.jlis.path, f"http://127.0.0.1:{free_port()}")
    cert = jlis.issue_jpki_certificate(
        "auth", pki.pool.new_key().public_key(),
        not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
        not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
    v = CertificateValidator(pki.trust).validate(cert)
    assert v.status is Status.UNKNOWN and "revocation unknown" in v.reason


def test_unknown_issuer(pki: PkiEnv, tmp_path: Path) -> None:
    path, _ = pki.new_card()
    assert CertificateValidator(TrustStore()).validate(cert_of(path)).status is Status.UNTRUSTED
    # Trusting only the sign CA does not make an auth certificate trusted.
    only_sign = tmp_path / "t"
    only_sign.mkdir()
    shutil.copy(pki.roots / "sign-ca.pem", only_sign / "sign-ca.pem")
    v = CertificateValidator(TrustStore.from_dir(only_sign)).validate(cert_of(path))
    assert v.status is Status.UNTRUSTED and "trust anchor" in v.reason


def test_wrong_key_usage(pki: PkiEnv) -> None:
    path, _ = pki.new_card()
    v = CertificateValidator(pki.trust).validate(cert_of(path, "auth"), purpose="sign")
    assert v.status is Status.UNTRUSTED and "wrong key usage" in v.reason
    ca = pki.jlis.auth_ca.cert
    v = CertificateValidator(pki.trust).validate(ca)
    assert v.status is Status.UNTRUSTED and "wrong key usage" in v.reason


def test_cache_honours_next_update(pki: PkiEnv) -> None:
    path, _ = pki.new_card()
    cert = cert_of(path)
    now = [dt.datetime.now(dt.UTC)]
    calls: list[str] = []

    def counting(url: str, body: bytes | None, ctype: str, limit: int) -> bytes:
        calls.append(url)
        return http_fetch(url, body, ctype, limit)

    v = CertificateValidator(pki.trust, fetch=counting, clock=lambda: now[0])
    assert v.validate(cert).status is Status.VALID
    pki.authority.revoke_card(path, "auth", "key_compromise")
    assert v.validate(cert).status is Status.VALID  # cached response, still current
    assert len(calls) == 1
    now[0] += dt.timedelta(minutes=62)  # past nextUpdate (1 h), within the 5 min skew
    assert v.validate(cert).status is Status.REVOKED
    assert len(calls) == 2


def test_card_events(pki: PkiEnv) -> None:
    path, _ = pki.new_card()
    revs = pki.authority.card_event(path, "attributes_changed")
    assert [r.kind for r in revs] == ["sign"]
    val = CertificateValidator(pki.trust)
    assert val.validate(cert_of(path, "sign")).status is Status.REVOKED
    assert val.validate(cert_of(path, "auth")).status is Status.VALID
    path2, _ = pki.new_card()
    assert sorted(r.kind for r in pki.authority.card_event(path2, "lost")) == ["auth", "sign"]


def test_certificate_shape(pki: PkiEnv) -> None:
    path, profile = pki.new_card()
    sign, auth = cert_of(path, "sign"), cert_of(path, "auth")
    san = sign.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    values = {o.type_id.dotted_string: o.value for o in san if isinstance(o, x509.OtherName)}
    assert values["1.2.392.200149.8.5.5.1"][2:].decode() == profile.name
    assert values["1.2.392.200149.8.5.5.4"][2:].decode() == profile.birth.strftime("%Y%m%d")
    assert values["1.2.392.200149.8.5.5.5"][0] == 0x0C  # UTF8String
    with pytest.raises(x509.ExtensionNotFound):
        auth.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    for cert in (sign, auth):
        assert cert.public_key().key_size == 2048  # type: ignore[union-attr]
        assert "JPKI" in cert.issuer.rfc4514_string()
    ku = sign.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.content_commitment and ku.digital_signature
    # Validity ends at the 5th birthday after issue (or the card's expiry if earlier).
    end = auth.not_valid_after_utc.date()
    assert (end.month, end.day) == (profile.birth.month, profile.birth.day)
    assert profile.issued.year + 4 <= end.year <= profile.issued.year + 5


def test_validity_capped_by_card_expiry(pki: PkiEnv) -> None:
    issued = dt.date.today()
    path, profile = pki.new_card(birth=dt.date(1990, 1, 1),
                                 expiry=issued + dt.timedelta(days=400))
    end = cert_of(path).not_valid_after_utc.date()
    assert end == profile.card_expiry


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")
def test_openssl_ocsp_accepts_our_responses(pki: PkiEnv, tmp_path: Path) -> None:
    path, _ = pki.new_card()
    cert = tmp_path / "c.pem"
    cert.write_bytes(cert_of(path).public_bytes(serialization.Encoding.PEM))
    cmd = ["openssl", "ocsp", "-issuer", str(pki.roots / "auth-ca.pem"), "-cert", str(cert),
           "-url", f"{pki.server.url}/ocsp/auth", "-CAfile", str(pki.roots / "auth-ca.pem")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert "Response verify OK" in res.stderr + res.stdout, res.stderr
    assert f"{cert}: good" in res.stdout
    pki.authority.revoke_card(path, "auth", "superseded")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert "Response verify OK" in res.stderr + res.stdout
    assert f"{cert}: revoked" in res.stdout and "superseded" in res.stdout


def test_ocsp_get_and_malformed_requests(pki: PkiEnv) -> None:
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import ocsp

    path, _ = pki.new_card()
    req = ocsp.OCSPRequestBuilder().add_certificate(
        cert_of(path), pki.jlis.auth_ca.cert, hashes.SHA1()).build()
    b64 = base64.b64encode(req.public_bytes(serialization.Encoding.DER)).decode()
    raw = http_fetch(f"{pki.server.url}/ocsp/auth/{b64.replace('/', '%2F')}", None, "", 65536)
    assert parse_ocsp_response(raw).certificate_status == ocsp.OCSPCertStatus.GOOD
    bad = http_fetch(f"{pki.server.url}/ocsp/auth", b"garbage", "application/ocsp-request",
                     65536)
    with pytest.raises(RevocationSourceError, match="MALFORMED_REQUEST"):
        parse_ocsp_response(bad)
    wrong_ca = ocsp.OCSPRequestBuilder().add_certificate(
        cert_of(path), pki.jlis.auth_ca.cert, hashes.SHA256()).build()
    raw = http_fetch(f"{pki.server.url}/ocsp/sign", wrong_ca.public_bytes(
        serialization.Encoding.DER), "application/ocsp-request", 65536)
    with pytest.raises(RevocationSourceError, match="UNAUTHORIZED"):
        parse_ocsp_response(raw)


def test_crl_is_signed_and_lists_revocations(pki: PkiEnv) -> None:
    path, _ = pki.new_card()
    pki.authority.revoke_card(path, "sign", "cessation_of_operation")
    crl = x509.load_der_x509_crl(http_fetch(f"{pki.server.url}/crl/sign.crl", None, "",
                                            1 << 20))
    assert crl.is_signature_valid(pki.jlis.sign_ca.cert.public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(cert_of(path, "sign").serial_number)
    assert entry is not None
    assert crl.next_update_utc is not None and crl.next_update_utc > dt.datetime.now(dt.UTC)


def test_bad_inputs_are_typed(pki: PkiEnv) -> None:
    path, _ = pki.new_card()
    der = cert_of(path).public_bytes(serialization.Encoding.DER)
    for bad in (der[:-10], der[:5], b"", b"\x00" * 100, b"-----BEGIN CERTIFICATE-----\nxx",
                b"\x30" * (70 * 1024)):
        with pytest.raises(CertificateError):
            load_certificate(bad)
    for bad in (b"", b"\x30\x03\x0a\x01\x00", b"garbage", b"\x30" * 70000):
        with pytest.raises(RevocationSourceError):
            parse_ocsp_response(bad)

    def garbage(url: str, body: bytes | None, ctype: str, limit: int) -> bytes:
        return os.urandom(200)

    v = CertificateValidator(pki.trust, fetch=garbage).validate(cert_of(path))
    assert v.status is Status.UNKNOWN

    def huge(url: str, body: bytes | None, ctype: str, limit: int) -> bytes:
        return http_fetch(url, body, ctype, 10)  # a limit the real answer exceeds

    assert CertificateValidator(pki.trust, fetch=huge).validate(cert_of(path)).status is \
        Status.UNKNOWN


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), flips=st.integers(1, 8))
def test_fuzz_mutated_certificates_and_responses(pki: PkiEnv, seed: int, flips: int) -> None:
    cards = sorted(pki.base.glob("card*"))
    path = cards[0] if cards else pki.new_card()[0]
    der = bytearray(cert_of(path).public_bytes(serialization.Encoding.DER))
    rng = random.Random(seed)
    for _ in range(flips):
        der[rng.randrange(len(der))] = rng.randrange(256)
    try:
        cert = load_certificate(bytes(der))
    except CertificateError:
        cert = None
    if cert is not None:
        v = CertificateValidator(pki.trust, use_ocsp=False, use_crl=False).validate(cert)
        assert v.status in set(Status) - {Status.VALID}
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import ocsp as ocsp_mod

    req = ocsp_mod.OCSPRequestBuilder().add_certificate(
        cert_of(path), pki.jlis.auth_ca.cert, hashes.SHA256()).build()
    resp = bytearray(pki.authority.ocsp_response("auth", req.public_bytes(
        serialization.Encoding.DER)))
    for _ in range(flips):
        resp[rng.randrange(len(resp))] = rng.randrange(256)
    from cardio.pki import check_ocsp_response

    try:
        parsed = parse_ocsp_response(bytes(resp))
        check_ocsp_response(parsed, cert_of(path), pki.jlis.auth_ca.cert,
                            dt.datetime.now(dt.UTC), None)
    except RevocationSourceError:
        pass


def test_cli_verify_cert_and_revoke(pki: PkiEnv, tmp_path: Path) -> None:
    path, _ = pki.new_card()
    der = tmp_path / "auth.der"
    der.write_bytes(SoftwareCard.open(path).image.files[(c.AID_JPKI, c.JPKI_AUTH_CERT)])
    env = {**os.environ, "CARDIO_JLIS_DIR": str(pki.jlis.path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cardio.cli", *args], capture_output=True,
                              text=True, timeout=60, env=env)

    res = cli("jpki", "verify-cert", str(der), "--trust", str(pki.roots), "--json")
    assert res.returncode == 0, res.stderr
    import json
    assert json.loads(res.stdout)["status"] == "valid"
    res = cli("emu", "ca", "revoke", str(path), "--cert", "auth", "--reason", "key_compromise")
    assert res.returncode == 0, res.stderr
    res = cli("jpki", "verify-cert", str(der), "--trust", str(pki.roots), "--json")
    assert res.returncode == 6 and json.loads(res.stdout)["status"] == "revoked"
    res = cli("jpki", "verify-cert", str(der), "--trust", str(pki.roots), "--json", "--at",
              "2001-01-01T00:00:00+09:00")
    assert json.loads(res.stdout)["status"] == "not_yet_valid"
    res = cli("--reader", f"emu:{path}", "jpki", "verify-cert", "--card", "auth", "--json")
    assert json.loads(res.stdout)["status"] == "revoked"
    (tmp_path / "trunc.der").write_bytes(der.read_bytes()[:100])
    res = cli("jpki", "verify-cert", str(tmp_path / "trunc.der"), "--trust", str(pki.roots))
    assert res.returncode == 1 and "not a valid X.509 certificate" in res.stderr
    res = cli("emu", "ca", "roots", "--out", str(tmp_path / "r"), "--json")
    assert sorted(json.loads(res.stdout)) == ["auth-ca", "cv-root", "sign-ca", "tsa-root"]


# -- issue 8, items 2 and 3: freshness for grants; forged OCSP answers -----------------------
def test_fresh_check_sees_a_revocation_the_display_cache_still_hides(pki: PkiEnv) -> None:
    """One long-lived validator (as in a running service): display answers may be up to
    DISPLAY_CACHE_TTL old, a granting decision (fresh=True) asks the responder now."""
    from cardio.pki import DISPLAY_CACHE_TTL

    path, _ = pki.new_card()
    cert = cert_of(path)
    now = [dt.datetime.now(dt.UTC)]
    v = CertificateValidator(pki.trust, clock=lambda: now[0])
    assert v.validate(cert).status is Status.VALID
    pki.authority.revoke_card(path, "auth", "key_compromise")
    now[0] = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)  # just after the revocation
    assert v.validate(cert).status is Status.VALID  # display: cached, within its bound
    fresh = v.validate(cert, fresh=True)
    assert fresh.status is Status.REVOKED and "ocsp-fresh" in fresh.checks
    # The display cache never outlives its bound, though the response's nextUpdate is 1 h.
    path2, _ = pki.new_card()
    cert2 = cert_of(path2)
    assert v.validate(cert2).status is Status.VALID
    pki.authority.revoke_card(path2, "auth", "key_compromise")
    now[0] += DISPLAY_CACHE_TTL + dt.timedelta(seconds=1)
    assert v.validate(cert2).status is Status.REVOKED


def test_fresh_check_has_no_crl_fallback(pki: PkiEnv) -> None:
    path, _ = pki.new_card()
    v = CertificateValidator(pki.trust, fetch=failing("ocsp"))
    assert v.validate(cert_of(path)).revocation_source == "crl"  # display may use the CRL
    fresh = v.validate(cert_of(path), fresh=True)
    assert fresh.status is Status.UNKNOWN and "fresh OCSP answer is required" in fresh.reason


def test_display_cache_is_bounded(pki: PkiEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    import cardio.pki as pki_mod

    monkeypatch.setattr(pki_mod, "MAX_CACHE_ENTRIES", 2)
    v = CertificateValidator(pki.trust)
    for _ in range(4):
        assert v.validate(cert_of(pki.new_card()[0])).status is Status.VALID
    assert len(v._ocsp_cache) == 2


class Forger:
    """An attacker between the validator and the responder: a real HTTP server on loopback
    that answers OCSP requests with responses built by ``make(request)``."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        forger = self
        self.make: Callable[[ocsp.OCSPRequest], bytes] = lambda req: b""

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                out = forger.make(ocsp.load_der_ocsp_request(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/ocsp-response")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def fetch_via(self, real_base: str) -> Callable[[str, bytes | None, str, int], bytes]:
        """A fetcher whose OCSP traffic the forger intercepts (as a DNS hijack would)."""
        host, port = self.httpd.server_address[:2]

        def fetch(url: str, body: bytes | None, ctype: str, limit: int) -> bytes:
            if "/ocsp/" in url:
                url = url.replace(real_base, f"http://{host!s}:{port}")
            return http_fetch(url, body, ctype, limit)
        return fetch

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def forger() -> Iterator[Forger]:
    f = Forger()
    try:
        yield f
    finally:
        f.close()


def responder_cert(pki: PkiEnv, *, ca: str = "auth", days: tuple[int, int] = (-1, 30),
                   eku: bool = True) -> tuple[Any, x509.Certificate]:
    """A delegated responder certificate, signed by the real (emulated) CA key."""
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    authority = pki.jlis.auth_ca if ca == "auth" else pki.jlis.sign_ca
    key = pki.pool.new_key()
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged responder")]))
         .issuer_name(authority.cert.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now + dt.timedelta(days=days[0]))
         .not_valid_after(now + dt.timedelta(days=days[1])))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False)
    return key, b.sign(authority.key, hashes.SHA256())


def forged(req: ocsp.OCSPRequest, cert: x509.Certificate, issuer: x509.Certificate,
           signer: tuple[Any, x509.Certificate], *, nonce: bool = True,
           this_update: dt.datetime | None = None, next_update: dt.timedelta | None = None,
           status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD) -> bytes:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    tu = this_update or now
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=cert, issuer=issuer, algorithm=hashes.SHA256(), cert_status=status,
        this_update=tu, next_update=tu + (next_update or dt.timedelta(hours=1)),
        revocation_time=None, revocation_reason=None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, signer[1]).certificates([signer[1]])
    if nonce:
        b = b.add_extension(req.extensions.get_extension_for_class(x509.OCSPNonce).value,
                            critical=False)
    return b.sign(signer[0], hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_forged_ocsp_answers_are_unknown_never_valid(pki: PkiEnv, forger: Forger) -> None:
    path, _ = pki.new_card()
    cert, issuer = cert_of(path), pki.jlis.auth_ca.cert
    real = pki.authority.responder("auth")
    fetch = forger.fetch_via(pki.server.url)
    now = dt.datetime.now(dt.UTC)

    def check(make: Callable[[ocsp.OCSPRequest], bytes], fresh: bool = True) -> Status:
        forger.make = make
        v = CertificateValidator(pki.trust, fetch=fetch, use_crl=False)
        return v.validate(cert, fresh=fresh).status

    # Control: the forger's own well-formed answer with the real responder key counts,
    # so each refusal below is due to the one thing that differs.
    assert check(lambda r: forged(r, cert, issuer, real)) is Status.VALID
    # A pre-revocation "good" captured earlier and replayed after the revocation: it
    # lacks our nonce. (Before issue 8 this was accepted.)
    replay = forged(ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256())
                    .build(), cert, issuer, real, nonce=False)
    pki.authority.revoke_card(path, "auth", "key_compromise")
    for fresh in (True, False):
        assert check(lambda r: replay, fresh) is Status.UNKNOWN
    assert check(lambda r: forged(r, cert, issuer, real)) is Status.VALID  # control again
    # Delegated responders the issuer did not authorise for this answer.
    for bad in (responder_cert(pki, days=(-60, -1)),          # expired
                responder_cert(pki, days=(1, 60)),            # not yet valid
                responder_cert(pki, eku=False),               # no id-kp-OCSPSigning
                responder_cert(pki, ca="sign")):              # another CA's responder
        assert check(lambda r, s=bad: forged(r, cert, issuer, s)) is Status.UNKNOWN
    # Times: thisUpdate ahead of the clock, nextUpdate passed (both beyond the skew).
    assert check(lambda r: forged(r, cert, issuer, real,
                                  this_update=now + dt.timedelta(minutes=30))) is Status.UNKNOWN
    assert check(lambda r: forged(r, cert, issuer, real, this_update=now - dt.timedelta(
        hours=3), next_update=dt.timedelta(hours=1))) is Status.UNKNOWN


def test_ocsp_produced_at_in_the_future_is_refused(pki: PkiEnv, forger: Forger) -> None:
    """producedAt is set when the response is signed (now); a validator whose clock is an
    hour behind sees it in the future — while thisUpdate/nextUpdate alone would pass."""
    path, _ = pki.new_card()
    cert, issuer = cert_of(path), pki.jlis.auth_ca.cert
    behind = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    forger.make = lambda r: forged(r, cert, issuer, pki.authority.responder("auth"),
                                   this_update=behind.replace(microsecond=0))
    v = CertificateValidator(pki.trust, fetch=forger.fetch_via(pki.server.url),
                             clock=lambda: behind, use_crl=False)
    res = v.validate(cert, fresh=True)
    assert res.status is Status.UNKNOWN and "producedAt" in res.reason


# -- the same validation driven asynchronously; kept-alive fetching ---------------------------
def _async_of(fetch: Callable[[str, bytes | None, str, int], bytes]
              ) -> Callable[[str, bytes | None, str, int], Any]:
    async def afetch(url: str, body: bytes | None, ctype: str, limit: int) -> bytes:
        return fetch(url, body, ctype, limit)
    return afetch


def test_validate_async_gives_the_same_answers_as_validate(pki: PkiEnv) -> None:
    """One set of steps, two drivers: valid by OCSP, revoked by OCSP, revoked by the CRL
    when OCSP is down, unknown when both are — the same status, source and checks."""
    import asyncio

    good, _ = pki.new_card()
    bad, _ = pki.new_card()
    pki.authority.revoke_card(bad, "auth", "key_compromise")
    cases = [(cert_of(good), http_fetch), (cert_of(bad), http_fetch),
             (cert_of(bad), failing("ocsp")), (cert_of(good), failing("both"))]
    seen = []
    for cert, fetch in cases:
        v = CertificateValidator(pki.trust, fetch=fetch).validate(cert, purpose="auth")
        a = asyncio.run(CertificateValidator(pki.trust).validate_async(
            cert, _async_of(fetch), purpose="auth"))
        assert (a.status, a.revocation_source, a.checks) == \
            (v.status, v.revocation_source, v.checks)
        seen.append(a.status)
    assert seen == [Status.VALID, Status.REVOKED, Status.REVOKED, Status.UNKNOWN]


def test_validate_async_makes_no_request_when_no_revocation_check_is_needed(
        pki: PkiEnv) -> None:
    import asyncio

    path, _ = pki.new_card()
    cert = cert_of(path)
    calls: list[str] = []

    async def afetch(url: str, body: bytes | None, ctype: str, limit: int) -> bytes:
        calls.append(url)
        raise AssertionError("no fetch expected")

    later = cert.not_valid_after_utc + dt.timedelta(seconds=1)
    v = asyncio.run(CertificateValidator(pki.trust).validate_async(cert, afetch, at=later))
    assert v.status is Status.EXPIRED and calls == []


def test_keep_alive_fetcher_reuses_one_connection_and_survives_an_idle_close() -> None:
    """Three OCSP-sized exchanges over one TCP connection; after the responder closes the
    idle connection, the next fetch opens a new one and succeeds (sent once more)."""
    import socket
    import threading

    from cardio.pki import KeepAliveFetcher

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    accepted: list[int] = []
    close_after = {1: 3, 2: 1}  # first connection: 3 answers then idle close

    def serve() -> None:
        for n in (1, 2):
            conn, _ = srv.accept()
            accepted.append(n)
            with conn:
                buf = b""
                for _ in range(close_after[n]):
                    while b"\r\n\r\n" not in buf:
                        buf += conn.recv(65536)
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    length = int(next(h.split(b":")[1] for h in head.split(b"\r\n")
                                  if h.lower().startswith(b"content-length")))
                    while len(buf) < length:
                        buf += conn.recv(65536)
                    body, buf = buf[:length], buf[length:]
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(body), body.upper()))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    fetch = KeepAliveFetcher(timeout=5)
    url = f"http://127.0.0.1:{port}/ocsp/auth"
    try:
        assert [fetch(url, b"q%d" % i, "application/ocsp-request", 100) for i in range(3)] \
            == [b"Q0", b"Q1", b"Q2"]
        assert accepted == [1]
        import time

        time.sleep(0.1)  # the responder has closed the idle connection
        assert fetch(url, b"again", "application/ocsp-request", 100) == b"AGAIN"
        assert accepted == [1, 2]
    finally:
        fetch.close()
        srv.close()
        t.join(5)


def test_keep_alive_fetcher_refuses_what_http_fetch_refuses(pki: PkiEnv) -> None:
    from cardio.pki import KeepAliveFetcher
    from tests.pki_env import free_port

    fetch = KeepAliveFetcher(timeout=2)
    with pytest.raises(RevocationSourceError, match="only http://"):
        fetch("https://127.0.0.1/ocsp", b"x", "application/ocsp-request", 10)
    with pytest.raises(RevocationSourceError):
        fetch(f"http://127.0.0.1:{free_port()}/ocsp", b"x", "application/ocsp-request", 10)
    crl_url = pki.server.url + "/crl/auth.crl"
    with pytest.raises(RevocationSourceError, match="larger than 10 bytes"):
        fetch(crl_url, None, "", 10)
    with pytest.raises(RevocationSourceError, match="HTTP 404"):
        fetch(pki.server.url + "/nothing", None, "", 1000)
    assert len(fetch(crl_url, None, "", 1 << 20)) > 10  # and the fetcher still works
    fetch.close()
