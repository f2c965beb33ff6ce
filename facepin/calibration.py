"""Threshold calibration and error rates on labelled face folders
(``shared/data/faces/{dev,eval}``: ``labels.csv`` with ``path,identity,...``).

Rules (``shared/reference/face-verification.md`` §3-§4): the threshold is set on dev/
only; eval/ is measured once with it. Known same-picture duplicates in eval/ are left out
of pair scoring. Error rates are reported with their counts and a 95 % Clopper-Pearson
interval, because with a few hundred impostor pairs "0 false matches" means "FMR below
about 1 %", not "FMR = 0".
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facepin.face import FaceEngine, accepts, chip_photo, distance, load_image

EVAL_DUPLICATES = frozenset({"fr_obama/examples_obama-480p.jpg",
                             "fr_obama/examples_obama_small.jpg"})


@dataclass
class Sample:
    path: str
    identity: str
    encoding: np.ndarray | None
    chip_encoding: np.ndarray | None = None


@dataclass
class Scores:
    genuine: list[float] = field(default_factory=list)
    impostor: list[float] = field(default_factory=list)


def read_labels(split: Path) -> list[tuple[str, str]]:
    with open(split / "labels.csv", newline="") as fh:
        return [(row["path"], row["identity"]) for row in csv.DictReader(fh)]


def encode_split(split: Path, engine: FaceEngine, *, exclude: frozenset[str] = frozenset(),
                 chip: bool = False) -> list[Sample]:
    """Encode every labelled image (largest face, no quality gate: these are the
    references). With ``chip`` also encode a greyscale-JP2 chip-like version of each."""
    out = []
    for rel, ident in read_labels(split):
        if rel in exclude:
            continue
        rgb = load_image(split / rel)
        enc = engine.encode(rgb, allow_several=True, check_quality=False)
        chip_enc = None
        if chip and enc.box is not None:
            chip_rgb = load_image(chip_photo(rgb, enc.box))
            c = engine.encode(chip_rgb, allow_several=True, check_quality=False, upsample=1)
            chip_enc = c.encoding
        out.append(Sample(rel, ident, enc.encoding, chip_enc))
    return out


def score(samples: list[Sample], *, chip_reference: bool = False) -> Scores:
    """All pairs (ordered when ``chip_reference``: chip of A vs live B, A≠B)."""
    s = Scores()
    if chip_reference:
        pairs = [(a, b) for a, b in itertools.permutations(samples, 2)]
    else:
        pairs = list(itertools.combinations(samples, 2))
    for a, b in pairs:
        ea = a.chip_encoding if chip_reference else a.encoding
        if ea is None or b.encoding is None:
            continue
        d = distance(ea, b.encoding)
        (s.genuine if a.identity == b.identity else s.impostor).append(d)
    return s


def fmr0_threshold(impostor: list[float]) -> float:
    """The largest threshold (3 decimals) with no false match on these impostor pairs
    (accept d < t)."""
    return math.floor(min(impostor) * 1000) / 1000


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


@dataclass
class Rates:
    threshold: float
    false_matches: int
    impostor_pairs: int
    false_non_matches: int
    genuine_pairs: int

    @property
    def fmr(self) -> float:
        return self.false_matches / self.impostor_pairs if self.impostor_pairs else 0.0

    @property
    def fnmr(self) -> float:
        return self.false_non_matches / self.genuine_pairs if self.genuine_pairs else 0.0

    def describe(self) -> str:
        flo, fhi = clopper_pearson(self.false_matches, self.impostor_pairs)
        nlo, nhi = clopper_pearson(self.false_non_matches, self.genuine_pairs)
        return (f"t={self.threshold:.3f}  FMR {self.false_matches}/{self.impostor_pairs}"
                f" = {self.fmr:.2%} (95% CI {flo:.2%}–{fhi:.2%})  FNMR"
                f" {self.false_non_matches}/{self.genuine_pairs} = {self.fnmr:.2%}"
                f" (95% CI {nlo:.2%}–{nhi:.2%})")


def rates(scores: Scores, threshold: float) -> Rates:
    return Rates(threshold, sum(accepts(d, threshold) for d in scores.impostor),
                 len(scores.impostor), sum(not accepts(d, threshold) for d in scores.genuine),
                 len(scores.genuine))


def threshold_at_fmr(impostor: list[float], target: float) -> float:
    """The largest threshold (3 decimals, accept d < t) whose false-match rate on these
    impostor scores is at most ``target``: with N scores, at most floor(target·N) of them
    may lie below it. With target·N < 1 this is the "no false match" threshold, which
    says nothing about FMR at ``target`` — callers print N beside it."""
    if not impostor:
        raise ValueError("no impostor scores")
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
