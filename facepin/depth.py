"""Head pose and the evidence that a turning face is a head, not a picture.

Three measurements, each answering one way a picture has passed for a head (issue 30):

* **Head pose** from the five landmarks (two corners of each eye, the nose base) against a
  3-D model of those points, by OpenCV's ``solvePnP`` with a pinhole camera: a picture
  rolled in its own plane is *roll*, not a turn; a turn is *yaw*. (The former test took the
  nose's sideways offset from the eyes, so a photo tilted by 12–18° counted as a turn.)
* **Planarity**: points tracked on the face (pyramidal Lucas–Kanade, checked forwards and
  backwards) from the frame a turn prompt was shown to the frame of the largest turn. A
  flat picture — a print, a screen, tilted, rolled, sheared or brought closer, any motion
  at all — maps its points by one homography (an affine map for a roll or a shear). A head
  does not: the nose, the eyes and the cheeks lie at different depths and move apart
  (parallax). The statistic is the 80th percentile of the points' distances from the best
  homography, in units of the eye-corner distance.
* **Novelty**: a still photo *warped* to fake that parallax (the project's own
  ``facepin.simulate.genuine_sequence`` is one such warp) is not a plane, but every frame
  is still the one photo, moved. The turned frame is explained from the prompt's first
  frame by the homography above and then by a dense optical flow (DIS); what the flow
  cannot explain, blurred so that camera noise averages out and divided by the face's
  contrast, is what the head showed that the first frame did not: the side of the face
  coming into view, shading that changes with the surface's angle to the light. A moved
  picture shows nothing new.

Thresholds were chosen on real head-turn video and on the attacks of ``bench/liveness_bench.py``
(``docs/pin-reset-protocol.md`` gives the figures). Nothing here keeps an image beyond the
session: grey frames are held only while a prompt is being judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facepin.face import FaceBox

# --- Head pose -----------------------------------------------------------------------

MODEL_POINTS = np.asarray([
    # camera-style axes: x to the image's right, y down, z away from the camera; the
    # origin at the nose base (subnasale); millimetres, an average adult face.
    (45.0, -45.0, 20.0),   # outer corner of the eye on the image's right
    (16.0, -45.0, 12.0),   # its inner corner
    (-45.0, -45.0, 20.0),  # outer corner of the eye on the image's left
    (-16.0, -45.0, 12.0),  # its inner corner
    (0.0, 0.0, 0.0),       # nose base
], dtype=np.float64)
"""dlib's five landmarks in 3-D. The exact depths matter little: they set the scale of
yaw, not its sign or its separation from roll."""
EYE_SPAN_MM = 90.0


@dataclass(frozen=True)
class HeadPose:
    """Degrees; ``yaw`` < 0 when the nose turns towards the image's left (the old yaw
    proxy's sign, so ``turn_left`` keeps its meaning), ``roll`` > 0 clockwise in the image;
    ``distance`` from the camera in millimetres (for a model of average size)."""

    yaw: float
    pitch: float
    roll: float
    distance: float


def head_pose(points: list[tuple[int, int]], width: int, height: int) -> HeadPose:
    """Pose of the five landmarks for a camera with a ~53° field of view across the
    longer side (a phone's front camera or a webcam; the focal length is not known)."""
    f = float(max(width, height))
    camera = np.asarray([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)
    img = np.asarray(points[:5], dtype=np.float64)
    span = float(np.linalg.norm(img[0] - img[2])) or 1.0
    z = f * EYE_SPAN_MM / span
    rvec = np.zeros((3, 1))
    tvec = np.asarray([[(img[4, 0] - width / 2) * z / f], [(img[4, 1] - height / 2) * z / f],
                       [z]])
    # Started from a frontal face at the distance its size implies: with five points (four
    # of them nearly on one line) an unguided solver can land on a mirrored pose.
    _ok, rfound, tfound = cv2.solvePnP(MODEL_POINTS, img, camera, None, rvec, tvec, True,
                                       cv2.SOLVEPNP_ITERATIVE)
    rot = np.asarray(cv2.Rodrigues(rfound)[0], dtype=np.float64)
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, float(rot[2, 0])))))
    pitch = math.degrees(math.atan2(float(rot[2, 1]), float(rot[2, 2])))
    roll = math.degrees(math.atan2(float(rot[1, 0]), float(rot[0, 0])))
    return HeadPose(yaw, pitch, roll, float(np.asarray(tfound).ravel()[2]))


def eye_span(points: list[tuple[int, int]]) -> float:
    """Distance between the outer eye corners in pixels: the face's scale."""
    (x0, y0), (x2, y2) = points[0], points[2]
    return float(math.hypot(x0 - x2, y0 - y2))


# --- Tracking ---------------------------------------------------------------------------

MAX_POINTS = 160
MIN_POINTS = 24
"""Fewer surviving tracks than this give no verdict on depth (a failed prompt)."""
MAX_RESEEDS = 2
"""Restarts of a prompt's track after it lost its points (see ``PromptTrack.update``)."""
FB_ERROR = 0.7
"""Forward-backward tracking error (pixels) above which a track is dropped."""


def face_mask(shape: tuple[int, int], box: FaceBox) -> np.ndarray:
    """The inner face: an ellipse inside the detector's box. Points beyond the face's
    outline are left out: behind a held print or phone they would be the room, which
    moves unlike the picture and would look like depth."""
    mask = np.zeros(shape, dtype=np.uint8)
    w, h = box.right - box.left, box.bottom - box.top
    centre = ((box.left + box.right) // 2, (box.top + box.bottom) // 2)
    cv2.ellipse(mask, centre, (max(1, int(0.46 * w)), max(1, int(0.58 * h))), 0, 0, 360, 255,
                -1)
    return mask


def seed_points(grey: np.ndarray, box: FaceBox) -> np.ndarray:
    w = box.right - box.left
    pts = cv2.goodFeaturesToTrack(grey, MAX_POINTS, 0.005, max(3.0, w / 30),
                                  mask=face_mask(grey.shape[:2], box), blockSize=5)
    return np.zeros((0, 2), np.float32) if pts is None else pts.reshape(-1, 2).astype(np.float32)


def track(prev: np.ndarray, cur: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points moved from ``prev`` to ``cur``; the mask keeps those that track back to
    where they started."""
    if len(pts) == 0:
        return pts, np.zeros(0, bool)
    p0 = pts.reshape(-1, 1, 2).astype(np.float32)
    p1, st, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, winSize=(21, 21), maxLevel=3)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, None, winSize=(21, 21), maxLevel=3)
    err = np.linalg.norm(np.asarray(back) - p0, axis=2).ravel()
    ok = (np.asarray(st).ravel() == 1) & (np.asarray(st2).ravel() == 1) & (err < FB_ERROR)
    return np.asarray(p1).reshape(-1, 2), ok


# --- The two statistics ------------------------------------------------------------------

def plane_residual(p: np.ndarray, q: np.ndarray, scale: float) -> tuple[float, np.ndarray | None]:
    """80th percentile of the points' distances (in units of ``scale``) from the
    homography that best maps ``p`` to ``q`` (RANSAC, then least squares on its inliers),
    and that homography in pixels. 0 for a plane; a head's parallax leaves a fifth of its
    points or more well off any one homography."""
    if len(p) < 8:
        return 0.0, None
    pn, qn = p / scale, q / scale
    hom, inliers = cv2.findHomography(pn, qn, cv2.RANSAC, 0.01, maxIters=2000,
                                      confidence=0.999)
    if hom is None:
        return 0.0, None
    keep = inliers.ravel() == 1
    if keep.sum() >= 8:
        refit, _ = cv2.findHomography(pn[keep], qn[keep], 0)
        hom = refit if refit is not None else hom
    mapped = cv2.perspectiveTransform(pn.reshape(-1, 1, 2).astype(np.float64), hom).reshape(-1, 2)
    res = np.linalg.norm(mapped - qn, axis=1)
    to_pixels = np.diag([scale, scale, 1.0]) @ hom @ np.diag([1 / scale, 1 / scale, 1.0])
    return float(np.percentile(res, 80)), to_pixels


def affine_residual(p: np.ndarray, q: np.ndarray, scale: float) -> float:
    """80th percentile of the points' distances (eye spans) from the epipolar lines of
    the best *affine* camera pair (parallel projection: ``a·x' + b·y' + c·x + d·y + e =
    0``, fitted by RANSAC on four points, then by total least squares on the inliers).
    A relief seen without perspective — a photo warped sideways by a depth map, which is
    what a "fake 3-D" turn is — fits it; a head near a camera (a phone at arm's length)
    shows perspective and does not fit it as well."""
    n = len(p)
    if n < 8:
        return 0.0
    x = np.hstack([q, p]).astype(np.float64) / scale
    rng = np.random.default_rng(0)

    def fit(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = x[rows]
        centre = y.mean(axis=0)
        return np.linalg.svd(y - centre)[2][-1], centre

    def dist(v: np.ndarray, centre: np.ndarray) -> np.ndarray:
        return np.asarray(np.abs((x - centre) @ v) / max(float(np.hypot(v[0], v[1])), 1e-9))

    best: tuple[int, np.ndarray, np.ndarray] | None = None
    for _ in range(200):
        v, c = fit(rng.choice(n, 4, replace=False))
        k = int((dist(v, c) < 0.01).sum())
        if best is None or k > best[0]:
            best = (k, v, c)
    assert best is not None
    v, c = best[1], best[2]
    inliers = np.where(dist(v, c) < 0.01)[0]
    if len(inliers) >= 6:
        v, c = fit(inliers)
    return float(np.percentile(dist(v, c), 80))


_DIS: list[object] = []


NOVELTY_BLUR = 3.0
"""Both frames are smoothed by this (σ, pixels) before the flow and the residual: camera
noise — or noise an attacker adds to a warped still so that it looks "new" — averages
out; a change of the face's shape and shading is larger than this and stays."""


def novelty(first: np.ndarray, turned: np.ndarray, box: FaceBox,
            homography: np.ndarray | None) -> float:
    """How much of the turned face cannot be explained as the first frame moved: the
    first frame brought over by ``homography`` and then by a dense flow (DIS), both frames
    smoothed (:data:`NOVELTY_BLUR`), each standardised over the inner face (mean 0,
    contrast 1), and the mean residual taken there. A moved picture, however it is
    warped, leaves only interpolation and compression behind."""
    if not _DIS:
        _DIS.append(cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM))
    dis = _DIS[0]
    h, w = turned.shape[:2]
    base = first
    if homography is not None:
        base = cv2.warpPerspective(first, homography, (w, h), borderMode=cv2.BORDER_REPLICATE)
    a = cv2.GaussianBlur(base, (0, 0), NOVELTY_BLUR)
    b = cv2.GaussianBlur(turned, (0, 0), NOVELTY_BLUR)
    flow = dis.calc(b, a, None)  # type: ignore[attr-defined]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    moved = cv2.remap(a, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    inner = face_mask((h, w), box) > 0
    # Each face standardised on its own (mean and contrast): a change of the camera's
    # gain or exposure — or one an attacker adds — is not something new on the face.
    x, y = moved[inner], b.astype(np.float32)[inner]
    x = (x - x.mean()) / (float(x.std()) + 1e-6)
    y = (y - y.mean()) / (float(y.std()) + 1e-6)
    return float(np.mean(np.abs(x - y)))


@dataclass(frozen=True)
class DepthEvidence:
    """What one prompt's frames show: ``plane`` (80th-percentile distance from the best
    homography, eye spans), ``novelty`` (unexplained change, face contrasts), ``points``
    (tracks that survived)."""

    plane: float
    novelty: float
    points: int
    affine: float = 0.0
    """80th-percentile distance from the best affine-camera epipolar geometry (eye spans):
    recorded for the measurements, not a gate (see docs/pin-reset-protocol.md)."""


class PromptTrack:
    """The face's points from the frame a prompt was shown on to the frame of the
    prompt's largest movement, and the two grey frames needed to judge them."""

    def __init__(self, grey: np.ndarray, box: FaceBox, scale: float) -> None:
        self.scale = scale
        self.reseeds = 0
        self.met_novelty: float | None = None
        self._seed(grey, box)

    def _seed(self, grey: np.ndarray, box: FaceBox) -> None:
        self.first = grey
        self.start = seed_points(grey, box)
        self.points = self.start.copy()
        self.alive = np.ones(len(self.start), bool)
        self.prev = grey
        self.peak: tuple[np.ndarray, np.ndarray, np.ndarray, FaceBox] | None = None
        self.met: tuple[np.ndarray, np.ndarray, np.ndarray, FaceBox] | None = None

    def update(self, grey: np.ndarray, box: FaceBox | None = None) -> None:
        """Follow the points onto ``grey``. When too few survive — frames the service
        dropped while it was busy measuring, a camera that skipped, a fast movement — the
        track starts again on this frame (``box``: the one face found on it), at most
        :data:`MAX_RESEEDS` times a prompt, so that a real head is judged on the frames
        that can be followed instead of being refused for a gap. The evidence is then
        taken from the new start; it still needs points followed frame by frame from
        there to the largest turn, and any stretch of a flat picture maps its points by
        one homography, so a restart gives a picture nothing (a cut between two
        pictures leaves too few points to follow and restarts again)."""
        self.points, ok = track(self.prev, grey, self.points)
        self.alive &= ok
        self.prev = grey
        if int(self.alive.sum()) < MIN_POINTS and box is not None \
                and self.reseeds < MAX_RESEEDS:
            if self.met is not None and self.met_novelty is None:
                self.met_novelty = self._novelty_at_met()
            self.reseeds += 1
            self._seed(grey, box)

    def mark_peak(self, grey: np.ndarray, box: FaceBox) -> None:
        """This frame is the furthest the prompt's movement has gone so far."""
        self.peak = (grey, self.points.copy(), self.alive.copy(), box)

    def mark_met(self, grey: np.ndarray, box: FaceBox) -> None:
        """This frame is the first that did what was asked."""
        self.met = (grey, self.points.copy(), self.alive.copy(), box)

    def evidence(self) -> DepthEvidence:
        """Planarity at the largest turn (the most parallax); novelty on the first frame
        that turned far enough. A head shows its change of appearance from the first
        degrees on, while a warp of a still only starts to tear (folds where the warp
        overlaps itself, stretches it cannot fill) when it is pushed far, and an attacker
        pushes it far: judged where the asked turn was first reached, the warp has had no
        room to tear."""
        if self.peak is None:
            return DepthEvidence(0.0, 0.0, 0)
        _grey, pts, alive, _box = self.peak
        n = int(alive.sum())
        if n < MIN_POINTS:
            return DepthEvidence(0.0, 0.0, n)
        plane, _hom = plane_residual(self.start[alive], pts[alive], self.scale)
        novel = self.met_novelty if self.met_novelty is not None else self._novelty_at_met()
        return DepthEvidence(plane, novel, n,
                             affine_residual(self.start[alive], pts[alive], self.scale))

    def _novelty_at_met(self) -> float:
        """Novelty on the first frame that turned far enough (the peak's frame when the
        turn was reached on this track's first frames)."""
        assert self.peak is not None or self.met is not None
        mgrey, mpts, malive, mbox = self.met or self.peak  # type: ignore[misc]
        alive = self.peak[2] if self.peak is not None else malive
        both = alive & malive if int((alive & malive).sum()) >= MIN_POINTS else malive
        _p, mhom = plane_residual(self.start[both], mpts[both], self.scale)
        return novelty(self.first, mgrey, mbox, mhom)
