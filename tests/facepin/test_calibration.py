"""Calibration arithmetic: the threshold for a target FMR, the exact interval at the
sizes the bench uses, DET points."""

from __future__ import annotations

import pytest

from facepin.calibration import (
    CalibrationError,
    clopper_pearson,
    det_points,
    threshold_at_fmr,
)
from facepin.face import accepts


def test_threshold_at_fmr_admits_at_most_the_target_share() -> None:
    impostor = [0.30 + 0.001 * i for i in range(2000)]
    for target in (1e-2, 1e-3, 1e-4):
        t = threshold_at_fmr(impostor, target)
        below = sum(accepts(d, t) for d in impostor)
        assert below <= target * len(impostor)
        # ...and it is the largest such threshold (to 3 decimals).
        assert sum(accepts(d, t + 0.0011) for d in impostor) > target * len(impostor)
    # Too few pairs for the target: no false match at all is allowed.
    assert threshold_at_fmr(impostor, 1e-4) == 0.3
    with pytest.raises(CalibrationError, match="no impostor scores"):
        threshold_at_fmr([], 1e-3)


def test_clopper_pearson_at_bench_sizes() -> None:
    # 0 of 20,109: the rule of three, about 3/n.
    lo, hi = clopper_pearson(0, 20_109)
    assert lo == 0.0 and 1.4e-4 < hi < 1.9e-4
    # Large n and k (math.comb overflowed a float here before).
    lo, hi = clopper_pearson(857, 3380)
    assert lo < 857 / 3380 < hi and hi - lo < 0.04
    assert clopper_pearson(3, 0) == (0.0, 1.0)


def test_det_points_trade_one_error_for_the_other() -> None:
    pts = det_points([0.2, 0.3, 0.5], [0.4, 0.6, 0.7, 0.8])
    fmrs = [p[0] for p in pts]
    fnmrs = [p[1] for p in pts]
    assert fmrs == sorted(fmrs) and fnmrs == sorted(fnmrs, reverse=True)
    assert pts[0] == (0.0, 1.0)
