"""Face verification: latency of one verification (decode + detect + encode for both
images, then compare) and the eval-set FMR/FNMR at the dev-calibrated threshold, with
original colour references and with greyscale JPEG 2000 chip-like references.

eval/ is measured here and nowhere tuned. Prints figures; never fails for being slow.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from facepin.calibration import (
    EVAL_DUPLICATES,
    encode_split,
    fmr0_threshold,
    rates,
    score,
)
from facepin.face import THRESHOLD, FaceEngine, chip_photo, load_image, verify

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"


def main() -> None:
    if not (FACES / "eval" / "labels.csv").exists():
        sys.exit(f"face data not found at {FACES}")
    t0 = time.perf_counter()
    engine = FaceEngine.shared()
    print(f"model load: {time.perf_counter() - t0:.2f} s")

    live = (FACES / "dev" / "deepface_id00" / "img1.jpg").read_bytes()
    ref_rgb = load_image(FACES / "dev" / "deepface_id00" / "img2.jpg")
    box = engine.encode(ref_rgb, allow_several=True, check_quality=False).box
    assert box is not None
    chip = chip_photo(ref_rgb, box)
    times = []
    for _ in range(11):
        t = time.perf_counter()
        res = verify(chip, live, engine=engine)
        times.append(time.perf_counter() - t)
    times = times[1:]
    print(f"one verification (chip JP2 {len(chip)} B + {len(live)} B JPEG probe, decode+detect"
          f"+encode both): median {statistics.median(times) * 1000:.0f} ms, max"
          f" {max(times) * 1000:.0f} ms over {len(times)} runs ({res.outcome.value},"
          f" d={res.distance:.3f})")

    dev = encode_split(FACES / "dev", engine)
    dev_scores = score(dev)
    print(f"\ndev (calibration): {len(dev_scores.genuine)} genuine / {len(dev_scores.impostor)}"
          f" impostor pairs; FMR=0 threshold {fmr0_threshold(dev_scores.impostor):.3f}"
          f" (shipped THRESHOLD {THRESHOLD})")
    print("  " + rates(dev_scores, THRESHOLD).describe())

    ev = encode_split(FACES / "eval", engine, exclude=EVAL_DUPLICATES, chip=True)
    print(f"\neval (held out, {len(ev)} images, measured once at THRESHOLD={THRESHOLD}):")
    print("  colour reference vs photo:        " + rates(score(ev), THRESHOLD).describe())
    print("  greyscale JP2 chip-like reference: "
          + rates(score(ev, chip_reference=True), THRESHOLD).describe())


if __name__ == "__main__":
    main()
