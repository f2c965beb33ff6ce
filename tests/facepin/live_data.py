"""Real head-turn video for the tests that need a bona fide live capture.

A head turning cannot be synthesised from a still photo without building exactly the
attack the liveness check refuses (issue 30), so the bona fide captures replay a real
recording: ``../data-liveness`` beside the checkout (its README keeps each clip's source
and commit; the clips are never part of the repository), ``$CARDIO_LIVENESS_DATA`` to
point elsewhere. Tests that need it skip when it is absent, as the face tests do without
``../shared/data/faces``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from facepin.face import FaceEngine, chip_photo
from facepin.simulate import ClipPerformer

DATA = Path(os.environ.get("CARDIO_LIVENESS_DATA")
            or Path(__file__).resolve().parents[2].parent / "data-liveness")
CLIP = DATA / "raw" / "head-gesture" / "1.no_motion_resize.mp4"
"""A phone selfie of a man shaking his head: four turns to each side."""

needs_clip = pytest.mark.skipif(not CLIP.exists(),
                                reason="no real head-turn clip (../data-liveness)")

_lock = threading.Lock()
_cache: dict[str, ClipPerformer] = {}
_chip: dict[str, bytes] = {}


def _analysed() -> tuple[ClipPerformer, bytes]:
    """The clip's frames, each frame's yaw, and the person's chip photo (a frontal frame
    as the card's greyscale JPEG 2000 portrait): measured once per test session."""
    with _lock:
        if "clip" not in _cache:
            engine = FaceEngine.shared()
            perf = ClipPerformer.from_video(str(CLIP), engine, max_frames=300)
            frame = perf.frames[perf.hold[len(perf.hold) // 2]]
            box = engine.encode(frame, allow_several=True, check_quality=False).box
            assert box is not None
            _cache["clip"], _chip["clip"] = perf, chip_photo(frame, box)
        return _cache["clip"], _chip["clip"]


def genuine_chip() -> bytes:
    """The chip photo of the person in the clip."""
    return _analysed()[1]


def genuine_camera() -> ClipPerformer:
    """A fresh camera replaying the clip's person doing whatever is asked."""
    perf = _analysed()[0]
    return ClipPerformer(perf.frames, perf.yaws, centres=perf.centres)


def genuine_frontal() -> np.ndarray:
    """One frontal frame of the clip's person (RGB)."""
    perf = genuine_camera()
    return perf.frames[perf.hold[0]]
