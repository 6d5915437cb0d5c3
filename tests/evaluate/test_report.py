"""The report: tables beside SiSEC 2018, boxplot PNG, Wilcoxon test, MLflow artifacts."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from sepcluster import storage
from sepcluster.errors import ConfigError
from sepcluster.evaluate import report


def _frames(tracks: list[str]) -> pd.DataFrame:
    """Per track: vocals SDR frames whose median is 3 + i/10; drums all 1.0 but one NaN frame."""
    rows = []
    for i, track in enumerate(tracks):
        for f, v in enumerate([2.0 + i / 10, 3.0 + i / 10, 4.0 + i / 10]):
            rows.append({"method": "ours", "track": track, "target": "vocals", "frame": f, "time": float(f),
                         "duration": 1.0, "SDR": v, "SIR": v + 10, "SAR": v + 1, "ISR": v + 5})
        for f, v in enumerate([1.0, np.nan, 1.0]):
            rows.append({"method": "ours", "track": track, "target": "drums", "frame": f, "time": float(f),
                         "duration": 1.0, "SDR": v, "SIR": v, "SAR": v, "ISR": v})
    return pd.DataFrame(rows)


def test_packaged_sisec_data_matches_its_medians():
    per_track = report.sisec18_track_medians()
    scores = report.sisec18_scores()
    assert per_track["track"].nunique() == 50 and "TAK1" in scores and "IRM1" in scores
    tak = per_track[(per_track.method == "TAK1") & (per_track.target == "vocals")]["SDR"].median()
    assert tak == pytest.approx(scores["TAK1"]["vocals"]["SDR"], abs=0.006)
    assert report.published_sdr()["UMXL"]["vocals"] == 7.21


def test_report_tables_boxplot_and_wilcoxon(tmp_path, sepcluster_home):
    sisec = report.sisec18_track_medians()
    tracks = sorted(sisec["track"].unique())[:8]
    frames = _frames(tracks)
    results = tmp_path / "res"
    storage.write_parquet(__import__("pyarrow").Table.from_pandas(frames, preserve_index=False),
                          str(results / "frames.parquet"))
    rep = report.write_report(str(results), methods=["TAK1", "IRM1", "MIX"], baselines=["TAK1", "MIX"])
    out = results / "report"
    png = out / "boxplot.png"
    assert png.exists() and png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    # our vocals median over tracks: median of 3.0..3.7 = 3.35; drums 1.0
    voc = rep["tables"]["vocals"].set_index("method")
    assert voc.loc["ours", "SDR"] == pytest.approx(3.35)
    assert voc.loc["ours", "SIR"] == pytest.approx(13.35) and voc.loc["ours", "n_tracks"] == 8
    assert rep["tables"]["drums"].set_index("method").loc["ours", "SDR"] == 1.0
    want_tak = sisec[(sisec.method == "TAK1") & (sisec.target == "vocals")]["SDR"].median()
    assert voc.loc["TAK1", "SDR"] == pytest.approx(want_tak)
    assert voc.loc["UMXL", "SDR"] == 7.21 and voc.loc["UMXL", "source"] == "published"
    assert "| **ours** | this run | 3.35 | 13.35 | 4.35 | 8.35 | 8 |" in md
    assert "3.35" in html and '<img src="boxplot.png"' in html and "boxplot.png" in md
    # Wilcoxon on the 8 common tracks against TAK1 and MIX
    from scipy.stats import wilcoxon

    tests = rep["wilcoxon"].set_index(["target", "baseline"])
    assert set(tests.index) == {("vocals", "TAK1"), ("vocals", "MIX"), ("drums", "TAK1"), ("drums", "MIX")}
    base = sisec[(sisec.method == "TAK1") & (sisec.target == "vocals")].set_index("track").loc[tracks, "SDR"]
    ours = np.array([3.0 + i / 10 for i in range(8)])
    assert tests.loc[("vocals", "TAK1"), "n"] == 8
    assert tests.loc[("vocals", "TAK1"), "p_value"] == pytest.approx(wilcoxon(ours, base.to_numpy()).pvalue)
    assert "Wilcoxon" in md and "TAK1" in (out / "wilcoxon.csv").read_text()
    scores_csv = pd.read_csv(out / "scores.csv")
    assert {"ours", "TAK1", "IRM1", "MIX"} <= set(scores_csv["method"])
    # logged to MLflow
    import mlflow

    from sepcluster import tracking

    client = mlflow.tracking.MlflowClient(tracking.tracking_uri())
    exp = client.get_experiment_by_name("sepcluster-evaluate")
    run = client.search_runs([exp.experiment_id], filter_string="tags.`sepcluster.kind` = 'report'")[0]
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/boxplot.png"} <= arts
    assert run.data.metrics["ours.vocals.SDR"] == pytest.approx(3.35)


def test_report_without_musdb_tracks_skips_the_paired_test(tmp_path):
    frames = _frames(["gen-1", "gen-2"])
    path = tmp_path / "frames.parquet"
    storage.write_parquet(__import__("pyarrow").Table.from_pandas(frames, preserve_index=False), str(path))
    rep = report.write_report(str(path), out=str(tmp_path / "rep"), log_mlflow=False)
    assert rep["wilcoxon"].empty
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "paired test was skipped" in md
    assert len(rep["tables"]["vocals"]) > 20  # every SiSEC method by default


def test_unknown_method_is_a_config_error(tmp_path):
    frames = _frames(["x"])
    path = tmp_path / "frames.parquet"
    storage.write_parquet(__import__("pyarrow").Table.from_pandas(frames, preserve_index=False), str(path))
    with pytest.raises(ConfigError, match="NOPE"):
        report.write_report(str(path), methods=["NOPE"], log_mlflow=False)
