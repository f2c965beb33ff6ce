"""The emulated center and municipalities as a real process on loopback: the happy path
for every type, typed refusals with nothing issued, forged bindings and incidents, the
misissuance regressions, and no personal data in logs, center tables or refusals."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from emulators.card import JlisHierarchy
from emulators.jpki_ca import JpkiAuthority
from kiosk.center_client import CenterClient, IssuanceRefused, KioskCredentials
from kiosk.protocol import BadDocumentSignature, BindingMismatch, ExpectedSession
from kiosk.protocol.codec import encode
from kiosk.protocol.kiosk_auth import request_headers
from kiosk.protocol.messages import OpenSession
from tests.emulators.issuance.conftest import Service
from tests.emulators.issuance.kiosk_sim import (
    Card,
    issue,
    new_request_id,
    open_and_authenticate,
)

T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


def counts(svc: Service) -> dict[str, int]:
    with svc.db.tx() as t:
        return {tbl: int(t.one(f"SELECT COUNT(*) FROM {tbl}")[0])
                for tbl in ("issuances", "incidents")}


def resident(svc: Service, rid: str) -> dict[str, Any]:
    with svc.db.tx() as t:
        row = t.one("SELECT name, address, birth, my_number, municipality, household_id FROM"
                    " residents WHERE id=?", (rid,))
    return dict(zip(("name", "address", "birth", "my_number", "municipality", "household"),
                    row, strict=True))


@pytest.fixture(scope="module")
def card(service: Service) -> Card:
    return service.card()


# -- the happy path ---------------------------------------------------------------------------
def test_every_offered_type_is_issued_bound_and_belongs_to_its_requester(
        service: Service, card: Card) -> None:
    me = resident(service, card.resident_id)

    async def go() -> list[Any]:
        async with service.client() as c:
            first = await issue(c, card, "juminhyo")
            offered = [i.doc_type for i in first.menu.items]
            out = [first]
            for dtype in offered:
                if dtype != "juminhyo":
                    out.append(await issue(c, card, dtype))
            return out

    issued = run(go)
    assert {i.document.doc_type.value for i in issued} == \
        {i.doc_type for i in issued[0].menu.items}
    for i in issued:
        assert me["name"] in i.document.find("name")
        assert i.document.municipality.code == me["municipality"]
        assert i.fee in range(200, 451)
    juminhyo = issued[0].document
    assert juminhyo.find("name") == [me["name"]] and juminhyo.find("address") == [me["address"]]
    assert not juminhyo.find("my_number")  # never unless asked and allowed


def test_finalize_is_idempotent_by_request_id(service: Service, card: Card) -> None:
    async def go() -> None:
        async with service.client() as c:
            done = await issue(c, card, "kisai-jiko")
            again = await c.finalize(done.request_id, done.session_id, "printed")
            assert again.outcome == "printed"
            with pytest.raises(IssuanceRefused) as e:
                await c.finalize(done.request_id, done.session_id, "failed")
            assert e.value.code == "already_finalized"

    run(go)
    with service.db.tx() as t:
        assert t.one("SELECT COUNT(*) FROM issuances WHERE outcome='printed'")[0] >= 1


# -- typed refusals, nothing issued ------------------------------------------------------------
def test_replayed_nonce_is_refused(service: Service, card: Card) -> None:
    before = counts(service)

    async def go() -> None:
        async with service.client() as c:
            opened = await c.open(new_request_id())
            cert, sig = card.cert_and_signature(base64.b64decode(opened.nonce))
            await c.authenticate(opened, cert, sig)
            with pytest.raises(IssuanceRefused) as e:
                await c.authenticate(opened, cert, sig)
            assert e.value.code == "nonce_used"

    run(go)
    assert counts(service) == before


def test_certificate_of_one_card_with_signature_of_another_is_refused(
        service: Service, card: Card) -> None:
    other = service.card()
    assert other.jpki().certificate("auth").public_key() != \
        card.jpki().certificate("auth").public_key()
    before = counts(service)

    async def go() -> None:
        async with service.client() as c:
            opened = await c.open(new_request_id())
            nonce = base64.b64decode(opened.nonce)
            cert, _ = card.cert_and_signature(nonce)
            _, sig = other.cert_and_signature(nonce)
            with pytest.raises(IssuanceRefused) as e:
                await c.authenticate(opened, cert, sig)
            assert e.value.code == "card_signature_invalid"
            with pytest.raises(IssuanceRefused) as e2:  # the session is burnt
                await c.menu(opened.request_id, opened.session_id)
            assert e2.value.code == "not_authenticated"

    run(go)
    assert counts(service) == before


def _refused_at_auth(service: Service, card: Card) -> IssuanceRefused:
    async def go() -> IssuanceRefused:
        async with service.client() as c:
            with pytest.raises(IssuanceRefused) as e:
                await open_and_authenticate(c, card)
            return e.value

    return run(go)


def test_revoked_certificate_is_refused(service: Service) -> None:
    lost = service.card()
    JpkiAuthority(JlisHierarchy.load_or_create(service.jlis)).card_event(lost.path, "lost")
    before = counts(service)
    assert _refused_at_auth(service, lost).code == "certificate_revoked"
    assert counts(service) == before


def test_expired_certificate_is_refused(service: Service) -> None:
    import datetime as dt

    from emulators.issuance.operator import issue_card

    path = service.base / "expired-card"
    out = issue_card(service.db, service.jlis, path, None, keys=service.pool,
                     photo=service.photo, issued=dt.date(2015, 1, 5))
    before = counts(service)
    err = _refused_at_auth(service, Card(path, out["auth_pin"], out["resident_id"]))
    assert err.code == "certificate_expired"
    assert counts(service) == before


def test_ocsp_and_crl_both_down_refuses(service: Service) -> None:
    # A card whose certificate points at revocation services that do not answer.
    unreachable = service.card(ca_url="http://127.0.0.1:9")
    before = counts(service)
    err = _refused_at_auth(service, unreachable)
    assert err.code == "certificate_status_unknown"
    assert "OCSP and CRL" in err.reason
    assert counts(service) == before


def test_unregistered_certificate_is_refused(service: Service, make_card: Any) -> None:
    # A genuine card of the same J-LIS whose serial no municipality knows.
    from emulators.card import Profile, create_card

    path = service.base / "stranger"
    jlis = JlisHierarchy.load_or_create(service.jlis, ca_url=service.info["ca"])
    profile = Profile()
    create_card(path, profile, jlis, keys=service.pool, photo=service.photo)
    assert _refused_at_auth(service, Card(path, profile.auth_pin, "-")).code == \
        "unknown_certificate"


def _raw_post(service: Service, path: str, body: bytes, headers: dict[str, str]
              ) -> httpx.Response:
    with httpx.Client(base_url=service.info["center"], timeout=30) as h:
        return h.post(path, content=body, headers=headers)


def test_unknown_kiosk_wrong_credentials_and_replayed_requests(service: Service) -> None:
    import time

    from cryptography.hazmat.primitives.asymmetric import ec

    before = counts(service)
    msg = OpenSession(request_id=new_request_id(), kiosk_id="kiosk-9999")
    body = encode(msg)
    stranger = ec.generate_private_key(ec.SECP256R1())
    r = _raw_post(service, "/v1/sessions", body, request_headers(
        stranger, "kiosk-9999", "POST", "/v1/sessions", body, time.time()))
    assert r.status_code == 401 and r.json()["error"] == "unknown_kiosk"
    # kiosk-0001's id signed with someone else's key
    body = encode(OpenSession(request_id=new_request_id(), kiosk_id="kiosk-0001"))
    r = _raw_post(service, "/v1/sessions", body, request_headers(
        stranger, "kiosk-0001", "POST", "/v1/sessions", body, time.time()))
    assert r.status_code == 401 and r.json()["error"] == "kiosk_bad_signature"
    # no credentials at all
    r = _raw_post(service, "/v1/sessions", body, {})
    assert r.status_code == 401 and r.json()["error"] == "kiosk_unauthenticated"
    # a genuine request replayed byte for byte
    creds = service.kiosk(1)
    h = request_headers(creds.key, "kiosk-0001", "POST", "/v1/sessions", body, time.time())
    assert _raw_post(service, "/v1/sessions", body, h).status_code == 200
    r = _raw_post(service, "/v1/sessions", body, h)
    assert r.status_code == 401 and r.json()["error"] == "kiosk_replayed"
    # an old one
    h = request_headers(creds.key, "kiosk-0001", "POST", "/v1/sessions", body,
                        time.time() - 3600)
    assert _raw_post(service, "/v1/sessions", body, h).json()["error"] == "kiosk_request_stale"
    with service.db.tx() as t:
        assert t.one("SELECT COUNT(*) FROM sessions WHERE kiosk_id='kiosk-9999'")[0] == 0
    assert counts(service) == before


@pytest.mark.parametrize("body, status, code", [
    (b"{not json", 400, "malformed"),
    (b'{"request_id":"req-00000001","kiosk_id":"kiosk-0001","extra":1}', 400, "malformed"),
    (b'{"request_id":"req-00000001","kiosk_id":"kiosk-0001","v":"cardio-issuance/9"}', 400,
     "unsupported_version"),
    (b"x" * (70 * 1024), 413, "too_large"),
])
def test_malformed_and_oversized_messages(service: Service, body: bytes, status: int,
                                          code: str) -> None:
    import time

    creds = service.kiosk(1)
    before = counts(service)
    h = request_headers(creds.key, "kiosk-0001", "POST", "/v1/sessions", body, time.time())
    r = _raw_post(service, "/v1/sessions", body, h)
    assert (r.status_code, r.json()["error"]) == (status, code)
    assert counts(service) == before


def test_an_oversized_body_is_refused_before_it_is_read(service: Service) -> None:
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(service.info["center"])
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n"
                  b"Content-Type: application/json\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")


def test_bad_option_and_refused_type_issue_nothing(service: Service, card: Card) -> None:
    before = counts(service)

    async def go() -> None:
        async with service.client() as c:
            opened, _auth, _ = await open_and_authenticate(c, card)
            with pytest.raises(IssuanceRefused) as e:
                await c.request_document(opened.request_id, opened.session_id, "juminhyo",
                                         {"scope": "everyone"})
            assert e.value.code == "bad_option"

    run(go)
    assert counts(service) == before


# -- forged bindings, incidents, stop and clear ----------------------------------------------
def test_forged_bindings_are_refused_raise_an_incident_and_stop_the_municipality(
        service: Service) -> None:
    card = service.card()
    muni = resident(service, card.resident_id)["municipality"]

    async def go() -> None:
        async with service.client(1) as c:
            # Another session's document (swapped request/session): a binding mismatch.
            o1, _a1, _sha1 = await open_and_authenticate(c, card)
            o2, a2, sha2 = await open_and_authenticate(c, card)
            issued = await c.request_document(o1.request_id, o1.session_id, "juminhyo")
            mine = ExpectedSession(o2.request_id, o2.session_id, "kiosk-0001", sha2,
                                   a2.municipality_code, "juminhyo")
            with pytest.raises(BindingMismatch):
                await c.checked(mine, issued)
            # The municipality is stopped: the menu says so and nothing is issued.
            menu = await c.menu(o2.request_id, o2.session_id)
            assert not menu.items
            assert {r.reason for r in menu.refused} == {"municipality_stopped"}
            with pytest.raises(IssuanceRefused) as e:
                await c.request_document(o2.request_id, o2.session_id, "juminhyo")
            assert e.value.code == "municipality_stopped"

    before = counts(service)
    run(go)
    after = counts(service)
    assert after["incidents"] == before["incidents"] + 1
    listed = service.cli("incidents", "--json")
    assert listed.returncode == 0, listed.stderr
    open_ones = [i for i in json.loads(listed.stdout)["incidents"] if not i["cleared"]]
    assert open_ones and all(i["municipality"] == muni and i["stopped"] for i in open_ones)
    assert open_ones[-1]["kind"] == "binding_mismatch"

    cleared = service.cli("clear", muni, "--json")
    assert cleared.returncode == 0 and json.loads(cleared.stdout)["cleared"] >= 1
    assert run(lambda: _issue_with(service, card)).document.find("name")


async def _issue_with(service: Service, card: Card, doc: str = "juminhyo") -> Any:
    async with service.client() as c:
        return await issue(c, card, doc)


def test_altered_content_and_foreign_cert_hash_are_incidents(service: Service) -> None:
    card = service.card()
    muni = resident(service, card.resident_id)["municipality"]

    async def go(tamper: str) -> None:
        async with service.client(2) as c:
            o, a, sha = await open_and_authenticate(c, card)
            issued = await c.request_document(o.request_id, o.session_id, "juminhyo")
            exp = ExpectedSession(o.request_id, o.session_id, "kiosk-0002", sha,
                                  a.municipality_code, "juminhyo")
            if tamper == "content":
                doc = json.loads(json.dumps(issued.signed.document))
                doc["sections"][0]["fields"][0][2] = "別人　二郎"
                issued = dataclasses.replace(issued, signed=dataclasses.replace(
                    issued.signed, document=doc))
                with pytest.raises(BadDocumentSignature):
                    await c.checked(exp, issued)
            else:
                exp = dataclasses.replace(exp, cert_sha256=secrets.token_hex(32))
                with pytest.raises(BindingMismatch):
                    await c.checked(exp, issued)

    for tamper in ("content", "cert"):
        run(lambda tamper=tamper: go(tamper))  # type: ignore[misc]
        assert service.cli("incidents", "--json").stdout.count('"cleared": false') >= 1
        assert service.cli("incidents", "clear", muni).returncode == 0


# -- the misissuance incidents, reproduced ---------------------------------------------------------
def test_yokohama_print_timeout_aborts_the_whole_issuance(service: Service) -> None:
    """A print-wait timeout ends that issuance (finalize 'failed'); the next applicant's
    document can never be taken for it, and its own session cannot fetch a second one."""
    a, b = service.card(), service.card()

    async def go() -> None:
        async with service.client(1) as k1, service.client(1) as k1b:
            oa, _aa, _sha_a = await open_and_authenticate(k1, a)
            doc_a = await k1.request_document(oa.request_id, oa.session_id, "juminhyo")
            # printing stalls; meanwhile the next applicant is served at the same kiosk
            ob, ab, sha_b = await open_and_authenticate(k1b, b)
            exp_b = ExpectedSession(ob.request_id, ob.session_id, "kiosk-0001", sha_b,
                                    ab.municipality_code, "juminhyo")
            doc_b, _fee = await k1b.fetch_document(exp_b)
            await k1.finalize(oa.request_id, oa.session_id, "failed")  # the whole issuance
            with pytest.raises(IssuanceRefused) as e:
                await k1.request_document(oa.request_id, oa.session_id, "juminhyo")
            assert e.value.code == "session_closed"
            with pytest.raises((BindingMismatch, BadDocumentSignature)):
                k1.check(exp_b, doc_a)  # A's file is never printed for B
            assert doc_b.find("name") == [resident(service, b.resident_id)["name"]]
            await k1b.finalize(ob.request_id, ob.session_id, "printed")

    run(go)


def test_kawasaki_two_requests_for_one_household_within_a_second(service: Service) -> None:
    with service.db.tx() as t:
        hh = t.one("SELECT household_id FROM residents WHERE status='active' AND"
                   " support_measure=0 AND gaiji_pending=0 AND birth < '2000-01-01' AND"
                   " LENGTH(name) <= 30 AND LENGTH(address) <= 60 GROUP BY household_id"
                   " HAVING COUNT(*) >= 2 LIMIT 1")[0]
        members = [r[0] for r in t.all("SELECT id FROM residents WHERE household_id=? AND"
                                       " birth < '2000-01-01' AND status='active' ORDER BY id",
                                       (hh,))][:2]
    if len(members) < 2:
        pytest.skip("no two adults in one household in this population")
    cards = [service.card(m) for m in members]

    async def go() -> list[Any]:
        async with service.client(1) as k1, service.client(2) as k2:
            return list(await asyncio.gather(issue(k1, cards[0], "kisai-jiko"),
                                             issue(k2, cards[1], "kisai-jiko")))

    for _ in range(3):
        got = run(go)
        for card, issued in zip(cards, got, strict=True):
            assert issued.document.find("name") == [resident(service, card.resident_id)["name"]]


def test_munakata_previous_requesters_data_never_reaches_the_next(service: Service) -> None:
    a, b = service.card(), service.card()

    async def go() -> None:
        async with service.client(3) as k:
            first = await issue(k, a, "juminhyo")
            o, au, sha = await open_and_authenticate(k, b)
            exp = ExpectedSession(o.request_id, o.session_id, "kiosk-0003", sha,
                                  au.municipality_code, "juminhyo")
            doc, _ = await k.fetch_document(exp)
            assert doc.find("name") == [resident(service, b.resident_id)["name"]]
            assert resident(service, a.resident_id)["name"] not in doc.find("name") or \
                resident(service, a.resident_id)["name"] == \
                resident(service, b.resident_id)["name"]
            assert first.document != doc
            await k.finalize(o.request_id, o.session_id, "printed")

    run(go)


def test_takamatsu_one_session_across_workers(service: Service) -> None:
    """Each request on a new connection, so the steps of one session land on different
    worker processes; the session still holds (state is in the database only)."""
    card = service.card()

    async def go() -> Any:
        limits = httpx.Limits(max_keepalive_connections=0)
        http = httpx.AsyncClient(base_url=service.info["center"], limits=limits, timeout=30)
        c = CenterClient(service.kiosk(4), http=http)
        try:
            return [await issue(c, card, "juminhyo") for _ in range(6)]
        finally:
            await c.aclose()

    done_all = run(go)
    for done in done_all:
        assert done.document.find("name") == [resident(service, card.resident_id)["name"]]
    # The log names the worker process and the request id on every line: the steps of
    # these sessions were served by more than one worker.
    import re

    rids = {d.request_id for d in done_all}
    pids = {m.group(1) for line in service.stderr_text().splitlines()
            if (m := re.search(r" (\d+) emulators\.issuance\.center INFO \[([^\]]+)\]", line))
            and m.group(2) in rids}
    assert len(pids) >= 2, pids


# -- privacy -------------------------------------------------------------------------------------
def test_no_personal_data_in_logs_center_tables_or_refusals(service: Service) -> None:
    """Plant known values (a resident's name, address, 個人番号, the certificate and its
    serial) through issuances, refusals and an incident; none may appear in the server's
    log, the center's tables, or a refusal."""
    card = service.card()
    me = resident(service, card.resident_id)
    cert = card.jpki().certificate("auth")
    from cryptography.hazmat.primitives import serialization

    der = cert.public_bytes(serialization.Encoding.DER)
    planted = [me["name"], me["address"], me["my_number"], base64.b64encode(der).decode()[:40],
               format(cert.serial_number, "x")]
    replies: list[str] = []

    async def go() -> None:
        async with service.client(1) as c:
            await issue(c, card, "juminhyo", {"scope": "household", "honseki": "yes"})
            o, a, sha = await open_and_authenticate(c, card)
            for bad in ({"scope": "nobody"}, {"x": "y"}):
                try:
                    await c.request_document(o.request_id, o.session_id, "juminhyo", bad)
                except IssuanceRefused as e:
                    replies.append(str(e))
            o, a, sha = await open_and_authenticate(c, card)
            issued = await c.request_document(o.request_id, o.session_id, "kisai-jiko")
            try:
                await c.checked(dataclasses.replace(ExpectedSession(
                    o.request_id, o.session_id, "kiosk-0001", sha, a.municipality_code,
                    "kisai-jiko"), request_id=new_request_id()), issued)
            except BindingMismatch as e:
                replies.append(str(e))
            try:
                await c.request_document(o.request_id, o.session_id, "kisai-jiko")
            except IssuanceRefused as e:
                replies.append(str(e))

    run(go)
    assert service.cli("clear", me["municipality"]).returncode == 0
    dump = []
    with service.db.tx() as t:
        for tbl in ("audit", "incidents", "sessions", "issuances", "kiosk_nonces", "kiosks",
                    "service_info"):
            dump += [repr(r) for r in t.all(f"SELECT * FROM {tbl}")]
    text = "\n".join(dump) + service.stderr_text() + "\n".join(replies)
    assert "request" in service.stderr_text()  # the log does carry request ids (info level)
    for value in planted:
        assert value not in text, f"personal data leaked: {value[:6]}…"


def test_health_and_metrics(service: Service) -> None:
    h = httpx.get(service.info["center"] + "/health").json()
    assert h == {"status": "ok", "database": "sqlite"}
    m = httpx.get(service.info["center"] + "/metrics").text
    assert "cardio_issuances_total" in m and "cardio_incidents_open" in m


def test_kiosk_credentials_are_left_for_the_kiosk(service: Service) -> None:
    d = Path(service.info["kiosks_dir"]) / "kiosk-0001"
    assert (d / "kiosk.key").stat().st_mode & 0o077 == 0
    creds = KioskCredentials.load(d)
    assert creds.center_url == service.info["center"] and creds.municipality_keys


def test_serve_with_one_worker_honours_now_restarts_and_stops_cleanly_on_sigterm(
        tmp_path: Path, key_pool: Any, default_photo: bytes) -> None:
    from tests.emulators.issuance.conftest import start_service, stop_service

    svc = start_service(tmp_path, f"sqlite:///{tmp_path / 'one.db'}", key_pool,
                        default_photo, workers=1, kiosks=1, residents=50)
    key_before = (Path(svc.info["kiosks_dir"]) / "kiosk-0001" / "kiosk.key").read_bytes()
    assert svc.info["now"].startswith(svc.now.date().isoformat())
    assert svc.info["workers"] == 1 and svc.info["center"].startswith("http://127.0.0.1:")
    assert stop_service(svc) == 0
    again = start_service(tmp_path, svc.db_url, key_pool, default_photo, workers=1, kiosks=1,
                          residents=1)
    try:
        assert (Path(again.info["kiosks_dir"]) / "kiosk-0001" / "kiosk.key").read_bytes() == \
            key_before
        assert again.info["ca"] == svc.info["ca"] or again.info["ca"]
    finally:
        assert stop_service(again) == 0


@pytest.mark.slow
def test_the_database_vanishing_is_a_typed_refusal_not_a_crash(
        tmp_path: Path, key_pool: Any, default_photo: bytes, postgres_url: str) -> None:
    """Force the fault: drop the center's PostgreSQL database under the running service.
    Kiosks get ``unavailable`` (503), health says so, nothing is issued; the service stays
    up and stops cleanly."""
    import psycopg

    from tests.emulators.issuance.conftest import start_service, stop_service
    from tests.emulators.issuance.test_load import _fresh_pg_database

    url = _fresh_pg_database(postgres_url, "vanish" + tmp_path.name)
    svc = start_service(tmp_path, url, key_pool, default_photo, workers=2, kiosks=1,
                        residents=100)
    try:
        card = svc.card()
        assert run(lambda: _issue_with(svc, card)).document.find("name")
        svc.db.close()
        name = url.split("?")[0].rsplit("/", 1)[1]
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")

        async def go() -> None:
            async with svc.client() as c:
                with pytest.raises(IssuanceRefused) as e:
                    await c.open(new_request_id())
                assert (e.value.status, e.value.code) == (503, "unavailable")

        run(go)
        h = httpx.get(svc.info["center"] + "/health")
        assert h.status_code == 503 and h.json()["status"] == "unavailable"
        assert "Traceback" not in svc.stderr_text()
    finally:
        assert stop_service(svc) == 0


# -- the audit trail ---------------------------------------------------------------------------
def test_every_step_leaves_exactly_one_audit_row_refusals_included(service: Service,
                                                                    card: Card) -> None:
    """A step writes its row inside its own transaction; a refused step (its transaction
    rolled back) still leaves one row with the refusal's code — never none, never two."""
    async def go() -> tuple[str, str]:
        async with service.client() as c:
            done = await issue(c, card, "juminhyo")
            with pytest.raises(IssuanceRefused) as e:
                await c.request_document(done.request_id, done.session_id, "juminhyo")
            assert e.value.code == "session_closed"
            return done.request_id, done.auth.municipality_code

    rid, muni = run(go)
    with service.db.tx() as t:
        rows = t.all("SELECT event, outcome, municipality, doc_type, ms FROM audit WHERE"
                     " request_id=? ORDER BY id", (rid,))
    assert [(r[0], r[1]) for r in rows] == [
        ("open", "ok"), ("authenticate", "ok"), ("menu", "ok"), ("documents", "ok"),
        ("finalize", "ok"), ("documents", "session_closed")]
    assert [r[2] for r in rows[1:5]] == [muni] * 4  # once the card is known
    assert rows[3][3] == "juminhyo" and rows[5][3] == "juminhyo"
    assert all(r[4] >= 0 for r in rows)


def test_a_write_lock_held_elsewhere_is_a_quick_503_not_a_frozen_worker(
        service: Service, card: Card) -> None:
    """Steps run on the worker's event loop: another process holding SQLite's write lock
    (a long seed, a backup) costs a request BUSY_TIMEOUT (2 s) and a typed 503, and the
    worker answers /health meanwhile instead of freezing for 30 s."""
    import sqlite3
    import threading
    import time

    if not service.db_url.startswith("sqlite:///"):
        pytest.skip("SQLite's lock")

    async def opened() -> tuple[str, str]:
        async with service.client() as c:
            o, _auth, _sha = await open_and_authenticate(c, card)
            return o.request_id, o.session_id

    rid, sid = run(opened)
    holder = sqlite3.connect(service.db_url.removeprefix("sqlite:///"), timeout=5,
                             isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Timer(4.0, holder.rollback)
    released.start()
    try:
        async def menu_while_locked() -> tuple[float, int, str]:
            async with service.client() as c:
                t0 = time.monotonic()
                with pytest.raises(IssuanceRefused) as e:
                    await c.menu(rid, sid)
                took = time.monotonic() - t0
                async with httpx.AsyncClient(base_url=service.info["center"]) as h:
                    health = await h.get("/health", timeout=2)
                return took, e.value.status, e.value.code + f" /health {health.status_code}"

        took, status, code = run(menu_while_locked)
        assert (status, code.split()[0]) == (503, "unavailable") and 1.5 < took < 3.5, \
            (took, code)
    finally:
        released.join()
        holder.close()

    async def after() -> int:
        async with service.client() as c:
            return len((await c.menu(rid, sid)).items)

    assert run(after) > 0  # the session goes on once the lock is gone


def test_a_step_cancelled_mid_ocsp_check_fails_its_session_and_is_audited(
        service: Service, card: Card) -> None:
    """A worker shutting down while an authentication waits on a slow OCSP responder (the
    step is cancelled after the graceful timeout): the session is marked failed, never
    left 'authenticating', and the step's audit row says 'interrupted'. The center runs
    in-process on the service's database, with an OCSP fetch that never answers."""
    import time

    from emulators.issuance.center import create_app
    from emulators.issuance.server import _config_from

    app = create_app(_config_from({"db": service.db_url, "trust": str(service.jlis),
                                   "now": service.now.isoformat(), "wall_start": time.time()}))
    asked = asyncio.Event()

    async def never_answers(url: str, body: bytes | None, ctype: str, limit: int) -> bytes:
        asked.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app.state.center._fetch = never_answers

    async def go() -> tuple[str, str]:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://center")
        async with CenterClient(service.kiosk(), http=http) as c:
            opened = await c.open(new_request_id())
            cert, sig = card.cert_and_signature(base64.b64decode(opened.nonce))
            task = asyncio.create_task(c.authenticate(opened, cert, sig))
            await asyncio.wait_for(asked.wait(), 10)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return opened.request_id, opened.session_id

    rid, sid = run(go)
    with service.db.tx() as t:
        assert t.one("SELECT state FROM sessions WHERE session_id=?", (sid,))[0] == "failed"
        rows = t.all("SELECT event, outcome FROM audit WHERE request_id=? ORDER BY id", (rid,))
    assert rows == [("open", "ok"), ("authenticate", "interrupted")]
