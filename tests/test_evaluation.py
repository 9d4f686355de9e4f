"""Verdicts from paired per-image differences and summaries (iqp_plugin.report.metrics), as compare, validation and
the benchmarks use them."""
import math

import numpy as np

from iqp_plugin.report.metrics import paired, summary


def test_paired_verdicts_follow_the_metric_direction_and_the_noise():
    base = [30.0, 31.0, 32.0, 33.0]
    up = [b + 0.5 + 0.01 * i for i, b in enumerate(base)]
    assert paired(up, base, lower_better=False)["verdict"] == "better"
    assert paired(up, base, lower_better=True)["verdict"] == "worse"
    noisy = [b + d for b, d in zip(base, (0.5, -0.5, 0.4, -0.45), strict=False)]
    v = paired(noisy, base, lower_better=False)
    assert v["verdict"] == "same" and abs(v["mean"]) < 2 * v["sem"] and v["n"] == 4
    assert math.isclose(v["a"], float(np.mean(noisy))) and math.isclose(v["b"], 31.5)


def test_paired_relative_floor_and_missing_values():
    base = [100.0, 100.0, 100.0]
    tiny = [100.001, 100.001, 100.001]  # no spread: beyond any number of standard errors, under 1e-4 relative
    assert paired(tiny, base, lower_better=False)["verdict"] == "same"
    assert paired(tiny, base, lower_better=False, rtol=0.0)["verdict"] == "better"
    v = paired([1.0, float("nan"), 3.0], [0.0, 5.0, float("inf")], lower_better=False)
    assert v["n"] == 1 and v["mean"] == 1.0  # pairs with a non-finite value are left out
    assert paired([float("nan")], [1.0], lower_better=False) is None


def test_summary_of_finite_values():
    s = summary([1.0, 2.0, 3.0, float("nan")])
    assert s["n"] == 3 and s["mean"] == 2.0 and math.isclose(s["sem"], 1 / math.sqrt(3))
    assert summary([float("nan")]) == {"mean": None, "sem": 0.0, "n": 0}
