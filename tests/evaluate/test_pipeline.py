"""The evaluate job end to end on a local Ray: inputs, Parquet + museval JSON round trip, MLflow, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import soundfile as sf

museval = pytest.importorskip("museval")

from sepcluster import raycluster, storage  # noqa: E402
from sepcluster.evaluate import pipeline  # noqa: E402
from sepcluster.evaluate.engines import evaluate_track  # noqa: E402

from .conftest import MUSDB_SAMPLE, TRACK, load_sample_stems, make_estimates  # noqa: E402

RATE = 44100
METRICS = ["SDR", "SIR", "SAR", "ISR"]


@pytest.fixture(scope="module")
def ray_local():
    raycluster.init(address="local", num_cpus=2)
    yield
    raycluster.shutdown()


@pytest.fixture(scope="module")
def trees(tmp_path_factory, musdb_sample):
    """Two 3 s tracks of the real sample as a stem-folder tree, and their estimates folder."""
    root = tmp_path_factory.mktemp("evaluate")
    refs_dir, est_dir = root / "refs", root / "est"
    data = {}
    for name, offset in (("Track A", 0.0), ("Track B", 3.0)):
        stems = load_sample_stems(3.0, offset=offset)
        ests = make_estimates(stems, seed=int(offset))
        for t in stems:
            (refs_dir / name).mkdir(parents=True, exist_ok=True)
            (est_dir / name).mkdir(parents=True, exist_ok=True)
            sf.write(str(refs_dir / name / f"{t}.wav"), stems[t], RATE, subtype="FLOAT")
            sf.write(str(est_dir / name / f"{t}.wav"), ests[t], RATE, subtype="FLOAT")
        sf.write(str(refs_dir / name / "mixture.wav"), sum(stems.values()), RATE, subtype="FLOAT")
        data[name] = (stems, ests)
    return root, refs_dir, est_dir, data


def _expected(stems, ests) -> pd.DataFrame:
    read = {t: a.astype(np.float32) for t, a in stems.items()}
    est = {t: a.astype(np.float32) for t, a in ests.items()}
    return evaluate_track(read, est, RATE, engine="torch")


def test_stem_folders_parquet_and_museval_json(ray_local, trees, sepcluster_home):
    root, refs_dir, est_dir, data = trees
    out = root / "out1"
    summary = pipeline.evaluate(str(refs_dir), str(est_dir), str(out), engine="torch", method="mine")
    assert summary["n_tracks"] == 2 and summary["n_failed"] == 0 and summary["n_targets"] == 4
    assert summary["seconds_per_track_minute"] > 0
    frames = pd.read_parquet(out / "frames.parquet")
    assert list(frames.columns) == ["method", "track", "target", "frame", "time", "duration", *METRICS]
    assert len(frames) == 2 * 4 * 3 and set(frames["method"]) == {"mine"}
    for name, (stems, ests) in data.items():
        got = frames[frames.track == name].reset_index(drop=True)
        want = _expected(stems, ests)
        for m in METRICS:
            np.testing.assert_allclose(got[m], want[m], atol=1e-9)
    # museval reads our JSON: MethodStore and EvalStore give the same medians as ours
    methods = museval.MethodStore()
    methods.add_eval_dir(str(out / "museval" / "mine"))
    assert set(methods.df["method"]) == {"mine"} and set(methods.df["track"]) == set(data)
    agg = methods.agg_frames_tracks_scores()
    for target, vals in summary["scores"].items():
        for m in METRICS:
            assert agg[("mine", target, m)] == pytest.approx(vals[m], abs=1e-3)
    store = museval.EvalStore()
    store.add_eval_dir(str(out / "museval" / "mine"))
    assert len(store.df) == len(frames) * 4
    track_json = json.loads((out / "museval" / "mine" / "test" / "Track A.json").read_text())
    assert [t["name"] for t in track_json["targets"]] == ["vocals", "drums", "bass", "other"]
    # MLflow run with counts and medians
    import mlflow

    from sepcluster import tracking

    client = mlflow.tracking.MlflowClient(tracking.tracking_uri())
    exp = client.get_experiment_by_name("sepcluster-evaluate")
    run = client.search_runs([exp.experiment_id])[0]
    assert run.data.params["engine"] == "torch" and run.data.metrics["n_tracks"] == 2
    assert run.data.metrics["vocals.SDR"] == pytest.approx(summary["scores"]["vocals"]["SDR"])


def test_catalog_estimates_and_failures(ray_local, trees):
    root, refs_dir, est_dir, data = trees
    rows = []
    for name in data:
        for t in ("vocals", "drums", "bass", "other"):
            rows.append({"track": name, "target": t, "output_uri": f"../est/{name}/{t}.wav", "status": "ok"})
    rows.append({"track": "Track A", "target": "vocals", "output_uri": "nowhere.wav", "status": "failed"})
    (root / "catalog").mkdir(exist_ok=True)
    storage.write_parquet(pa.Table.from_pylist(rows), str(root / "catalog" / "catalog.parquet"))
    out = root / "out2"
    summary = pipeline.evaluate(str(refs_dir), str(root / "catalog" / "catalog.parquet"), str(out),
                                targets=["vocals", "bass"], log_mlflow=False, write_json=False)
    assert summary["n_skipped_catalog_rows"] == 1 and summary["n_tracks"] == 2
    frames = pd.read_parquet(out / "frames.parquet")
    assert sorted(frames["target"].unique()) == ["bass", "vocals"] and len(frames) == 2 * 2 * 3
    assert not (out / "museval").exists()

    # a broken estimate fails its track only
    bad = root / "est_bad"
    for name in data:
        (bad / name).mkdir(parents=True, exist_ok=True)
        for t in ("vocals", "drums"):
            (bad / name / f"{t}.wav").write_bytes((est_dir / name / f"{t}.wav").read_bytes())
    (bad / "Track B" / "drums.wav").write_bytes(b"not audio")
    summary = pipeline.evaluate(str(refs_dir), str(bad), str(root / "out3"), log_mlflow=False)
    assert summary["n_tracks"] == 1 and summary["n_failed"] == 1
    assert "Track B" in summary["failures"] and "drums.wav" in summary["failures"]["Track B"]
    assert json.loads((root / "out3" / "failures.json").read_text()).keys() == {"Track B"}


def test_musdb_root_with_accompaniment_and_museval_engine(ray_local, trees, musdb_sample):
    """The sample as a MUSDB18-HQ root (train subset): vocals/accompaniment scored as museval does."""
    root, *_ = trees
    stems = load_sample_stems()
    est = make_estimates({"vocals": stems["vocals"], "accompaniment": stems["drums"] + stems["bass"] + stems["other"]},
                         seed=9)
    est_dir = root / "est_musdb" / "train" / TRACK  # museval's eval_mus_dir layout
    est_dir.mkdir(parents=True)
    for t, a in est.items():
        sf.write(str(est_dir / f"{t}.wav"), a, RATE, subtype="FLOAT")
    outs = {}
    for engine in ("torch", "museval"):
        out = root / f"out_musdb_{engine}"
        summary = pipeline.evaluate(str(MUSDB_SAMPLE), str(root / "est_musdb"), str(out), engine=engine,
                                    subset="train", is_wav=True, log_mlflow=False)
        assert summary["n_tracks"] == 1 and summary["subset"] == "train"
        outs[engine] = pd.read_parquet(out / "frames.parquet")
        assert (out / "museval" / "sepcluster" / "train" / f"{TRACK}.json").exists()
    a, b = outs["torch"], outs["museval"]
    assert sorted(a["target"].unique()) == ["accompaniment", "vocals"] and len(a) == 2 * 6
    for m in METRICS:
        np.testing.assert_allclose(a[m], b[m], atol=0.01)


def test_inline_references_hook(ray_local, trees):
    root, refs_dir, est_dir, data = trees
    stems, ests = data["Track A"]
    summary = pipeline.evaluate([("Track A", stems, RATE)], str(est_dir), str(root / "out_inline"),
                                log_mlflow=False, write_json=False)
    assert summary["n_tracks"] == 1 and summary["n_missing_estimates"] == 0
    assert summary["n_orphan_estimates"] == 1  # Track B has estimates but no reference here


def test_cli_evaluate_and_report(ray_local, trees, sepcluster_home, capsys):
    from sepcluster.cli import main

    root, refs_dir, est_dir, _ = trees
    out = root / "out_cli"
    rc = main(["evaluate", "--references", str(refs_dir), "--estimates", str(est_dir), "--out", str(out),
               "--targets", "vocals,drums", "--no-mlflow"])
    assert rc == 0
    assert "evaluated 2 track(s) with the torch engine" in capsys.readouterr().out
    rc = main(["report", "--results", str(out), "--methods", "TAK1", "IRM1", "--no-mlflow"])
    assert rc == 0 and (out / "report" / "report.md").exists()
    assert main(["evaluate", "--references", str(refs_dir), "--out", str(out), "--no-mlflow"]) == 2
    assert "--estimates" in capsys.readouterr().err
    assert main(["evaluate", "--references", str(root / "nothing"), "--estimates", str(est_dir),
                 "--out", str(out), "--no-mlflow"]) == 2


def test_separate_with_bundle_equals_separate_then_evaluate(ray_local, trees, tmp_path):
    """--separate-with: the mixture of each track separated in the scoring task (no stems written)
    scores the same as separating it first and evaluating the written stems."""
    from sepcluster.cli import main
    from sepcluster.models import load_bundle
    from tests.separate.conftest import make_bundle

    root, refs_dir, _est_dir, data = trees
    bundle = make_bundle(str(tmp_path / "bundle"), targets=("vocals", "bass"))
    out = tmp_path / "out_sepwith"
    rc = main(["evaluate", "--references", str(refs_dir), "--separate-with", bundle, "--out", str(out),
               "--no-mlflow", "--method", "umx-random"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_tracks"] == 2 and summary["n_failed"] == 0 and summary["separate_with"] == bundle
    assert summary["separate_seconds"] > 0 and set(summary["scores"]) == {"vocals", "bass"}
    assert not list(out.rglob("*.wav"))  # nothing separated was written
    frames = pd.read_parquet(out / "frames.parquet")

    # the same separation done apart (the track's mixture.wav, as the pipeline reads it), then scored,
    # with one torch thread as in the one-CPU Ray task (the LSTM's sums differ in the last bits otherwise)
    import torch

    model = load_bundle(bundle)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _compare_with_separate_track(model, data, refs_dir, frames)
    finally:
        torch.set_num_threads(threads)

    # bad combinations are refused before any work, naming the flag
    assert main(["evaluate", "--references", str(refs_dir), "--estimates", str(_est_dir), "--separate-with", bundle,
                 "--out", str(tmp_path / "x")]) == 2
    assert main(["evaluate", "--references", str(refs_dir), "--separate-with", str(tmp_path / "no-bundle"),
                 "--out", str(tmp_path / "y"), "--no-mlflow"]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _compare_with_separate_track(model, data, refs_dir, frames):
    from sepcluster.separate import separate_track

    for track, (stems, _) in data.items():
        mixture = sf.read(str(refs_dir / track / "mixture.wav"), dtype="float32", always_2d=True)[0]
        est = separate_track(model, mixture, RATE, targets=["vocals", "bass"])
        refs = {t: a.astype(np.float32) for t, a in stems.items()}
        expected = evaluate_track(refs, est, RATE, engine="torch")
        got = frames[frames["track"] == track].sort_values(["target", "frame"]).reset_index(drop=True)
        expected = expected.sort_values(["target", "frame"]).reset_index(drop=True)
        assert list(got["target"]) == list(expected["target"])
        for m in METRICS:
            np.testing.assert_allclose(got[m].to_numpy(), expected[m].to_numpy(), atol=1e-6, equal_nan=True)



def test_separate_with_a_demucs_file_scores_apply_model_output(ray_local, trees, tmp_path):
    """--separate-with takes every model ``separate --model`` takes: a demucs ``.th`` scores as demucs'
    own ``apply_model`` output (split, overlap 0.25) scored with the same metrics."""
    from sepcluster.cli import main
    from tests.models.foreign_files import save_demucs
    from tests.separate.waveform_cases import apply_model, demucs_reference, small_htdemucs

    root, refs_dir, _est_dir, data = trees
    th = save_demucs(small_htdemucs(), tmp_path / "htdemucs.th")
    out = tmp_path / "out_demucs"
    assert main(["evaluate", "--references", str(refs_dir), "--separate-with", str(th), "--out", str(out),
                 "--no-mlflow", "--targets", "vocals,bass"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_tracks"] == 2 and summary["n_failed"] == 0 and set(summary["scores"]) == {"vocals", "bass"}
    frames = pd.read_parquet(out / "frames.parquet")
    reference = demucs_reference(th)
    for track, (stems, _) in data.items():
        mixture = sf.read(str(refs_dir / track / "mixture.wav"), dtype="float32", always_2d=True)[0]
        est = apply_model(reference, mixture)  # (sources, samples, channels) in the model's order
        ests = {t: est[reference.sources.index(t)] for t in ("vocals", "bass")}
        expected = evaluate_track({t: stems[t].astype(np.float32) for t in ests}, ests, RATE, engine="torch")
        expected = expected.sort_values(["target", "frame"]).reset_index(drop=True)
        got = frames[frames["track"] == track].sort_values(["target", "frame"]).reset_index(drop=True)
        assert list(got["target"]) == list(expected["target"]) and len(got) > 0
        for m in METRICS:  # the chunk batches differ from apply_model's by float rounding (~1e-7)
            np.testing.assert_allclose(got[m].to_numpy(), expected[m].to_numpy(), atol=1e-3, equal_nan=True)


def test_separate_with_precision_bf16_moves_scores_by_rounding_only(ray_local, trees, tmp_path, capsys):
    """``--separate-with MODEL --precision bf16`` autocasts the demucs model on the CPU: every frame's
    scores stay within rounding of the fp32 run's but are not all equal to them, and the summary says
    which precision scored; fp16 on the CPU and a precision without a model are refused naming it (exit 2)."""
    from sepcluster.cli import main
    from tests.models.foreign_files import save_demucs
    from tests.separate.waveform_cases import small_htdemucs

    _root, refs_dir, est_dir, _data = trees
    th = save_demucs(small_htdemucs(), tmp_path / "htdemucs.th")
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"out_{precision}"
        assert main(["evaluate", "--references", str(refs_dir), "--separate-with", str(th), "--out", str(out),
                     "--no-mlflow", "--targets", "vocals", "--precision", precision, "--metrics", "bss,sdr"]) == 0
        assert json.loads((out / "summary.json").read_text())["precision"] == precision
        runs[precision] = (pd.read_parquet(out / "frames.parquet").sort_values(["track", "frame"]),
                           pd.read_parquet(out / "track_scores.parquet").sort_values("track"))
    assert "(bf16 autocast)" in capsys.readouterr().out
    (frames32, scores32), (frames16, scores16) = runs["fp32"], runs["bf16"]
    assert len(frames32) == len(frames16) > 0
    diff = np.abs(frames16["SDR"].to_numpy() - frames32["SDR"].to_numpy())
    assert 0 < np.nanmax(diff) < 0.5, np.nanmax(diff)
    assert 0 < np.abs(scores16["uSDR"].to_numpy() - scores32["uSDR"].to_numpy()).max() < 0.1
    assert main(["evaluate", "--references", str(refs_dir), "--separate-with", str(th), "--out",
                 str(tmp_path / "fp16"), "--no-mlflow", "--precision", "fp16"]) == 2
    assert "fp16 autocast runs on CUDA only" in capsys.readouterr().err
    assert main(["evaluate", "--references", str(refs_dir), "--estimates", str(est_dir), "--out",
                 str(tmp_path / "est"), "--no-mlflow", "--precision", "bf16"]) == 2
    assert "applies to a model separated in memory" in capsys.readouterr().err
