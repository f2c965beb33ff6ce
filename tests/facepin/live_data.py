"""Real head-turn video for the tests that need a bona fide live capture.

A head turning cannot be synthesised from a still photo without building exactly the
attack the liveness check refuses (issue 30), so the bona fide captures replay a real
recording: ``../data-liveness`` beside the checkout (its README keeps each clip's source
and commit; the clips are never part of the repository), ``$CARDIO_LIVENESS_DATA`` to
point elsewhere. Without the clip (CI has only ``../shared``), the holder is a dev photo
(``../shared/data/faces/dev``) and the bona fide camera is the project's 2.5-D turn of it
(``facepin.simulate``'s ``warp``), which the depth gates refuse as they must: tests that
only need a reservation granted (redeeming it, its expiry, the rate limit, the privacy of
the logs) then run with the two depth gates switched off for that test
(:func:`depth_gates_off`), every other part of the live capture real — pose, prompts,
timing, identity, the card's evidence. Tests about telling a head from a picture keep the
gates and either use attacks only (they run everywhere) or need the clip
(``needs_clip``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import facepin.liveness as liveness
from facepin.face import FaceEngine, chip_photo, load_image
from facepin.simulate import ClipPerformer, PromptedCamera, attack_camera

DATA = Path(os.environ.get("CARDIO_LIVENESS_DATA")
            or Path(__file__).resolve().parents[2].parent / "data-liveness")
CLIP = DATA / "raw" / "head-gesture" / "1.no_motion_resize.mp4"
"""A phone selfie of a man shaking his head: four turns to each side."""

HAVE_CLIP = CLIP.exists()
needs_clip = pytest.mark.skipif(not HAVE_CLIP,
                                reason="no real head-turn clip (../data-liveness)")
DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces" / "dev"
STAND_IN = DEV / "deepface_id03" / "img3.jpg"
"""The holder when there is no clip: a frontal dev photo."""

_lock = threading.Lock()
_cache: dict[str, ClipPerformer] = {}
_chip: dict[str, bytes] = {}


def _analysed() -> tuple[ClipPerformer, bytes]:
    """The clip's frames, each frame's yaw, and the person's chip photo (a frontal frame
    as the card's greyscale JPEG 2000 portrait): measured once per test session."""
    with _lock:
        if not HAVE_CLIP:
            raise AssertionError("the clip is absent: use genuine_chip/genuine_camera")
        if "clip" not in _cache:
            engine = FaceEngine.shared()
            perf = ClipPerformer.from_video(str(CLIP), engine, max_frames=300)
            frame = perf.frames[perf.hold[len(perf.hold) // 2]]
            box = engine.encode(frame, allow_several=True, check_quality=False).box
            assert box is not None
            _cache["clip"], _chip["clip"] = perf, chip_photo(frame, box)
        return _cache["clip"], _chip["clip"]


def genuine_chip() -> bytes:
    """The chip photo of the holder: the clip's person, or the stand-in dev photo."""
    if HAVE_CLIP:
        return _analysed()[1]
    with _lock:
        if "stand-in" not in _chip:
            if not STAND_IN.exists():
                pytest.skip("neither a real head-turn clip nor ../shared/data/faces")
            rgb = load_image(STAND_IN.read_bytes())
            found = FaceEngine.shared().encode(rgb, allow_several=True, check_quality=False)
            assert found.box is not None
            _chip["stand-in"] = chip_photo(rgb, found.box)
        return _chip["stand-in"]


def genuine_camera(seed: int = 0) -> ClipPerformer | PromptedCamera:
    """A fresh camera of the holder doing whatever is asked: the clip's person, or (no
    clip) the 2.5-D turn of the stand-in's chip photo, which passes only with
    :func:`depth_gates_off`."""
    if HAVE_CLIP:
        perf = _analysed()[0]
        return ClipPerformer(perf.frames, perf.yaws, centres=perf.centres)
    return attack_camera(load_image(genuine_chip()), "warp", seed, engine=FaceEngine.shared())


def depth_gates_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the clip, let the 2.5-D stand-in through the two depth gates (flatness and
    novelty) for one test of what follows a granted capture; with the clip, nothing."""
    if not HAVE_CLIP:
        monkeypatch.setattr(liveness, "PLANE_MIN", float("-inf"))
        monkeypatch.setattr(liveness, "NOVELTY_MIN", float("-inf"))
