"""Statistics of a report: paired Wilcoxon tests with Holm's correction, bootstrap confidence intervals.

- :func:`wilcoxon_paired`: the two-sided Wilcoxon signed-rank test of paired per-track scores
  (``scipy.stats.wilcoxon``, its defaults: zero differences dropped by Wilcox's method, exact
  p-values for small samples without ties, else the normal approximation);
- :func:`holm`: Holm's step-down adjustment of a family of p-values (the family is every
  comparison one report makes, so that its "significant" column holds at a 5 % family-wise error
  rate): the i-th smallest of m p-values becomes ``max_{j<=i} min(1, (m - j + 1) p_(j))``;
- :func:`bootstrap_ci`: the percentile bootstrap of a statistic (median or mean over tracks), the
  resamples drawn as ``scipy.stats.bootstrap`` draws them (``rng.integers(0, n, (resamples, n))``
  from ``numpy.random.default_rng(seed)``), so the interval equals scipy's ``method="percentile"``;
- :func:`paired_tests` and :func:`confidence_table`: the tables of a report, from per-track
  scores ``method, track, target, <metric>``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError

STATISTICS = {"median": np.median, "mean": np.mean}
TEST_COLUMNS = ["method", "target", "metric", "baseline", "n", "median_diff", "statistic", "p_value", "better"]


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values, float64 ``(m,)`` in the input order; NaN entries stay NaN and do not count in m."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted)
    return out


def wilcoxon_paired(x: Sequence[float], y: Sequence[float]) -> dict:
    """Two-sided Wilcoxon signed-rank test of ``x - y`` over pairs where both are finite.

    Returns ``{n, median_diff, statistic, p_value}``; statistic and p-value are NaN when fewer
    than 2 pairs remain or every difference is 0.
    """
    from scipy.stats import wilcoxon

    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"paired test: {a.shape[0]} and {b.shape[0]} values are not pairs")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    diff = a - b
    out = {"n": int(a.size), "median_diff": float(np.median(diff)) if a.size else np.nan,
           "statistic": np.nan, "p_value": np.nan}
    if a.size >= 2 and np.any(diff != 0):
        res = wilcoxon(a, b, alternative="two-sided")
        out.update(statistic=float(res.statistic), p_value=float(res.pvalue))
    return out


def bootstrap_ci(values: Sequence[float], statistic: str = "median", level: float = 0.95, n_resamples: int = 9999,
                 seed: int = 0) -> tuple[float, float, float]:
    """``(estimate, low, high)``: the statistic of the finite values and its percentile bootstrap interval.

    statistic: ``"median"`` or ``"mean"``. NaN triple for no finite value; ``(v, v, v)`` for one.
    """
    if statistic not in STATISTICS:
        raise DataError(f"bootstrap statistic '{statistic}': choose from {', '.join(STATISTICS)}")
    if not 0 < level < 1:
        raise DataError(f"bootstrap level {level}: must be in (0, 1)")
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    fn = STATISTICS[statistic]
    if x.size == 0:
        return np.nan, np.nan, np.nan
    est = float(fn(x))
    if x.size == 1:
        return est, est, est
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, (n_resamples, x.size))
    stats = fn(x[idx], axis=-1)
    alpha = (1 - level) / 2
    low, high = np.percentile(stats, [100 * alpha, 100 * (1 - alpha)])
    return est, float(low), float(high)


def _pairs_of(per_track: pd.DataFrame, metric: str, a: str, b: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    sel = per_track[per_track["target"] == target]
    x = sel[sel["method"] == a].set_index("track")[metric]
    y = sel[sel["method"] == b].set_index("track")[metric]
    common = x.index.intersection(y.index)
    return x.loc[common].to_numpy(dtype=float), y.loc[common].to_numpy(dtype=float)


def paired_tests(per_track: pd.DataFrame, pairs: Iterable[tuple[str, str]], metric: str) -> pd.DataFrame:
    """Wilcoxon tests of ``metric`` for each ``(method, baseline)`` pair and target, on their common tracks.

    per_track: one row per (method, track, target) with a ``metric`` column. Rows (columns
    :data:`TEST_COLUMNS`) only where the pair has common tracks; ``better``: median difference > 0.
    """
    rows = []
    for a, b in pairs:
        targets = sorted(set(per_track.loc[per_track["method"] == a, "target"])
                         & set(per_track.loc[per_track["method"] == b, "target"]))
        for target in targets:
            x, y = _pairs_of(per_track, metric, a, b, target)
            res = wilcoxon_paired(x, y)
            if res["n"] == 0:
                continue
            rows.append({"method": a, "target": target, "metric": metric, "baseline": b, **res,
                         "better": bool(res["median_diff"] > 0)})
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def with_holm(tests: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """``tests`` (one family: every comparison of a report) with ``p_holm`` and ``significant`` (p_holm < alpha)."""
    out = tests.copy()
    out["p_holm"] = holm(out["p_value"].to_numpy(dtype=float)) if len(out) else pd.Series(dtype=float)
    out["significant"] = out["p_holm"] < alpha
    return out


def confidence_table(per_track: pd.DataFrame, metric: str, columns: dict[str, str], level: float = 0.95,
                     n_resamples: int = 9999, seed: int = 0) -> pd.DataFrame:
    """Per (method, target): ``n`` and, for each statistic, the estimate and its bootstrap interval.

    per_track: one row per (method, track, target) with ``metric``. columns: statistic
    (``"median"``/``"mean"``) -> the column name of its estimate (named by its convention, e.g.
    ``"SDR (SiSEC median)"``); the interval columns are ``"<name> low"`` and ``"<name> high"``.
    """
    rows = []
    for (method, target), grp in per_track.groupby(["method", "target"], sort=True):
        values = grp[metric].to_numpy(dtype=float)
        row = {"method": method, "target": target, "n": int(np.isfinite(values).sum())}
        for stat, name in columns.items():
            est, low, high = bootstrap_ci(values, stat, level=level, n_resamples=n_resamples, seed=seed)
            row.update({name: est, f"{name} low": low, f"{name} high": high})
        rows.append(row)
    cols = ["method", "target", "n"] + [c for name in columns.values() for c in (name, f"{name} low", f"{name} high")]
    return pd.DataFrame(rows, columns=cols)
