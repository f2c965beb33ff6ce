"""Threshold calibration and error rates on labelled face folders
(``shared/data/faces/{dev,eval}``: ``labels.csv`` with ``path,identity,...``).

Rules (``shared/reference/face-verification.md`` §3-§4): the threshold is set on dev/
only; eval/ is measured once with it. Known same-picture duplicates in eval/ are left out
of pair scoring. Error rates are reported with their counts and a 95 % Clopper-Pearson
interval, because with a few thousand impostor pairs from 13 identities "0 false matches"
means "FMR below about 1e-3 if the pairs were independent", not "FMR = 0". The pipeline
measured and the accept rule are facepin.face's; ``bench/face_bench.py`` drives them.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from cardio.errors import CardioError

EVAL_DUPLICATES = frozenset({"fr_obama/examples_obama-480p.jpg",
                             "fr_obama/examples_obama_small.jpg"})


class CalibrationError(CardioError):
    """Nothing to calibrate on (no impostor scores): a threshold from no data would be
    a number that means nothing."""


def read_labels(split: Path) -> list[tuple[str, str]]:
    with open(split / "labels.csv", newline="") as fh:
        return [(row["path"], row["identity"]) for row in csv.DictReader(fh)]


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact binomial confidence interval for k successes in n trials."""
    if n == 0:
        return (0.0, 1.0)

    def cdf(p: float, upto: int) -> float:
        # In logs: math.comb(n, i) overflows a float beyond n ≈ 1,000.
        if p <= 0.0:
            return 1.0
        if p >= 1.0:
            return 0.0 if upto < n else 1.0
        lp, lq = math.log(p), math.log1p(-p)
        return sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                            + i * lp + (n - i) * lq) for i in range(upto + 1))

    def solve(f: float, lo: float, hi: float, target: float, increasing: bool) -> float:
        for _ in range(100):
            mid = (lo + hi) / 2
            val = cdf(mid, int(f))
            if (val > target) == increasing:
                hi = mid
            else:
                lo = mid
        return (lo + hi) / 2

    lower = 0.0 if k == 0 else solve(k - 1, 0.0, 1.0, 1 - alpha / 2, increasing=False)
    upper = 1.0 if k == n else solve(k, 0.0, 1.0, alpha / 2, increasing=False)
    return lower, upper


def threshold_at_fmr(impostor: list[float], target: float) -> float:
    """The largest threshold (3 decimals, accept d < t) whose false-match rate on these
    impostor scores is at most ``target``: with N scores, at most floor(target·N) of them
    may lie below it. With target·N < 1 this is the "no false match" threshold, which
    says nothing about FMR at ``target`` — callers print N beside it."""
    if not impostor:
        raise CalibrationError("no impostor scores to calibrate a threshold on")
    ranked = sorted(impostor)
    allowed = math.floor(target * len(ranked) + 1e-9)
    if allowed >= len(ranked):
        return math.floor(ranked[-1] * 1000) / 1000 + 0.001
    # Accept d < t: t may be as large as the (allowed+1)-th smallest score.
    return math.floor(ranked[allowed] * 1000) / 1000


def det_points(genuine: list[float], impostor: list[float]) -> list[tuple[float, float]]:
    """(FMR, FNMR) at every distinct score, for a DET curve (accept d < t)."""
    gen = np.sort(np.asarray(genuine))
    imp = np.sort(np.asarray(impostor))
    out = []
    for t in np.unique(np.concatenate([gen, imp])):
        fmr = float(np.searchsorted(imp, t, side="left")) / max(1, len(imp))
        fnmr = float(len(gen) - np.searchsorted(gen, t, side="left")) / max(1, len(gen))
        out.append((fmr, fnmr))
    return out
