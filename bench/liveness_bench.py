"""Liveness on the simulated presentation-attack set built from dev/ photos: APCER per
attack species, BPCER on synthetic bona fide head turns, the rate at which another
person performing the moves gets through, and the tracking cost per frame.

The bona fide sequences are synthetic 2.5-D turns of still photos (facepin/simulate.py),
not recordings of people: BPCER here says the logic works on them, not what real users
will see. Prints figures; never fails for being slow.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from facepin.calibration import clopper_pearson, read_labels
from facepin.face import FaceEngine, load_image
from facepin.liveness import LivenessSession, Verdict, random_challenge
from facepin.simulate import SPECIES, attack_sequence, genuine_sequence

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "dev"


def run(engine: FaceEngine, ref: np.ndarray, frames: object, prompts: list) -> tuple[bool, int]:  # type: ignore[type-arg]
    s = LivenessSession(ref, prompts)
    n = 0
    for frame, t in frames:  # type: ignore[attr-defined]
        n += 1
        if s.feed_frame(engine, frame, t) is not Verdict.IN_PROGRESS:
            break
    s.finish()
    return s.verdict is Verdict.LIVE, n


def rate(k: int, n: int) -> str:
    lo, hi = clopper_pearson(k, n)
    return f"{k}/{n} = {k / n:.1%} (95% CI {lo:.1%}–{hi:.1%})" if n else "n/a"


def main() -> None:
    if not (DEV / "labels.csv").exists():
        sys.exit(f"face data not found at {DEV}")
    engine = FaceEngine.shared()
    by_id: dict[str, list[str]] = {}
    for rel, ident in read_labels(DEV):
        by_id.setdefault(ident, []).append(rel)
    subjects = []
    for ident, rels in sorted(by_id.items()):
        src = Image.open(DEV / rels[0]).convert("RGB")
        src.thumbnail((640, 640))
        rgb = np.asarray(src)
        found = engine.encode(rgb, allow_several=True, check_quality=False)
        ref = engine.encode_reference(load_image(DEV / rels[1])).encoding
        if found.box is None or ref is None or found.landmarks is None:
            continue
        subjects.append((ident, rgb, found, ref))
    bona = attacks = 0
    live = {s: 0 for s in SPECIES}
    rejected = 0
    impostor_pass = 0
    frames = 0
    t0 = time.perf_counter()
    for i, (_ident, rgb, found, ref) in enumerate(subjects):
        prompts = random_challenge()
        ok, n = run(engine, ref, genuine_sequence(rgb, found.box, found.landmarks[4], prompts),
                    prompts)
        frames += n
        bona += 1
        rejected += not ok
        for species in SPECIES:
            prompts = random_challenge()
            ok, n = run(engine, ref, attack_sequence(rgb, species, prompts, seed=i), prompts)
            frames += n
            live[species] += ok
        attacks += 1
        other_ref = subjects[(i + 1) % len(subjects)][3]
        prompts = random_challenge()
        ok, n = run(engine, other_ref, genuine_sequence(rgb, found.box, found.landmarks[4],
                                                        prompts), prompts)
        frames += n
        impostor_pass += ok
    elapsed = time.perf_counter() - t0
    print(f"{len(subjects)} dev identities, one sequence each per condition"
          f" (random challenge of 3 prompts)")
    for species in SPECIES:
        print(f"  APCER {species:<12} {rate(live[species], attacks)}")
    print(f"  worst-species APCER     {rate(max(live.values()), attacks)}")
    print(f"  BPCER (synthetic bona fide turns) {rate(rejected, bona)}")
    print(f"  another person doing the moves accepted {rate(impostor_pass, len(subjects))}")
    print(f"  tracking cost: {elapsed / frames * 1000:.0f} ms per frame on average"
          f" ({frames} frames incl. sequence synthesis)")


if __name__ == "__main__":
    main()
