"""Regression tests for the issue-29 security review (/work/notes/review29.md): each test
failed on the code as first committed and names the finding it pins down."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from emulators.issuance.credentials import issue_credential, status_list_token
from kiosk.credentials import errors, sdjwt
from kiosk.credentials.holder import StoredCredential, Wallet, new_holder_key
from kiosk.credentials.jose import key_to_jwk
from kiosk.credentials.juminhyo import MEMBER_PAD, VCT, JuminhyoRecord
from kiosk.credentials.verifier import FetchingStatus, StatusTokens, Verifier
from tests.kiosk.credentials.test_verifier import (
    NOW,
    RECORD,
    T0,
    URI,
    Issuer,
    _issue,
    _verifier,
)


@pytest.fixture(name="issuer", scope="module")
def _issuer_fixture() -> Issuer:
    return Issuer(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(name="cred")
def _cred_fixture(issuer: Issuer, tmp_path: Path) -> StoredCredential:
    return _issue(issuer, tmp_path)


def _forge(cred: StoredCredential, req_nonce: str, show: set[sdjwt.Path]) -> str:
    """A holder's presentation made of exactly the disclosures at ``show`` (issuer paths),
    key-bound properly: what a holder that picks members would send."""
    sd = cred.parsed
    _claims, paths = sdjwt.resolve(sd.payload, sd.disclosures)
    head = "~".join([sd.jwt, *(d.encoded for d in sd.disclosures if paths[d.digest] in show),
                     ""])
    return head + sdjwt.make_kb_jwt(head, cred.key, aud="https://shop.example",
                                    nonce=req_nonce, iat=int(T0))


# -- finding 1: household members hidden, or one shifted into another's place ---------------
@pytest.mark.parametrize(("ask", "show"), [
    # every member's name asked, member 0 only shown
    ([("household", None, "name")], {("household",), ("household", 0),
                                     ("household", 0, "name")}),
    # the whole household asked, no member shown
    ([("household",)], {("household",)}),
    # member 0's name asked, member 1's shown in its place
    ([("household", 0, "name")], {("household",), ("household", 1),
                                  ("household", 1, "name")}),
])
def test_a_holder_cannot_hide_or_renumber_household_members(
        issuer: Issuer, cred: StoredCredential, ask: list[sdjwt.Path],
        show: set[sdjwt.Path]) -> None:
    v = _verifier(issuer)
    req = v.request(ask)
    with pytest.raises((errors.MissingClaims, errors.UnrequestedDisclosure)):
        v.verify(_forge(cred, req.nonce, show), req)


def test_an_index_names_the_issuers_position(issuer: Issuer, cred: StoredCredential) -> None:
    v = _verifier(issuer)
    req = v.request([("household", 1, "name")])
    out = v.verify(cred.present(req, req.claims, now=T0), req)
    assert out.claims == {"household": [None, {"name": "見本　一郎"}]}
    assert out.disclosed == (("household",), ("household", 1), ("household", 1, "name"))


def test_whole_household_is_every_member(issuer: Issuer, cred: StoredCredential) -> None:
    v = _verifier(issuer)
    req = v.request([("household",)])
    out = v.verify(cred.present(req, req.claims, now=T0), req)
    assert [m["name"] for m in out.claims["household"]] == ["見本　太郎", "見本　一郎"]


def test_resolve_keeps_positions_and_reports_withheld(cred: StoredCredential) -> None:
    sd = cred.parsed
    _c, paths = sdjwt.resolve(sd.payload, sd.disclosures)
    keep = [d for d in sd.disclosures if paths[d.digest] in {("household",), ("household", 1)}]
    withheld: set[sdjwt.Path] = set()
    claims, got = sdjwt.resolve(sd.payload, keep, withheld)
    assert claims["household"][0] is None and claims["household"][1] is not None
    assert withheld == {("household", 0)}
    assert set(got.values()) == {("household",), ("household", 1)}



# -- finding 2: exp revealed the birth date; a member's digest count revealed 続柄 -------------
def _payload(issuer: Issuer, tmp_path: Path, rec: JuminhyoRecord) -> dict[str, object]:
    cred = _issue(issuer, tmp_path, rec=rec)
    return cred.parsed.payload


def test_exp_does_not_depend_on_the_birth_date(issuer: Issuer, tmp_path: Path) -> None:
    """Every birth date from 17 years 9 months to 20 years 3 months before the issuance day
    (the ones whose exp used to be the day before a birthday) gets the same exp."""
    exps = set()
    day = dt.date(2006, 3, 1)
    while day < dt.date(2008, 9, 1):
        rec = dataclasses.replace(RECORD, holder=dataclasses.replace(RECORD.holder,
                                                                     birthdate=day),
                                  household=None)
        exps.add(_payload(issuer, tmp_path, rec)["exp"])
        day += dt.timedelta(days=9)
    assert len(exps) == 1


@pytest.mark.parametrize(("birth", "expected"), [
    (dt.date(2008, 6, 1), {"age_over_18": True, "age_over_20": False}),
    (dt.date(2008, 7, 15), {"age_over_20": False}),  # 18 inside the validity: no claim
    (dt.date(2009, 1, 1), {"age_over_18": False, "age_over_20": False}),
    (dt.date(2006, 8, 31), {"age_over_18": True}),  # 20 on the last valid day
    (dt.date(1990, 4, 1), {"age_over_18": True, "age_over_20": True}),
])
def test_age_claims_hold_for_the_whole_validity(issuer: Issuer, tmp_path: Path,
                                                birth: dt.date,
                                                expected: dict[str, bool]) -> None:
    rec = dataclasses.replace(RECORD, holder=dataclasses.replace(RECORD.holder, birthdate=birth))
    cred = _issue(issuer, tmp_path, rec=rec)
    claims, _ = cred.contents()
    assert {k: v for k, v in claims.items() if k.startswith("age_over")} == expected
    assert len(cred.parsed.payload["_sd"]) == 16  # a withheld claim leaves a decoy


@pytest.mark.parametrize("relationship", [False, True])
def test_a_disclosed_member_shows_the_same_digest_count_with_or_without_zokugara(
        issuer: Issuer, tmp_path: Path, relationship: bool) -> None:
    cred = _issue(issuer, tmp_path,
                  rec=dataclasses.replace(RECORD, show_relationship=relationship))
    members = [d.value for d in cred.parsed.disclosures
               if d.name is None and isinstance(d.value, dict)]
    assert len(members) == 2
    assert {len(m["_sd"]) for m in members} == {MEMBER_PAD}


# -- finding 4: escape sequences from the request reached the holder's terminal -----------
ESC = "\x1b"
_BAD_TEXT = [ESC + "[8m", "\u202e", "a\rb", "\u2028"]


@pytest.mark.parametrize("bad", _BAD_TEXT)
def test_requests_with_control_characters_are_refused(bad: str) -> None:
    from kiosk.credentials.request import PresentationRequest

    good = {"type": "cardio-presentation-request/1", "client_id": "https://shop.example",
            "nonce": "A" * 43, "purpose": "年齢確認のため", "expires_at": int(T0) + 300,
            "dcql_query": {"credentials": [{"id": "juminhyo", "format": "dc+sd-jwt",
                                            "meta": {"vct_values": [VCT]},
                                            "claims": [{"path": ["age_over_18"]}]}]}}
    assert PresentationRequest.from_json(good).purpose == "年齢確認のため"
    with pytest.raises(errors.WalletError):
        PresentationRequest.from_json({**good, "purpose": "年齢確認" + bad})
    claims = [{"path": ["age_over_18"]}, {"path": [bad + "18歳以上"]}]
    with pytest.raises(errors.WalletError):
        PresentationRequest.from_json(
            {**good, "dcql_query": {"credentials": [{**good["dcql_query"]["credentials"][0],
                                                     "claims": claims}]}})


def test_approve_all_prints_exactly_what_goes_out_and_no_escape(
        cred: StoredCredential, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse
    import json

    from kiosk.credentials.cli import cmd_present

    v = _verifier(Issuer(cred.key))  # only the request matters here
    req = v.request([("honseki",), ("household", None, "name")], purpose="本人確認")
    (tmp_path / "req.json").write_text(json.dumps(req.to_json()), encoding="utf-8")
    stored = Wallet(tmp_path / "w").store(cred.sd_jwt, cred.key)
    args = argparse.Namespace(request=str(tmp_path / "req.json"), out=str(tmp_path / "p"),
                              credential=stored.id, approve="all", now=None,
                              wallet=str(tmp_path / "w"), json=False)
    args.now = dt.datetime.fromtimestamp(T0, dt.UTC).isoformat()
    assert cmd_present(args) == 0
    out, err = capsys.readouterr()
    assert ESC not in out + err
    for value in ("東京都見本区見本町一丁目1番地", "見本　太郎", "見本　一郎"):
        assert value in out  # each disclosed value is listed after signing
    assert "[household.0.name]" in out and "[household.1.name]" in out
    assert "[honseki]" in out and "address" not in out


# -- finding 5: an unverified status answer was cached for a day; no overall deadline -------
class _StatusServer:
    """A status server on 127.0.0.1 whose answer the test chooses: ``good`` (the token),
    ``junk`` (a token signed by nobody trusted, ttl one day), ``trickle`` (1 byte/0.2 s)."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.mode, self.good = "good", ""
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                import time as _t

                if outer.mode == "trickle":
                    self.send_response(200)
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    for _ in range(100):
                        try:
                            self.wfile.write(b"A")
                            self.wfile.flush()
                        except OSError:
                            return
                        _t.sleep(0.2)
                    return
                body = (outer.good if outer.mode == "good" else sdjwt.jws_sign(
                    {"alg": "ES256", "typ": "statuslist+jwt", "kid": "00"},
                    {"sub": outer.uri, "ttl": 86400},
                    ec.generate_private_key(ec.SECP256R1()))).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/status/131016"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def status_server() -> Iterator[_StatusServer]:
    srv = _StatusServer()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _fetching_verify(issuer: Issuer, cred: StoredCredential, fs: FetchingStatus) -> object:
    v = Verifier([issuer.entry()], client_id="https://shop.example", status=fs,
                 clock=lambda: T0)
    req = v.request([("age_over_18",)])
    return v.verify(cred.present(req, req.claims, now=T0), req)


def test_a_bad_status_answer_is_not_cached(issuer: Issuer, tmp_path: Path,
                                           status_server: _StatusServer) -> None:
    cred = _issue_at(issuer, tmp_path, status_server.uri)
    status_server.good = status_list_token(uri=status_server.uri, invalid=[], key=issuer.key,
                                           kid=issuer.kid, now=int(T0))
    fs = FetchingStatus(clock=lambda: T0)
    status_server.mode = "junk"
    with pytest.raises(errors.StatusUnavailable):
        _fetching_verify(issuer, cred, fs)
    status_server.mode = "good"  # the real server answers again: used at once
    assert _fetching_verify(issuer, cred, fs).claims == {"age_over_18": True}  # type: ignore[attr-defined]
    status_server.mode = "junk"  # ...and the verified token is what stays cached
    assert _fetching_verify(issuer, cred, fs).claims == {"age_over_18": True}  # type: ignore[attr-defined]


def test_a_trickling_status_server_cannot_hold_the_verifier(
        issuer: Issuer, tmp_path: Path, status_server: _StatusServer) -> None:
    import time

    cred = _issue_at(issuer, tmp_path, status_server.uri)
    status_server.mode = "trickle"
    started = time.monotonic()
    with pytest.raises(errors.StatusUnavailable):
        _fetching_verify(issuer, cred, FetchingStatus(clock=lambda: T0, deadline=1.0))
    assert time.monotonic() - started < 3.0


def _issue_at(issuer: Issuer, tmp_path: Path, uri: str) -> StoredCredential:
    hk = new_holder_key()
    text, _ = issue_credential(RECORD, issuer_code=issuer.code, key=issuer.key,
                               kid=issuer.kid, holder_jwk=key_to_jwk(hk.public_key()),
                               status_uri=uri, status_idx=7, now=NOW)
    return Wallet(tmp_path / "w5").store(text, hk)


# -- finding 6: the status token's key period was not checked; bits was ignored -------------
def _status_token(issuer: Issuer, status_list: dict[str, object], iat: float = T0) -> str:
    return sdjwt.jws_sign({"alg": "ES256", "typ": "statuslist+jwt", "kid": issuer.kid},
                          {"sub": URI, "iat": int(iat), "exp": int(iat) + 86400, "ttl": 3600,
                           "status_list": status_list}, issuer.key)


@pytest.mark.parametrize("period", ["expired", "not yet valid"])
def test_a_status_token_signed_by_a_key_outside_its_period_is_unusable(
        issuer: Issuer, tmp_path: Path, period: str) -> None:
    old = Issuer(ec.generate_private_key(ec.SECP256R1()))
    entry = old.entry()
    entry = dataclasses.replace(entry, not_after=NOW - dt.timedelta(days=1)) \
        if period == "expired" else dataclasses.replace(entry, not_before=NOW
                                                        + dt.timedelta(days=30))
    cred = _issue(issuer, tmp_path)
    v = Verifier([issuer.entry(), entry], client_id="https://shop.example",
                 status=StatusTokens([old.status([])]), clock=lambda: T0)
    req = v.request([("age_over_18",)])
    with pytest.raises(errors.StatusUnavailable):
        v.verify(cred.present(req, req.claims, now=T0), req)


@pytest.mark.parametrize(("idx", "raw", "revoked"), [
    (7, bytes([0, 0b10000000]), True),  # bits=2: entry 7 is 2 (SUSPENDED)
    (3, bytes([0b01000000]), True),  # entry 3 is 1 (INVALID); read as 1 bit it was entry 6
    (6, bytes([0b01000000]), False),  # ...and entry 6 (bits 12-13 of byte 1) is VALID
])
def test_the_status_lists_bits_are_honoured(issuer: Issuer, tmp_path: Path, idx: int,
                                            raw: bytes, revoked: bool) -> None:
    import zlib

    cred = _issue(issuer, tmp_path, idx=idx)
    token = _status_token(issuer, {"bits": 2, "lst": sdjwt.b64u_encode(
        zlib.compress(raw + bytes(1000)))})
    v = Verifier([issuer.entry()], client_id="https://shop.example",
                 status=StatusTokens([token]), clock=lambda: T0)
    req = v.request([("age_over_18",)])
    text = cred.present(req, req.claims, now=T0)
    if revoked:
        with pytest.raises(errors.CredentialRevoked):
            v.verify(text, req)
    else:
        assert v.verify(text, req).claims == {"age_over_18": True}


# -- finding 7: the holder's JWK was copied into cnf as sent --------------------------------
def test_cnf_holds_only_the_public_key_members(issuer: Issuer) -> None:
    hk = new_holder_key()
    jwk = {**key_to_jwk(hk.public_key()), "kid": "tracking-handle-42",
           "x5u": "https://tracker.example/" + "a" * 8000}
    text, _ = issue_credential(RECORD, issuer_code=issuer.code, key=issuer.key,
                               kid=issuer.kid, holder_jwk=jwk, status_uri=URI,
                               status_idx=7, now=NOW)
    cnf = sdjwt.parse(text).payload["cnf"]
    assert cnf == {"jwk": key_to_jwk(hk.public_key())}
    assert len(text) < 8000


# -- finding 8: a request altered while keeping its nonce was accepted ------------------------
def test_a_downgraded_request_keeping_the_nonce_is_refused(issuer: Issuer,
                                                           cred: StoredCredential) -> None:
    v = _verifier(issuer)
    req = v.request([("name",), ("birthdate",), ("sex",), ("address",)])
    less = dataclasses.replace(req, claims=(("age_over_18",),))  # edited in transit
    with pytest.raises(errors.ReplayedPresentation):
        v.verify(cred.present(less, less.claims, now=T0), less)
    with pytest.raises(errors.ReplayedPresentation):  # and the nonce is spent
        v.verify(cred.present(req, req.claims, now=T0), req)


def test_a_request_file_with_another_client_id_is_refused(issuer: Issuer,
                                                          cred: StoredCredential,
                                                          tmp_path: Path) -> None:
    """``cardio credential verify`` takes client_id from the request file: one edited to
    name another verifier (to whom the holder then presented) must not pass."""
    from kiosk.credentials.verifier import DirectoryNonces

    state = DirectoryNonces(tmp_path / "nonces")
    mine = Verifier([issuer.entry()], client_id="https://shop.example",
                    status=StatusTokens([issuer.status([])]), nonces=state, clock=lambda: T0)
    req = mine.request([("age_over_18",)])
    other = dataclasses.replace(req, client_id="https://relay.example")
    theirs = Verifier([issuer.entry()], client_id="https://relay.example",
                      status=StatusTokens([issuer.status([])]), nonces=state, clock=lambda: T0)
    with pytest.raises(errors.ReplayedPresentation):
        theirs.verify(cred.present(other, other.claims, now=T0), other)
    req2 = mine.request([("age_over_18",)])  # the honest round trip still works
    assert mine.verify(cred.present(req2, req2.claims, now=T0), req2).claims == {
        "age_over_18": True}
