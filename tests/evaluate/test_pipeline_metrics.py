"""The evaluate job's metrics (bss, sdr, sisdr), both conventions, layouts, MoisesDB and bad input, on a local Ray."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

pytest.importorskip("museval")

from sepcluster import raycluster  # noqa: E402
from sepcluster.evaluate import aggregate, metrics, pipeline  # noqa: E402
from sepcluster.evaluate.engines import evaluate_track  # noqa: E402

from .conftest import synthetic_track  # noqa: E402

RATE = 8000
TARGETS = ("vocals", "drums", "bass")


@pytest.fixture(scope="module")
def ray_local():
    raycluster.init(address="local", num_cpus=2)
    yield
    raycluster.shutdown()


def _write(path, audio, rate=RATE):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, subtype="FLOAT")


def _read(path):
    return sf.read(str(path), dtype="float32", always_2d=True)[0]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """Three 3 s tracks (8 kHz stereo, 3 targets): references and estimates folders."""
    root = tmp_path_factory.mktemp("metrics")
    for i, name in enumerate(("t1", "t2", "t3")):
        refs, ests, _ = synthetic_track(3.0, nsrc=3, seed=10 + i, rate=RATE)
        for j, t in enumerate(TARGETS):
            _write(root / "refs" / name / f"{t}.wav", refs[j] * 0.2)
            _write(root / "est" / name / f"{t}.wav", ests[j] * 0.2)
    return root


def _direct(root, track, est_dir="est", targets=TARGETS):
    refs = {t: _read(root / "refs" / track / f"{t}.wav") for t in targets}
    ests = {t: _read(root / est_dir / track / f"{t}.wav") for t in targets}
    return refs, ests


def test_all_metrics_per_track_table_and_both_conventions(ray_local, catalog, capsys):
    out = catalog / "out_all"
    summary = pipeline.evaluate(str(catalog / "refs"), str(catalog / "est"), str(out), method="m", log_mlflow=False)
    assert summary["metrics"] == ["bss", "sdr", "sisdr"] and summary["n_tracks"] == 3 and summary["n_failed"] == 0
    scores = pd.read_parquet(out / "track_scores.parquet")
    assert list(scores.columns) == ["method", "track", "target", "uSDR", "SI-SDR", "SDR", "SIR", "SAR", "ISR",
                                    "n_frames", "n_valid", "error"]
    assert len(scores) == 9 and set(scores["error"]) == {""}
    medians = pd.read_parquet(out / "track_medians.parquet")
    for track in ("t1", "t2", "t3"):
        refs, ests = _direct(catalog, track)
        want = metrics.track_scores(refs, ests, track=track).set_index("target")
        got = scores[scores.track == track].set_index("target")
        np.testing.assert_allclose(got.loc[list(TARGETS), ["uSDR", "SI-SDR"]], want.loc[list(TARGETS)], atol=1e-9)
        frames = evaluate_track(refs, ests, RATE, track=track)
        for t in TARGETS:
            assert got.loc[t, "SDR"] == pytest.approx(frames[frames.target == t]["SDR"].median(), abs=1e-9)
        m = medians[medians.track == track].set_index("target")
        np.testing.assert_allclose(got.loc[list(TARGETS), "SDR"], m.loc[list(TARGETS), "SDR"])
    # the summary names both conventions: SiSEC medians of medians, SDX means (per target and "all")
    conv = summary["scores_by_convention"]
    assert set(conv) == {aggregate.SISEC, aggregate.SDX} and summary["scores"] == conv[aggregate.SISEC]
    sdx = conv[aggregate.SDX]
    assert sdx["vocals"]["uSDR"] == pytest.approx(scores[scores.target == "vocals"]["uSDR"].mean(), abs=1e-4)
    song_means = scores.groupby("track")["SI-SDR"].mean()
    assert sdx["all"]["SI-SDR"] == pytest.approx(song_means.mean(), abs=1e-4) and sdx["all"]["n_tracks"] == 3
    assert conv[aggregate.SISEC]["bass"]["SDR"] == pytest.approx(medians[medians.target == "bass"]["SDR"].median(),
                                                                 abs=1e-4)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["scores_by_convention"] == json.loads(json.dumps(conv))
    assert summary["worker_peak_rss_mb"] > 50 and summary["worker_peak_rss_mb_by_pid"]
    text = pipeline.format_summary(summary)
    assert "SiSEC median (BSS Eval v4" in text and "SDX mean (whole-track" in text
    assert (out / "museval" / "m" / "test" / "t1.json").exists()
    meta = __import__("pyarrow").parquet.read_schema(out / "track_scores.parquet").metadata
    assert b"1e-7" in meta[b"sepcluster.uSDR"] and meta[b"sepcluster.metrics"] == b"bss,sdr,sisdr"


def test_sdr_only_skips_bss_eval(ray_local, catalog, capsys):
    from sepcluster.cli import main

    out = catalog / "out_sdr"
    rc = main(["evaluate", "--references", str(catalog / "refs"), "--estimates", str(catalog / "est"),
               "--out", str(out), "--metrics", "sdr,sisdr", "--no-mlflow", "--method", "fast"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "evaluated 3 track(s) (0 failed, 0 missing target(s)); metrics: sdr, sisdr" in printed
    assert "SiSEC median" not in printed and "SDX mean" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_seconds"] == 0 and summary["metric_seconds"] > 0 and summary["n_frames"] == 0
    assert summary["scores"] == {} and set(summary["scores_by_convention"]) == {aggregate.SDX}
    assert pd.read_parquet(out / "frames.parquet").empty and pd.read_parquet(out / "track_medians.parquet").empty
    assert not (out / "museval").exists()
    scores = pd.read_parquet(out / "track_scores.parquet")
    assert list(scores.columns) == ["method", "track", "target", "uSDR", "SI-SDR", "error"]
    full = pd.read_parquet(catalog / "out_all" / "track_scores.parquet") if (catalog / "out_all").exists() else None
    if full is not None:  # the same numbers as with BSS Eval
        np.testing.assert_allclose(scores["uSDR"], full["uSDR"], atol=1e-12)
    only_si = pipeline.evaluate(str(catalog / "refs"), str(catalog / "est"), str(catalog / "out_si"),
                                metrics=["sisdr"], log_mlflow=False)
    assert list(pd.read_parquet(catalog / "out_si" / "track_scores.parquet").columns) == [
        "method", "track", "target", "SI-SDR", "error"]
    assert set(only_si["scores_by_convention"][aggregate.SDX]["all"]) == {"SI-SDR", "n_tracks"}
    assert main(["evaluate", "--references", str(catalog / "refs"), "--estimates", str(catalog / "est"),
                 "--out", str(out), "--metrics", "sdr,pesq", "--no-mlflow"]) == 2
    assert "pesq" in capsys.readouterr().err


def test_bad_inputs_are_error_rows_and_warnings(ray_local, catalog, tmp_path, capsys):
    """Another rate (resampled, warned), mono (warned), three channels (error row), a missing target (error
    row), a silent reference (NaN, warned): the rest of the catalog is scored."""
    from sepcluster.cli import main

    refs_dir, est = tmp_path / "refs", tmp_path / "est"
    for k, name in enumerate(("rate", "mono", "wide", "missing", "silent", "fine")):
        refs, ests, _ = synthetic_track(2.0, nsrc=3, seed=20 + k, rate=RATE)
        for j, t in enumerate(TARGETS):
            ref = np.zeros_like(refs[j]) if (name == "silent" and t == "bass") else refs[j] * 0.2
            _write(refs_dir / name / f"{t}.wav", ref)
            e = ests[j] * 0.2
            if name == "missing" and t == "drums":
                continue
            if name == "rate" and t == "vocals":
                from sepcluster.audio import resample

                _write(est / name / f"{t}.wav", resample(e.astype(np.float32), RATE, 16000), rate=16000)
                continue
            if name == "mono" and t == "bass":
                e = e.mean(axis=1, keepdims=True)
            if name == "wide" and t == "drums":
                e = np.concatenate([e, e[:, :1]], axis=1)
            _write(est / name / f"{t}.wav", e)
    out = tmp_path / "out"
    rc = main(["evaluate", "--references", str(refs_dir), "--estimates", str(est), "--out", str(out), "--no-mlflow"])
    assert rc == 1
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_tracks"] == 5 and summary["n_failed"] == 1 and list(summary["failures"]) == ["wide"]
    assert "track 'wide': channel counts differ" in summary["failures"]["wide"]
    assert summary["n_missing_targets"] == 1 and summary["missing_targets"] == {"missing": ["drums"]}
    assert "  FAILED wide: track 'wide': channel counts differ" in printed
    assert "  MISSING track 'missing': no estimate for drums" in printed
    assert "  WARNING track 'rate': estimate 'vocals' is 16000 Hz, the references 8000 Hz; resampled" in printed
    assert "  WARNING track 'mono': mono estimate 'bass' repeated on 2 channels" in printed
    assert "  WARNING track 'silent': reference 'bass' is silent (sum of squares 0); uSDR and SI-SDR are NaN" \
        in printed
    scores = pd.read_parquet(out / "track_scores.parquet").set_index(["track", "target"])
    assert scores.loc[("wide", ""), "error"].startswith("track 'wide': channel counts differ")
    assert scores.loc[("missing", "drums"), "error"] == "track 'missing': no estimate file for target 'drums'"
    assert scores.loc[("missing", "vocals"), "error"] == "" and np.isfinite(scores.loc[("missing", "vocals"), "uSDR"])
    silent = scores.loc[("silent", "bass")]
    assert np.isnan(silent["uSDR"]) and np.isnan(silent["SI-SDR"]) and np.isnan(silent["SDR"])
    numeric = scores[["uSDR", "SI-SDR", "SDR", "SIR", "SAR", "ISR"]].to_numpy(dtype=float)
    assert not np.isinf(numeric).any()
    # the resampled estimate scores like the original one (soxr there and back: close, not equal)
    r = _read(refs_dir / "rate" / "vocals.wav")
    assert scores.loc[("rate", "vocals"), "uSDR"] > 5 and np.isfinite(r).all()
    ok = scores[scores["error"] == ""]
    assert len(ok) == 5 * 3 - 1  # 5 scored tracks x 3 targets, less the missing one
    assert summary["scores_by_convention"][aggregate.SDX]["all"]["n_tracks"] == 5


def test_estimates_layouts_and_single_track_folders(ray_local, catalog, tmp_path):
    import shutil

    musdb_layout = tmp_path / "est_musdb" / "test"
    shutil.copytree(catalog / "est", musdb_layout)
    a = pipeline.evaluate(str(catalog / "refs"), str(tmp_path / "est_musdb"), str(tmp_path / "o1"),
                          metrics=["sdr"], log_mlflow=False)
    assert a["n_tracks"] == 3 and a["n_missing_estimates"] == 0
    # one track folder as references and as estimates
    b = pipeline.evaluate(str(catalog / "refs" / "t2"), str(catalog / "est" / "t2"), str(tmp_path / "o2"),
                          metrics=["sdr", "bss"], log_mlflow=False)
    assert b["n_tracks"] == 1 and b["n_frames"] == 3 * 3
    one = pd.read_parquet(tmp_path / "o2" / "track_scores.parquet")
    full = pd.read_parquet(tmp_path / "o1" / "track_scores.parquet")
    np.testing.assert_allclose(one["uSDR"], full[full.track == "t2"]["uSDR"], atol=1e-12)
    # one track folder as estimates against the whole tree: the others have no estimates
    c = pipeline.evaluate(str(catalog / "refs"), str(musdb_layout / "t3"), str(tmp_path / "o3"), metrics=["sisdr"],
                          log_mlflow=False)
    assert c["n_tracks"] == 1 and c["n_missing_estimates"] == 2


def test_moisesdb_references_with_a_missing_stem_file(ray_local, tmp_path):
    from tests.datasets.moises import PROVIDER, TRACK_A, TRACK_B, TRACK_C, expected_targets, make_moisesdb

    written = make_moisesdb(tmp_path / "moisesdb", seconds=2.0)
    rng = np.random.default_rng(5)
    est = tmp_path / "est"
    wanted = {}
    for track in (TRACK_A, TRACK_B, TRACK_C):
        refs = expected_targets(written[track])
        wanted[track] = refs
        for t, r in refs.items():
            _write(est / track / f"{t}.wav", 0.8 * r + 0.01 * rng.standard_normal(r.shape))
    drums = next((tmp_path / "moisesdb" / PROVIDER / TRACK_B / "drums").glob("*.wav"))
    drums.unlink()
    summary = pipeline.evaluate(str(tmp_path / "moisesdb"), str(est), str(tmp_path / "out"), log_mlflow=False,
                                metrics=["sdr", "sisdr"])
    assert summary["n_tracks"] == 2 and list(summary["failures"]) == [TRACK_B]
    assert f"the drums source file {drums}" in summary["failures"][TRACK_B] and "is missing" in \
        summary["failures"][TRACK_B]
    scores = pd.read_parquet(tmp_path / "out" / "track_scores.parquet")
    for track in (TRACK_A, TRACK_C):
        got = scores[scores.track == track].set_index("target")
        refs = {t: a.astype(np.float32) for t, a in wanted[track].items()}
        ests = {t: _read(est / track / f"{t}.wav") for t in refs}
        want = metrics.track_scores(refs, ests, track=track).set_index("target")
        np.testing.assert_allclose(got.loc[want.index, "uSDR"], want["uSDR"], atol=1e-4)
    # a YAML label map: vocals and everything else
    spec = tmp_path / "map.yaml"
    spec.write_text("vocals: [vocals]\nrest: ['*']\n")
    for track in (TRACK_A, TRACK_C):
        r = wanted[track]
        _write(est / track / "rest.wav", r["drums"] + r["bass"] + r["other"])
    two = pipeline.evaluate(str(tmp_path / "moisesdb"), str(est), str(tmp_path / "out2"), log_mlflow=False,
                            metrics=["sdr"], label_map=str(spec), targets=["vocals", "rest"])
    assert two["n_tracks"] == 2
    rest = pd.read_parquet(tmp_path / "out2" / "track_scores.parquet").query("target == 'rest'")
    assert (rest["uSDR"] > 30).all()  # the estimate is the sum of the same 16-bit sources
