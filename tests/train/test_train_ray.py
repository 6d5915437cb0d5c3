"""The train job on a real local Ray (2 CPUs): DDP, worker failure, driver resume, MLflow, bad input.

Kept small for 2 cores: a 16-unit one-layer UMX on 16 kHz audio with a 256-point STFT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from sepcluster.errors import ConfigError, DataError
from tests.conftest import checkpoint_metas
from tests.train.conftest import RATE, TINY, mlflow_client

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _tree(folder: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def ddp_run(stem_library, heldout_library, ray_local, tmp_path_factory):
    """One 2-worker DDP run on the stem library, with a held-out library (shared by tests)."""
    from sepcluster.train import train

    base = tmp_path_factory.mktemp("ddp")
    result = train(str(stem_library), "vocals", dict(TINY), num_workers=2, run_name="ddp",
                   storage_path=str(base / "runs"), out=str(base / "bundle"), heldout=str(heldout_library))
    return result, base


def test_ddp_two_workers_loss_falls(ddp_run, stem_library):
    from sepcluster.models import load_bundle

    result, base = ddp_run
    r = result.targets["vocals"]
    assert r.finished and r.epoch == TINY["epochs"]
    assert len(r.attempts) == 1 and r.attempts[0]["world_size"] == 2 and len(set(r.attempts[0]["pids"])) == 2
    assert r.attempts[0]["backend"] == "gloo" and r.attempts[0]["device"] == "cpu"  # nccl on GPUs
    losses = [h["valid_loss"] for h in r.history]
    assert [h["epoch"] for h in r.history] == list(range(1, TINY["epochs"] + 1))
    assert losses[-1] < losses[0], losses
    assert all(h["samples"] == TINY["samples_per_epoch"] for h in r.history)  # both ranks' batches counted
    bundle = load_bundle(result.bundle)
    assert bundle.targets == ["vocals"]
    assert bundle.meta.sample_rate == RATE and bundle.meta.n_fft == TINY["n_fft"] and bundle.meta.n_hop == TINY["n_hop"]
    assert bundle.meta.training_data == str(stem_library) and bundle.meta.hidden_size == TINY["hidden_size"]
    assert bundle.meta.extra["run_name"] == "ddp"
    # the bundle holds the best epoch's weights
    assert bundle.meta.extra["best_epochs"]["vocals"] == r.best_epoch


def test_mlflow_parent_and_child_runs_hold_metrics_and_model(ddp_run):
    result, _ = ddp_run
    client = mlflow_client()
    parent = client.get_run(result.mlflow_run_id)
    assert parent.data.params["targets"] == "vocals" and parent.data.params["config.hidden_size"] == "16"
    assert "heldout.vocals.sisdr_improvement" in parent.data.metrics
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.mlflow_run_id}'")
    assert [c.data.tags["mlflow.runName"] for c in children] == ["vocals"]
    child = children[0].info.run_id
    for key in ("train_loss", "valid_loss", "valid_sisdr", "valid_sisdr_improvement", "lr", "epoch_time",
                "samples_per_s"):
        steps = [m.step for m in client.get_metric_history(child, key)]
        assert steps == list(range(1, TINY["epochs"] + 1)), key
    assert [a.path for a in client.list_artifacts(child, "model")] == ["model/vocals.pth"]
    assert [a.path for a in client.list_artifacts(child, "seed_stream")] == ["seed_stream/attempt1.json"]
    names = {a.path for a in client.list_artifacts(result.mlflow_run_id)}
    assert {"bundle.json", "heldout.json"} <= names
    heldout = result.heldout["targets"]["vocals"]
    assert heldout["improvement"] == pytest.approx(heldout["sisdr"] - heldout["mix_sisdr"])


def test_other_architecture_checkpoint_is_refused_and_nothing_overwritten(ddp_run, stem_library):
    from sepcluster.train import train

    result, base = ddp_run
    before = _tree(base)
    with pytest.raises(ConfigError, match="different architecture") as err:
        train(str(stem_library), "vocals", dict(TINY, hidden_size=24), num_workers=2, run_name="ddp",
              storage_path=str(base / "runs"), out=str(base / "bundle"))
    assert err.value.field == "hidden_size"
    with pytest.raises(ConfigError, match="n_fft"):
        train(str(stem_library), "vocals", dict(TINY, n_fft=512), run_name="ddp", storage_path=str(base / "runs"),
              out=str(base / "bundle"))
    assert _tree(base) == before


def test_bad_input_fails_before_workers_start(stem_library, tmp_path, ray_local):
    from sepcluster.cli import main
    from sepcluster.train import train

    runs = tmp_path / "runs"
    with pytest.raises(DataError, match="not found"):
        train(str(tmp_path / "nope"), "vocals", dict(TINY), storage_path=str(runs))
    with pytest.raises(ConfigError) as err:
        train(str(stem_library), ["vocals", "karaoke"], dict(TINY), storage_path=str(runs))
    assert err.value.field == "targets"
    with pytest.raises(ConfigError) as err:
        train(str(stem_library), "vocals", dict(TINY, lr=-0.1), storage_path=str(runs))
    assert err.value.field == "lr"
    with pytest.raises(ConfigError) as err:
        train(str(stem_library), "vocals", dict(TINY), num_workers=3, storage_path=str(runs))
    assert err.value.field == "num_workers"
    empty = tmp_path / "empty-dataset"
    empty.mkdir()
    (empty / "_dataset.json").write_text(json.dumps({"base_seed": 0, "num_mixtures": 4, "sample_rate": RATE,
                                                     "channels": 2, "labels": ["vocals"]}))
    with pytest.raises(DataError, match="empty"):
        train(str(empty), "vocals", dict(TINY), storage_path=str(runs))
    assert not runs.exists()
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"epochs": 0}))
    assert main(["train", "--config", str(cfg), "--data", str(stem_library), "--targets", "vocals",
                 "--storage-path", str(runs)]) == 2
    assert not runs.exists()


def test_killed_worker_restarts_from_checkpoint_onthefly(stem_library, ray_local, tmp_path):
    """On-the-fly data, 2 workers: SIGKILL rank 1 after epoch 2; the run ends from the checkpoint."""
    from sepcluster.train import train

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "duration": 2.0, "sample_rate": RATE, "channels": 2, "labels": ["vocals", "drums", "bass", "other"],
        "coherent_probability": 0.5, "quick_pitch_time": True,
        "event": {"source_time": ["uniform", 0, 2], "event_time": ["const", 0], "event_duration": ["const", 2.0],
                  "snr": ["uniform", -5, 5], "pitch_shift": None, "time_stretch": None}}))
    runs = tmp_path / "runs"
    killed: dict = {}

    def killer():
        deadline = time.time() + 400
        while time.time() < deadline:
            metas = [m for m in checkpoint_metas(runs, "kill-vocals") if m["epoch"] >= 2]
            if metas:
                pid = metas[0]["attempts"][-1]["pids"][1]
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, after_epoch=metas[0]["epoch"])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    epochs = 6
    result = train(str(recipe), "vocals", dict(TINY, epochs=epochs, stems=str(stem_library), samples_per_epoch=16,
                                               valid_size=4),
                   num_workers=2, run_name="kill", storage_path=str(runs), out=str(tmp_path / "bundle"))
    thread.join(timeout=10)
    assert killed, "no checkpoint appeared to trigger the kill"
    r = result.targets["vocals"]
    assert r.finished and r.epoch == epochs
    assert len(r.attempts) == 2, r.attempts
    assert 2 <= r.attempts[1]["start_epoch"] <= killed["after_epoch"] + 1
    assert killed["pid"] in r.attempts[0]["pids"] and killed["pid"] not in r.attempts[1]["pids"]
    assert [h["epoch"] for h in r.history] == list(range(1, epochs + 1))  # at most one epoch redone, none lost
    assert result.data["recipe_hash"] and result.data["kind"] == "onthefly"
    # on-the-fly seed streams: logged per rank, disjoint across ranks
    client = mlflow_client()
    path = client.download_artifacts(r.mlflow_run_id, "seed_stream/attempt1.json", str(tmp_path))
    ranks = json.loads(Path(path).read_text())["ranks"]
    assert [x["rank"] for x in ranks] == [0, 1]
    first0, first1 = set(ranks[0]["first_seeds"]), set(ranks[1]["first_seeds"])
    assert first0 and first1 and not first0 & first1
    assert not set(ranks[0]["valid_seeds"]) & set(ranks[1]["valid_seeds"])


@pytest.fixture(scope="module")
def parquet_dataset(stem_library, ray_local, tmp_path_factory) -> Path:
    from sepcluster.generate.runner import generate

    out = tmp_path_factory.mktemp("train-ds") / "ds"
    recipe = {"duration": 2.0, "sample_rate": RATE, "channels": 2, "labels": ["vocals", "drums", "bass", "other"],
              "coherent_probability": 1.0, "quick_pitch_time": True,
              "event": {"source_time": ["uniform", 0, 2], "event_time": ["const", 0],
                        "event_duration": ["const", 2.0], "snr": ["uniform", -5, 5], "pitch_shift": None,
                        "time_stretch": None}}
    generate(recipe, str(stem_library), str(out), num_mixtures=20, shard_size=10, progress=False)
    return out


def test_interrupted_driver_resumes_at_next_epoch_parquet(parquet_dataset, ray_local, tmp_path):
    """``sepcluster train`` on Parquet data, interrupted (SIGINT) after epoch 2, rerun with the same name."""
    import ray

    from sepcluster.train.runner import latest_checkpoint

    runs = tmp_path / "runs"
    flags = []
    for key, value in TINY.items():
        if key not in ("epochs", "samples_per_epoch"):
            flags += [f"--{key.replace('_', '-')}", str(value)]
    cmd = [sys.executable, "-m", "sepcluster.cli", "train", "--data", str(parquet_dataset), "--targets", "vocals",
           "--num-workers", "1", "--run-name", "resume", "--storage-path", str(runs), "--out", str(tmp_path / "b"),
           "--address", ray.get_runtime_context().gcs_address, *flags]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd + ["--epochs", "500"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if any(m["epoch"] >= 2 for m in checkpoint_metas(runs, "resume-vocals")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    found = latest_checkpoint(str(runs), "resume-vocals")
    assert found is not None
    meta = found["meta"]
    assert not meta["finished"]
    done = meta["epoch"]
    rerun = subprocess.run(cmd + ["--epochs", str(done + 2)], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=400)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "resume" in rerun.stdout
    metas = checkpoint_metas(runs, "resume-vocals")
    last = metas[-1]
    assert last["finished"] and last["epoch"] == done + 2
    starts = [a["start_epoch"] for a in last["attempts"]]
    assert starts == [1, done + 1], starts
    # the rerun continued the same MLflow runs: one parent for the run name, one vocals child
    # holding the epochs of both attempts
    import mlflow

    from sepcluster import tracking

    exp = tracking.experiment_id("train")
    parents = mlflow.search_runs([exp], filter_string="tags.`sepcluster.run_name` = 'resume'", output_format="list")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [p.info for p in parents]
    assert parents[0].data.tags["sepcluster.resumed.config.epochs"] == str(done + 2)
    children = mlflow.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'",
                                  output_format="list")
    assert [c.data.tags["sepcluster.target"] for c in children] == ["vocals"]
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(children[0].info.run_id, "train_loss")]
    assert sorted(set(steps)) == list(range(1, done + 3)), steps


def test_concurrent_units_caps_the_trainers_at_a_time(stem_library, ray_local, tmp_path):
    """Two targets with concurrent_units=1 train one after the other (the second trainer's workers start
    after the first's last epoch), both complete; a bad cap is refused naming the field."""
    from sepcluster.train import train

    res = train(str(stem_library), ["vocals", "drums"], dict(TINY, epochs=2), concurrent_units=1, run_name="cap",
                storage_path=str(tmp_path / "runs"), out=str(tmp_path / "bundle"))
    spans = sorted((r.attempts[0]["time"], r.attempts[-1]["ended"][-1][1]) for r in res.targets.values())
    assert all(r.finished and r.epoch == 2 for r in res.targets.values())
    assert spans[0][1] < spans[1][0], spans
    with pytest.raises(ConfigError) as err:
        train(str(stem_library), "vocals", dict(TINY), concurrent_units=-1, storage_path=str(tmp_path / "runs"))
    assert err.value.field == "concurrent_units"

def test_an_autoscaling_cluster_takes_what_its_autoscaler_may_bring_up(ray_local):
    """On an autoscaling cluster (its autoscaler's config in the GCS) a GPU run passes the resource check
    with no GPU node up yet (its pending worker groups ask for nodes); without it the same run is
    refused, naming the field."""
    from sepcluster.train.config import TrainConfig
    from sepcluster.train.runner import _check_resources
    from tests.conftest import fake_autoscaler

    config = TrainConfig.from_dict(dict(TINY))
    with pytest.raises(ConfigError, match="has 0 GPU") as err:
        _check_resources(4, True, config)
    assert err.value.field == "gpus"
    fake_autoscaler([({"CPU": 8, "GPU": 1}, 4)])
    try:
        _check_resources(4, True, config)
        with pytest.raises(ConfigError, match="can grow to 4 GPU"):
            _check_resources(5, True, config)
    finally:
        fake_autoscaler(None)
