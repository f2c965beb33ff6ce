"""The reservation service as a real HTTP server on loopback, the app and kiosk clients,
and the issuer-authenticated reset down to the software card. Reservations are made over
the live capture (the WebSocket the service paces, ``facepin.live``): bona fide with a
real recording of a person turning their head (``tests/facepin/live_data.py``), attacks
with pictures made from the chip photo."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
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
from facepin.client import (
    Camera,
    CardEvidence,
    ServiceRefused,
    gather_evidence,
    live_capture,
    redeem,
    reserve,
)
from facepin.face import FaceEngine, load_image
from facepin.service import HTTP_IMPL, ServiceConfig, create_app
from facepin.simulate import ATTACKS, UNSTOPPED, PromptedCamera, attack_camera, jpeg
from tests.conftest import SHARED
from tests.facepin.live_data import depth_gates_off, genuine_camera, genuine_chip, needs_clip
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


@contextlib.contextmanager
def running(config: ServiceConfig) -> Iterator[str]:
    """The service in a uvicorn thread on a free loopback port; its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port,
                                           log_level="warning", http=HTTP_IMPL))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def service(request: pytest.FixtureRequest, pki: PkiEnv,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:

    db = tmp_path_factory.mktemp("facepin") / "facepin.db"
    url = f"sqlite:///{db}"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        from facepin.store import Store

        with Store(url) as cleaner, cleaner._conn() as conn:
            for table in ("challenges", "reservations", "attempts"):
                conn.execute(f"DELETE FROM {table}")
    clock = [time.time()]
    config = ServiceConfig(database=url, trust=pki.trust,
                           master_key=pki.jlis.pin_reset_master(), clock=lambda: clock[0],
                           registry=pki.authority.card_of)
    with running(config) as base:
        yield Service(base, clock, db, url)


@pytest.fixture(scope="module")
def chip() -> bytes:
    """The chip photo of the card holder of the bona fide reservations: the person in the
    real head-turn clip, or the stand-in without it (``tests/facepin/live_data.py``)."""
    return genuine_chip()


@pytest.fixture
def depth_gates_on() -> None:
    """Requested by a test about telling a head from a picture: it keeps the depth gates
    even without the real clip."""


@pytest.fixture(autouse=True)
def _bona_fide_without_the_clip(request: pytest.FixtureRequest,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the real clip, a test that needs a reservation granted gets it from the
    2.5-D stand-in with the depth gates off (``live_data.depth_gates_off``); tests that
    ask for ``depth_gates_on`` keep them."""
    if "depth_gates_on" not in request.fixturenames:
        depth_gates_off(monkeypatch)


def card_of(path: Path) -> MyNumberCard:
    return MyNumberCard(InProcessTransport(SoftwareCard.open(path)))


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def probe(attack: str | None = None, seed: int = 0) -> Camera:
    """A camera answering the service's prompts: the real clip's person doing the moves,
    or ``attack`` (a species of ``facepin.simulate.ATTACKS``) made from that person's chip
    photo — the card thief's picture of the holder."""
    if attack is None:
        return genuine_camera()
    return attack_camera(load_image(genuine_chip()), attack, seed, engine=FaceEngine.shared())


def still(data: bytes, frames: int = 30) -> Camera:
    """A camera that sends the same picture (a JPEG) ``frames`` times."""
    rgb = load_image(data)
    return PromptedCamera(lambda _p, _k: rgb, limit=frames)


def blank_jpeg(size: tuple[int, int] = (640, 480)) -> bytes:
    """A camera frame with no face in it (colour: a grey picture is not a camera frame)."""
    return jpeg(np.full((size[1], size[0], 3), (128, 120, 110), np.uint8))


def live(url: str, body: dict[str, object], camera: Camera) -> tuple[int, str]:
    """One live capture with the given evidence: (201, "") when reserved, else the
    refusal's (status, code)."""
    try:
        live_capture(url, body, camera)
        return 201, ""
    except ServiceRefused as exc:
        return exc.status, exc.code


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
    with pytest.raises(VerificationFailed) as old:
        jpki.verify_pin("sign", p.sign_password)  # the old password no longer opens it
    assert old.value.tries_left == 4
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
    jpki = JpkiApplication(card_of(path))
    assert p.auth_pin != "7531"
    with pytest.raises(VerificationFailed) as old:
        jpki.verify_pin("auth", p.auth_pin)  # the old PIN now fails
    assert old.value.tries_left == 2
    jpki.verify_pin("auth", "7531")
    assert jpki.tries_left("auth") == 3


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
def test_face_outcomes_and_rate_limit(pki: PkiEnv, service: Service, chip: bytes,
                                     depth_gates_on: None) -> None:
    path, p = pki.new_card(photo=chip)
    other = sorted(str(x.relative_to(DEV)) for x in (DEV / "deepface_id01").iterdir())[0]
    with pytest.raises(ServiceRefused) as exc:
        reserve(service.url, card_of(path), p.auth_pin, p.text_pin,
                still((DEV / other).read_bytes()))
    assert exc.value.code == "face_no_match" and exc.value.status == 403
    blank = blank_jpeg()
    with pytest.raises(ServiceRefused) as exc:
        reserve(service.url, card_of(path), p.auth_pin, p.text_pin, still(blank))
    assert exc.value.code == "face_no_face" and exc.value.status == 422
    # The card thief: the holder's photo shown to the camera matches, but is no head.
    with pytest.raises(ServiceRefused) as exc:
        reserve(service.url, card_of(path), p.auth_pin, p.text_pin, probe("screen_tilted"))
    assert exc.value.code == "liveness_failed" and exc.value.status == 403
    for _ in range(2):
        with pytest.raises(ServiceRefused):
            reserve(service.url, card_of(path), p.auth_pin, p.text_pin, still(blank))
    with pytest.raises(ServiceRefused) as exc:
        reserve(service.url, card_of(path), p.auth_pin, p.text_pin, probe())
    assert exc.value.code == "rate_limited" and exc.value.status == 429


@sqlite_only
def test_challenge_is_single_use_and_signature_checked(service: Service) -> None:
    with httpx.Client(base_url=service.url, trust_env=False) as http:
        ch = http.post("/v1/challenges").json()
        assert ch["prompts"] == []  # the order is revealed one prompt at a time
        body = {"challenge_id": ch["challenge_id"], "card_serial": "4" * 15,
                "auth_certificate": "AAAA", "auth_signature": "", "card_face": "",
                "card_face_cv_certificate": "", "card_face_signature": ""}
        no_frames = still(blank_jpeg(), 0)
        assert live(service.url, body, no_frames) == (400, "bad_certificate")
        assert live(service.url, body, no_frames) == (400, "challenge_invalid")
        assert live(service.url, {"x": 1}, no_frames) == (422, "invalid_request")
        # The former upload of recorded frames with the client's timestamps is gone.
        old = http.post("/v1/reservations", json={**body, "frames": ["AAAA"],
                                                  "frame_times": [0.0]})
        assert old.status_code == 410 and old.json()["error"] == "live_capture_required"


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


class ServeProcess:
    """``cardio facepin serve --port 0`` as a real process; its output collected by a
    thread, its port read from uvicorn's start line."""

    def __init__(self, pki: PkiEnv, db: Path) -> None:
        import os
        import re
        import subprocess
        import sys

        self.lines: list[str] = []
        # The master key and the card registry come from configuration only; the emulated
        # J-LIS directory the environment points at is never read, let alone created.
        key_file = db.parent / "master.key"
        key_file.write_bytes(pki.jlis.pin_reset_master())
        self.untouched = db.parent / "emu-jlis"
        self.untouched.mkdir(exist_ok=True)
        if not (pki.jlis.path / "cards.json").exists():
            pki.new_card()  # the issuer's registry exists once a card was issued
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cardio.cli", "facepin", "serve", "--db", f"sqlite:///{db}",
             "--port", "0", "--trust", str(pki.roots),
             "--card-registry", str(pki.jlis.path / "cards.json")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "CARDIO_FACEPIN_MASTER_KEY_FILE": str(key_file),
                 "CARDIO_JLIS_DIR": str(self.untouched)})
        started = threading.Event()
        self.port = 0

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                m = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    started.set()
            started.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        started.wait(90)
        assert self.port, "".join(self.lines)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        import signal

        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.reader.join(10)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert self.proc.returncode in (0, -signal.SIGTERM)
        assert list(self.untouched.iterdir()) == []
        return "".join(self.lines)


@sqlite_only
@pytest.mark.slow
@pytest.mark.parametrize("species", (*(s for s in ATTACKS if s not in UNSTOPPED),
                                     "own_simulator"))
def test_the_running_service_refuses_every_attack(pki: PkiEnv, service: Service, chip: bytes,
                                                  species: str, depth_gates_on: None) -> None:
    """Issue 30's rows through the running service with genuine card evidence: a fresh
    card whose chip photo is the holder's, and frames made from that chip photo as each
    species of ``facepin.simulate.ATTACKS`` (and the project's own bona fide simulator
    applied to it). The face matches the card every time; liveness refuses."""
    from tests.facepin.test_liveness import sequence_camera

    path, p = pki.new_card(photo=chip)
    camera = sequence_camera(load_image(chip), FaceEngine.shared()) \
        if species == "own_simulator" else probe(species)
    with pytest.raises(ServiceRefused) as exc:
        reserve(service.url, card_of(path), p.auth_pin, p.text_pin, camera)
    assert (exc.value.status, exc.value.code) == (403, "liveness_failed")


def test_facepin_serve_process(pki: PkiEnv, tmp_path: Path) -> None:
    """The real process answers, and emits the service's own log lines with the
    correlation id (item 8a: before issue 8 only uvicorn's lines came out)."""
    serve = ServeProcess(pki, tmp_path / "f.db")
    try:
        r = httpx.get(f"{serve.url}/health", timeout=5, trust_env=False)
        assert r.json() == {"status": "ok"}
        ch = httpx.post(f"{serve.url}/v1/challenges", trust_env=False, timeout=5,
                        headers={"X-Request-ID": "kiosk-8a-check"})
        # The prompts are shown during the live capture, one at a time, not announced here
        assert ch.status_code == 200 and ch.json()["prompts"] == []
        bad = httpx.post(f"{serve.url}/v1/reservations", trust_env=False, timeout=5,
                         json={"challenge_id": "nope"}, headers={"X-Request-ID": "kiosk-8a-bad"})
        assert bad.status_code == 410  # the upload is gone: frames come live (WebSocket)
    finally:
        out = serve.stop()
    assert "Finished server process" in out
    assert "facepin.service" in out and "POST /v1/challenges -> 200 request=kiosk-8a-check" in out
    assert "request=kiosk-8a-bad" in out


@pytest.mark.slow
@needs_clip
def test_facepin_serve_grants_a_head_and_refuses_pictures(pki: PkiEnv, tmp_path: Path,
                                                         chip: bytes, depth_gates_on: None
                                                         ) -> None:
    """The real ``cardio facepin serve`` process: a real recording of the holder turning
    their head gets a reservation that resets the card's signature password; pictures of
    the holder made from the chip photo get nothing; a frame above the WebSocket's bound
    closes the connection."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from facepin.live import MAX_FRAME_BYTES

    serve = ServeProcess(pki, tmp_path / "f.db")
    try:
        path, p = pki.new_card(photo=chip)
        r = reserve(serve.url, card_of(path), p.auth_pin, p.text_pin, probe())
        redeem(serve.url, card_of(path), r["reservation_id"], p.auth_pin, "LIVE2026")
        JpkiApplication(card_of(path)).verify_pin("sign", "LIVE2026")
        for species in ("tilt_roll", "shear", "screen_tilted", "warp"):
            path, p = pki.new_card(photo=chip)
            with pytest.raises(ServiceRefused) as exc:
                reserve(serve.url, card_of(path), p.auth_pin, p.text_pin, probe(species))
            assert exc.value.code == "liveness_failed", species
        with connect(serve.url.replace("http", "ws") + "/v1/reservations/live", proxy=None,
                     max_size=1 << 20) as ws:
            ws.send(b"x" * (MAX_FRAME_BYTES + 64 * 1024))
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
    finally:
        out = serve.stop()
    assert out.count("live capture: live") == 1 and out.count("live capture: failed") == 4


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_facepin_serve_bad_port_is_a_one_line_usage_error(pki: PkiEnv, tmp_path: Path,
                                                         port: str) -> None:
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "cardio.cli", "facepin", "serve", "--db",
                          f"sqlite:///{tmp_path / 'f.db'}", "--port", port, "--trust",
                          str(pki.roots), "--card-registry", str(pki.jlis.path / "cards.json")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "--port" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_service_memory_stays_bounded_under_hostile_bodies(pki: PkiEnv, tmp_path: Path) -> None:
    """Item 5 acceptance, on the real ``cardio facepin serve`` process: oversized,
    negative-length, chunked and slow bodies (bounded: 64 MB streamed per case at most,
    40 slow senders for 3 s; ``CARDIO_FULL_SIZE=1``: 300 MB and 100), plus a
    largest-allowed JSON body that is parsed. Before issue 8 a 300 MB JSON body took the
    server from 220 MB to 1.1 GB."""
    from facepin.service import MAX_BODY, MAX_BUFFERED
    from tests.http_probe import (
        HOSTILE_STREAM,
        SLOW_SENDERS,
        RssSampler,
        exchange,
        rss_kib,
        slow_sender,
        status_of,
    )

    serve = ServeProcess(pki, tmp_path / "f.db")
    host, port = "127.0.0.1", serve.port
    try:
        exchange(host, port, _head("/v1/challenges", "Content-Length: 0"))
        time.sleep(0.5)
        before = rss_kib(serve.proc.pid)
        stream = HOSTILE_STREAM
        statuses: list[int] = []
        with RssSampler(serve.proc.pid) as sampler:
            for headers, body in ((("Content-Length: 1000000000",), b""),
                                  (("Content-Length: -1",), b""),
                                  (("Transfer-Encoding: chunked",), f"{stream:x}\r\n".encode())):
                for _ in range(3):
                    statuses.append(status_of(exchange(
                        host, port, _head("/v1/reservations", *headers), body, stream=stream,
                        timeout=30)))
            # The largest body allowed (then refused: uploads are gone, 410).
            big = json.dumps({"challenge_id": "x", "auth_certificate": "", "auth_signature": "",
                              "card_face": "A" * (MAX_BODY - 400),
                              "card_face_cv_certificate": "",
                              "card_face_signature": ""}).encode()
            assert len(big) < MAX_BODY
            statuses.append(status_of(exchange(host, port, _head(
                "/v1/reservations", f"Content-Length: {len(big)}"), big, timeout=30)))
            done = threading.Event()
            answers: list[int] = []
            slow = [slow_sender(host, port, _head("/v1/reservations", "Content-Length: 60000"),
                                3.0, done, answers) for _ in range(SLOW_SENDERS)]
            for t in slow:
                t.join(15)
            done.set()
        time.sleep(0.5)
        after = rss_kib(serve.proc.pid)
    finally:
        serve.stop()
    print(f"\nfacepin RSS: before {before} KiB, peak {sampler.peak} KiB"
          f" (+{sampler.peak - before}), after {after} KiB (+{after - before})")
    assert statuses == [413] * 3 + [400] * 3 + [413] * 3 + [410], statuses
    assert len(answers) == SLOW_SENDERS
    # Bound: the buffered-body budget, twice (the buffer and its parsed copy), plus slack.
    bound = (2 * MAX_BUFFERED + (32 << 20)) // 1024
    assert sampler.peak - before < bound and after - before < bound


@sqlite_only
def test_correlation_id_is_echoed(service: Service) -> None:
    with httpx.Client(base_url=service.url, trust_env=False) as http:
        r = http.post("/v1/challenges", headers={"X-Request-ID": "kiosk-42_abc"})
        assert r.headers["x-request-id"] == "kiosk-42_abc"
        r = http.post("/v1/challenges", headers={"X-Request-ID": "bad id; drop table"})
        assert r.headers["x-request-id"] != "bad id; drop table"
        assert len(r.headers["x-request-id"]) == 16


# -- issue 8 ------------------------------------------------------------------------------
def _b64(b: bytes) -> str:
    import base64

    return base64.b64encode(b).decode()


def _jpeg_of(rel: str) -> bytes:
    return (DEV / rel).read_bytes()


def _reservation_body(ch: dict[str, object], id_ev: CardEvidence, face_ev: CardEvidence,
                      serial: str | None) -> dict[str, object]:
    """The live capture's evidence with the certificate and its signature from ``id_ev``
    and the card face with its presence signature from ``face_ev`` (an attacker may mix
    cards)."""
    return {"challenge_id": ch["challenge_id"], "card_serial": serial,
            "auth_certificate": _b64(id_ev.auth_certificate),
            "auth_signature": _b64(id_ev.auth_signature), "card_face": _b64(face_ev.card_face),
            "card_face_cv_certificate": _b64(face_ev.card_face_cv),
            "card_face_signature": _b64(face_ev.card_face_signature)}


@sqlite_only
def test_a_reservation_cannot_name_another_card(pki: PkiEnv, service: Service,
                                                chip: bytes) -> None:
    """Item 1, reproduced: card E (the attacker's face on its chip) supplies every proof,
    card S's serial is put in the request; then E's reservation is redeemed against S
    (whose auth PIN the attacker knows). Before issue 8, S's signature password changed."""
    import base64

    e_path, e = pki.new_card(photo=chip)      # the attacker's own card
    s_path, s = pki.new_card()                 # the victim's card (another face)
    s_serial = SoftwareCard.open(s_path).image.meta["serial"]
    with httpx.Client(base_url=service.url, trust_env=False, timeout=60) as http:
        # E's proofs with S's serial.
        ch = http.post("/v1/challenges").json()
        nonce = base64.b64decode(ch["nonce"])
        e_ev = gather_evidence(card_of(e_path), nonce, e.auth_pin, e.text_pin)
        assert live(service.url, _reservation_body(ch, e_ev, e_ev, s_serial), probe()) == \
            (403, "card_mismatch")
        # S's certificate and signature (S's auth PIN) with E's card face (E's face).
        ch = http.post("/v1/challenges").json()
        nonce = base64.b64decode(ch["nonce"])
        s_ev = gather_evidence(card_of(s_path), nonce, s.auth_pin, s.text_pin)
        e_ev = gather_evidence(card_of(e_path), nonce, e.auth_pin, e.text_pin)
        assert live(service.url, _reservation_body(ch, s_ev, e_ev, None), probe()) == \
            (403, "card_mismatch")
    # E's own reservation is granted, bound to E.
    mine = reserve(service.url, card_of(e_path), e.auth_pin, e.text_pin, probe())
    with httpx.Client(base_url=service.url, trust_env=False) as http:
        body = {"auth_certificate": _b64(e_ev.auth_certificate), "card_serial": s_serial,
                "target": "sign", "card_challenge": "00" * 8, "value_hash": "00" * 32}
        r = http.post(f"/v1/reservations/{mine['reservation_id']}/authorise", json=body)
        assert (r.status_code, r.json()["error"]) == (403, "wrong_card")
    # Redeemed with E's certificate but sent to card S: the MAC is keyed to E's serial
    # (from the issuer's registry), so card S refuses it and keeps its password.
    s_card = card_of(s_path)
    s_jpki = JpkiApplication(s_card)
    s_card.select(c.AID_JPKI, force=True)
    s_jpki.verify_pin("auth", s.auth_pin)
    challenge = s_card.get_challenge(8)
    new = b"STOLEN2026"
    with httpx.Client(base_url=service.url, trust_env=False) as http:
        body = {"auth_certificate": _b64(e_ev.auth_certificate), "target": "sign",
                "card_challenge": challenge.hex(), "value_hash": pinreset.value_hash(new).hex()}
        r = http.post(f"/v1/reservations/{mine['reservation_id']}/authorise", json=body)
        assert r.status_code == 200
    resp = s_card.send(pinreset.reset_apdu("sign", new, bytes.fromhex(r.json()["mac"])))
    assert resp.sw == 0x6988
    JpkiApplication(card_of(s_path)).verify_pin("sign", s.sign_password)  # unchanged


@sqlite_only
def test_an_unregistered_card_gets_nothing(pki: PkiEnv, service: Service, chip: bytes,
                                           tmp_path: Path) -> None:
    from emulators.card import Profile, create_card

    path = tmp_path / "unregistered"
    p = Profile()
    create_card(path, p, pki.jlis, keys=pki.pool, photo=chip)  # J-LIS has no record of it
    with pytest.raises(ServiceRefused) as exc:
        reserve(service.url, card_of(path), p.auth_pin, p.text_pin, probe())
    assert (exc.value.status, exc.value.code) == (403, "card_unknown")


@sqlite_only
def test_a_revocation_is_seen_at_once_by_the_running_service(pki: PkiEnv, service: Service,
                                                             chip: bytes) -> None:
    """Item 2, reproduced: the service's long-lived validator used to serve cached "good"
    answers for up to an hour after `cardio emu ca revoke`."""
    path, p = pki.new_card(photo=chip)
    first = reserve(service.url, card_of(path), p.auth_pin, p.text_pin, probe())
    pki.authority.revoke_card(path, "auth", "key_compromise")
    with pytest.raises(ServiceRefused) as exc:
        reserve(service.url, card_of(path), p.auth_pin, p.text_pin, probe())
    assert (exc.value.status, exc.value.code) == (403, "certificate_revoked")
    with pytest.raises(ServiceRefused) as exc:
        redeem(service.url, card_of(path), first["reservation_id"], p.auth_pin, "LATE2026")
    assert (exc.value.status, exc.value.code) == (403, "certificate_revoked")
    from facepin.store import Store

    got = Store(service.database).get_reservation(first["reservation_id"])
    assert got is not None and got.used_at is None  # refused, not consumed


def test_rate_limit_holds_under_20_concurrent_attempts(pki: PkiEnv, service: Service,
                                                       chip: bytes) -> None:
    """Item 4, reproduced on both databases: 20 concurrent reservation attempts for one
    card against a limit of 5 — exactly 5 are evaluated, 15 are refused 429."""
    import base64

    path, p = pki.new_card(photo=chip)
    blank = blank_jpeg((320, 240))

    def bodies_for(n: int) -> list[dict[str, object]]:
        out = []
        with httpx.Client(base_url=service.url, trust_env=False, timeout=60) as http:
            for _ in range(n):
                ch = http.post("/v1/challenges").json()
                ev = gather_evidence(card_of(path), base64.b64decode(ch["nonce"]),
                                     p.auth_pin, p.text_pin)
                out.append(_reservation_body(ch, ev, ev, ev.serial))
        return out

    def round_of(bodies: list[dict[str, object]]) -> list[tuple[int, str]]:
        start = threading.Barrier(len(bodies))
        results: list[tuple[int, str]] = []

        def attempt(body: dict[str, object]) -> None:
            camera = still(blank)
            start.wait()
            results.append(live(service.url, body, camera))

        threads = [threading.Thread(target=attempt, args=(b,)) for b in bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        return results

    # A capture refused certificate_unknown (the OCSP responder late under load) took no
    # attempt — the certificate is checked first — so it is tried again with fresh
    # evidence, as the app would, together with the others still pending.
    final: list[tuple[int, str]] = []
    pending = 20
    for _ in range(6):
        results = round_of(bodies_for(pending))
        final += [r for r in results if r[1] != "certificate_unknown"]
        pending = sum(r[1] == "certificate_unknown" for r in results)
        if not pending:
            break
    codes = [c for c, _e in final]
    errors = [e for _c, e in final]
    print(f"\n[{service.database.split(':')[0]}] 20 concurrent attempts:"
          f" {sum(c != 429 for c in codes)} evaluated, {codes.count(429)} refused 429")
    assert sorted(codes) == [422] * 5 + [429] * 15, errors  # 422: no face in the blank frame


@pytest.mark.slow
def test_one_challenge_is_evaluated_once_for_20_simultaneous_copies(
        pki: PkiEnv, service: Service, chip: bytes) -> None:
    """Issue 22, item 10: one request sent 20 times at once, in five rounds (four with a
    blank frame, then a genuine one: the card's evidence and live frames). In each round
    exactly one copy is evaluated; the other 19 are refused as a used challenge before any
    work and spend none of the card's 5 attempts, so the genuine round still gets its
    one reservation. Before, on PostgreSQL, 1–6 copies per round passed the challenge
    check, each spending an attempt (and, with live frames, making a reservation)."""
    import base64

    path, p = pki.new_card(photo=chip)
    blank = blank_jpeg((320, 240))
    passed: list[int] = []
    for round_ in range(5):
        with httpx.Client(base_url=service.url, trust_env=False, timeout=60) as http:
            ch = http.post("/v1/challenges").json()
        ev = gather_evidence(card_of(path), base64.b64decode(ch["nonce"]), p.auth_pin,
                             p.text_pin)
        body = _reservation_body(ch, ev, ev, ev.serial)
        start = threading.Barrier(20)
        answers: list[tuple[int, str]] = []

        def send(body: dict[str, object] = body, start: threading.Barrier = start,
                 answers: list[tuple[int, str]] = answers, genuine: bool = round_ == 4
                 ) -> None:
            camera = probe() if genuine else still(blank)
            start.wait()
            answers.append(live(service.url, body, camera))

        threads = [threading.Thread(target=send) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        passed.append(sum(c != 400 for c, _ in answers))
        first = (201, "") if round_ == 4 else (422, "face_no_face")
        assert sorted(answers) == sorted([first] + [(400, "challenge_invalid")] * 19), \
            f"round {round_}: {passed[-1]} of 20 copies passed the challenge check: {answers}"
    print(f"\n[{service.database.split(':')[0]}] copies of one request past the challenge"
          f" check, per round of 20: {passed}")
    from facepin.store import Store

    store = Store(service.database)
    fp = hashlib.sha256(ev.auth_certificate).hexdigest()
    assert store.attempts_since(fp, 0.0) == 5
    with store._conn() as db:
        (n,) = db.execute("SELECT COUNT(*) FROM reservations WHERE cert_fp=?", (fp,)
                          ).fetchone()
    assert n == 1


@pytest.fixture(scope="module")
def strict_service(pki: PkiEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service with a 1 s body deadline and a 32 KiB budget for buffered bodies (each
    body may be up to 64 KiB)."""
    import uvicorn

    db = tmp_path_factory.mktemp("strict") / "facepin.db"
    config = ServiceConfig(database=f"sqlite:///{db}", trust=pki.trust,
                           master_key=pki.jlis.pin_reset_master(),
                           registry=pki.authority.card_of, body_timeout=1.0,
                           max_buffered=32 << 10)
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=0,
                                           log_level="warning", http=HTTP_IMPL))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _head(path: str, *headers: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


@sqlite_only
def test_bodies_are_bounded_before_parsing(service: Service, strict_service: str) -> None:
    """Item 5: every length the issue names, answered before the body is parsed."""
    from facepin.service import MAX_BODY
    from tests.http_probe import exchange, status_of

    big = 32 << 20
    cases = {
        "negative length": ("/v1/reservations", ("Content-Length: -1",), 400),
        "non-numeric length": ("/v1/reservations", ("Content-Length: 1e9",), 400),
        "oversized length": ("/v1/reservations", (f"Content-Length: {MAX_BODY + 1}",), 413),
        "oversized for a small route": ("/v1/challenges", (f"Content-Length: {MAX_BODY + 1}",),
                                        413),
        "chunked beyond the limit": ("/v1/reservations", ("Transfer-Encoding: chunked",), 413),
        # The strict service holds at most 32 KiB of bodies at once.
        "beyond the shared budget": ("/v1/reservations", ("Content-Length: 60000",), 503),
        "chunked beyond the budget": ("/v1/reservations", ("Transfer-Encoding: chunked",), 503),
    }
    for name, (path, headers, want) in cases.items():
        where = strict_service if "budget" in name else service.url.removeprefix("http://")
        host, port = where.split(":")
        body = b""
        if "chunked" in headers[0]:  # one endless chunk
            body = f"{big:x}\r\n".encode()
        answer = exchange(host, int(port), _head(path, *headers), body, stream=big)
        assert status_of(answer) == want, (name, answer[:120])
        assert b"Traceback" not in answer


def test_slow_body_is_cut_off_with_408(strict_service: str) -> None:
    import socket

    from tests.http_probe import status_of

    host, port = strict_service.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(_head("/v1/reservations", "Content-Length: 5000"))
        start = time.monotonic()
        answer = b""
        s.settimeout(0.1)
        while time.monotonic() - start < 5 and not answer:
            try:
                s.sendall(b"x")
                answer = s.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
    assert status_of(answer) == 408 and time.monotonic() - start < 4


@sqlite_only
def test_malformed_evidence_is_a_4xx_answer(service: Service) -> None:
    """The live capture's first message: anything but the card's evidence as JSON text is
    refused with a typed answer, never a traceback."""
    from websockets.sync.client import connect

    url = service.url.replace("http://", "ws://") + "/v1/reservations/live"
    for first in (b"binary", "not json", "[" + "9" * 5000 + "]", json.dumps({"x": 1}),
                  json.dumps({"challenge_id": 5}), "A" * (300 * 1024)):
        with connect(url, proxy=None, max_size=1 << 20) as ws:
            ws.send(first)
            answer = json.loads(ws.recv(timeout=30))
        assert answer["type"] == "refused" and 400 <= answer["status"] < 500, (first[:20],
                                                                                answer)


@sqlite_only
def test_the_chip_photo_is_never_a_camera_frame(pki: PkiEnv, service: Service,
                                               chip: bytes) -> None:
    """The card's own JPEG 2000, sent as a frame of the live capture, is refused by name;
    so is a greyscale picture and anything that is not a colour JPEG."""
    from facepin.simulate import PromptedCamera

    class Raw(PromptedCamera):
        def __init__(self, data: bytes) -> None:
            super().__init__(lambda _p, _k: np.zeros((1, 1, 3), np.uint8), limit=3)
            self.data = data

        def frame(self) -> bytes | None:
            self.sent += 1
            return self.data if self.sent <= self.limit else None

    grey = io.BytesIO()
    Image.open(io.BytesIO(chip)).convert("L").resize((480, 640)).save(grey, "JPEG")
    png = io.BytesIO()
    Image.new("RGB", (640, 480), (120, 110, 100)).save(png, "PNG")
    for data, words in ((chip, "JPEG 2000"), (grey.getvalue(), "colour"),
                        (png.getvalue(), "JPEG")):
        path, p = pki.new_card(photo=chip)
        with pytest.raises(ServiceRefused) as exc:
            reserve(service.url, card_of(path), p.auth_pin, p.text_pin, Raw(data))
        assert (exc.value.status, exc.value.code) == (400, "not_a_camera_frame")
        assert words in str(exc.value)


@sqlite_only
def test_a_registry_file_damaged_while_serving_is_503_then_heals(
        pki: PkiEnv, service: Service, chip: bytes, tmp_path: Path) -> None:
    """``facepin serve`` reads the registry from a file (FileCardRegistry). Damaged while
    the service runs, it must refuse with 503 (fail closed, as documented) — it was a 500,
    since the service caught OSError/ValueError but not RegistryError — and work again
    once the file is repaired."""
    import shutil

    from facepin.registry import FileCardRegistry

    path, p = pki.new_card(photo=chip)
    registry_file = tmp_path / "cards.json"
    shutil.copy(pki.jlis.path / "cards.json", registry_file)
    config = ServiceConfig(database=f"sqlite:///{tmp_path / 'facepin.db'}", trust=pki.trust,
                           master_key=pki.jlis.pin_reset_master(),
                           registry=FileCardRegistry(registry_file))
    with running(config) as url:
        good = registry_file.read_bytes()
        registry_file.write_bytes(good[: len(good) // 2])  # a writer cut off mid-file
        with pytest.raises(ServiceRefused) as exc:
            reserve(url, card_of(path), p.auth_pin, p.text_pin, probe())
        assert (exc.value.status, exc.value.code) == (503, "registry_unavailable")
        registry_file.write_bytes(good)
        assert reserve(url, card_of(path), p.auth_pin, p.text_pin, probe())["reservation_id"]


# -- review of issue 22, finding 9 --------------------------------------------------------
@sqlite_only
def test_a_malformed_authorise_request_leaves_the_reservation(pki: PkiEnv, service: Service,
                                                              chip: bytes) -> None:
    """An odd-length ``card_challenge`` matched the hex pattern, the reservation was spent,
    then ``bytes.fromhex`` raised: a 500 with a traceback and a face check lost. The request
    is refused (422) before anything is spent; the same reservation then opens the card."""
    import base64

    path, p = pki.new_card(photo=chip)
    mine = reserve(service.url, card_of(path), p.auth_pin, p.text_pin, probe())
    url = f"/v1/reservations/{mine['reservation_id']}/authorise"
    with httpx.Client(base_url=service.url, trust_env=False, timeout=60) as http:
        nonce = base64.b64decode(http.post("/v1/challenges").json()["nonce"])
        ev = gather_evidence(card_of(path), nonce, p.auth_pin, p.text_pin)
        body = {"auth_certificate": _b64(ev.auth_certificate), "target": "sign",
                "value_hash": "00" * 32}
        for bad in ("0" * 17, "0" * 63, "0" * 14 + "zz"):
            r = http.post(url, json={**body, "card_challenge": bad})
            assert r.status_code == 422, (bad, r.status_code, r.text[:200])
            assert "Traceback" not in r.text and bad not in r.text
        r = http.post(url, json={**body, "card_challenge": "00" * 8})
        assert r.status_code == 200, r.text[:200]  # not spent by the malformed ones
        assert len(bytes.fromhex(r.json()["mac"])) == pinreset.MAC_LEN
        r = http.post(url, json={**body, "card_challenge": "00" * 8})
        assert (r.status_code, r.json()["error"]) == (409, "already_used")
