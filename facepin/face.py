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
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cardio.errors import CardioError

# --- The decision: threshold and rule, in this one place. -----------------------------
# Every path that accepts or refuses a face (``verify``, ``match_probe``, ``match_frames``,
# the liveness session's identity checks, the service, ``cardio facepin verify``) goes
# through :func:`decide` with these values; the bench and the tests import them from here.

THRESHOLD = 0.382
"""Accept when the distance between the reference's and the fused probe's unit encodings
(:func:`decide`) is below this. Calibrated on ``shared/data/faces/dev`` only by
``bench/face_bench.py`` (step 5b): the threshold for FMR ≤ 1e-4 on the pool of 20,109 dev
impostor scores (every ordered pair, chip-like reference against the fused probe and
against each single frame); 1 of them lies below it. That pool comes from 13 identities,
so it cannot support FMR 1e-4 — it is the strictest point dev can name, and below the
FMR = 0 point of the 3,380 fused pairs. Dev FNMR there: 11/280 fused, 15/280 one frame.
Measured on eval/ once. Recalibrate (and say so) whenever the detector, the encoder
settings or the probe domain change; a regression test checks it on a dev subset."""

FUSE_FRAMES = 5
"""The decision rule over a stream: the mean direction of the encodings of up to this
many good frames (one person, quality-gated, frontal, same track) is compared with the
reference, once. Averaging removes per-frame noise (pose, blur, compression) from a
genuine probe; an impostor's mean encoding is still the impostor, so unlike "accept if
any of n frames matches" — which gives an impostor n tries and multiplies FMR by up to
n — the mean is one comparison and its FMR is that of one fused probe, calibrated as
such (the calibration pool holds fused and single-frame scores). Measured on dev: the
thresholds for FMR 1e-2 / 1e-3 were 0.421 / 0.393 fused and 0.423 / 0.395 for one frame
(no FMR cost), and FNMR at THRESHOLD 11/280 fused against 15/280 for one frame."""

# --- Acquisition: which face is the probe, and is it good enough. ----------------------

SECOND_FACE_RATIO = 0.6
"""Several faces in a camera frame: the largest is taken when every other face is
narrower than this fraction of it (a bystander behind the person, about twice as far
from the camera or more). A second face of similar size refuses: which of two people at
the counter is the holder is not for the matcher to guess."""
CENTRE_BAND = 0.3
"""...and when other faces are present the taken face's centre must lie within this
fraction of the frame width (and height) of the frame's centre: the person being served
stands in front of the camera, a bystander at the edge is not taken."""

MIN_FACE_PX = 60
"""A face box narrower than this carries too little detail to encode reliably."""
MIN_SHARPNESS = 15.0
"""Variance of the Laplacian of the face crop below which the face is too blurred."""
MAX_SIDE = 1024
MAX_PROBE_YAW = 0.2
"""A probe frame whose yaw proxy (:func:`yaw_proxy`) is further than this from frontal is
not used for the identity decision: the chip photo is frontal, and turned faces encode
further from it (the liveness prompts' frames are checked with their own margin)."""

# --- Domains: the reference is a chip photo, so the probe is made into one. -----------

CHIP_SIZE = (240, 320)
"""Width × height of the chip-like portrait; the face box is half its width."""
CHIP_RATE = 30.0
"""JPEG 2000 compression ratio of the chip-like portrait."""
REFERENCE_JITTERS = 10
"""dlib ``num_jitters`` for the reference: it is encoded once per session, so ten
jittered copies (≈1 s) are affordable; the probe, encoded per frame, uses one."""
PROBE_JITTERS = 1
REFERENCE_CNN = False
"""Whether the reference's face box comes first from the CNN (MMOD) detector. Measured on
dev: no better than HOG's box (FNMR at FMR 1e-3 with fused probes 6/280 either way) at
≈0.5 s more per reference, so HOG is used and the CNN is only the fallback when HOG
finds no face in the chip photo."""


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
    """Detectors, landmark model and encoder, loaded once (≈100 MB of models) and shared;
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
        self._cnn_path = models.cnn_face_detector_model_location()
        self._cnn: Any = None
        self._dlib = dlib
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
        rgb = np.ascontiguousarray(rgb)
        with self._call:
            rects = self._detector(rgb, upsample)
        return self._boxes(rgb, rects)

    def detect_cnn(self, rgb: np.ndarray) -> list[FaceBox]:
        """dlib's MMOD CNN detector (``mmod_human_face_detector.dat``): a tighter, steadier
        box than HOG on a small greyscale portrait, at ≈0.5 s for a 240×320 chip photo
        — affordable once per session for the reference, not per camera frame."""
        rgb = np.ascontiguousarray(rgb)
        with self._call:
            if self._cnn is None:
                self._cnn = self._dlib.cnn_face_detection_model_v1(self._cnn_path)
            found = self._cnn(rgb, 0 if min(rgb.shape[:2]) >= 240 else 1)
        return self._boxes(rgb, [d.rect for d in found])

    @staticmethod
    def _boxes(rgb: np.ndarray, rects: Any) -> list[FaceBox]:
        h, w = rgb.shape[:2]
        return [FaceBox(max(0, r.left()), max(0, r.top()), min(w, r.right()), min(h, r.bottom()))
                for r in rects]

    def landmarks(self, rgb: np.ndarray, box: FaceBox) -> Any:
        with self._call:
            return self._shape(np.ascontiguousarray(rgb),
                               self._rect(box.left, box.top, box.right, box.bottom))

    def _descriptor(self, rgb: np.ndarray, box: FaceBox, jitters: int
                    ) -> tuple[np.ndarray, list[tuple[int, int]]]:
        rgb = np.ascontiguousarray(rgb)
        shape = self.landmarks(rgb, box)
        with self._call:
            vec = np.asarray(self._encoder.compute_face_descriptor(rgb, shape, jitters),
                             dtype=np.float64)
        return vec, [(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)]

    def encode(self, rgb: np.ndarray, *, allow_several: bool = False,
               check_quality: bool = True, upsample: int | None = None,
               jitters: int = 1) -> Encoded:
        """Find the face and encode it as it is (no change of domain). ``allow_several``:
        take the largest face (a portrait with one person); otherwise several faces are
        resolved by :func:`select_face`."""
        boxes = self.detect(rgb, upsample)
        if not boxes:
            return Encoded(Outcome.NO_FACE, faces=0, detail="no face found")
        if allow_several:
            box = max(boxes, key=lambda b: b.area)
        else:
            picked = select_face(boxes, rgb.shape[1], rgb.shape[0])
            if isinstance(picked, str):
                return Encoded(Outcome.MULTIPLE_FACES, faces=len(boxes), detail=picked)
            box = picked
        if check_quality:
            problem = quality_problem(rgb, box)
            if problem:
                return Encoded(Outcome.POOR_QUALITY, box=box, faces=len(boxes), detail=problem)
        vec, points = self._descriptor(rgb, box, jitters)
        return Encoded(None, vec, box, len(boxes), points)

    def encode_reference(self, rgb: np.ndarray, *, cnn: bool = REFERENCE_CNN,
                         jitters: int = REFERENCE_JITTERS) -> Encoded:
        """The reference (the chip photo, or an image given in its place) in the chip
        domain: an image that is not already a small greyscale portrait is made into one
        with :func:`chip_photo`; then the face is found (HOG, the CNN detector as the
        fallback, or first with ``cnn``) and encoded with ``jitters`` jittered copies.
        Done once per session, so it may take a second."""
        if not is_chip_like(rgb):
            boxes = self.detect(rgb)
            if not boxes:
                return Encoded(Outcome.NO_FACE, faces=0, detail="no face found")
            rgb = load_image(chip_photo(rgb, max(boxes, key=lambda b: b.area)))
        boxes = self.detect_cnn(rgb) if cnn else self.detect(rgb, 1)
        if not boxes:
            boxes = self.detect(rgb, 1) if cnn else self.detect_cnn(rgb)
        if not boxes:
            return Encoded(Outcome.NO_FACE, faces=0, detail="no face found")
        box = max(boxes, key=lambda b: b.area)
        vec, points = self._descriptor(rgb, box, jitters)
        return Encoded(None, vec, box, len(boxes), points)

    def encode_probe(self, rgb: np.ndarray, *, domain: str = "chip",
                     check_quality: bool = True, yaw_gate: bool = True,
                     several: bool = True) -> Encoded:
        """One camera frame as a probe: find the person's face (:func:`select_face`),
        gate its quality and pose, then encode it in the reference's domain — the
        chip-like greyscale portrait :func:`chip_portrait` makes (the chip photo's
        framing and resolution), the face found again there with the HOG detector as
        the chip photo's face is. ``domain`` ``"grey"`` (whole frame greyscale),
        ``"colour"`` (as captured) and ``"chip_jp2"`` (the portrait JPEG 2000
        round-tripped as well) exist to measure the steps: on dev the round trip made
        the probe worse (FNMR at FMR 1e-2 5.0 % against 2.1 % without it), so it is not
        done. ``several=False`` refuses any second face (the former rule)."""
        boxes = self.detect(rgb)
        if not boxes:
            return Encoded(Outcome.NO_FACE, faces=0, detail="no face found")
        if several:
            picked = select_face(boxes, rgb.shape[1], rgb.shape[0])
        else:
            picked = max(boxes, key=lambda b: b.area) if len(boxes) == 1 else (
                f"{len(boxes)} faces in the image; only one person may be in front of the"
                " camera")
        if isinstance(picked, str):
            return Encoded(Outcome.MULTIPLE_FACES, faces=len(boxes), detail=picked)
        box = picked
        if check_quality:
            problem = quality_problem(rgb, box)
            if problem:
                return Encoded(Outcome.POOR_QUALITY, box=box, faces=len(boxes), detail=problem)
        if yaw_gate:
            points = [(p.x, p.y) for p in self.landmarks(rgb, box).parts()]
            if abs(yaw_proxy(points)) > MAX_PROBE_YAW:
                return Encoded(Outcome.POOR_QUALITY, box=box, faces=len(boxes),
                               detail="the face is turned away; look at the camera")
        if domain == "colour":
            vec, points = self._descriptor(rgb, box, PROBE_JITTERS)
            return Encoded(None, vec, box, len(boxes), points)
        if domain == "grey":
            grey = np.asarray(Image.fromarray(rgb).convert("L").convert("RGB"))
            vec, points = self._descriptor(grey, box, PROBE_JITTERS)
            return Encoded(None, vec, box, len(boxes), points)
        if domain == "chip_jp2":
            chip = load_image(chip_photo(rgb, box))
        else:
            chip = np.asarray(chip_portrait(rgb, box).convert("RGB"))
        found = self.detect(chip, 1)
        if found:
            # The face nearest the portrait's centre: a bystander may show at its edge.
            cx, cy = chip.shape[1] / 2, chip.shape[0] * 0.45
            inner = min(found, key=lambda b: ((b.left + b.right) / 2 - cx) ** 2
                        + ((b.top + b.bottom) / 2 - cy) ** 2)
        else:
            inner = chip_box(box)  # where the frame's box lands in the portrait
        vec, points = self._descriptor(chip, inner, PROBE_JITTERS)
        return Encoded(None, vec, box, len(boxes), points)


def select_face(boxes: list[FaceBox], width: int, height: int) -> FaceBox | str:
    """The several-faces rule: one face is the probe; with several, the largest is taken
    if every other is narrower than ``SECOND_FACE_RATIO`` of it and it is centred (within
    ``CENTRE_BAND`` of the frame's centre). Otherwise the reason for refusing."""
    if len(boxes) == 1:
        return boxes[0]
    ranked = sorted(boxes, key=lambda b: b.area, reverse=True)
    first, second = ranked[0], ranked[1]
    if second.width >= SECOND_FACE_RATIO * first.width:
        return (f"{len(boxes)} faces of similar size in the image; only one person may be in"
                " front of the camera")
    cx, cy = (first.left + first.right) / 2, (first.top + first.bottom) / 2
    if abs(cx - width / 2) > CENTRE_BAND * width or abs(cy - height / 2) > CENTRE_BAND * height:
        return (f"{len(boxes)} faces in the image and the largest is not in the middle;"
                " stand in front of the camera")
    return first


def is_chip_like(rgb: np.ndarray) -> bool:
    """A small greyscale portrait (the chip photo, or one made by :func:`chip_photo`)."""
    h, w = rgb.shape[:2]
    grey = rgb.ndim == 2 or bool((rgb[..., 0] == rgb[..., 1]).all()
                                 and (rgb[..., 1] == rgb[..., 2]).all())
    return grey and max(h, w) <= 2 * max(CHIP_SIZE)


def chip_box(box: FaceBox, size: tuple[int, int] = CHIP_SIZE) -> FaceBox:
    """Where ``box`` lands in the portrait :func:`chip_photo` cuts around it."""
    scale = size[0] / (box.width * 2.0)
    w = size[0] / scale
    left = (box.left + box.right) / 2 - w / 2
    top = (box.top + box.bottom) / 2 - (w * size[1] / size[0]) * 0.45
    return FaceBox(int((box.left - left) * scale), int((box.top - top) * scale),
                   int((box.right - left) * scale), int((box.bottom - top) * scale))


def yaw_proxy(points: list[tuple[int, int]]) -> float:
    """dlib's 5 points (two corners of each eye, then the nose base): the nose's offset
    from the eye-corner midpoint over the inter-ocular distance; 0 is frontal."""
    (x0, _), (x1, _), (x2, _), (x3, _), (xn, _) = points[:5]
    mid = (x0 + x1 + x2 + x3) / 4
    iod = abs((x0 + x1) / 2 - (x2 + x3) / 2) or 1.0
    return (xn - mid) / iod


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


def accepts(d: float, threshold: float = THRESHOLD) -> bool:
    """The accept rule on one distance: strictly below the threshold. Measurements
    (``facepin.calibration``, the bench) count with it too, so they measure this rule."""
    return d < threshold


def unit(vec: np.ndarray) -> np.ndarray:
    """``vec`` scaled to length 1. dlib's encodings vary in length with the image (blur,
    compression, resolution: exactly what differs between a chip photo and a camera
    frame) while identity lies in their direction; comparing directions cut the dev
    FNMR at FMR = 0 from 30 to 11 of 280 genuine pairs (``bench/face_bench.py``)."""
    n = float(np.linalg.norm(vec))
    return vec / n if n > 0 else vec


def fuse(encodings: list[np.ndarray]) -> np.ndarray:
    """The fused probe: the direction of the mean of the frames' unit encodings
    (:data:`FUSE_FRAMES`)."""
    return unit(np.asarray(np.mean(np.stack([unit(e) for e in encodings]), axis=0),
                           dtype=np.float64))


def decide(reference: np.ndarray, encodings: list[np.ndarray], *,
           threshold: float = THRESHOLD, margin: float = 0.0) -> MatchResult:
    """The decision, the one place it is taken: fuse the probe frames' encodings, compare
    the fused direction with the reference's once (the Euclidean distance of unit
    vectors, 0…2, a monotone function of the cosine), accept below ``threshold``
    (+ ``margin``, which only the liveness prompts' turned frames use)."""
    if not encodings:
        return MatchResult(Outcome.NO_FACE, None, threshold, "probe: no usable frame")
    d = distance(unit(reference), fuse(encodings))
    detail = f"{len(encodings)} frames fused" if len(encodings) > 1 else ""
    return MatchResult(Outcome.MATCH if accepts(d, threshold + margin) else Outcome.NO_MATCH, d,
                       threshold, detail)


def verify(reference: bytes | Path | Image.Image | np.ndarray,
           probe: bytes | Path | Image.Image | np.ndarray, *,
           threshold: float = THRESHOLD, engine: FaceEngine | None = None) -> MatchResult:
    """Compare the chip photo (``reference``) with a live capture (``probe``)."""
    engine = engine or FaceEngine.shared()
    ref_rgb = reference if isinstance(reference, np.ndarray) else load_image(reference)
    ref = engine.encode_reference(ref_rgb)
    if ref.outcome is not None:
        return MatchResult(ref.outcome, None, threshold, "reference: " + ref.detail)
    assert ref.encoding is not None
    probe_rgb = probe if isinstance(probe, np.ndarray) else load_image(probe)
    return match_probe(ref.encoding, probe_rgb, threshold=threshold, engine=engine)


def match_probe(reference: np.ndarray, probe_rgb: np.ndarray, *, threshold: float = THRESHOLD,
                engine: FaceEngine | None = None) -> MatchResult:
    """Compare an already-encoded reference with one probe image."""
    return match_frames(reference, [probe_rgb], threshold=threshold, engine=engine)


def match_frames(reference: np.ndarray, frames: Iterable[np.ndarray], *,
                 threshold: float = THRESHOLD, engine: FaceEngine | None = None,
                 max_frames: int = FUSE_FRAMES) -> MatchResult:
    """Compare an already-encoded reference with a stream: the first ``max_frames``
    good frames of one face track are fused (:func:`decide`). Frames without a usable
    face are skipped; a frame with several faces the rule cannot resolve, or a face
    that jumps away from the track, refuses (someone else must not become the probe)."""
    engine = engine or FaceEngine.shared()
    encodings: list[np.ndarray] = []
    last: Encoded | None = None
    track: FaceBox | None = None
    for rgb in frames:
        got = engine.encode_probe(rgb)
        if got.outcome is Outcome.MULTIPLE_FACES:
            return MatchResult(got.outcome, None, threshold, "probe: " + got.detail)
        if got.box is not None and track is not None and not same_track(track, got.box):
            return MatchResult(Outcome.MULTIPLE_FACES, None, threshold,
                               "probe: the face changed between frames")
        if got.box is not None:
            track = got.box
        if got.outcome is None and got.encoding is not None:
            encodings.append(got.encoding)
            if len(encodings) >= max_frames:
                break
        else:
            last = got
    if not encodings:
        if last is None:
            return MatchResult(Outcome.NO_FACE, None, threshold, "probe: no frames")
        assert last.outcome is not None
        return MatchResult(last.outcome, None, threshold, "probe: " + last.detail)
    return decide(reference, encodings, threshold=threshold)


MAX_JUMP = 0.5
"""A face centre moving more than half a face width between frames is another face."""


def same_track(previous: FaceBox, box: FaceBox) -> bool:
    dx = (box.left + box.right - previous.left - previous.right) / 2
    dy = (box.top + box.bottom - previous.top - previous.bottom) / 2
    return bool(float(dx * dx + dy * dy) ** 0.5 <= MAX_JUMP * max(1, previous.width))


def chip_portrait(rgb: np.ndarray, box: FaceBox, size: tuple[int, int] = CHIP_SIZE
                  ) -> Image.Image:
    """The ICAO-like greyscale portrait of the face in ``box``, the chip photo's framing:
    the face box is half the portrait's width, its centre at 45 % of the height."""
    cx = (box.left + box.right) / 2
    cy = (box.top + box.bottom) / 2
    w = box.width * 2.0
    h = w * size[1] / size[0]
    left, top = int(cx - w / 2), int(cy - h * 0.45)
    img = Image.fromarray(rgb).convert("L")
    return img.crop((left, top, int(left + w), int(top + h))).resize(size,
                                                                      Image.Resampling.LANCZOS)


def chip_photo(rgb: np.ndarray, box: FaceBox, size: tuple[int, int] = CHIP_SIZE,
               rate: float = CHIP_RATE) -> bytes:
    """:func:`chip_portrait` as greyscale JPEG 2000, the way the card stores its photo:
    the chip-like references of the bench and the tests, and the reference made from an
    ordinary photo given in the chip photo's place."""
    buf = io.BytesIO()
    chip_portrait(rgb, box, size).save(buf, "JPEG2000", quality_mode="rates",
                                       quality_layers=[rate])
    return buf.getvalue()
