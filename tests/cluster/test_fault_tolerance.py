"""Losing a worker node of the 2-node cluster mid-job: generate and train still finish correctly.

The worker node is stopped (its whole process group, as a machine failure) while the job runs
through the Ray Jobs API; a fresh worker node then joins, as an autoscaler would add one.
"""

from __future__ import annotations

import glob
import os
import time

import numpy as np
import pytest

from tests.conftest import checkpoint_metas
from tests.cluster.conftest import RECIPE, TINY_TRAIN, local_mixture, mlflow_runs, summary_json

pytestmark = pytest.mark.slow


def _finishes_or_stalls(services, sid: str, out, stall_seconds: float) -> bool:
    """Wait until job ``sid`` ends (True) or commits no shard for ``stall_seconds`` (False)."""
    count, since = -1, time.time()
    while not services.client.get_job_status(sid).is_terminal():
        now = len(glob.glob(str(out / "shard-*.parquet")))
        if now != count:
            count, since = now, time.time()
        elif time.time() - since > stall_seconds:
            return False
        time.sleep(0.5)
    return True


def test_worker_node_lost_mid_generate_dataset_complete(services, stem_library, recipe_file, tmp_path):
    from sepcluster.datasets import mixtures as ds

    # ~10 s of rendering for 2 actors on an idle machine: the node is stopped right after the
    # first shard is committed, long before the end
    n = 600
    out = tmp_path / "mixtures"
    config = services.write_config(tmp_path, "generate.yaml", {
        "recipe": str(recipe_file), "stems": str(stem_library), "out": str(out), "num_mixtures": n,
        "shard_size": 5, "no_progress": True, "json": True})
    sid = services.submit(f"python jobs/generate.py --config {config}")
    worker = services.worker_name()
    names = services.node_names()

    def worker_busy():
        # a shard is committed and an actor of this job is alive on the worker node
        if not glob.glob(str(out / "shard-*.parquet")):
            return False
        return any(a.state == "ALIVE" and names.get(a.node_id) == worker
                   for a in services.actors(sid, "MixerActor"))

    services.poll("an actor on the worker node and a committed shard", worker_busy, sid)
    done_before = len(glob.glob(str(out / "shard-*.parquet")))
    stopped = services.stop_worker()
    # the head's actor alone must finish the job: no node is added until it has or it stalls
    finished_alone = _finishes_or_stalls(services, sid, out, stall_seconds=30.0)
    started = services.add_worker()  # a fresh node joins (as an autoscaler would add one)
    info, logs = services.wait(sid)
    assert info.status == "SUCCEEDED", logs[-6000:]
    summary = summary_json(logs)
    assert done_before < n // 2, "the node was stopped too late to matter"
    assert summary["actor_failures"] >= 1, summary
    assert summary["complete"] and summary["generated"] == n

    # every seed exactly once, in committed shards only (no temporaries left), same audio
    shards = sorted(ds.parse_shard_name(os.path.basename(p)) for p in glob.glob(str(out / "shard-*.parquet")))
    covered = [s for first, last in shards for s in range(first, last + 1)]
    assert sorted(covered) == list(range(n)) and len(covered) == len(set(covered))
    assert ds.read_seeds(str(out)) == list(range(n))
    assert not [p for p in os.listdir(out) if ".tmp-" in p]
    for seed in (0, n // 2, n - 1):
        mix, _stems, _ = local_mixture(RECIPE, str(stem_library), seed)
        np.testing.assert_array_equal(ds.load_mixture(str(out), seed).mixture, mix)
    # the actors that died were the ones on the stopped node; the fresh node joined
    names = services.node_names()
    dead_on_worker = [a for a in services.actors(sid, "MixerActor")
                      if names.get(a.node_id) == stopped and a.state == "DEAD"]
    assert dead_on_worker
    assert started in names.values() and stopped in names.values()
    # the head's actor finished the job alone: the lost shard went to it, not to a replacement
    # actor waiting for a CPU
    assert finished_alone, "generate stalled after losing a node until a new node joined"


def test_worker_node_lost_mid_train_resumes_from_checkpoint(services, stem_library, tmp_path):
    """2 DDP workers (one per node); the worker node goes after epoch 1: Ray Train restarts the group
    from the last checkpoint (FailureConfig) once a fresh node is there, and the run finishes."""
    from sepcluster.models import load_bundle

    # epochs of a few seconds, so the node is surely lost mid-run (after epoch 1, before the end)
    epochs = 5
    runs = tmp_path / "runs"
    bundle = tmp_path / "bundle"
    config = services.write_config(tmp_path, "train.yaml", {
        **TINY_TRAIN, "epochs": epochs, "samples_per_epoch": 256, "data": str(stem_library), "targets": "vocals",
        "num_workers": 2, "run_name": "ft", "storage_path": str(runs), "out": str(bundle)})
    sid = services.submit(f"python jobs/train.py --config {config}")
    services.poll("the checkpoint of epoch 1", lambda: [m for m in checkpoint_metas(runs, "ft-vocals") if m["epoch"] >= 1],
                  sid, timeout=400)
    stopped = services.stop_worker()
    started = services.add_worker()  # 2 DDP workers need 2 nodes: the group restarts once it joins
    info, logs = services.wait(sid)
    assert info.status == "SUCCEEDED", logs[-6000:]
    last = checkpoint_metas(runs, "ft-vocals")[-1]
    assert last["finished"] and last["epoch"] == epochs
    attempts = last["attempts"]
    assert len(attempts) == 2, attempts
    assert attempts[1]["start_epoch"] >= 2 and attempts[1]["world_size"] == 2
    assert load_bundle(str(bundle)).meta.targets == ["vocals"]

    # the restarted group has a fresh process where the lost node's rank was
    names = services.node_names()
    workers = {a.pid: names.get(a.node_id) for a in services.actors(sid, "RayTrainWorker")}
    first_nodes = [workers.get(pid) for pid in attempts[0]["pids"]]
    second_nodes = [workers.get(pid) for pid in attempts[1]["pids"]]
    assert sorted(first_nodes) == sorted(["head", stopped]), (first_nodes, workers)
    assert sorted(second_nodes) == sorted(["head", started]), (second_nodes, workers)

    # per-epoch metrics reached the MLflow server from rank 0 (a Ray Train worker): every epoch,
    # at most the interrupted one twice
    from mlflow.tracking import MlflowClient

    client = MlflowClient(services.mlflow.uri)
    parents = [r for r in mlflow_runs(services, "train") if r.data.tags.get("sepcluster.run_name") == "ft"
               and "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    child = [r for r in mlflow_runs(services, "train")
             if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(child) == 1
    steps = [m.step for m in client.get_metric_history(child[0].info.run_id, "train_loss")]
    assert sorted(set(steps)) == list(range(1, epochs + 1)) and len(steps) <= epochs + 1, steps
