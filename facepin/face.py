"""1:1 face verification with the dlib stack (HOG detector, 5-point landmarks, ResNet
encoder from ``face_recognition_models``), written directly against dlib so that a fresh
set-up installs wheels only (``dlib-bin``) and never compiles dlib.

The reference is the card's greyscale JPEG 2000 chip photo; the probe is a camera frame.
Every outcome that is not a comparison — no face, several faces, a face too small or too
blurred to judge — is a value of :class:`Outcome`, not an exception, because a kiosk or
an app must tell the person what to do, not crash.

Nothing here keeps images: encodings are 128 floats and images are dropped as soon as
they are encoded.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cardio.errors import CardioError

THRESHOLD = 0.523
"""Accept when the Euclidean distance is below this. Calibrated on
``shared/data/faces/dev`` only (``facepin.calibration.fmr0_threshold``): the smallest
impostor distance there floored to 3 decimals, i.e. FMR = 0 on the 1,690 dev impostor
pairs. Measured on eval/ only in ``bench/face_bench.py``. Recalibrate (and say so) when
the detector or encoder settings change; a regression test checks this value."""

MIN_FACE_PX = 60
"""A face box narrower than this carries too little detail to encode reliably."""
MIN_SHARPNESS = 15.0
"""Variance of the Laplacian of the face crop below which the face is too blurred."""
MAX_SIDE = 1024


class FaceError(CardioError):
    """An image that cannot be decoded, or models that cannot be loaded."""


class Outcome(Enum):
    MATCH = "match"
    NO_MATCH = "no_match"
    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    POOR_QUALITY = "poor_quality"


@dataclass(frozen=True)
class FaceBox:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.bottom - self.top)


@dataclass
class Encoded:
    """One face found and encoded (or why not)."""

    outcome: Outcome | None
    encoding: np.ndarray | None = None
    box: FaceBox | None = None
    faces: int = 0
    landmarks: list[tuple[int, int]] | None = None
    detail: str = ""


@dataclass
class MatchResult:
    outcome: Outcome
    distance: float | None
    threshold: float
    detail: str = ""

    @property
    def match(self) -> bool:
        return self.outcome is Outcome.MATCH

    def to_json(self) -> dict[str, Any]:
        return {"match": self.match, "outcome": self.outcome.value,
                "distance": None if self.distance is None else round(self.distance, 4),
                "threshold": self.threshold, "detail": self.detail}


MAX_PIXELS = 50_000_000
"""The largest image decoded at all (a 50-megapixel phone photo). The size is read from
the header before decoding: a 41 kB PNG of 144 million pixels took 880 MB to load, and the
service decodes what a client sends."""


def load_image(source: bytes | Path | Image.Image, *,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any image Pillow reads (JPEG, PNG, JPEG 2000, ...) as an RGB uint8 array, EXIF
    orientation applied, the longer side capped at 1024 px. An image of more than
    ``max_pixels`` is refused before it is decoded."""
    try:
        if isinstance(source, Image.Image):
            img = source
        else:
            data = source.read_bytes() if isinstance(source, Path) else source
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:
                what = str(source) if isinstance(source, Path) else "the image"
                raise FaceError(f"cannot decode {what}: {img.width} × {img.height} pixels is"
                                f" more than the {max_pixels:,} accepted")
            img.load()
        img = ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        what = str(source) if isinstance(source, Path) else "the image"
        if isinstance(exc, UnidentifiedImageError):
            raise FaceError(f"cannot decode {what}: not an image format Pillow reads"
                            ) from exc
        raise FaceError(f"cannot decode {what}: {exc}") from exc
    if max(img.size) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


class FaceEngine:
    """Detector, landmark model and encoder, loaded once (≈100 MB of models) and shared;
    dlib's objects are not documented as thread-safe, so calls are serialised."""

    _instance: FaceEngine | None = None
    _lock = threading.Lock()

    def __init__(self, upsample: int | None = None) -> None:
        try:
            import dlib
            import face_recognition_models as models
        except ImportError as exc:
            raise FaceError("face verification needs dlib-bin and face-recognition-models"
                            " (pip install 'cardio[face]')") from exc
        self.upsample = upsample
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self._encoder = dlib.face_recognition_model_v1(models.face_recognition_model_location())
        self._rect = dlib.rectangle
        self._call = threading.Lock()

    @classmethod
    def shared(cls) -> FaceEngine:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def detect(self, rgb: np.ndarray, upsample: int | None = None) -> list[FaceBox]:
        """HOG detection. By default small images (a chip photo, a far face) are
        upsampled once and images of 480 px and more are not: upsampling a camera frame
        quadruples the time (≈0.6 s instead of ≈0.1 s) and finds no more usable faces."""
        if upsample is None:
            upsample = self.upsample if self.upsample is not None else (
                0 if min(rgb.shape[:2]) >= 480 else 1)
        with self._call:
            rects = self._detector(rgb, upsample)
        h, w = rgb.shape[:2]
        return [FaceBox(max(0, r.left()), max(0, r.top()), min(w, r.right()), min(h, r.bottom()))
                for r in rects]

    def landmarks(self, rgb: np.ndarray, box: FaceBox) -> Any:
        with self._call:
            return self._shape(rgb, self._rect(box.left, box.top, box.right, box.bottom))

    def encode(self, rgb: np.ndarray, *, allow_several: bool = False,
               check_quality: bool = True, upsample: int | None = None) -> Encoded:
        """Find the face and encode it. ``allow_several``: take the largest face (for the
        chip photo, which has exactly one person); otherwise several faces is an outcome
        (someone else in the camera frame must not be the one that gets matched)."""
        boxes = self.detect(rgb, upsample)
        if not boxes:
            return Encoded(Outcome.NO_FACE, faces=0, detail="no face found")
        if len(boxes) > 1 and not allow_several:
            return Encoded(Outcome.MULTIPLE_FACES, faces=len(boxes),
                           detail=f"{len(boxes)} faces in the image; only one person may be"
                           " in front of the camera")
        box = max(boxes, key=lambda b: b.area)
        if check_quality:
            problem = quality_problem(rgb, box)
            if problem:
                return Encoded(Outcome.POOR_QUALITY, box=box, faces=len(boxes), detail=problem)
        shape = self.landmarks(rgb, box)
        with self._call:
            vec = np.asarray(self._encoder.compute_face_descriptor(rgb, shape, 1),
                             dtype=np.float64)
        points = [(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)]
        return Encoded(None, vec, box, len(boxes), points)


def quality_problem(rgb: np.ndarray, box: FaceBox) -> str | None:
    if box.width < MIN_FACE_PX:
        return f"the face is too small ({box.width} px wide; need {MIN_FACE_PX})"
    crop = rgb[box.top:box.bottom, box.left:box.right]
    if crop.size == 0:
        return "the face is cut off by the image border"
    sharp = sharpness(crop)
    if sharp < MIN_SHARPNESS:
        return f"the face is too blurred (sharpness {sharp:.0f})"
    return None


def sharpness(rgb: np.ndarray) -> float:
    """Variance of a 3×3 Laplacian of the grey image: low for blur."""
    grey = rgb.astype(np.float64).mean(axis=2) if rgb.ndim == 3 else rgb.astype(np.float64)
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    lap = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1]
           - 4 * grey[1:-1, 1:-1])
    return float(lap.var())


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


def verify(reference: bytes | Path | Image.Image | np.ndarray,
           probe: bytes | Path | Image.Image | np.ndarray, *,
           threshold: float = THRESHOLD, engine: FaceEngine | None = None) -> MatchResult:
    """Compare the chip photo (``reference``) with a live capture (``probe``)."""
    engine = engine or FaceEngine.shared()
    ref_rgb = reference if isinstance(reference, np.ndarray) else load_image(reference)
    ref = engine.encode(ref_rgb, allow_several=True, check_quality=False)
    if ref.outcome is not None:
        return MatchResult(ref.outcome, None, threshold, "reference: " + ref.detail)
    assert ref.encoding is not None
    probe_rgb = probe if isinstance(probe, np.ndarray) else load_image(probe)
    return match_probe(ref.encoding, probe_rgb, threshold=threshold, engine=engine)


def match_probe(reference: np.ndarray, probe_rgb: np.ndarray, *, threshold: float = THRESHOLD,
                engine: FaceEngine | None = None) -> MatchResult:
    """Compare an already-encoded reference with a live capture."""
    engine = engine or FaceEngine.shared()
    got = engine.encode(probe_rgb)
    if got.outcome is not None:
        return MatchResult(got.outcome, None, threshold, "probe: " + got.detail)
    assert got.encoding is not None
    d = distance(reference, got.encoding)
    return MatchResult(Outcome.MATCH if d < threshold else Outcome.NO_MATCH, d, threshold)


def chip_photo(rgb: np.ndarray, box: FaceBox, size: tuple[int, int] = (240, 320),
               rate: float = 30.0) -> bytes:
    """An ICAO-like portrait of the face in ``box`` as greyscale JPEG 2000, the way the
    card stores its photo: used to measure the matcher on chip-like references."""
    cx = (box.left + box.right) / 2
    cy = (box.top + box.bottom) / 2
    w = box.width * 2.0
    h = w * size[1] / size[0]
    left, top = int(cx - w / 2), int(cy - h * 0.45)
    img = Image.fromarray(rgb).convert("L")
    crop = img.crop((left, top, int(left + w), int(top + h))).resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    crop.save(buf, "JPEG2000", quality_mode="rates", quality_layers=[rate])
    return buf.getvalue()
