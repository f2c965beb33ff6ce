"""The reservation service as a real HTTP server on loopback, the app and kiosk clients,
and the issuer-authenticated reset down to the software card."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from PIL import Image

from cardio import constants as c
from cardio import pinreset
from cardio.apdu.errors import PinBlocked, VerificationFailed
from cardio.card import MyNumberCard
from cardio.identity import InvalidValue
from cardio.jpki import JpkiApplication
from cardio.transport import InProcessTransport
from emulators.card import SoftwareCard
from facepin.client import Capture, ServiceRefused, redeem, reserve
from facepin.face import FaceEngine, load_image
from facepin.liveness import Prompt
from facepin.service import ServiceConfig, create_app
from facepin.simulate import attack_sequence, genuine_sequence
from tests.conftest import SHARED
from tests.facepin.pg import postgres_url  # noqa: F401  (fixture)
from tests.pki_env import PkiEnv, free_port

DEV = SHARED / "data" / "faces" / "dev"
pytestmark = pytest.mark.skipif(not (DEV / "labels.csv").exists(),
                                reason="../shared/data/faces is not beside the checkout")


@dataclass
class Service:
    url: str
    clock: list[float]
    db: Path
    database: str

    def stored_bytes(self) -> bytes:
        """Everything the service's database holds, as bytes to scan."""
        if self.database.startswith("sqlite"):
            return b"".join(f.read_bytes() for f in self.db.parent.glob("facepin.db*"))
        from facepin.store import Store

        out = b""
        with Store(self.database)._conn() as conn:
            for table in ("challenges", "reservations", "attempts"):
                out += repr(conn.execute(f"SELECT * FROM {table}").fetchall()).encode()
        return out


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def service(request: pytest.FixtureRequest, pki: PkiEnv,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    import uvicorn

    db = tmp_path_factory.mktemp("facepin") / "facepin.db"
    url = f"sqlite:///{db}"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        from facepin.store import Store

        with Store(url)._conn() as conn:
            for table in ("challenges", "reservations", "attempts"):
                conn.execute(f"DELETE FROM {table}")
    clock = [time.time()]
    config = ServiceConfig(database=url, trust=pki.trust,
                           master_key=pki.jlis.pin_reset_master(), clock=lambda: clock[0],
                           registry=pki.authority.card_of)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield Service(f"http://127.0.0.1:{port}", clock, db, url)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def chip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from facepin.face import FaceEngine, chip_photo

    rgb = load_image(DEV / "deepface_id00" / "img2.jpg")
    box = FaceEngine.shared().encode(rgb, allow_several=True, check_quality=False).box
    assert box is not None
    return chip_photo(rgb, box)


def card_of(path: Path) -> MyNumberCard:
    return MyNumberCard(InProcessTransport(SoftwareCard.open(path)))


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def probe(rel: str = "deepface_id00/img1.jpg", attack: str | None = None) -> Capture:
    """A recorded capture following the service's prompts: a (synthetic) head doing the
    moves, or an attack with the photo in front of the camera."""
    def capture(prompts: list[str]) -> list[tuple[bytes, float]]:
        src = Image.open(DEV / rel).convert("RGB")
        src.thumbnail((640, 640))
        rgb = np.asarray(src)
        found = FaceEngine.shared().encode(rgb, allow_several=True, check_quality=False)
        assert found.box is not None and found.landmarks is not None
        ps = [Prompt(p) for p in prompts]
        seq = (genuine_sequence(rgb, found.box, found.landmarks[4], ps) if attack is None
               else attack_sequence(rgb, attack, ps))
        return [(_jpeg(frame), t) for frame, t in seq]
    return capture


def still(data: bytes) -> Capture:
    return lambda prompts: [(data, 0.0)]


sqlite_only = pytest.mark.parametrize("service", ["sqlite"], indirect=True)
"""The PostgreSQL back end runs the end-to-end reset test; the rest run on SQLite."""


def block_sign_password(path: Path) -> None:
    jpki = JpkiApplication(card_of(path))
    for _ in range(4):
        with pytest.raises(VerificationFailed):
            jpki.verify_pin("sign", "WRONG1")
    with pytest.raises(PinBlocked):
        jpki.verify_pin("sign", "WRONG1")


def test_blocked_password_reset_to_a_working_one(pki: PkiEnv, service: Service,
                                                 chip: bytes) -> None:
    path, p = pki.new_card(photo=chip)
    block_sign_password(path)
    r = reserve(service.url, card_of(path), p.auth_pin, p.text_pin, probe())
    assert r["expires_at"] == pytest.approx(service.clock[0] + 24 * 3600)
    redeem(service.url, card_of(path), r["reservation_id"], p.auth_pin, "NEWPASS2026")
    jpki = JpkiApplication(card_of(path))
    assert jpki.tries_left("sign") == 5
    jpki.verify_pin("sign", "NEWPASS2026")
    cert = jpki.certificate("sign")
    sig = jpki.sign("sign", b"signed after the reset")
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(sig, b"signed after the reset", padding.PKCS1v15(), hashes.SHA256())
    # Single use.
    with pytest.raises(ServiceRefused) as exc:
        redeem(service.url, card_of(path), r["reservation_id"], p.auth_pin, "OTHER2026")
    assert exc.value.code == "already_used" and exc.value.status == 409


@sqlite_only
def test_reverse_reset_of_the_auth_pin(pki: PkiEnv, service: Service, chip: bytes) -> None:
    path, p = pki.new_card(photo=chip)
    r = reserve(service.url, card_of(path), p.auth_pin, p.text_pin, probe())
    redeem(service.url, card_of(path), r["reservation_id"], p.sign_password, "7531",
           target="auth")
    JpkiApplication(card_of(path)).verify_pin("auth", "7531")


@sqlite_only
def test_expiry_at_24_hours(pki: PkiEnv, service: Service, chip: bytes) -> None:
    path, p = pki.new_card(photo=chip)
    r = reserve(service.url, card_of(path), p.auth_pin, p.text_pin, probe())
    saved = service.clock[0]
    service.clock[0] = saved + 24 * 3600 + 1
    try:
        with pytest.raises(ServiceRefused) as exc:
            redeem(service.url, card_of(path), r["reservation_id"], p.auth_pin, "LATE2026")
        assert exc.value.code == "expired" and exc.value.status == 410
    finally:
        service.clock[0] = saved


@sqlite_only
def test_wrong_card(pki: PkiEnv, service: Service, chip: bytes) -> None:
    path_a, pa = pki.new_card(photo=chip)
    path_b, pb = pki.new_card(photo=chip)
    r = reserve(service.url, card_of(path_a), pa.auth_pin, pa.text_pin, probe())
    with pytest.raises(ServiceRefused) as exc:
        redeem(service.url, card_of(path_b), r["reservation_id"], pb.auth_pin, "THIEF2026")
    assert exc.value.code == "wrong_card" and exc.value.status == 403
    # The reservation is still good for its own card.
    redeem(service.url, card_of(path_a), r["reservation_id"], pa.auth_pin, "OWNER2026")


@sqlite_only
def test_replayed_reset_command_is_rejected(pki: PkiEnv, service: Service, chip: bytes) -> None:
    path, p = pki.new_card(photo=chip)
    r = reserve(service.url, card_of(path), p.auth_pin, p.text_pin, probe())
    card = SoftwareCard.open(path)
    sent: list[bytes] = []
    original = card.transmit

    def spy(raw: bytes) -> bytes:
        sent.append(raw)
        return original(raw)

    card.transmit = spy  # type: ignore[method-assign]
    client = MyNumberCard(InProcessTransport(card))
    redeem(service.url, client, r["reservation_id"], p.auth_pin, "FIRST2026")
    reset = next(a for a in sent if a[:2] == b"\x0c\x2c")
    assert card.transmit(reset)[-2:] == b"\x69\x85"           # challenge consumed
    client.get_challenge(8)
    assert card.transmit(reset)[-2:] == b"\x69\x88"           # MAC bound to the old one
    JpkiApplication(client).verify_pin("sign", "FIRST2026")


@sqlite_only
def test_reset_requires_the_other_credential_and_a_valid_value(pki: PkiEnv, service: Service,
                                                                chip: bytes) -> None:
    path, p = pki.new_card(photo=chip)
    card = card_of(path)
    card.select(c.AID_JPKI)
    challenge = card.get_challenge(8)
    key = pinreset.card_key(pki.jlis.pin_reset_master(), SoftwareCard.open(path).image.meta[
        "serial"])
    bad = b"lower1"  # the card compares bytes and wants A-Z/0-9
    mac = pinreset.mac(key, pinreset.header("sign"), challenge, pinreset.value_hash(bad))
    resp = card.send(pinreset.reset_apdu("sign", bad, mac))
    assert resp.sw == 0x6982                                   # auth PIN not verified
    JpkiApplication(card).verify_pin("auth", p.auth_pin)
    challenge = card.get_challenge(8)
    mac = pinreset.mac(key, pinreset.header("sign"), challenge, pinreset.value_hash(bad))
    assert card.send(pinreset.reset_apdu("sign", bad, mac)).sw == 0x6A80
    with pytest.raises(InvalidValue):
        redeem(service.url, card, "unused", p.auth_pin, "short")


@sqlite_only
def test_face_outcomes_and_rate_limit(pki: PkiEnv, service: Service, chip: bytes) -> None:
    path, p = pki.new_card(photo=chip)
    other = sorted(str(x.relative_to(DEV)) for x in (DEV / "deepface_id01").iterdir())[0]
    with pytest.raises(ServiceRefused) as exc:
        reserve(service.url, card_of(path), p.auth_pin, p.text_pin,
                still((DEV / other).read_bytes()))
    assert exc.value.code == "face_no_match" and exc.value.status == 403
    blank = io.BytesIO()
    Image.new("RGB", (640, 480), (128, 128, 128)).save(blank, "PNG")
    with pytest.raises(ServiceRefused) as exc:
        reserve(service.url, card_of(path), p.auth_pin, p.text_pin, still(blank.getvalue()))
    assert exc.value.code == "face_no_face" and exc.value.status == 422
    # The card thief: the holder's photo shown to the camera matches, but cannot turn.
    with pytest.raises(ServiceRefused) as exc:
        reserve(service.url, card_of(path), p.auth_pin, p.text_pin, probe(attack="screen"))
    assert exc.value.code == "liveness_failed" and exc.value.status == 403
    for _ in range(2):
        with pytest.raises(ServiceRefused):
            reserve(service.url, card_of(path), p.auth_pin, p.text_pin, still(blank.getvalue()))
    with pytest.raises(ServiceRefused) as exc:
        reserve(service.url, card_of(path), p.auth_pin, p.text_pin, probe())
    assert exc.value.code == "rate_limited" and exc.value.status == 429


@sqlite_only
def test_challenge_is_single_use_and_signature_checked(service: Service) -> None:
    with httpx.Client(base_url=service.url, trust_env=False) as http:
        ch = http.post("/v1/challenges").json()
        assert len(ch["prompts"]) == 3
        body = {"challenge_id": ch["challenge_id"], "card_serial": "4" * 15,
                "auth_certificate": "AAAA", "auth_signature": "", "card_face": "",
                "card_face_cv_certificate": "", "card_face_signature": "",
                "frames": ["AAAA"], "frame_times": [0.0]}
        first = http.post("/v1/reservations", json=body)
        assert first.status_code == 400 and first.json()["error"] == "bad_certificate"
        again = http.post("/v1/reservations", json=body)
        assert again.json()["error"] == "challenge_invalid"
        assert http.post("/v1/reservations", json={"x": 1}).status_code == 422


def test_nothing_personal_in_logs_or_database(pki: PkiEnv, service: Service, chip: bytes,
                                             caplog: pytest.LogCaptureFixture) -> None:
    name = "漏洩　検査"
    path, p = pki.new_card(photo=chip, name=name)
    caplog.set_level(logging.DEBUG)
    r = reserve(service.url, card_of(path), p.auth_pin, p.text_pin, probe())
    redeem(service.url, card_of(path), r["reservation_id"], p.auth_pin, "SECRET7PASS")
    text = caplog.text
    assert r["reservation_id"] in text  # the service does log, just nothing personal
    db = service.stored_bytes()
    assert r["reservation_id"].encode() in db  # the scan sees the stored rows
    for planted in (p.my_number, p.auth_pin + "", p.text_pin, "SECRET7PASS", name,
                    p.sign_password):
        if len(planted) >= 6:
            assert planted not in text
            assert planted.encode() not in db
    assert chip[:64] not in db and (DEV / "deepface_id00/img1.jpg").read_bytes()[100:164] \
        not in db


def test_facepin_serve_process(pki: PkiEnv, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cardio.cli", "facepin", "serve", "--db",
         f"sqlite:///{tmp_path / 'f.db'}", "--port", str(port), "--trust", str(pki.roots),
         "--jlis", str(pki.jlis.path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1, trust_env=False)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert r.json() == {"status": "ok"}
        ch = httpx.post(f"http://127.0.0.1:{port}/v1/challenges", trust_env=False).json()
        assert len(ch["prompts"]) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "Finished server process" in out


@sqlite_only
def test_correlation_id_is_echoed(service: Service) -> None:
    with httpx.Client(base_url=service.url, trust_env=False) as http:
        r = http.post("/v1/challenges", headers={"X-Request-ID": "kiosk-42_abc"})
        assert r.headers["x-request-id"] == "kiosk-42_abc"
        r = http.post("/v1/challenges", headers={"X-Request-ID": "bad id; drop table"})
        assert r.headers["x-request-id"] != "bad id; drop table"
        assert len(r.headers["x-request-id"]) == 16
