"""The verifier, in-process: each typical request round-trips, and everything else is
refused with its own type — tampered disclosures, replayed presentations, a revoked
credential, an untrusted issuer, a disclosure the holder did not approve, and the rest of
the checks (typ, audience, freshness, expiry, missing or unrequested items)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from emulators.issuance.credentials import issue_credential, status_list_token
from kiosk.credentials import errors, sdjwt
from kiosk.credentials.holder import StoredCredential, Wallet, new_holder_key
from kiosk.credentials.jose import b64u_decode, b64u_encode, dumps_compact, jws_sign, key_to_jwk
from kiosk.credentials.juminhyo import PRESETS, JuminhyoRecord, Person
from kiosk.credentials.verifier import StatusTokens, Verifier
from kiosk.documents.seal import key_id
from kiosk.documents.trust import TrustEntry

JST = dt.timezone(dt.timedelta(hours=9))
NOW = dt.datetime(2026, 6, 1, 10, 0, tzinfo=JST)
T0 = NOW.timestamp()
URI = "https://center.example/v1/status/131016"
CODE = "131016"
RECORD = JuminhyoRecord(
    holder=Person("見本　花子", "ミホン　ハナコ", dt.date(1990, 4, 1), "2", "妻"),
    address="東京都見本区見本町一丁目1番1号", resident_since=dt.date(2020, 1, 1),
    household_head="見本　太郎", honseki="東京都見本区見本町一丁目1番地", hittousha="見本　太郎",
    household=(Person("見本　太郎", "ミホン　タロウ", dt.date(1988, 1, 1), "1", "世帯主"),
               Person("見本　一郎", "ミホン　イチロウ", dt.date(2015, 5, 5), "1", "子")),
    show_relationship=True)


@dataclasses.dataclass
class Issuer:
    key: ec.EllipticCurvePrivateKey
    code: str = CODE

    @property
    def kid(self) -> str:
        return key_id(self.key.public_key()).hex()

    def entry(self, **kw: object) -> TrustEntry:
        return TrustEntry(bytes.fromhex(self.kid), self.code, "見本区", self.key.public_key(),
                          dt.datetime(2026, 1, 1, tzinfo=JST), dt.datetime(2036, 1, 1,
                                                                          tzinfo=JST),
                          use="credential", **kw)  # type: ignore[arg-type]

    def status(self, revoked: list[int], at: float = T0) -> str:
        return status_list_token(uri=URI, invalid=revoked, key=self.key, kid=self.kid,
                                 now=int(at))


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer(ec.generate_private_key(ec.SECP256R1()))


def _issue(issuer: Issuer, tmp: Path, idx: int = 7, rec: JuminhyoRecord = RECORD,
           now: dt.datetime = NOW) -> StoredCredential:
    hk = new_holder_key()
    text, _exp = issue_credential(rec, issuer_code=issuer.code, key=issuer.key,
                                  kid=issuer.kid, holder_jwk=key_to_jwk(hk.public_key()),
                                  status_uri=URI, status_idx=idx, now=now)
    return Wallet(tmp).store(text, hk)


@pytest.fixture
def cred(issuer: Issuer, tmp_path: Path) -> StoredCredential:
    return _issue(issuer, tmp_path)


def _verifier(issuer: Issuer, *, revoked: list[int] | None = None,
              trust: list[TrustEntry] | None = None, at: float = T0) -> Verifier:
    return Verifier(trust if trust is not None else [issuer.entry()],
                    client_id="https://shop.example",
                    status=StatusTokens([issuer.status(revoked or [])]), clock=lambda: at)


# -- round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize(("preset", "expected"), [
    ("age_over_18", {"age_over_18": True}),
    ("name_address", {"name": "見本　花子",
                      "address": {"formatted": "東京都見本区見本町一丁目1番1号"}}),
    ("4jouhou", {"name": "見本　花子", "birthdate": "1990-04-01", "sex": 2,
                 "address": {"formatted": "東京都見本区見本町一丁目1番1号"}}),
])
def test_each_request_type_round_trips(issuer: Issuer, cred: StoredCredential, preset: str,
                                       expected: dict[str, object]) -> None:
    v = _verifier(issuer)
    req = v.request(PRESETS[preset], purpose="test")
    out = v.verify(cred.present(req, req.claims, now=T0), req)
    assert out.claims == expected and out.issuer == CODE and out.status_checked


def test_a_household_member_item_discloses_that_item_only(issuer: Issuer,
                                                          cred: StoredCredential) -> None:
    v = _verifier(issuer)
    req = v.request([("household", None, "birthdate")])
    text = cred.present(req, req.claims, now=T0)
    out = v.verify(text, req)
    assert out.claims == {"household": [{"birthdate": "1988-01-01"},
                                        {"birthdate": "2015-05-05"}]}
    assert "見本　太郎" not in _decoded(text)  # the members' names stay hidden


def test_the_holder_discloses_only_what_it_approves_and_the_verifier_asked(
        issuer: Issuer, cred: StoredCredential) -> None:
    v = _verifier(issuer)
    req = v.request(PRESETS["4jouhou"])
    # approved: name only (and honseki, which was not asked for and must not go out)
    text = cred.present(req, [("name",), ("honseki",)], now=T0)
    disclosed = {d.name for d in sdjwt.parse(text).disclosures}
    assert disclosed == {"name"}
    with pytest.raises(errors.MissingClaims):  # the verifier asked for all four
        v.verify(text, req)


def _decoded(text: str) -> str:
    sd = sdjwt.parse(text)
    return json.dumps([d.value for d in sd.disclosures], ensure_ascii=False)


# -- refusals -----------------------------------------------------------------------------------
def _swap_disclosure(text: str, name: str, value: object) -> str:
    """Replace the disclosure of ``name`` by one with another value (same salt)."""
    sd = sdjwt.parse(text)
    parts = text.split("~")
    for i, d in enumerate(sd.disclosures, start=1):
        if d.name == name:
            parts[i] = b64u_encode(dumps_compact([d.salt, name, value]))
    return "~".join(parts)


def _resign_kb(text: str, cred: StoredCredential, aud: str, nonce: str, iat: int) -> str:
    """What a holder would send if it (or malware with its key) rebuilt the KB-JWT."""
    head = text[:text.rindex("~") + 1]
    return head + sdjwt.make_kb_jwt(head, cred.key, aud=aud, nonce=nonce, iat=iat)


TAMPERS: dict[str, Callable[[str, StoredCredential, str], str]] = {
    # another value under the same salt, the KB-JWT re-made over it: no digest matches
    "altered value": lambda t, c, n: _resign_kb(
        _swap_disclosure(t, "birthdate", "2010-04-01"), c, "https://shop.example", n, int(T0)),
    # an invented disclosure the issuer never signed
    "invented claim": lambda t, c, n: _resign_kb(
        t[:t.rindex("~") + 1] + b64u_encode(dumps_compact(["c2FsdA", "age_over_18", True]))
        + "~", c, "https://shop.example", n, int(T0)),
    # the same disclosure twice
    "duplicated": lambda t, c, n: _resign_kb(
        t.split("~")[0] + "~" + t.split("~")[1] + "~" + t.split("~")[1] + "~", c,
        "https://shop.example", n, int(T0)),
    # a disclosure naming the reserved _sd
    "reserved name": lambda t, c, n: _resign_kb(
        t[:t.rindex("~") + 1] + b64u_encode(dumps_compact(["c2FsdA", "_sd", []])) + "~", c,
        "https://shop.example", n, int(T0)),
}


@pytest.mark.parametrize("how", sorted(TAMPERS))
def test_tampered_disclosures_are_refused(issuer: Issuer, cred: StoredCredential,
                                          how: str) -> None:
    v = _verifier(issuer)
    req = v.request(PRESETS["4jouhou"])
    text = TAMPERS[how](cred.present(req, req.claims, now=T0), cred, req.nonce)
    with pytest.raises(errors.TamperedDisclosure):
        v.verify(text, req)


def test_a_tampered_issuer_payload_is_refused(issuer: Issuer, cred: StoredCredential) -> None:
    v = _verifier(issuer)
    req = v.request(PRESETS["age_over_18"])
    text = cred.present(req, req.claims, now=T0)
    h, p, s = text.split("~")[0].split(".")
    payload = json.loads(b64u_decode(p))
    payload["exp"] += 10 * 365 * 86400  # a longer life
    forged = ".".join([h, b64u_encode(dumps_compact(payload)), s])
    with pytest.raises(errors.BadIssuerSignature):
        v.verify(_resign_kb(forged + text[text.index("~"):text.rindex("~") + 1], cred,
                            "https://shop.example", req.nonce, int(T0)), req)


def test_a_disclosure_the_holder_did_not_approve_is_refused(
        issuer: Issuer, cred: StoredCredential) -> None:
    """Added after the holder signed (by whoever relayed it, or a verifier that kept a
    disclosure from an earlier presentation): sd_hash no longer matches."""
    v = _verifier(issuer)
    req = v.request([("name",), ("address",)])
    approved = cred.present(req, [("name",)], now=T0)
    full = sdjwt.parse(cred.sd_jwt)
    address = next(d for d in full.disclosures if d.name == "address").encoded
    jwt_and_disc, kb = approved.rsplit("~", 1)
    with pytest.raises(errors.UnapprovedDisclosure):
        v.verify(jwt_and_disc + "~" + address + "~" + kb, req)
    # ...and one that was dropped after signing is refused the same way
    req2 = v.request([("name",), ("address",)])
    both = cred.present(req2, req2.claims, now=T0)
    parts = both.split("~")
    with pytest.raises(errors.UnapprovedDisclosure):
        v.verify("~".join([parts[0], parts[1], parts[-1]]), req2)


def test_replayed_presentations_are_refused(issuer: Issuer, cred: StoredCredential) -> None:
    v = _verifier(issuer)
    req = v.request(PRESETS["age_over_18"])
    text = cred.present(req, req.claims, now=T0)
    v.verify(text, req)
    with pytest.raises(errors.ReplayedPresentation):  # the same bytes again
        v.verify(text, req)
    new = v.request(PRESETS["age_over_18"])
    with pytest.raises(errors.ReplayedPresentation):  # an old nonce against a new request
        v.verify(text, new)
    other = _verifier(issuer)  # a nonce this verifier never issued
    req3 = other.request(PRESETS["age_over_18"])
    with pytest.raises(errors.ReplayedPresentation):
        v.verify(cred.present(req3, req3.claims, now=T0),
                 dataclasses.replace(req3, client_id="https://shop.example"))
    expiring = v.request(PRESETS["age_over_18"], ttl=30)
    late = Verifier(v.trust, client_id=v.client_id, status=v.status, nonces=v.nonces,
                    clock=lambda: T0 + 120, freshness=600)
    with pytest.raises(errors.ReplayedPresentation):  # the nonce expired unused
        late.verify(cred.present(expiring, expiring.claims, now=T0 + 20), expiring)


def test_a_revoked_credential_is_refused(issuer: Issuer, cred: StoredCredential) -> None:
    v = _verifier(issuer, revoked=[7])
    req = v.request(PRESETS["age_over_18"])
    with pytest.raises(errors.CredentialRevoked):
        v.verify(cred.present(req, req.claims, now=T0), req)


@pytest.mark.parametrize("case", ["no list", "stale list", "other issuer's list",
                                  "index out of range"])
def test_without_a_usable_status_list_nothing_is_accepted(issuer: Issuer, tmp_path: Path,
                                                          case: str) -> None:
    cred = _issue(issuer, tmp_path, idx=7 if case != "index out of range" else 10**6)
    stranger = Issuer(ec.generate_private_key(ec.SECP256R1()), code="999997")  # trusted,
    # but for another municipality: its list says nothing about this one's credentials
    tokens = {"no list": [], "stale list": [issuer.status([], at=T0 - 2 * 86400)],
              "other issuer's list": [stranger.status([])],
              "index out of range": [issuer.status([])]}[case]
    v = Verifier([issuer.entry(), stranger.entry()], client_id="https://shop.example",
                 status=StatusTokens(tokens), clock=lambda: T0)
    req = v.request(PRESETS["age_over_18"])
    with pytest.raises(errors.StatusUnavailable):
        v.verify(cred.present(req, req.claims, now=T0), req)


UNTRUSTED: dict[str, Callable[[Issuer], list[TrustEntry]]] = {
    "not in the list": lambda i: [Issuer(ec.generate_private_key(ec.SECP256R1())).entry()],
    "another municipality's key": lambda i: [dataclasses.replace(i.entry(), issuer="999997")],
    "a seal-only key": lambda i: [dataclasses.replace(i.entry(), use="seal")],
    "a revoked key": lambda i: [i.entry(revoked_at=NOW, revocation_reason="keyCompromise")],
    "an expired key": lambda i: [dataclasses.replace(
        i.entry(), not_after=NOW - dt.timedelta(seconds=1))],
    "no trust list": lambda i: [],
}


@pytest.mark.parametrize("case", sorted(UNTRUSTED))
def test_untrusted_issuers_are_refused(issuer: Issuer, cred: StoredCredential,
                                       case: str) -> None:
    v = _verifier(issuer, trust=UNTRUSTED[case](issuer))
    req = v.request(PRESETS["age_over_18"])
    with pytest.raises(errors.UntrustedIssuer):
        v.verify(cred.present(req, req.claims, now=T0), req)


def test_a_credential_signed_by_an_untrusted_key_under_a_trusted_kid(
        issuer: Issuer, tmp_path: Path) -> None:
    impostor = Issuer(ec.generate_private_key(ec.SECP256R1()))
    hk = new_holder_key()
    text, _ = issue_credential(RECORD, issuer_code=CODE, key=impostor.key, kid=issuer.kid,
                               holder_jwk=key_to_jwk(hk.public_key()), status_uri=URI,
                               status_idx=1, now=NOW)
    cred = Wallet(tmp_path).store(text, hk)
    v = _verifier(issuer)
    req = v.request(PRESETS["age_over_18"])
    with pytest.raises(errors.BadIssuerSignature):
        v.verify(cred.present(req, req.claims, now=T0), req)


def test_holder_binding_audience_and_freshness(issuer: Issuer, cred: StoredCredential) -> None:
    v = _verifier(issuer)
    req = v.request(PRESETS["age_over_18"])
    text = cred.present(req, req.claims, now=T0)
    with pytest.raises(errors.HolderBindingFailed):  # no KB-JWT
        v.verify(text[:text.rindex("~") + 1], req)
    thief = new_holder_key()  # someone who copied the credential but not the key
    head = text[:text.rindex("~") + 1]
    with pytest.raises(errors.HolderBindingFailed):
        v.verify(head + sdjwt.make_kb_jwt(head, thief, aud=req.client_id, nonce=req.nonce,
                                          iat=int(T0)), req)
    with pytest.raises(errors.WrongAudience):
        v.verify(_resign_kb(text, cred, "https://other.example", req.nonce, int(T0)), req)
    req2 = v.request(PRESETS["age_over_18"])
    with pytest.raises(errors.StalePresentation):
        v.verify(_resign_kb(text, cred, req2.client_id, req2.nonce, int(T0) - 3600), req2)


def test_expiry_type_and_unrequested_items(issuer: Issuer, cred: StoredCredential,
                                           tmp_path: Path) -> None:
    late = _verifier(issuer, at=T0 + 400 * 86400)
    late.status = StatusTokens([issuer.status([], at=T0 + 400 * 86400)])
    req = late.request(PRESETS["age_over_18"])
    with pytest.raises(errors.CredentialExpired):
        late.verify(cred.present(req, req.claims, now=T0 + 400 * 86400), req)
    v = _verifier(issuer)
    req = v.request(PRESETS["age_over_18"])
    everything = cred.sd_jwt  # every disclosure, KB-JWT made over all of them
    with pytest.raises(errors.UnrequestedDisclosure):
        v.verify(everything + sdjwt.make_kb_jwt(everything, cred.key, aud=req.client_id,
                                                nonce=req.nonce, iat=int(T0)), req)
    other = dataclasses.replace(req, vct_values=("urn:example:other",))
    with pytest.raises(errors.WrongCredentialType):
        v.verify(cred.present(req, req.claims, now=T0), other)
    h, p, _s = everything.split("~")[0].split(".")
    header = json.loads(b64u_decode(h))
    header["typ"] = "JWT"
    forged = jws_sign(header, json.loads(b64u_decode(p)), issuer.key) + "~"
    with pytest.raises(errors.WrongCredentialType):
        v.verify(forged + sdjwt.make_kb_jwt(forged, cred.key, aud=req.client_id,
                                            nonce=req.nonce, iat=int(T0)), req)


def test_garbage_is_malformed_not_a_crash(issuer: Issuer) -> None:
    v = _verifier(issuer)
    req = v.request(PRESETS["age_over_18"])
    for text in ["", "~", "a.b.c~", "x" * 300_000, "eyJ9.e30.AA~~", "\u3042~",
                 "eyJhbGciOiJub25lIn0.e30.~"]:
        with pytest.raises(errors.PresentationRefused):
            v.verify(text, req)


def test_an_age_claim_never_outlives_its_truth() -> None:
    from kiosk.credentials.juminhyo import age_claim, validity_end

    today = dt.date(2026, 6, 1)
    last = validity_end(today)
    assert last == dt.date(2026, 8, 31)  # the month of the 90th day, whoever the holder
    assert age_claim(dt.date(2008, 6, 1), 18, today, last) is True  # 18 today
    assert age_claim(dt.date(2008, 6, 10), 18, today, last) is None  # 18 inside: withheld
    assert age_claim(dt.date(2008, 9, 1), 18, today, last) is False  # under 18 throughout
    assert age_claim(dt.date(2008, 2, 29), 18, dt.date(2026, 2, 1),
                     validity_end(dt.date(2026, 2, 1))) is None
    assert validity_end(dt.date(2026, 10, 15)) == dt.date(2027, 1, 31)
