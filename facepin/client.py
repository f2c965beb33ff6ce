"""The two clients of the reservation service: the phone app (card + auth PIN + face →
reservation) and the kiosk (reservation + card + auth PIN → new signature password on the
card). Both speak to the card through ``cardio`` and to the service over HTTP.

The new password goes to the card and nowhere else: the service sees only its SHA-256.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from cardio import constants as c
from cardio import pinreset
from cardio.card import MyNumberCard
from cardio.common_ap import CommonApplication
from cardio.errors import CardioError
from cardio.identity import validate_four_digit_pin, validate_sign_password
from cardio.jpki import JpkiApplication
from cardio.visual import VisualApplication


class ServiceRefused(CardioError):
    """The service said no; ``code`` is its machine-readable reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status, self.code = status, code


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _post(http: httpx.Client, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = http.post(url, json=body or {})
    data: dict[str, Any] = resp.json() if resp.content else {}
    if resp.status_code >= 400:
        raise ServiceRefused(resp.status_code, str(data.get("error", "error")),
                             str(data.get("message", resp.reason_phrase)))
    return data


@dataclass
class CardEvidence:
    """What the app reads from the card for one reservation request."""

    serial: str
    auth_certificate: bytes
    auth_signature: bytes
    card_face: bytes
    card_face_cv: bytes
    card_face_signature: bytes


def gather_evidence(card: MyNumberCard, nonce: bytes, auth_pin: str, text_pin: str
                    ) -> CardEvidence:
    """Read and sign everything the service checks. The JPKI part comes first: selecting
    another application clears the verified auth PIN."""
    serial = CommonApplication(card).card_info().serial
    jpki = JpkiApplication(card)
    jpki.verify_pin("auth", auth_pin)
    cert = jpki.certificate_der("auth")
    sig = jpki.sign("auth", nonce)
    visual = VisualApplication(card)
    visual.unlock_with_text_pin(text_pin)
    face = visual.card_face_raw()
    cv = visual.cv_certificate_raw()
    presence = visual.presence_signature(nonce)
    return CardEvidence(serial, cert, sig, face, cv, presence)


class Camera(Protocol):
    """What the app's capture screen is to the client: it shows the prompt the service
    asks for and hands over the camera's current frame."""

    def show(self, prompt: str | None) -> None:
        """The service asks for ``prompt`` now (``turn_left``, ``turn_right``,
        ``come_closer``); None: look at the camera and hold still."""

    def frame(self) -> bytes | None:
        """The camera's newest frame as JPEG; None when there are no more (a recording
        that has ended)."""


def _ws_url(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://"):].rstrip("/")
    return "ws://" + base_url.removeprefix("http://").rstrip("/")


def evidence_message(challenge_id: str, ev: CardEvidence) -> dict[str, Any]:
    return {"challenge_id": challenge_id, "card_serial": ev.serial,
            "auth_certificate": _b64(ev.auth_certificate),
            "auth_signature": _b64(ev.auth_signature), "card_face": _b64(ev.card_face),
            "card_face_cv_certificate": _b64(ev.card_face_cv),
            "card_face_signature": _b64(ev.card_face_signature)}


def live_capture(base_url: str, evidence: dict[str, Any], camera: Camera, *,
                 fps: float | None = None, timeout: float = 120.0,
                 headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The live capture over the WebSocket: send the card's evidence, then stream the
    camera's frames at the service's frame rate while showing each prompt it sends, until
    it answers ``reserved`` (returned) or ``refused`` (:class:`ServiceRefused`)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    deadline = time.monotonic() + timeout
    with connect(_ws_url(base_url) + "/v1/reservations/live", proxy=None,
                 max_size=1 << 20, additional_headers=headers,
                 open_timeout=30) as ws:
        ws.send(json.dumps(evidence))
        interval = 0.0
        ended = False
        next_at = time.monotonic()

        def answer(raw: str | bytes) -> dict[str, Any] | None:
            """Act on one message from the service; the reservation when it is the last."""
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind == "capture":
                nonlocal interval
                interval = 1.0 / float(fps or msg.get("fps", 15.0))
                camera.show(None)
            elif kind == "prompt":
                camera.show(msg.get("prompt"))
            elif kind == "reserved":
                return {"reservation_id": msg["reservation_id"], "expires_at": msg["expires_at"]}
            elif kind == "refused":
                raise ServiceRefused(int(msg.get("status", 403)), str(msg.get("error", "refused")),
                                     str(msg.get("message", "refused")))
            return None

        try:
            while time.monotonic() < deadline:
                wait = max(0.0, next_at - time.monotonic()) if not ended else 1.0
                try:
                    raw = ws.recv(timeout=wait)
                except TimeoutError:
                    raw = None
                if raw is not None:
                    done = answer(raw)
                    if done is not None:
                        return done
                    continue
                if not interval or ended or time.monotonic() < next_at:
                    continue
                data = camera.frame()
                if data is None:
                    ws.send(json.dumps({"type": "end"}))
                    ended = True
                    continue
                ws.send(data)
                next_at += interval
                if next_at < time.monotonic() - interval:  # fell behind: do not burst
                    next_at = time.monotonic()
        except ConnectionClosed:
            # The service answers and closes while frames are still being sent: its last
            # message is waiting to be read.
            try:
                while True:
                    done = answer(ws.recv(timeout=5))
                    if done is not None:
                        return done
            except (ConnectionClosed, TimeoutError):
                pass
    raise ServiceRefused(502, "capture_interrupted", "the live capture ended without an"
                         " answer from the service")


def reserve(base_url: str, card: MyNumberCard, auth_pin: str, text_pin: str,
            camera: Camera, *, http: httpx.Client | None = None,
            fps: float | None = None) -> dict[str, Any]:
    """The app side: returns ``{"reservation_id", "expires_at"}``. The card is read before
    the capture starts (a challenge, the evidence signed over its nonce), then the live
    capture runs with ``camera``."""
    own = http is None
    http = http or httpx.Client(base_url=base_url, timeout=30, trust_env=False)
    try:
        ch = _post(http, "/v1/challenges")
        ev = gather_evidence(card, base64.b64decode(ch["nonce"]), auth_pin, text_pin)
    finally:
        if own:
            http.close()
    return live_capture(base_url, evidence_message(ch["challenge_id"], ev), camera, fps=fps)


def redeem(base_url: str, card: MyNumberCard, reservation_id: str, known: str, new_value: str,
           *, target: str = "sign", http: httpx.Client | None = None) -> None:
    """The kiosk side: with the card present, verify the known credential (the auth PIN
    to reset the signature password, or the signature password to reset the auth PIN),
    get a card challenge, have the service authorise the reset, send it to the card."""
    if target == "sign":
        new = validate_sign_password(new_value)
        validate_four_digit_pin(known)
    else:
        new = validate_four_digit_pin(new_value)
    own = http is None
    http = http or httpx.Client(base_url=base_url, timeout=30, trust_env=False)
    try:
        serial = CommonApplication(card).card_info().serial
        jpki = JpkiApplication(card)
        card.select(c.AID_JPKI, force=True)
        jpki.verify_pin("auth" if target == "sign" else "sign", known)
        cert = jpki.certificate_der("auth")
        challenge = card.get_challenge(8)
        out = _post(http, f"/v1/reservations/{reservation_id}/authorise", {
            "auth_certificate": _b64(cert), "card_serial": serial, "target": target,
            "card_challenge": challenge.hex(), "value_hash": pinreset.value_hash(new).hex()})
        card.send_checked(pinreset.reset_apdu(target, new, bytes.fromhex(out["mac"])),
                  f"resetting the JPKI {target} credential")
    finally:
        if own:
            http.close()
