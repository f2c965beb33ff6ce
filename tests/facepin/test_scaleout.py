"""Three ``cardio facepin serve`` processes on one PostgreSQL behind HAProxy (issue 28, item
1): the reservation service's promises hold across instances, not only across one
process's threads.

* exactly one ``/authorise`` of a reservation among 20 concurrent calls spread over the
  instances (five rounds; the last one's MAC then resets a real software card);
* exactly five evaluated attempts for one card among 20 concurrent live captures spread
  over the instances;
* a revocation refused by every instance at once (fresh OCSP, no cache);
* an instance killed (SIGKILL) mid-capture: HAProxy takes it out and the others serve,
  every challenge answered 200 is in the database, the killed captures' attempts stay on
  record and count while they may still be running, and stop counting after the lease.

What these do not do: grant a reservation through a face. A bona fide live capture in a
separate process needs the real head-turn clip (``tests/facepin/live_data.py``: without
it the depth gates can only be switched off in-process), so the reservations redeemed
here are written with ``facepin.store``'s own API into the shared database — exactly what
a granted capture writes — and the cross-instance proofs are on what needs no grant:
attempt counting, single-use challenges, revocation, and the exactly-once ``/authorise``.
The grant itself through ``cardio facepin serve`` is
``test_service.test_facepin_serve_grants_a_head_and_refuses_pictures`` (with the clip).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from cardio import pinreset
from cardio.apdu.errors import VerificationFailed
from cardio.card import MyNumberCard
from cardio.constants import AID_JPKI
from cardio.jpki import JpkiApplication
from cardio.transport import InProcessTransport
from emulators.card import SoftwareCard
from facepin.client import ServiceRefused, evidence_message, gather_evidence, live_capture
from facepin.simulate import PromptedCamera
from facepin.store import ATTEMPT_LEASE, Reservation, Store
from tests.facepin.live_data import genuine_chip
from tests.facepin.pg import postgres_url  # noqa: F401  (fixture)
from tests.pki_env import PkiEnv
from tests.scaleout import Haproxy, Process, fresh_pg_database, need_haproxy

INSTANCES = 3
CONCURRENT = 20
pytestmark = pytest.mark.slow


@dataclass
class Fleet:
    """The instances, the balancer in front of them, and the shared database."""

    instances: list[Process]
    lb: Haproxy
    db_url: str
    store: Store

    def log_count(self, text: str) -> list[int]:
        """How many lines of each instance's log hold ``text``."""
        return [p.output().count(text) for p in self.instances]


@pytest.fixture(scope="module")
def fleet(pki: PkiEnv, postgres_url: str,  # noqa: F811
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    need_haproxy()
    base = tmp_path_factory.mktemp("facepin-scaleout")
    db_url = fresh_pg_database(postgres_url, "facepin" + base.name)
    key_file = base / "master.key"
    key_file.write_bytes(pki.jlis.pin_reset_master())
    (base / "no-jlis").mkdir()
    if not (pki.jlis.path / "cards.json").exists():
        pki.new_card()  # the issuer's registry exists once a card was issued
    argv = [sys.executable, "-m", "cardio.cli", "facepin", "serve", "--db", db_url,
            "--port", "0", "--trust", str(pki.roots),
            "--card-registry", str(pki.jlis.path / "cards.json")]
    env = {"CARDIO_FACEPIN_MASTER_KEY_FILE": str(key_file),
           "CARDIO_JLIS_DIR": str(base / "no-jlis")}
    instances = [Process(f"facepin-{i}", argv, env) for i in range(INSTANCES)]
    lb: Haproxy | None = None
    store: Store | None = None
    try:
        for p in instances:
            p.wait_started()
        lb = Haproxy({f"i{i}": p.port for i, p in enumerate(instances)}).start()
        store = Store(db_url)
        yield Fleet(instances, lb, db_url, store)
    finally:
        if store is not None:
            store.close()
        if lb is not None:
            lb.stop()
        for p in instances:
            p.stop()


def card_of(path: Path) -> MyNumberCard:
    return MyNumberCard(InProcessTransport(SoftwareCard.open(path)))


def _fingerprint_and_cert(path: Path) -> tuple[str, bytes, str]:
    der = JpkiApplication(card_of(path)).certificate_der("auth")
    serial = SoftwareCard.open(path).image.meta["serial"]
    return hashlib.sha256(der).hexdigest(), der, str(serial)


def _reservation(store: Store, fp: str, serial: str) -> str:
    """A reservation as a granted live capture leaves it (``facepin.service``'s
    ``add_reservation``): 24 hours, unused."""
    rid = secrets.token_urlsafe(18)
    now = time.time()
    store.add_reservation(Reservation(rid, fp, serial, now, now + 24 * 3600, None))
    return rid


def _authorise_body(der: bytes, challenge: bytes, new: bytes) -> dict[str, object]:
    return {"auth_certificate": base64.b64encode(der).decode(), "target": "sign",
            "card_challenge": challenge.hex(), "value_hash": pinreset.value_hash(new).hex()}


Answer = tuple[int, str, str, float]


def _at_once(n: int, call: Callable[[int], Answer]) -> list[Answer]:
    """``call(i)`` from ``n`` threads released together; each returns (status, error code,
    instance, time of the answer)."""
    start = threading.Barrier(n)
    out: list[Answer] = [(0, "", "", 0.0)] * n

    def run(i: int) -> None:
        start.wait()
        out[i] = call(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return out


def _post(url: str, path: str, body: dict[str, object]) -> tuple[int, str, str, float]:
    """One POST on a connection of its own (so the balancer spreads them)."""
    with httpx.Client(base_url=url, trust_env=False, timeout=60) as http:
        r = http.post(path, json=body)
    code = "" if r.status_code == 200 else str(r.json().get("error", ""))
    return r.status_code, code, r.headers.get("x-instance", ""), time.monotonic()


def test_exactly_one_authorise_among_concurrent_calls_across_instances(
        pki: PkiEnv, fleet: Fleet) -> None:
    path, p = pki.new_card()
    fp, der, serial = _fingerprint_and_cert(path)
    rounds = 5
    winners: list[int] = []
    served: Counter[str] = Counter()
    mac = ""
    new = b"SCALE2026"
    for round_ in range(rounds):
        rid = _reservation(fleet.store, fp, serial)
        if round_ == rounds - 1:  # the last round opens the real card with the one MAC
            card = card_of(path)
            card.select(AID_JPKI, force=True)
            JpkiApplication(card).verify_pin("auth", p.auth_pin)
            challenge = card.get_challenge(8)
        else:
            challenge = secrets.token_bytes(8)
        body = _authorise_body(der, challenge, new)
        macs: list[str] = []

        def call(_i: int, rid: str = rid, body: dict[str, object] = body,
                 macs: list[str] = macs) -> tuple[int, str, str, float]:
            with httpx.Client(base_url=fleet.lb.url, trust_env=False, timeout=60) as http:
                r = http.post(f"/v1/reservations/{rid}/authorise", json=body)
            if r.status_code == 200:
                macs.append(r.json()["mac"])
            code = "" if r.status_code == 200 else str(r.json().get("error", ""))
            return r.status_code, code, r.headers.get("x-instance", ""), time.monotonic()

        answers = _at_once(CONCURRENT, call)
        served.update(a[2] for a in answers)
        winners.append(sum(a[0] == 200 for a in answers))
        assert sorted((a[0], a[1]) for a in answers) == \
            [(200, "")] + [(409, "already_used")] * (CONCURRENT - 1), answers
        got = fleet.store.get_reservation(rid)
        assert got is not None and got.used_at is not None
        mac = macs[0]
    print(f"\n/authorise: {CONCURRENT} concurrent calls per reservation over {INSTANCES}"
          f" instances behind HAProxy: {winners} succeeded per round; calls per instance"
          f" {dict(sorted(served.items()))}")
    assert set(served) == {f"i{i}" for i in range(INSTANCES)}  # spread over all of them
    # The one MAC resets the card's signature password; the old one no longer opens it.
    card.send_checked(pinreset.reset_apdu("sign", new, bytes.fromhex(mac)), "reset")
    jpki = JpkiApplication(card_of(path))
    with pytest.raises(VerificationFailed):
        jpki.verify_pin("sign", p.sign_password)
    jpki.verify_pin("sign", new.decode())


def _blank_camera(frames: int = 30, gate: threading.Event | None = None) -> PromptedCamera:
    """A camera that shows no face (a grey-brown frame); with ``gate``, its first frame
    waits until the gate opens (a capture held open mid-way)."""
    rgb = np.full((240, 320, 3), (128, 120, 110), np.uint8)

    def render(_prompt: object, _k: int) -> np.ndarray:
        if gate is not None:
            gate.wait(60)
        return rgb

    return PromptedCamera(render, limit=frames)


def _evidence(url: str, path: Path, auth_pin: str, text_pin: str) -> dict[str, object]:
    with httpx.Client(base_url=url, trust_env=False, timeout=60) as http:
        ch = http.post("/v1/challenges").json()
    ev = gather_evidence(card_of(path), base64.b64decode(ch["nonce"]), auth_pin, text_pin)
    return evidence_message(ch["challenge_id"], ev)


def _live(url: str, body: dict[str, object], camera: PromptedCamera) -> tuple[int, str]:
    try:
        live_capture(url, body, camera)
        return 201, ""
    except ServiceRefused as exc:
        return exc.status, exc.code


def _attempts(store: Store, fp: str) -> tuple[int, int, int]:
    """(rows, evaluated, without an outcome) of one card's attempts."""
    with store._conn() as db:
        rows = db.execute("SELECT ok FROM attempts WHERE cert_fp=?", (fp,)).fetchall()
    return len(rows), sum(r[0] is not None for r in rows), sum(r[0] is None for r in rows)


def _captures(url: str, bodies: list[dict[str, object]]) -> list[Answer]:
    """One blank live capture per evidence, all at once."""
    return _at_once(len(bodies), lambda i: (*_live(url, bodies[i], _blank_camera()), "", 0.0))


SLOW_OCSP = 3
"""OCSP answers the test delays past the instances' OCSP timeout (cardio.pki.HTTP_TIMEOUT)
in the concurrent round: what a loaded machine did to some captures at random (403
certificate_unknown in 5 of 7 runs at load 3-7), made certain."""


def test_exactly_five_attempts_among_concurrent_captures_across_instances(
        pki: PkiEnv, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """A capture refused for its certificate's status (``certificate_unknown``: the
    responder did not answer in time) took no attempt — the certificate is checked before
    one is taken — so it is tried again with fresh evidence, as the app would; the
    count is still exactly five evaluated of all the captures."""
    from cardio.pki import HTTP_TIMEOUT

    path, p = pki.new_card(photo=genuine_chip())
    fp = _fingerprint_and_cert(path)[0]
    bodies = [_evidence(fleet.lb.url, path, p.auth_pin, p.text_pin) for _ in range(CONCURRENT)]
    refused_before = fleet.log_count("refused rate_limited")
    evaluated_before = fleet.log_count("refused face_no_face")
    answer_ocsp = pki.authority.ocsp_response
    slow = [SLOW_OCSP]
    lock = threading.Lock()

    def late_ocsp(kind: str, der: bytes) -> bytes:
        with lock:
            delay, slow[0] = slow[0] > 0, slow[0] - 1
        if delay:
            time.sleep(HTTP_TIMEOUT + 1.5)
        return answer_ocsp(kind, der)

    monkeypatch.setattr(pki.authority, "ocsp_response", late_ocsp)
    answers = _captures(fleet.lb.url, bodies)
    monkeypatch.undo()
    found = [(a[0], a[1]) for a in answers]
    unknown = found.count((403, "certificate_unknown"))
    assert unknown >= 1  # the delayed answers did time out (else this proves nothing)
    for _ in range(10):
        again = [i for i, code in enumerate(found) if code == (403, "certificate_unknown")]
        if not again:
            break
        fresh = [_evidence(fleet.lb.url, path, p.auth_pin, p.text_pin) for _ in again]
        redo = _captures(fleet.lb.url, fresh)
        for i, a in zip(again, redo, strict=True):
            found[i] = (a[0], a[1])
    codes = sorted(found)
    print(f"\n{unknown} captures refused certificate_unknown (a late OCSP answer), tried again")
    per_instance_429 = [a - b for a, b in zip(fleet.log_count("refused rate_limited"),
                                              refused_before, strict=True)]
    per_instance_eval = [a - b for a, b in zip(fleet.log_count("refused face_no_face"),
                                               evaluated_before, strict=True)]
    print(f"\n{CONCURRENT} concurrent captures for one card over {INSTANCES} instances:"
          f" {sum(c != 429 for c, _ in codes)} evaluated (per instance {per_instance_eval}),"
          f" {codes.count((429, 'rate_limited'))} refused 429 (per instance"
          f" {per_instance_429})")
    assert codes == [(422, "face_no_face")] * 5 + [(429, "rate_limited")] * 15, codes
    assert _attempts(fleet.store, fp) == (5, 5, 0)
    # Both the evaluated and the refused ones came from more than one instance.
    assert sum(n > 0 for n in (a + b for a, b in zip(per_instance_429, per_instance_eval,
                                                      strict=True))) >= 2


def test_a_revocation_is_refused_by_every_instance_at_once(pki: PkiEnv, fleet: Fleet) -> None:
    path, p = pki.new_card()
    fp, der, serial = _fingerprint_and_cert(path)
    body = _authorise_body(der, secrets.token_bytes(8), b"REVOKED2026")
    # Before: every instance authorises this card (one reservation each, asked directly).
    for inst in fleet.instances:
        rid = _reservation(fleet.store, fp, serial)
        assert _post(inst.url, f"/v1/reservations/{rid}/authorise", body)[0] == 200
    after = [_reservation(fleet.store, fp, serial) for _ in fleet.instances]
    pki.authority.revoke_card(path, "auth", "key_compromise")
    revoked_at = time.monotonic()
    answers = _at_once(INSTANCES, lambda i: _post(fleet.instances[i].url,
                                                  f"/v1/reservations/{after[i]}/authorise",
                                                  body))
    delays = [round((a[3] - revoked_at) * 1000) for a in answers]
    print(f"\nrevocation: refused by {sum(a[:2] == (403, 'certificate_revoked') for a in answers)}"
          f" of {INSTANCES} instances, answers {delays} ms after it")
    assert [a[:2] for a in answers] == [(403, "certificate_revoked")] * INSTANCES
    for rid in after:  # refused, not consumed
        got = fleet.store.get_reservation(rid)
        assert got is not None and got.used_at is None
    # A new reservation attempt through the balancer is refused before any face work, and
    # spends none of the card's tries.
    refused = _live(fleet.lb.url, _evidence(fleet.lb.url, path, p.auth_pin, p.text_pin),
                    _blank_camera())
    assert refused == (403, "certificate_revoked")
    assert _attempts(fleet.store, fp) == (0, 0, 0)


def test_an_instance_killed_mid_capture(pki: PkiEnv, fleet: Fleet) -> None:
    """Four captures of one card held open mid-way over the instances; the instance holding
    the most is killed (SIGKILL) while challenges are being asked for through the
    balancer. Run last: the fleet has one instance fewer afterwards."""
    path, p = pki.new_card(photo=genuine_chip())
    fp = _fingerprint_and_cert(path)[0]
    held = 4
    gate = threading.Event()
    bodies = [_evidence(fleet.lb.url, path, p.auth_pin, p.text_pin) for _ in range(held)]
    results: list[tuple[int, str]] = [(0, "")] * held

    def capture(i: int) -> None:
        results[i] = _live(fleet.lb.url, bodies[i], _blank_camera(gate=gate))

    threads = [threading.Thread(target=capture, args=(i,)) for i in range(held)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while _attempts(fleet.store, fp)[0] < held and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _attempts(fleet.store, fp) == (held, 0, held)  # all admitted, none finished
    open_tunnels = {s.name: s.current for s in fleet.lb.servers()}
    victim_name = max(open_tunnels, key=lambda k: open_tunnels[k])
    killed = open_tunnels[victim_name]
    assert killed >= 1, open_tunnels
    victim = fleet.instances[int(victim_name[1:])]
    assert [s.status for s in fleet.lb.servers()] == ["UP"] * INSTANCES

    # Challenges asked for through the balancer before, during and after the kill.
    stop = threading.Event()
    asked: list[tuple[int, str]] = []

    def ask() -> None:
        with httpx.Client(base_url=fleet.lb.url, trust_env=False, timeout=30,
                          limits=httpx.Limits(max_keepalive_connections=0)) as http:
            while not stop.is_set():
                try:
                    r = http.post("/v1/challenges")
                    asked.append((r.status_code, r.json()["challenge_id"]
                                  if r.status_code == 200 else r.text[:80]))
                except httpx.HTTPError as exc:
                    asked.append((0, type(exc).__name__))

    askers = [threading.Thread(target=ask) for _ in range(4)]
    for t in askers:
        t.start()
    time.sleep(1.0)
    victim.kill()
    killed_at = len(asked)
    down_after = fleet.lb.wait_status(victim_name, "DOWN")
    time.sleep(1.0)
    stop.set()
    for t in askers:
        t.join(30)
    gate.set()  # the surviving captures go on: no face in their frames
    for t in threads:
        t.join(120)
    codes = sorted(results)
    failed = [a for a in asked if a[0] != 200]
    print(f"\nkill: {victim_name} (holding {killed} of {held} open captures) SIGKILLed;"
          f" HAProxy marked it DOWN after {down_after * 1000:.0f} ms; challenges through the"
          f" balancer: {len(asked)} asked ({killed_at} before the kill), {len(failed)}"
          f" failed {failed[:5]}; captures: {codes}")
    assert codes == [(422, "face_no_face")] * (held - killed) + \
        [(502, "capture_interrupted")] * killed, codes
    # The balancer moved on: at most the requests in flight on the victim failed.
    assert len(failed) <= 4, failed
    # Every challenge answered 200 is in the shared database.
    ok_ids = [cid for status, cid in asked if status == 200]
    with fleet.store._conn() as db:
        stored = {r[0] for r in db.execute("SELECT id FROM challenges").fetchall()}
    assert set(ok_ids) <= stored and len(ok_ids) > killed_at
    # The killed captures' attempts stay on record without an outcome, no reservation was
    # made, and their challenges are spent (a replay is refused before any work).
    assert _attempts(fleet.store, fp) == (held, held - killed, killed)
    with fleet.store._conn() as db:
        (reservations,) = db.execute("SELECT COUNT(*) FROM reservations WHERE cert_fp=?",
                                     (fp,)).fetchone()
    assert reservations == 0
    assert _live(fleet.lb.url, bodies[0], _blank_camera()) == (400, "challenge_invalid")

    def tries(n: int) -> list[tuple[int, str]]:
        fresh = [_evidence(fleet.lb.url, path, p.auth_pin, p.text_pin) for _ in range(n)]
        got = _at_once(n, lambda i: (*_live(fleet.lb.url, fresh[i], _blank_camera()),
                                     "", 0.0))
        return sorted((a[0], a[1]) for a in got)

    # While they may still be running (within the lease) they count: one try is left.
    assert tries(3) == [(422, "face_no_face")] + [(429, "rate_limited")] * 2
    # The lease passes (every attempt of the card aged by it, as the clock would): the
    # killed ones give their tries back, and no more.
    with fleet.store._conn() as db:
        db.execute("UPDATE attempts SET at = at - ? WHERE cert_fp=?", (ATTEMPT_LEASE + 1, fp))
    given_back = tries(killed + 2)
    print(f"after the lease: {killed + 2} tries -> {given_back}")
    assert given_back == [(422, "face_no_face")] * killed + [(429, "rate_limited")] * 2
    rows, evaluated, open_ = _attempts(fleet.store, fp)
    assert (rows, evaluated, open_) == (held + 1 + killed, 5, killed)  # audit rows all kept
