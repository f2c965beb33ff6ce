"""The issue-16 pipeline: the probe brought into the chip photo's domain, the several-faces
rule, multi-frame fusion and the one place the decision is taken. Test images are
composited at run time from ../shared/data/faces/dev (never committed)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facepin
from facepin import face
from facepin.face import (
    CHIP_SIZE,
    FUSE_FRAMES,
    MAX_JUMP,
    SECOND_FACE_RATIO,
    THRESHOLD,
    FaceBox,
    FaceEngine,
    Outcome,
    chip_photo,
    chip_portrait,
    decide,
    load_image,
    match_frames,
    match_probe,
    select_face,
)
from tests.conftest import SHARED

DEV = SHARED / "data" / "faces" / "dev"
needs_faces = pytest.mark.skipif(not (DEV / "labels.csv").exists(),
                                 reason="../shared/data/faces is not beside the checkout")
HOLDER = "deepface_id00/img1.jpg"
HOLDER_REF = "deepface_id00/img2.jpg"
OTHER = "deepface_id01/img26.jpg"


# --- pure rules ---------------------------------------------------------------------------

def box(cx: float, cy: float, w: float) -> FaceBox:
    return FaceBox(int(cx - w / 2), int(cy - w / 2), int(cx + w / 2), int(cy + w / 2))


def test_select_face_takes_the_largest_centred_face_over_much_smaller_ones() -> None:
    person, bystander = box(480, 360, 200), box(100, 100, 200 * SECOND_FACE_RATIO - 10)
    assert select_face([bystander, person], 960, 720) == person
    assert select_face([person], 960, 720) == person
    # A second face of similar size refuses, whichever is larger.
    similar = box(800, 360, 200 * SECOND_FACE_RATIO + 10)
    assert "similar size" in str(select_face([person, similar], 960, 720))
    # The largest face at the edge of the frame, with someone else in view, refuses.
    edge = box(80, 360, 200)
    assert "not in the middle" in str(select_face([edge, box(600, 300, 60)], 960, 720))
    # Alone, a face is taken wherever it is (the quality gate judges it).
    assert select_face([edge], 960, 720) == edge


def towards(d: float, scale: float = 1.0) -> np.ndarray:
    """An encoding whose unit vector lies at distance ``d`` from the reference's (e0),
    of length ``scale`` (the length does not count)."""
    theta = 2 * np.arcsin(d / 2)
    v = np.zeros(128)
    v[0], v[1] = np.cos(theta), np.sin(theta)
    return scale * v


def test_the_decision_fuses_the_mean_not_any_frame() -> None:
    ref = towards(0.0, 0.8)
    assert decide(ref, [towards(0.1, 3.0)]).distance == pytest.approx(0.1)
    # One frame alone would match; the fused five do not: an impostor gets one
    # comparison per decision, not five tries.
    frames = [towards(0.1)] + [towards(0.9)] * 4
    assert decide(ref, frames[:1]).match
    fused = decide(ref, frames)
    mean = np.mean([f / np.linalg.norm(f) for f in frames], axis=0)
    expected = float(np.linalg.norm(ref / 0.8 - mean / np.linalg.norm(mean)))
    assert not fused.match and fused.distance == pytest.approx(expected)
    assert fused.detail == "5 frames fused"
    # One poor frame among good ones does not sink a genuine stream.
    assert decide(ref, [towards(0.2)] * 4 + [towards(0.9)]).match
    assert decide(ref, []).outcome is Outcome.NO_FACE
    # margin is what the liveness prompts' turned frames get, nothing else.
    near = [towards(THRESHOLD + 0.01)]
    assert not decide(ref, near).match and decide(ref, near, margin=0.02).match


def test_the_threshold_and_rule_live_in_one_place() -> None:
    """Every default is facepin.face.THRESHOLD, and no facepin module other than face.py
    compares a distance with a threshold: all decisions go through face.decide."""
    from facepin.cli import register
    from facepin.liveness import LivenessSession
    from facepin.service import ServiceConfig

    assert ServiceConfig.__dataclass_fields__["threshold"].default == THRESHOLD
    assert LivenessSession.__dataclass_fields__["threshold"].default == THRESHOLD
    defaults = face.match_frames.__kwdefaults__ or {}
    assert defaults["threshold"] == THRESHOLD and defaults["max_frames"] == FUSE_FRAMES
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["facepin", "verify", "--reference", "a", "--probe", "b"])
    assert args.threshold is None  # cmd_verify then takes facepin.face.THRESHOLD
    root = Path(facepin.__file__).parent
    offenders = []
    for path in sorted(root.glob("*.py")):
        if path.name == "face.py":
            continue
        source = path.read_text()
        assert repr(THRESHOLD) not in source, f"{path.name} repeats the threshold's value"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Compare) and any(
                    isinstance(op, ast.Lt | ast.LtE | ast.Gt | ast.GtE) for op in node.ops):
                names = {n.id.lower() for n in ast.walk(node) if isinstance(n, ast.Name)} | {
                    n.attr.lower() for n in ast.walk(node) if isinstance(n, ast.Attribute)}
                if any("threshold" in n for n in names) and path.name != "cli.py":
                    offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
    # The CLI and the service run the same pipeline: the reference through
    # encode_reference, the probe frames through encode_probe and face.decide (the CLI by
    # match_frames; the service's live capture by the liveness session, which fuses its
    # opening frames the same way), nothing encoded otherwise.
    def calls(name: str) -> set[str]:
        tree = ast.parse((root / name).read_text())
        return {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                for n in ast.walk(tree) if isinstance(n, ast.Call)}

    assert {"encode_reference", "match_frames"} <= calls("cli.py")
    assert {"encode_reference", "LivenessSession"} <= calls("service.py")
    assert {"encode_probe", "decide"} <= calls("liveness.py")
    for name in ("cli.py", "service.py"):
        tree = ast.parse((root / name).read_text())
        assert not calls(name) & {"encode_probe", "match_probe", "decide"}, name
        engine_calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call)
                        and isinstance(n.func, ast.Attribute)
                        and isinstance(n.func.value, ast.Name) and n.func.value.id == "engine"}
        assert engine_calls <= {"encode_reference"}, (name, engine_calls)


# --- on real faces ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    if not (DEV / "labels.csv").exists():
        pytest.skip("../shared/data/faces is not beside the checkout")
    return FaceEngine.shared()


@pytest.fixture(scope="module")
def holder_ref(engine: FaceEngine) -> np.ndarray:
    ref = engine.encode_reference(load_image(DEV / HOLDER_REF)).encoding
    assert ref is not None
    return ref


def portrait(engine: FaceEngine, rel: str, face_width: int) -> Image.Image:
    """The head and shoulders of the dev photo ``rel`` scaled so that its face box is
    ``face_width`` pixels wide."""
    rgb = load_image(DEV / rel)
    b = engine.encode(rgb, allow_several=True, check_quality=False).box
    assert b is not None
    cx, cy, w = (b.left + b.right) / 2, (b.top + b.bottom) / 2, b.width
    crop = Image.fromarray(rgb).crop((int(cx - 1.1 * w), int(cy - 1.2 * w),
                                      int(cx + 1.1 * w), int(cy + 1.4 * w)))
    s = face_width / w
    return crop.resize((int(crop.width * s), int(crop.height * s)), Image.Resampling.LANCZOS)


def scene(*people: tuple[Image.Image, float, float], size: tuple[int, int] = (960, 720)
          ) -> np.ndarray:
    """A camera frame: each portrait pasted with its centre at (fx, fy) × the frame size."""
    canvas = Image.new("RGB", size, (118, 122, 128))
    for img, fx, fy in people:
        canvas.paste(img, (int(fx * size[0] - img.width / 2), int(fy * size[1] - img.height / 2)))
    return np.asarray(canvas)


@needs_faces
def test_a_bystander_much_smaller_is_ignored(engine: FaceEngine, holder_ref: np.ndarray
                                             ) -> None:
    frame = scene((portrait(engine, HOLDER, 190), 0.5, 0.5),
                  (portrait(engine, OTHER, 90), 0.13, 0.2))
    got = engine.encode_probe(frame)
    assert got.faces == 2 and got.outcome is None and got.box is not None
    assert abs((got.box.left + got.box.right) / 2 - 480) < 60  # the person in the middle
    res = match_probe(holder_ref, frame, engine=engine)
    assert res.outcome is Outcome.MATCH, res
    # The former rule refused the same frame.
    assert engine.encode_probe(frame, several=False).outcome is Outcome.MULTIPLE_FACES


@needs_faces
def test_a_second_face_of_similar_size_refuses(engine: FaceEngine, holder_ref: np.ndarray
                                               ) -> None:
    frame = scene((portrait(engine, HOLDER, 190), 0.35, 0.5),
                  (portrait(engine, OTHER, 170), 0.78, 0.5))
    res = match_probe(holder_ref, frame, engine=engine)
    assert res.outcome is Outcome.MULTIPLE_FACES and "similar size" in res.detail
    assert res.distance is None
    # The largest face off to the side with a small face in view: not taken either.
    frame = scene((portrait(engine, HOLDER, 190), 0.14, 0.5),
                  (portrait(engine, OTHER, 90), 0.8, 0.25))
    res = match_probe(holder_ref, frame, engine=engine)
    assert res.outcome is Outcome.MULTIPLE_FACES and "not in the middle" in res.detail
    # The liveness tracker applies the same rule.
    from facepin.liveness import measure

    assert measure(engine, frame).faces == 2
    ok = scene((portrait(engine, HOLDER, 190), 0.5, 0.5), (portrait(engine, OTHER, 90), 0.13, 0.2))
    assert measure(engine, ok).faces == 1


@needs_faces
def test_frames_are_fused_over_one_track(engine: FaceEngine, holder_ref: np.ndarray) -> None:
    person = portrait(engine, HOLDER, 180)
    blank = scene()
    frames = [blank, scene((person, 0.5, 0.5)), scene((person, 0.52, 0.5)),
              scene((person, 0.5, 0.52))]
    res = match_frames(holder_ref, frames, engine=engine)
    assert res.outcome is Outcome.MATCH and res.detail == "3 frames fused"
    # The fused decision is the distance of the mean direction, not of any one frame.
    encs = [engine.encode_probe(f).encoding for f in frames[1:]]
    units = [e / np.linalg.norm(e) for e in encs if e is not None]
    assert len(units) == 3
    mean = np.mean(units, axis=0)
    expected = np.linalg.norm(holder_ref / np.linalg.norm(holder_ref) - mean / np.linalg.norm(mean))
    assert res.distance == pytest.approx(float(expected))
    # It stops after FUSE_FRAMES good frames.
    many = match_frames(holder_ref, [frames[1]] * (FUSE_FRAMES + 3), engine=engine)
    assert many.detail == f"{FUSE_FRAMES} frames fused"
    # Someone else stepping in (the face jumps away from the track) refuses the stream.
    other = portrait(engine, OTHER, 180)
    jump = scene((other, 0.5 + 1.5 * MAX_JUMP * 180 / 960, 0.5))
    res = match_frames(holder_ref, [frames[1], jump], engine=engine)
    assert res.outcome is Outcome.MULTIPLE_FACES and "changed" in res.detail
    # A frame with two people of similar size refuses, even after good frames.
    two = scene((person, 0.3, 0.5), (other, 0.75, 0.5))
    res = match_frames(holder_ref, [frames[1], two], engine=engine)
    assert res.outcome is Outcome.MULTIPLE_FACES
    # No usable frame at all: the failure, never a match.
    assert match_frames(holder_ref, [blank, blank], engine=engine).outcome is Outcome.NO_FACE


@needs_faces
def test_the_probe_is_encoded_in_the_references_domain(engine: FaceEngine) -> None:
    """A colour probe is encoded exactly as the chip-like portrait (the chip photo's
    framing, resolution and greyscale) is, and an ordinary photo given as the reference
    is made into a chip-like JPEG 2000 the same way."""
    rgb = load_image(DEV / HOLDER)
    found = engine.encode(rgb)
    assert found.box is not None and found.encoding is not None
    portrait_ = chip_portrait(rgb, found.box)
    assert portrait_.mode == "L" and portrait_.size == CHIP_SIZE
    as_chip = engine.encode(np.asarray(portrait_.convert("RGB")), allow_several=True,
                            check_quality=False, upsample=1)
    probe = engine.encode_probe(rgb, yaw_gate=False)
    assert probe.encoding is not None and as_chip.encoding is not None
    assert np.abs(probe.encoding - as_chip.encoding).max() < 1e-9
    assert np.abs(probe.encoding - found.encoding).max() > 1e-3  # not the colour encoding
    chip = load_image(chip_photo(rgb, found.box))
    assert (chip[..., 0] == chip[..., 2]).all()  # greyscale
    ref_from_photo = engine.encode_reference(rgb, jitters=1)
    ref_from_chip = engine.encode_reference(chip, jitters=1)
    assert ref_from_photo.encoding is not None and ref_from_chip.encoding is not None
    assert np.abs(ref_from_photo.encoding - ref_from_chip.encoding).max() < 1e-9
