"""SiSEC aggregation on a small hand-made table with known medians (and museval's EvalStore agrees)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sepcluster.errors import DataError
from sepcluster.evaluate import aggregate


def _frames() -> pd.DataFrame:
    rows = []

    def add(track, target, sdrs):
        for i, v in enumerate(sdrs):
            rows.append({"method": "m", "track": track, "target": target, "frame": i, "time": float(i),
                         "SDR": v, "SIR": 2 * v if v == v else v, "SAR": 1.0, "ISR": -v if v == v else v})

    add("t1", "vocals", [1.0, 3.0, 2.0])              # median 2
    add("t1", "drums", [5.0, np.nan, 7.0, 6.0])       # NaN ignored: median 6
    add("t2", "vocals", [10.0, 0.0, 4.0, 6.0])        # even count: median 5
    add("t2", "drums", [np.nan, np.nan])              # all NaN: NaN
    add("t3", "vocals", [np.inf, 8.0, 9.0])           # +inf counts as NaN (museval's store): median 8.5
    return pd.DataFrame(rows)


def test_track_medians_ignore_nan():
    tm = aggregate.track_medians(_frames()).set_index(["track", "target"])
    assert tm.loc[("t1", "vocals"), "SDR"] == 2.0
    assert tm.loc[("t1", "drums"), "SDR"] == 6.0
    assert tm.loc[("t2", "vocals"), "SDR"] == 5.0
    assert np.isnan(tm.loc[("t2", "drums"), "SDR"])
    assert tm.loc[("t3", "vocals"), "SDR"] == 8.5
    assert tm.loc[("t1", "vocals"), "SIR"] == 4.0 and tm.loc[("t2", "vocals"), "ISR"] == -5.0
    assert tm.loc[("t1", "drums"), "n_frames"] == 4 and tm.loc[("t1", "drums"), "n_valid"] == 3


def test_method_medians_over_tracks():
    scores = aggregate.aggregate(_frames()).set_index(["method", "target"])
    assert scores.loc[("m", "vocals"), "SDR"] == 5.0  # median of 2, 5, 8.5
    assert scores.loc[("m", "drums"), "SDR"] == 6.0  # median of 6 and NaN -> 6
    assert scores.loc[("m", "vocals"), "n_tracks"] == 3
    summary = aggregate.summary_dict(scores.reset_index())
    assert summary["m"]["vocals"]["SDR"] == 5.0 and summary["m"]["drums"]["n_tracks"] == 2


def test_same_as_museval_evalstore():
    museval = pytest.importorskip("museval")
    df = _frames()
    df = df[np.isfinite(df["SDR"]) | df["SDR"].isna()]
    long = df.melt(id_vars=["track", "target", "time"], value_vars=["SDR", "SIR", "SAR", "ISR"],
                   var_name="metric", value_name="score")
    store = museval.EvalStore()
    store.add_track(long)
    want = store.agg_frames_tracks_scores()
    ours = aggregate.aggregate(df).set_index("target")
    for target in ("vocals", "drums"):
        for m in ("SDR", "SIR", "ISR"):
            assert ours.loc[target, m] == pytest.approx(want[(target, m)], nan_ok=True)


def test_missing_columns_named():
    with pytest.raises(DataError, match="SAR"):
        aggregate.track_medians(pd.DataFrame({"track": [], "target": [], "SDR": [], "SIR": [], "ISR": []}))
