"""The report keeps conventions apart, adds published figures only in their own convention, and carries the
statistics (Holm-corrected tests, bootstrap intervals) and the figures (each linked from the HTML)."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from sepcluster.evaluate import report, statistics
from sepcluster.evaluate.aggregate import SDX, SISEC

from .report_fixtures import write_results


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.linked_imgs, self.imgs, self.headers = [], [], [], []
        self._th = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.stack.append(attrs.get("href"))
        if tag == "img":
            self.imgs.append(attrs.get("src"))
            if self.stack and self.stack[-1] == attrs.get("src"):
                self.linked_imgs.append(attrs.get("src"))
        self._th = tag == "th"

    def handle_endtag(self, tag):
        if tag == "a" and self.stack:
            self.stack.pop()
        if tag == "th":
            self._th = False

    def handle_data(self, data):
        if self._th:
            self.headers.append(data)


@pytest.fixture(scope="module")
def two_methods(tmp_path_factory):
    root = tmp_path_factory.mktemp("report2")
    (root / "a").mkdir()
    (root / "b").mkdir()
    fa, sa = write_results(root / "a", "model-a", 0.0, seed=1)
    fb, sb = write_results(root / "b", "model-b", 1.0, seed=2)
    rep = report.write_report([str(root / "a"), str(root / "b")], out=str(root / "rep"), baselines=["TAK1", "IRM1"],
                              log_mlflow=False, n_resamples=999)
    return root, rep, pd.concat([fa, fb]), pd.concat([sa, sb])


def test_tables_never_mix_conventions(two_methods):
    root, rep, frames, scores = two_methods
    voc = rep["tables"]["vocals"].set_index("method")
    assert list(voc.columns) == ["source", "SDR", "SIR", "SAR", "ISR", "n_tracks"]
    assert voc.loc["HTDemucs", "SDR"] == 8.93 and voc.loc["HTDemucs", "source"] == "published"
    assert voc.loc["BS-RoFormer (L=6)", "SDR"] == 10.66 and "SCNet-large (MSST eval)" not in voc.index
    sdx = rep["sdx_tables"]["vocals"].set_index("method")
    assert list(sdx.columns) == ["source", f"uSDR ({SDX})", f"SI-SDR ({SDX})", "n_tracks"]
    assert sdx.loc["SCNet-large (MSST eval)", f"uSDR ({SDX})"] == 10.94
    assert np.isnan(sdx.loc["SCNet-large (MSST eval)", f"SI-SDR ({SDX})"])  # not published: empty
    assert "HTDemucs" not in sdx.index and "UMXL" not in sdx.index
    want = scores[(scores.method == "model-b") & (scores.target == "vocals")]["uSDR"].mean()
    assert sdx.loc["model-b", f"uSDR ({SDX})"] == pytest.approx(want) and sdx.loc["model-b", "n_tracks"] == 8
    everything = rep["sdx_tables"]["all"].set_index("method")
    songs = scores[scores.method == "model-a"].groupby("track")["SI-SDR"].mean()
    assert everything.loc["model-a", f"SI-SDR ({SDX})"] == pytest.approx(songs.mean())
    assert everything.loc["SCNet-large (MSST eval)", f"uSDR ({SDX})"] == 9.70
    assert "all" not in rep["tables"]  # SiSEC has no all-target figure
    md = (root / "rep" / "report.md").read_text()
    assert f"| method | source | SDR ({SISEC}) | SIR ({SISEC}) |" in md
    assert f"| method | source | uSDR ({SDX}) | SI-SDR ({SDX}) | n_tracks |" in md
    assert "arXiv:2211.08553v1, Table 1" in md and "docs/pretrained_models.md" in md
    parser = Links()
    parser.feed((root / "rep" / "report.html").read_text())
    for h in parser.headers:  # no column header holds two conventions, or a metric without one
        assert not (SISEC in h and SDX in h)
        if h.split(" (")[0] in ("SDR", "SIR", "SAR", "ISR", "uSDR", "SI-SDR") and "(" not in h:
            pytest.fail(f"column {h!r} names no convention")


def test_paired_tests_with_holm_over_the_whole_report(two_methods):
    _, rep, frames, scores = two_methods
    tests = rep["wilcoxon"]
    np.testing.assert_allclose(tests["p_holm"], statistics.holm(tests["p_value"]))
    kinds = set(zip(tests["method"], tests["baseline"], tests["metric"]))
    assert ("model-a", "model-b", "SDR") in kinds and ("model-a", "model-b", "uSDR") in kinds
    assert ("model-a", "model-b", "SI-SDR") in kinds and ("model-b", "TAK1", "SDR") in kinds
    assert len(tests) == 4 * (2 * 2 + 3)  # per target: 2 methods x 2 baselines, and the pair on 3 metrics
    row = tests[(tests.metric == "uSDR") & (tests.target == "drums")].iloc[0]
    a = scores[(scores.method == "model-a") & (scores.target == "drums")].sort_values("track")["uSDR"]
    b = scores[(scores.method == "model-b") & (scores.target == "drums")].sort_values("track")["uSDR"]
    from scipy.stats import wilcoxon

    assert row["p_value"] == pytest.approx(wilcoxon(a.to_numpy(), b.to_numpy()).pvalue)
    assert row["median_diff"] == pytest.approx(-1.0) and not row["better"]


def test_confidence_intervals(two_methods):
    _, rep, frames, scores = two_methods
    conf = rep["confidence"]
    assert set(conf) == {"SDR", "uSDR", "SI-SDR"}
    sdr = conf["SDR"].set_index(["method", "target"])
    assert {"model-a", "model-b", "TAK1", "IRM1"} <= set(sdr.index.get_level_values(0))
    medians = frames[(frames.method == "model-a") & (frames.target == "bass")].groupby("track")["SDR"].median()
    col = f"SDR ({SISEC})"
    assert sdr.loc[("model-a", "bass"), col] == pytest.approx(medians.median())
    assert sdr.loc[("model-a", "bass"), f"{col} low"] <= medians.median() <= sdr.loc[("model-a", "bass"), f"{col} high"]
    usdr = conf["uSDR"].set_index(["method", "target"])
    assert ("model-b", "all") in usdr.index and usdr.loc[("model-b", "all"), "n"] == 8
    assert usdr.loc[("model-b", "all"), f"uSDR ({SDX})"] == pytest.approx(
        rep["sdx_tables"]["all"].set_index("method").loc["model-b", f"uSDR ({SDX})"])


def test_figures_are_written_and_linked(two_methods):
    root, rep, *_ = two_methods
    assert set(rep["figures"]) == {"boxplot.png", "scatter.png", "worst_frames.png"}
    parser = Links()
    parser.feed((root / "rep" / "report.html").read_text())
    pngs = sorted(p.name for p in (root / "rep").glob("*.png"))
    assert pngs == sorted(rep["figures"]) and sorted(parser.linked_imgs) == pngs == sorted(parser.imgs)
    for name in pngs:
        data = (root / "rep" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    text = report.format_report(rep)
    assert "scatter.png" in text and "p_holm" in text


def test_worst_tracks_are_the_lowest_medians(two_methods):
    from sepcluster.evaluate import aggregate, figures

    _, _, frames, _ = two_methods
    medians = aggregate.track_medians(frames)
    worst = figures.worst_tracks(medians, "model-a", "vocals", k=2)
    sel = medians[(medians.method == "model-a") & (medians.target == "vocals")].sort_values("SDR")
    assert worst == list(sel["track"][:2])


def test_report_of_whole_track_metrics_only(tmp_path):
    write_results(tmp_path, "fast", 0.5, bss=False)
    rep = report.write_report(str(tmp_path), log_mlflow=False, n_resamples=200)
    assert rep["tables"] == {} and set(rep["sdx_tables"]) == {"vocals", "drums", "bass", "other", "all"}
    assert set(rep["figures"]) == {"boxplot.png"} and set(rep["confidence"]) == {"uSDR", "SI-SDR"}
    md = (tmp_path / "report" / "report.md").read_text()
    assert SISEC + ")" not in md.split("Sources of the published")[0].replace(f"{SISEC}:", "")
    assert "paired test was skipped" in md
