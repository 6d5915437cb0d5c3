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


# ---- conventions, named: SiSEC (median, median) and SDX (mean over targets per song, mean over songs)

def _track_scores() -> pd.DataFrame:
    rows = [  # method, track, target, uSDR, SI-SDR
        ("m", "t1", "vocals", 4.0, 3.0), ("m", "t1", "drums", 6.0, 5.0), ("m", "t1", "bass", 2.0, 1.0),
        ("m", "t2", "vocals", 8.0, 7.0), ("m", "t2", "drums", np.nan, np.nan), ("m", "t2", "bass", 4.0, 2.0),
        ("m", "t3", "vocals", 0.0, -1.0), ("m", "t3", "drums", 3.0, 2.0), ("m", "t3", "bass", 6.0, 6.0),
        ("n", "t1", "vocals", 10.0, 1.0), ("n", "t1", "drums", 12.0, 2.0),
        ("n", "t2", "vocals", np.inf, 3.0), ("n", "t2", "drums", 4.0, 4.0),
    ]
    return pd.DataFrame(rows, columns=["method", "track", "target", "uSDR", "SI-SDR"])


def test_sdx_song_means_hand_computed():
    songs = aggregate.sdx_song_means(_track_scores()).set_index(["method", "track"])
    assert list(songs.columns) == ["uSDR (SDX song mean)", "SI-SDR (SDX song mean)", "n_targets"]
    assert songs.loc[("m", "t1"), "uSDR (SDX song mean)"] == pytest.approx(4.0)     # (4 + 6 + 2) / 3
    assert songs.loc[("m", "t2"), "uSDR (SDX song mean)"] == pytest.approx(6.0)     # (8 + 4) / 2, NaN skipped
    assert songs.loc[("m", "t3"), "SI-SDR (SDX song mean)"] == pytest.approx(7 / 3)  # (-1 + 2 + 6) / 3
    assert songs.loc[("n", "t2"), "uSDR (SDX song mean)"] == pytest.approx(4.0)     # +inf counts as NaN
    assert songs.loc[("m", "t2"), "n_targets"] == 3


def test_sdx_scores_hand_computed():
    sdx = aggregate.sdx_scores(_track_scores())
    assert list(sdx.columns) == ["method", "target", "uSDR (SDX mean)", "SI-SDR (SDX mean)", "n_tracks (SDX mean)"]
    assert list(sdx["target"]) == ["bass", "drums", "vocals", "all", "drums", "vocals", "all"]
    s = sdx.set_index(["method", "target"])
    u, si, n = "uSDR (SDX mean)", "SI-SDR (SDX mean)", "n_tracks (SDX mean)"
    # per-target mean over songs
    assert s.loc[("m", "vocals"), u] == pytest.approx(4.0)   # (4 + 8 + 0) / 3
    assert s.loc[("m", "drums"), u] == pytest.approx(4.5)    # (6 + 3) / 2
    assert s.loc[("m", "bass"), u] == pytest.approx(4.0)     # (2 + 4 + 6) / 3
    assert s.loc[("m", "drums"), si] == pytest.approx(3.5)   # (5 + 2) / 2
    # mean over targets per song (4, 6, 3), then over songs: not the mean of the per-target means (4.1667)
    assert s.loc[("m", "all"), u] == pytest.approx(13 / 3)
    assert s.loc[("m", "all"), si] == pytest.approx((3 + 4.5 + 7 / 3) / 3)
    assert s.loc[("m", "all"), n] == 3 and s.loc[("m", "drums"), n] == 3
    assert s.loc[("n", "vocals"), u] == pytest.approx(10.0)  # +inf ignored
    assert s.loc[("n", "all"), u] == pytest.approx(7.5)      # songs 11 and 4
    assert s.loc[("n", "all"), si] == pytest.approx(2.5)     # songs 1.5 and 3.5


def test_sdx_without_method_column_and_bad_tables():
    one = _track_scores().query("method == 'n'").drop(columns="method")
    s = aggregate.sdx_scores(one, metrics=("SI-SDR",)).set_index(["method", "target"])
    assert s.loc[("", "all"), "SI-SDR (SDX mean)"] == pytest.approx(2.5)
    assert "uSDR (SDX mean)" not in s.columns
    with pytest.raises(DataError, match="uSDR"):
        aggregate.sdx_scores(one.drop(columns="uSDR"))
    twice = pd.concat([_track_scores(), _track_scores().iloc[:1]])
    with pytest.raises(DataError, match="repeated.*'t1', 'vocals'"):
        aggregate.sdx_scores(twice)


def test_sisec_scores_named_by_convention():
    named = aggregate.sisec_scores(_frames())
    assert list(named.columns) == ["method", "target", "SDR (SiSEC median)", "SIR (SiSEC median)",
                                   "SAR (SiSEC median)", "ISR (SiSEC median)", "n_tracks (SiSEC median)"]
    plain = aggregate.aggregate(_frames())
    s = named.set_index("target")
    assert s.loc["vocals", "SDR (SiSEC median)"] == 5.0 and s.loc["drums", "SDR (SiSEC median)"] == 6.0
    assert s.loc["vocals", "n_tracks (SiSEC median)"] == 3
    np.testing.assert_array_equal(named["ISR (SiSEC median)"].to_numpy(), plain["ISR"].to_numpy())


def test_side_by_side_never_mixes_conventions():
    frames = _frames()
    sisec = aggregate.sisec_scores(frames)
    sdx = aggregate.sdx_scores(_track_scores().query("method == 'm'"))
    both = aggregate.side_by_side(sisec, sdx).set_index(["method", "target"])
    assert both.loc[("m", "vocals"), "SDR (SiSEC median)"] == 5.0
    assert both.loc[("m", "vocals"), "uSDR (SDX mean)"] == pytest.approx(4.0)
    assert np.isnan(both.loc[("m", "all"), "SDR (SiSEC median)"])  # SiSEC has no all-target figure
    assert np.isnan(both.loc[("m", "bass"), "SDR (SiSEC median)"])  # no BSS Eval frames for bass here
    with pytest.raises(DataError, match="'uSDR \\(SDX mean\\)' appears in two tables"):
        aggregate.side_by_side(sdx, sdx)
    with pytest.raises(DataError, match="column 'SDR' is not named by a convention"):
        aggregate.side_by_side(sisec, aggregate.aggregate(frames))
    assert aggregate.convention_column("SI-SDR", aggregate.SDX) == "SI-SDR (SDX mean)"
    with pytest.raises(DataError, match="convention 'mean'"):
        aggregate.convention_column("SDR", "mean")
