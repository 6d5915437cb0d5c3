"""Report statistics against scipy and hand-computed values: Holm, Wilcoxon, bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sepcluster.errors import DataError
from sepcluster.evaluate import statistics


def test_holm_hand_computed():
    # sorted p: .01 .02 .03 .04 (m=4): 4*.01=.04, 3*.02=.06, 2*.03=.06, 1*.04=.04 -> running max .04 .06 .06 .06
    p = [0.03, 0.01, 0.04, 0.02]
    np.testing.assert_allclose(statistics.holm(p), [0.06, 0.04, 0.06, 0.06])
    # capped at 1, NaN kept out of the family (m=2 here)
    np.testing.assert_allclose(statistics.holm([0.6, np.nan, 0.01]), [0.6, np.nan, 0.02])
    assert statistics.holm([0.7, 0.8])[1] == 1.0 and np.isnan(statistics.holm([np.nan])).all()
    assert statistics.holm([]).shape == (0,)


def test_holm_equals_the_step_down_definition():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, 17)
    order = np.argsort(p)
    m = p.size
    want = np.empty(m)
    running = 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[k]))
        want[k] = running
    np.testing.assert_allclose(statistics.holm(p), want, rtol=0, atol=1e-15)
    # at most as many rejections as unadjusted, at least as many as Bonferroni
    adj = statistics.holm(p)
    assert (adj < 0.05).sum() <= (p < 0.05).sum() and (adj < 0.05).sum() >= (p * m < 0.05).sum()


def test_wilcoxon_matches_scipy_and_drops_nan_pairs():
    rng = np.random.default_rng(1)
    x = rng.normal(5, 1, 30)
    y = x - rng.normal(0.4, 0.5, 30)
    x[3], y[7] = np.nan, np.inf
    res = statistics.wilcoxon_paired(x, y)
    keep = np.isfinite(x) & np.isfinite(y)
    want = stats.wilcoxon(x[keep], y[keep])
    assert res["n"] == 28 and res["p_value"] == pytest.approx(want.pvalue, rel=1e-12)
    assert res["statistic"] == want.statistic and res["median_diff"] == pytest.approx(np.median((x - y)[keep]))
    same = statistics.wilcoxon_paired([1.0, 2.0], [1.0, 2.0])
    assert np.isnan(same["p_value"]) and same["n"] == 2
    with pytest.raises(DataError, match="not pairs"):
        statistics.wilcoxon_paired([1.0], [1.0, 2.0])


def test_wilcoxon_exact_small_sample_hand_computed():
    # differences 1..6, all positive: W+ = 21, the smallest possible W- = 0 -> exact two-sided p = 2/2^6
    res = statistics.wilcoxon_paired(np.arange(1, 7) + 10.0, np.full(6, 10.0))
    assert res["statistic"] == 0.0 and res["p_value"] == pytest.approx(2 / 64)


@pytest.mark.parametrize("stat", ["median", "mean"])
def test_bootstrap_equals_scipy_percentile(stat):
    rng = np.random.default_rng(2)
    values = rng.normal(6, 2, 50)
    est, low, high = statistics.bootstrap_ci(values, stat, n_resamples=2000, seed=7)
    fn = np.median if stat == "median" else np.mean
    want = stats.bootstrap((values,), fn, n_resamples=2000, method="percentile", rng=np.random.default_rng(7),
                           vectorized=True)
    assert est == pytest.approx(fn(values))
    assert low == pytest.approx(want.confidence_interval.low, abs=1e-12)
    assert high == pytest.approx(want.confidence_interval.high, abs=1e-12)
    assert low < est < high


def test_bootstrap_edge_cases():
    assert statistics.bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)
    assert statistics.bootstrap_ci([np.nan, 2.5]) == (2.5, 2.5, 2.5)
    assert all(np.isnan(statistics.bootstrap_ci([np.nan])))
    with pytest.raises(DataError, match="statistic 'mode'"):
        statistics.bootstrap_ci([1.0, 2.0], "mode")
    # the percentile interval of the mean of 0/1 data: a known binomial spread, ~ +/- 1.96 sqrt(p(1-p)/n)
    x = np.r_[np.ones(50), np.zeros(50)]
    _, low, high = statistics.bootstrap_ci(x, "mean", n_resamples=20000, seed=3)
    assert low == pytest.approx(0.5 - 1.96 * 0.05, abs=0.01) and high == pytest.approx(0.5 + 1.96 * 0.05, abs=0.01)


def _per_track():
    rng = np.random.default_rng(4)
    rows = []
    for i in range(12):
        base = rng.normal(5, 1)
        for method, shift in (("a", 0.0), ("b", 1.0), ("c", 0.05)):
            rows.append({"method": method, "track": f"t{i}", "target": "vocals", "SDR": base + shift
                         + rng.normal(0, 0.1)})
    return pd.DataFrame(rows)


def test_paired_tests_and_holm_family():
    per_track = _per_track()
    tests = statistics.with_holm(statistics.paired_tests(per_track, [("b", "a"), ("c", "a"), ("b", "c")], "SDR"))
    assert list(tests.columns) == statistics.TEST_COLUMNS + ["p_holm", "significant"]
    t = tests.set_index(["method", "baseline"])
    x = per_track[per_track.method == "b"]["SDR"].to_numpy()
    y = per_track[per_track.method == "a"]["SDR"].to_numpy()
    assert t.loc[("b", "a"), "p_value"] == pytest.approx(stats.wilcoxon(x, y).pvalue)
    np.testing.assert_allclose(tests["p_holm"], statistics.holm(tests["p_value"]))
    assert t.loc[("b", "a"), "significant"] and t.loc[("b", "a"), "better"]
    assert (tests["p_holm"] >= tests["p_value"]).all()


def test_confidence_table():
    per_track = _per_track()
    table = statistics.confidence_table(per_track, "SDR", {"median": "SDR (SiSEC median)", "mean": "SDR (mean)"},
                                        n_resamples=500)
    assert list(table.columns) == ["method", "target", "n", "SDR (SiSEC median)", "SDR (SiSEC median) low",
                                   "SDR (SiSEC median) high", "SDR (mean)", "SDR (mean) low", "SDR (mean) high"]
    row = table.set_index("method").loc["b"]
    vals = per_track[per_track.method == "b"]["SDR"]
    assert row["n"] == 12 and row["SDR (SiSEC median)"] == pytest.approx(vals.median())
    assert row["SDR (mean) low"] < vals.mean() < row["SDR (mean) high"]
    assert (row["SDR (mean) low"], row["SDR (mean) high"]) == pytest.approx(
        statistics.bootstrap_ci(vals, "mean", n_resamples=500)[1:])
