"""Liveness: the state machine on measurements, then recorded sequences (synthetic, from
dev photos) — a bona fide head pass, and print, screen and still-video attacks fail."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facepin.face import FaceEngine, load_image
from facepin.liveness import (
    LivenessSession,
    Measurement,
    Prompt,
    Verdict,
    random_challenge,
)
from facepin.simulate import SPECIES, attack_sequence, genuine_sequence
from tests.conftest import SHARED

DEV = SHARED / "data" / "faces" / "dev"
REF = np.zeros(128)


def m(yaw: float = 0.0, width: float = 100.0, centre: tuple[float, float] = (200, 200),
      faces: int = 1, enc: np.ndarray | None = REF) -> Measurement:
    return Measurement(faces, yaw, width, centre, enc)


def test_random_challenge_always_has_both_turns() -> None:
    seen = set()
    for _ in range(50):
        ch = random_challenge()
        assert sorted(p.value for p in ch) == ["come_closer", "turn_left", "turn_right"]
        seen.add(tuple(ch))
    assert len(seen) > 1  # the order varies


def test_state_machine_pass() -> None:
    s = LivenessSession(REF, [Prompt.TURN_LEFT, Prompt.COME_CLOSER, Prompt.TURN_RIGHT])
    t = 0.0
    for meas in (m(), m(yaw=-0.05), m(yaw=-0.2), m(width=130), m(yaw=0.2), m()):
        t += 0.1
        s.feed(meas, t)
    assert s.verdict is Verdict.LIVE, s.reason


@pytest.mark.parametrize(("frames", "reason"), [
    ([m(), m(faces=2)], "several faces"),
    ([m(), m(centre=(400, 200))], "jumped"),
    ([m(), m(yaw=-0.2, enc=np.ones(128))], "not the card holder"),
])
def test_state_machine_failures(frames: list[Measurement], reason: str) -> None:
    s = LivenessSession(REF, [Prompt.TURN_LEFT, Prompt.TURN_RIGHT])
    for i, meas in enumerate(frames):
        s.feed(meas, i * 0.1)
    assert s.verdict is Verdict.FAILED and reason in s.reason


def test_timeout_and_end_of_capture() -> None:
    s = LivenessSession(REF, [Prompt.TURN_LEFT, Prompt.TURN_RIGHT])
    s.feed(m(), 0.0)
    s.feed(m(), 5.0)
    assert s.verdict is Verdict.FAILED and "timed out" in s.reason
    s2 = LivenessSession(REF, [Prompt.TURN_LEFT, Prompt.TURN_RIGHT])
    s2.feed(m(), 0.0)
    assert s2.finish() is Verdict.FAILED and "turn_left" in s2.reason


@pytest.fixture(scope="module")
def subject() -> tuple[np.ndarray, object, np.ndarray]:
    if not (DEV / "labels.csv").exists():
        pytest.skip("../shared/data/faces is not beside the checkout")
    engine = FaceEngine.shared()
    src = Image.open(DEV / "deepface_id00" / "img1.jpg").convert("RGB")
    src.thumbnail((640, 640))
    rgb = np.asarray(src)
    found = engine.encode(rgb, allow_several=True, check_quality=False)
    ref = engine.encode_reference(load_image(DEV / "deepface_id00" / "img2.jpg")).encoding
    assert ref is not None
    return rgb, found, ref


def run(engine: FaceEngine, ref: np.ndarray, frames: object, prompts: list[Prompt]
        ) -> LivenessSession:
    s = LivenessSession(ref, prompts)
    for frame, t in frames:  # type: ignore[attr-defined]
        if s.feed_frame(engine, frame, t) is not Verdict.IN_PROGRESS:
            break
    s.finish()
    return s


def test_recorded_bona_fide_passes(subject: tuple[np.ndarray, object, np.ndarray]) -> None:
    rgb, found, ref = subject
    prompts = [Prompt.TURN_RIGHT, Prompt.COME_CLOSER, Prompt.TURN_LEFT]
    s = run(FaceEngine.shared(), ref, genuine_sequence(rgb, found.box,  # type: ignore[attr-defined]
                                                       found.landmarks[4], prompts), prompts)  # type: ignore[attr-defined]
    assert s.verdict is Verdict.LIVE, s.reason


@pytest.mark.parametrize("species", SPECIES)
def test_recorded_attacks_fail(subject: tuple[np.ndarray, object, np.ndarray],
                               species: str) -> None:
    rgb, _found, ref = subject
    prompts = [Prompt.COME_CLOSER, Prompt.TURN_LEFT, Prompt.TURN_RIGHT]
    s = run(FaceEngine.shared(), ref, attack_sequence(rgb, species, prompts), prompts)
    assert s.verdict is Verdict.FAILED
    if species != "still_video":
        assert "turn" in s.reason  # it came closer, but a flat picture cannot turn


def test_someone_else_doing_the_moves_fails(subject: tuple[np.ndarray, object, np.ndarray]
                                           ) -> None:
    _rgb, _found, ref = subject
    engine = FaceEngine.shared()
    other = Image.open(sorted((DEV / "deepface_id01").iterdir())[0]).convert("RGB")
    other.thumbnail((640, 640))
    orgb = np.asarray(other)
    ofound = engine.encode(orgb, allow_several=True, check_quality=False)
    prompts = [Prompt.TURN_LEFT, Prompt.TURN_RIGHT]
    s = run(engine, ref, genuine_sequence(orgb, ofound.box, ofound.landmarks[4], prompts),  # type: ignore[arg-type, index]
            prompts)
    assert s.verdict is Verdict.FAILED and "not the card holder" in s.reason
