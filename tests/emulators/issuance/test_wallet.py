"""The resident's wallet against the real ``issuance serve`` on 127.0.0.1: the 住民票
credential obtained after JPKI authentication with a software card, presented to a verifier
for each typical request, revoked through the status list; and what the wallet endpoints
refuse (a reused nonce, a card signature over another holder key, a proof by another key,
个人番号 as an option)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emulators.document_issuers import export_trust_list
from emulators.issuance.rules import Resident
from emulators.issuance.wallet import revoke_credentials
from kiosk.credentials import sdjwt
from kiosk.credentials.client import obtain_credential
from kiosk.credentials.errors import CredentialRevoked, IssuanceRefused
from kiosk.credentials.holder import StoredCredential, Wallet, new_holder_key
from kiosk.credentials.jose import key_to_jwk
from kiosk.credentials.juminhyo import PRESETS
from kiosk.credentials.messages import card_challenge, holder_proof
from kiosk.credentials.verifier import FetchingStatus, StatusTokens, Verifier
from kiosk.documents.trust import TrustEntry, load_trust_list
from tests.emulators.issuance.conftest import Service
from tests.emulators.issuance.kiosk_sim import Card


def _clock(service: Service):  # type: ignore[no-untyped-def]
    """The service's business clock (``--now``): credentials and status tokens carry its
    times, so the relying party and the holder run on it too."""
    offset = service.now.timestamp() - time.time()
    return lambda: time.time() + offset


def _signer(card: Card):  # type: ignore[no-untyped-def]
    app = card.jpki()
    app.verify_pin("auth", card.pin)

    def sign(challenge: bytes) -> tuple[bytes, bytes]:
        return app.certificate_der("auth"), app.sign("auth", challenge)

    return sign


@pytest.fixture(scope="module")
def trust(service: Service, tmp_path_factory: pytest.TempPathFactory) -> list[TrustEntry]:
    out = tmp_path_factory.mktemp("trust")
    export_trust_list(out, service.jlis)
    return load_trust_list(out)


@pytest.fixture(scope="module")
def household_card(service: Service) -> Card:
    """A card of a resident who lives with others and may get a 住民票 today."""
    with service.db.tx() as t:
        row = t.one(f"SELECT {Resident.COLUMNS} FROM residents r WHERE status='active' AND"
                    " support_measure=0 AND gaiji_pending=0 AND birth < '2000-01-01' AND"
                    " moved_in < '2025-01-01' AND length(name) < 12 AND length(address) < 40"
                    " AND (SELECT COUNT(*) FROM residents x WHERE x.household_id ="
                    " r.household_id AND x.status='active') >= 2 ORDER BY id LIMIT 1")
    return service.card(Resident.from_row(row).id)


@pytest.fixture(scope="module")
def credential(service: Service, household_card: Card, tmp_path_factory: pytest.TempPathFactory
               ) -> StoredCredential:
    wallet = Wallet(tmp_path_factory.mktemp("wallet"))
    return obtain_credential(service.info["center"], _signer(household_card), wallet,
                             options={"scope": "household", "honseki": "yes",
                                      "relationship": "yes"})


def _resident(service: Service, rid: str) -> Resident:
    with service.db.tx() as t:
        return Resident.from_row(t.one(f"SELECT {Resident.COLUMNS} FROM residents WHERE id=?",
                                       (rid,)))


def test_each_typical_request_round_trips_over_http(
        service: Service, household_card: Card, credential: StoredCredential,
        trust: list[TrustEntry]) -> None:
    r = _resident(service, household_card.resident_id)
    clock = _clock(service)
    status = FetchingStatus()  # the municipality's list over HTTP, as a relying party would
    v = Verifier(trust, client_id="https://bank.example", status=status, clock=clock)
    seen = {}
    for name, paths in PRESETS.items():
        req = v.request(paths, purpose=name)
        out = v.verify(credential.present(req, req.claims, now=clock()), req)
        assert out.status_checked and out.issuer == r.municipality
        seen[name] = out.claims
    assert seen["age_over_18"] == {"age_over_18": True}
    assert seen["name_address"] == {"name": r.name, "address": {"formatted": r.address}}
    assert seen["4jouhou"] == {"name": r.name, "birthdate": r.birth.isoformat(),
                               "sex": int(r.sex), "address": {"formatted": r.address}}
    req = v.request([("household", None, "name"), ("honseki",), ("relationship",)])
    out = v.verify(credential.present(req, req.claims, now=clock()), req)
    assert out.claims["honseki"] == r.honseki and out.claims["relationship"] == r.relationship
    assert {m["name"] for m in out.claims["household"]} and \
        all(set(m) == {"name"} for m in out.claims["household"])


def test_the_credential_never_carries_my_number_or_juminhyo_code(
        service: Service, household_card: Card, credential: StoredCredential) -> None:
    r = _resident(service, household_card.resident_id)
    sd = sdjwt.parse(credential.sd_jwt)
    decoded = json.dumps([sd.payload, *(d.value for d in sd.disclosures)], ensure_ascii=False)
    claims, _ = credential.contents()
    assert r.name in decoded  # the search would find them
    assert r.my_number not in decoded and r.juminhyo_code not in decoded
    assert not {"my_number", "juminhyo_code"} & set(claims)


def test_a_revoked_credential_is_refused_once_the_list_says_so(
        service: Service, trust: list[TrustEntry], tmp_path: Path) -> None:
    card = service.card()
    cred = obtain_credential(service.info["center"], _signer(card), Wallet(tmp_path / "w"))
    clock = _clock(service)
    v = Verifier(trust, client_id="https://shop.example", status=FetchingStatus(),
                 clock=clock)
    req = v.request(PRESETS["age_over_18"])
    v.verify(cred.present(req, req.claims, now=clock()), req)  # valid before
    got = service.cli("revoke-credentials", "--resident", card.resident_id, "--json")
    assert got.returncode == 0 and json.loads(got.stdout) == {"revoked": 1}, got.stderr
    assert revoke_credentials(service.db, resident_id=card.resident_id) == 0  # done once
    fresh = httpx.get(json.loads(base64.urlsafe_b64decode(
        cred.sd_jwt.split(".")[1] + "==").decode())["status"]["status_list"]["uri"]).text
    v2 = Verifier(trust, client_id="https://shop.example", status=StatusTokens([fresh]),
                  clock=clock)
    req = v2.request(PRESETS["age_over_18"])
    with pytest.raises(CredentialRevoked):
        v2.verify(cred.present(req, req.claims, now=clock()), req)


@pytest.fixture
def http(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.info["center"]) as c:
        yield c


def _open(http: httpx.Client, rid: str) -> dict[str, str]:
    r = http.post("/v1/wallet/sessions", json={"request_id": rid, "v": "cardio-issuance/1"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _ask(http: httpx.Client, card: Card, opened: dict[str, str], *, sign_jwk: dict[str, str]
         | None = None, proof_key: object = None, options: dict[str, str] | None = None
         ) -> httpx.Response:
    key = new_holder_key()
    jwk = key_to_jwk(key.public_key())
    cert, sig = _signer(card)(card_challenge(opened["session_id"], opened["nonce"],
                                             sign_jwk or jwk))
    body = {"request_id": opened["request_id"], "session_id": opened["session_id"],
            "certificate": base64.b64encode(cert).decode(),
            "signature": base64.b64encode(sig).decode(), "holder_jwk": jwk,
            "holder_proof": holder_proof(proof_key or key, opened["nonce"]),  # type: ignore
            "options": options or {}, "v": "cardio-issuance/1"}
    return http.post(f"/v1/wallet/sessions/{opened['session_id']}/credential", json=body)


def test_the_wallet_endpoints_refuse_what_they_must(service: Service, http: httpx.Client,
                                                    household_card: Card) -> None:
    opened = _open(http, "wal-test-0001")
    assert _ask(http, household_card, opened).status_code == 200
    again = _ask(http, household_card, opened)  # the nonce was spent by the first
    assert (again.status_code, again.json()["error"]) == (409, "nonce_used")
    other = key_to_jwk(new_holder_key().public_key())
    r = _ask(http, household_card, _open(http, "wal-test-0002"), sign_jwk=other)
    assert (r.status_code, r.json()["error"]) == (403, "card_signature_invalid")
    r = _ask(http, household_card, _open(http, "wal-test-0003"), proof_key=new_holder_key())
    assert (r.status_code, r.json()["error"]) == (400, "bad_holder_proof")
    r = _ask(http, household_card, _open(http, "wal-test-0004"),
             options={"my_number": "yes"})
    assert (r.status_code, r.json()["error"]) == (400, "bad_option")
    assert http.get("/v1/status/000000").status_code == 404


def test_the_client_reports_a_refusal_typed(service: Service, tmp_path: Path) -> None:
    def forged(challenge: bytes) -> tuple[bytes, bytes]:
        return b"not a certificate", b"x"

    with pytest.raises(IssuanceRefused) as e:
        obtain_credential(service.info["center"], forged, Wallet(tmp_path))
    assert e.value.code == "bad_certificate"


def test_the_command_line_round_trip(service: Service, tmp_path: Path) -> None:
    """obtain (card + PIN from an environment variable) → request → present → verify with
    the exported trust list and the status list fetched over HTTP; then the replay and a
    tampered presentation are refused with exit 6 and their reason."""
    import subprocess
    import sys

    card = service.card()
    env = {**service.env, "CARDIO_WALLET_DIR": str(tmp_path / "wallet"),
           "CARDIO_VERIFIER_DIR": str(tmp_path / "rp"), "AUTH_PIN": card.pin}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cardio.cli", "credential", *args],
                              capture_output=True, text=True, env=env, timeout=120)

    got = cli("obtain", "--center", service.info["center"], "--reader", f"emu:{card.path}",
              "--pin-env", "AUTH_PIN", "--json")
    assert got.returncode == 0, got.stderr
    assert card.pin not in got.stdout + got.stderr
    listed = json.loads(cli("list", "--json").stdout)["credentials"]
    assert [c["id"] for c in listed] == [json.loads(got.stdout)["id"]]
    trust = tmp_path / "trust"
    export_trust_list(trust, service.jlis)
    now = service.now.isoformat()
    req = tmp_path / "req.json"
    # The service runs on a business clock (--now); so do the holder and the verifier here.
    assert cli("request", "--client-id", "https://shop.example", "--preset", "name_address",
               "--purpose", "配送先の確認", "--out", str(req), "--now", now).returncode == 0
    pres = tmp_path / "pres.txt"
    shown = cli("present", str(req), "--approve", "all", "--out", str(pres), "--now", now)
    assert shown.returncode == 0, shown.stderr
    assert "配送先の確認" in shown.stderr and "氏名" in shown.stderr  # what is asked, shown
    ok = cli("verify", str(pres), "--request", str(req), "--trust", str(trust),
             "--fetch-status", "--now", now, "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    out = json.loads(ok.stdout)
    r = _resident(service, card.resident_id)
    assert out["claims"] == {"name": r.name, "address": {"formatted": r.address}}
    assert out["status_checked"] is True
    again = cli("verify", str(pres), "--request", str(req), "--trust", str(trust),
                "--fetch-status", "--now", now, "--json")
    assert again.returncode == 6 and json.loads(again.stdout)["reason"] == "replayed"
    req2 = tmp_path / "req2.json"
    cli("request", "--client-id", "https://shop.example", "--claim", "name", "--out", str(req2),
        "--now", now)
    cli("present", str(req2), "--approve", "name", "--out", str(pres), "--now", now)
    parts = pres.read_text().strip().split("~")
    parts[1] = parts[1][:-2] + ("AA" if parts[1][-2:] != "AA" else "BB")
    pres.write_text("~".join(parts))
    bad = cli("verify", str(pres), "--request", str(req2), "--trust", str(trust),
              "--fetch-status", "--now", now, "--json")
    assert bad.returncode == 6
    assert json.loads(bad.stdout)["reason"] in ("bad_disclosure", "malformed")


# -- review 29 finding 3: one card could fill the status list ------------------------------
def test_one_resident_holds_a_bounded_number_of_live_credentials(
        service: Service, tmp_path: Path) -> None:
    from emulators.issuance.wallet import MAX_LIVE_CREDENTIALS

    card = service.card()
    sign = _signer(card)
    for i in range(MAX_LIVE_CREDENTIALS):
        obtain_credential(service.info["center"], sign, Wallet(tmp_path / f"w{i}"))
    with pytest.raises(IssuanceRefused) as e:
        obtain_credential(service.info["center"], sign, Wallet(tmp_path / "over"))
    assert (e.value.status, e.value.code) == (429, "too_many_credentials")
    with service.db.tx() as t:
        n = t.one("SELECT COUNT(*) FROM credentials WHERE resident_id=?", (card.resident_id,))
    assert n is not None and int(n[0]) == MAX_LIVE_CREDENTIALS  # the refusal took no index
    revoke_credentials(service.db, resident_id=card.resident_id)  # e.g. the phone was lost
    obtain_credential(service.info["center"], sign, Wallet(tmp_path / "again"))


def test_status_indexes_of_long_expired_credentials_are_reused(service: Service) -> None:
    from emulators.issuance.errors import Refused
    from emulators.issuance.wallet import INDEX_REUSE_AFTER, allocate_index

    now = time.time()
    code = "999990"  # a list of its own, 4 entries
    with service.db.tx(write=True) as t:
        t.execute("DELETE FROM credentials WHERE municipality=?", (code,))
        for idx in range(4):
            t.execute("INSERT INTO credentials (municipality, idx, resident_id, issued,"
                      " expires, status, sha256) VALUES (?, ?, ?, ?, ?, 0, '')",
                      (code, idx, f"r{idx}", now - 200 * 86400, now + 86400))
    with pytest.raises(Refused) as e:  # every entry live: a clear refusal, not a loop
        allocate_index(service.db, code, "newcomer", now, now, size=4)
    assert e.value.code == "status_list_full"
    with service.db.tx(write=True) as t:  # entry 2 expired just now, entry 3 long ago
        t.execute("UPDATE credentials SET expires=? WHERE municipality=? AND idx=2",
                  (now - 60, code))
        t.execute("UPDATE credentials SET expires=?, status=1 WHERE municipality=? AND idx=3",
                  (now - INDEX_REUSE_AFTER - 1, code))
    assert allocate_index(service.db, code, "newcomer", now, now, size=4) == 3
    with service.db.tx(write=True) as t:
        rows = t.all("SELECT idx, resident_id, status FROM credentials WHERE municipality=?"
                     " ORDER BY idx", (code,))
        t.execute("DELETE FROM credentials WHERE municipality=?", (code,))
    assert [tuple(r) for r in rows][3] == (3, "newcomer", 0)
