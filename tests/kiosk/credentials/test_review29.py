"""Regression tests for the issue-29 security review (/work/notes/review29.md): each test
failed on the code as first committed and names the finding it pins down."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kiosk.credentials import errors, sdjwt
from kiosk.credentials.holder import StoredCredential, Wallet
from kiosk.credentials.juminhyo import MEMBER_PAD, VCT, JuminhyoRecord
from tests.kiosk.credentials.test_verifier import RECORD, T0, Issuer, _issue, _verifier


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
