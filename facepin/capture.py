"""Probe capture: a still image, a video file or a camera, through OpenCV.

From a video or camera the frames are handed to ``facepin.face.match_frames``, which
fuses the first few with one usable, frontal face of one track (a kiosk shows the person
the preview until they come); the frames themselves are dropped as soon as the face is
encoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facepin.face import FaceError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


MAX_CAMERA = 63
"""The highest camera index taken (V4L2 numbers devices /dev/video0..63)."""


def frames(source: str | Path, *, max_frames: int = 90, step: int = 3) -> Iterator[np.ndarray]:
    """RGB frames from a video file or ``camera`` / ``camera:N`` (device index)."""
    try:
        import cv2
    except ImportError as exc:
        raise FaceError("video and camera capture need opencv-python-headless") from exc
    spec = str(source)
    if spec == "camera" or spec.startswith("camera:"):
        number = spec.split(":", 1)[1] if ":" in spec else "0"
        # Checked before OpenCV sees it: camera:-1 crashed the process (SIGSEGV), camera:x
        # and a number beyond a C long were internal errors.
        if not (number.isascii() and number.isdigit() and int(number) <= MAX_CAMERA):
            raise FaceError(f"{spec!r}: a camera is camera or camera:N with N from 0 to"
                            f" {MAX_CAMERA}")
        index = int(number)
        cap = cv2.VideoCapture(index)
        what = f"camera {index}"
    else:
        if not Path(spec).exists():
            raise FaceError(f"no such video: {spec}")
        cap = cv2.VideoCapture(spec)
        what = spec
    if not cap.isOpened():
        raise FaceError(f"cannot open {what}")
    try:
        n = 0
        while n < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            if n % step == 0:
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            n += 1
    finally:
        cap.release()


def is_video(spec: str) -> bool:
    return spec == "camera" or spec.startswith("camera:") or Path(spec).suffix.lower() in \
        VIDEO_SUFFIXES
