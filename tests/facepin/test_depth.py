"""Head pose and the depth statistics, on geometry whose answer is known: a 3-D face
model projected by a pinhole camera, pictures mapped by random homographies and affine
maps, a still warped by random smooth displacement fields."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from facepin.depth import (
    MAX_RESEEDS,
    MIN_POINTS,
    MODEL_POINTS,
    PromptTrack,
    affine_residual,
    head_pose,
    novelty,
    plane_residual,
)
from facepin.face import FaceBox, load_image
from facepin.liveness import NOVELTY_MIN, PLANE_MIN
from tests.conftest import SHARED

DEV = SHARED / "data" / "faces" / "dev"
W, H = 640, 480
F = 640.0


def rot(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """The head's rotation for a pose in :class:`facepin.depth.HeadPose`'s terms."""
    y, p, r = (math.radians(a) for a in (-yaw, pitch, roll))
    ry = np.asarray([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.asarray([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.asarray([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return np.asarray(rz @ rx @ ry)


def project(points: np.ndarray, r: np.ndarray, distance: float) -> np.ndarray:
    cam = points @ r.T + np.asarray([0.0, 0.0, distance])
    return np.stack([W / 2 + F * cam[:, 0] / cam[:, 2], H / 2 + F * cam[:, 1] / cam[:, 2]], 1)


def head_points(rng: np.random.Generator, n: int = 120) -> np.ndarray:
    """Points on a face-like surface (mm): an ellipsoid with a nose, as a head has."""
    u, v = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    keep = u * u + v * v < 0.9
    u, v = u[keep], v[keep]
    z = -60 * np.sqrt(1 - 0.9 * (u * u + v * v)) - 25 * np.exp(-(u * u + (v - 0.1) ** 2) / 0.03)
    return np.stack([70 * u, 90 * v, z + 80], 1)


@pytest.mark.parametrize("yaw", [-30.0, -20.0, 0.0, 20.0, 30.0])
@pytest.mark.parametrize("roll", [-18.0, 0.0, 18.0])
def test_pose_separates_roll_from_yaw(yaw: float, roll: float) -> None:
    pts = project(MODEL_POINTS, rot(yaw, 0.0, roll), 450.0)
    pose = head_pose([(float(x), float(y)) for x, y in pts], W, H)  # type: ignore[misc]
    assert abs(pose.roll - roll) < 3.0
    assert abs(pose.yaw - yaw) < 3.0
    assert pose.distance == pytest.approx(450.0, rel=0.1)


def test_yaw_sign_follows_the_nose() -> None:
    """Negative yaw: the nose moves to the image's left (``turn_left``)."""
    left = project(MODEL_POINTS, rot(-25.0), 450.0)
    assert left[4, 0] < left[:4, 0].mean() - 5  # the nose left of the eyes' middle
    assert head_pose([tuple(p) for p in left], W, H).yaw < -15  # type: ignore[misc]


def random_homography(rng: np.random.Generator) -> np.ndarray:
    """A flat picture at a random distance, tilted about a random axis by up to 60°,
    rolled, moved and scaled: the homography its points move by."""
    axis = rng.uniform(-math.pi, math.pi)
    tilt = rng.uniform(-60, 60)
    r = rot(tilt * math.cos(axis), tilt * math.sin(axis), rng.uniform(-25, 25))
    d = rng.uniform(250, 900)
    t = np.asarray([rng.uniform(-40, 40), rng.uniform(-40, 40), d])
    k = np.asarray([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]])
    d0 = rng.uniform(250, 900)
    # plane z = 0 in its own frame, first seen square on at d0, then moved to (r, t)
    a = k @ np.column_stack([np.eye(3)[:, 0], np.eye(3)[:, 1], [0, 0, d0]])
    b = k @ np.column_stack([r[:, 0], r[:, 1], t])
    return np.asarray(b @ np.linalg.inv(a))


def test_any_homography_is_flat() -> None:
    rng = np.random.default_rng(30)
    for _ in range(200):
        p = np.column_stack([rng.uniform(200, 440, 80), rng.uniform(140, 340, 80)])
        hom = random_homography(rng)
        q = cv2.perspectiveTransform(p.reshape(-1, 1, 2), hom).reshape(-1, 2)
        q = q + rng.normal(0, 0.3, q.shape)  # tracking noise
        plane, _ = plane_residual(p.astype(np.float32), q.astype(np.float32), 100.0)
        assert plane < PLANE_MIN / 2


def test_any_affine_map_is_flat() -> None:
    """Rolls, shears, stretches: what a picture rotated or sheared in its plane does."""
    rng = np.random.default_rng(31)
    for _ in range(200):
        p = np.column_stack([rng.uniform(200, 440, 80), rng.uniform(140, 340, 80)])
        a = np.eye(2) + rng.uniform(-0.6, 0.6, (2, 2))
        q = p @ a.T + rng.uniform(-50, 50, 2) + rng.normal(0, 0.3, p.shape)
        plane, _ = plane_residual(p.astype(np.float32), q.astype(np.float32), 100.0)
        assert plane < PLANE_MIN / 2


@pytest.mark.parametrize("distance", [300.0, 450.0, 700.0])
@pytest.mark.parametrize("yaw", [-25.0, 25.0])
def test_a_head_turning_is_not_flat(distance: float, yaw: float) -> None:
    rng = np.random.default_rng(int(distance + yaw))
    pts3 = head_points(rng)
    p = project(pts3, rot(0.0), distance)
    q = project(pts3, rot(yaw), distance) + rng.normal(0, 0.3, (len(pts3), 2))
    scale = float(np.linalg.norm(np.subtract(*project(MODEL_POINTS, rot(0), distance)[[0, 2]])))
    plane, _ = plane_residual(p.astype(np.float32), q.astype(np.float32), scale)
    assert plane > PLANE_MIN
    # and a near camera's perspective is not a parallel projection
    assert affine_residual(p, q, scale) >= 0.0


@pytest.fixture(scope="module")
def photo() -> tuple[np.ndarray, FaceBox]:
    if not (DEV / "labels.csv").exists():
        pytest.skip("../shared/data/faces is not beside the checkout")
    from facepin.face import FaceEngine

    rgb = load_image(DEV / "deepface_id00" / "img1.jpg")
    rgb = np.ascontiguousarray(cv2.resize(rgb, (W * rgb.shape[1] // rgb.shape[0] // 2 * 2, W)
                                          )[:, :W] if rgb.shape[0] > W else rgb)
    box = FaceEngine.shared().encode(rgb, allow_several=True, check_quality=False).box
    assert box is not None
    return rgb, box


def test_a_still_warped_any_smooth_way_shows_nothing_new(photo: tuple[np.ndarray, FaceBox]
                                                          ) -> None:
    """Novelty of a still moved by random smooth displacement fields (bumps of any size
    anywhere on the face, up to a third of the face's width) stays below the threshold."""
    rgb, box = photo
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(32)
    cx, cy, fw = (box.left + box.right) / 2, (box.top + box.bottom) / 2, box.width
    for _ in range(12):
        mx, my = xs.copy(), ys.copy()
        for _b in range(3):
            bx, by = cx + rng.uniform(-0.3, 0.3) * fw, cy + rng.uniform(-0.3, 0.3) * fw
            s = rng.uniform(0.2, 0.6) * fw
            g = np.exp(-((xs - bx) ** 2 + (ys - by) ** 2) / (2 * s * s))
            mx += (rng.uniform(-0.33, 0.33) * fw * g).astype(np.float32)
            my += (rng.uniform(-0.1, 0.1) * fw * g).astype(np.float32)
        warped = cv2.remap(grey, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        noisy = np.clip(warped + rng.normal(0, 3, warped.shape), 0, 255).astype(np.uint8)
        assert novelty(grey, noisy, box, None) < NOVELTY_MIN


def test_a_different_picture_is_new(photo: tuple[np.ndarray, FaceBox]) -> None:
    """The statistic does see a change of content: the same face with its features
    replaced (another photo of the same person, aligned on the face box) is new."""
    rgb, box = photo
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    other = cv2.cvtColor(load_image(DEV / "deepface_id00" / "img2.jpg"), cv2.COLOR_RGB2GRAY)
    other = cv2.resize(other, (grey.shape[1], grey.shape[0]))
    assert novelty(grey, other, box, None) > NOVELTY_MIN


def _moved(grey: np.ndarray, hom: np.ndarray) -> np.ndarray:
    return cv2.warpPerspective(grey, hom, (grey.shape[1], grey.shape[0]),
                               borderMode=cv2.BORDER_REPLICATE)


def test_a_track_that_loses_its_points_starts_again_and_a_picture_stays_flat(
        photo: tuple[np.ndarray, FaceBox]) -> None:
    """Frames the service dropped (or a cut to another picture) leave too few points to
    follow: the prompt's track starts again on the frame where the face is, instead of
    refusing the prompt for the gap. A picture gains nothing by it: from the new start it
    is still mapped by one homography (the attack: show the chip photo, then cut to a
    print of the holder turned and tilt it)."""
    rgb, box = photo
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    other = cv2.cvtColor(load_image(DEV / "deepface_id00" / "img2.jpg"), cv2.COLOR_RGB2GRAY)
    other = np.ascontiguousarray(cv2.resize(other, (grey.shape[1], grey.shape[0])))
    track = PromptTrack(grey, box, box.width / 3)
    assert len(track.start) >= MIN_POINTS
    track.update(other, box)  # the cut: points lost, started again on this frame
    assert track.reseeds == 1 and track.first is other and int(track.alive.sum()) >= MIN_POINTS
    tilt = np.array([[0.93, 0.02, 20.0], [-0.01, 0.99, 4.0], [-1.6e-4, 0.0, 1.0]])
    for k in (0.25, 0.5, 0.75, 1.0):
        frame = _moved(other, np.eye(3) + k * (tilt - np.eye(3)))
        track.update(frame, box)
        track.mark_peak(frame, box)
    assert track.reseeds == 1
    ev = track.evidence()
    assert ev.points >= MIN_POINTS and ev.plane < PLANE_MIN


def test_restarts_are_bounded(photo: tuple[np.ndarray, FaceBox]) -> None:
    """A stream of cuts restarts the track at most ``MAX_RESEEDS`` times; after that the
    prompt has no depth evidence (refused)."""
    rgb, box = photo
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rng = np.random.default_rng(5)
    track = PromptTrack(grey, box, box.width / 3)
    for _ in range(MAX_RESEEDS + 2):
        track.update(rng.integers(0, 255, grey.shape, dtype=np.uint8), box)
    assert track.reseeds == MAX_RESEEDS
    track.mark_peak(track.prev, box)
    assert track.evidence().points < MIN_POINTS and track.evidence().plane == 0.0
