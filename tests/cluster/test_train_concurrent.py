"""Per-target training fans out on the 2-node cluster: two targets' trainers at the same time (one per
node, 1 CPU each), both bundles' models complete, and a worker killed mid-run resumes from its checkpoint
while the other target trains on.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.cluster.conftest import TINY_TRAIN, mlflow_runs
from tests.conftest import checkpoint_metas

pytestmark = pytest.mark.slow


def _span(meta: dict) -> tuple:
    """``(start of its first worker group, end of its last epoch)``: the time a target's trainer was at work,
    a restart after a killed worker included."""
    ends = [t for a in meta["attempts"] for _e, t in a.get("ended", [])]
    return meta["attempts"][0]["time"], max(ends)


def _ends_inside(meta: dict, other: dict) -> int:
    """How many of ``meta``'s epochs ended while ``other``'s trainer was at work."""
    start, end = _span(other)
    return sum(start < t < end for a in meta["attempts"] for _e, t in a.get("ended", []))


def test_two_targets_train_at_once_and_a_killed_worker_resumes(services, stem_library, tmp_path):
    from sepcluster.models import load_bundle

    services.wait_nodes(2)
    services.wait_idle()
    epochs = 6
    runs, bundle = tmp_path / "runs", tmp_path / "bundle"
    config = services.write_config(tmp_path, "train.yaml", {
        **TINY_TRAIN, "epochs": epochs, "samples_per_epoch": 2048, "diagnostics_every": 0, "data": str(stem_library),
        "targets": "vocals,drums", "num_workers": 1, "run_name": "fan", "storage_path": str(runs),
        "out": str(bundle)})
    sid = services.submit(f"python jobs/train.py --config {config}")
    metas = services.poll("drums' checkpoint of epoch 1",
                          lambda: [m for m in checkpoint_metas(runs, "fan-drums") if m["epoch"] >= 1], sid, timeout=400)
    killed = metas[-1]["attempts"][-1]["pids"][0]
    os.kill(killed, signal.SIGKILL)  # the drums trainer's only worker, mid-run
    info, logs = services.wait(sid)
    assert info.status == "SUCCEEDED", logs[-6000:]

    vocals, drums = checkpoint_metas(runs, "fan-vocals")[-1], checkpoint_metas(runs, "fan-drums")[-1]
    assert vocals["finished"] and drums["finished"] and vocals["epoch"] == drums["epoch"] == epochs
    # overlap in time: an epoch of each target ended while the other target's trainer was at work (2048
    # samples make epochs of a few seconds, longer than a worker group takes to start). At least one
    # each, not two: on a loaded 2-core CI machine the killed drums trainer took 18 s to restart and
    # vocals finished its remaining epochs meanwhile, so only drums' first epoch ended inside vocals'.
    assert _ends_inside(vocals, drums) >= 1 and _ends_inside(drums, vocals) >= 1, (vocals["attempts"], drums["attempts"])
    # the killed worker's trainer restarted from its last checkpoint; the other never stopped
    assert len(vocals["attempts"]) == 1, vocals["attempts"]
    assert len(drums["attempts"]) == 2 and drums["attempts"][1]["start_epoch"] >= 2, drums["attempts"]
    assert killed in drums["attempts"][0]["pids"] and killed not in drums["attempts"][1]["pids"]
    assert drums["attempts"][1]["ended"][-1][0] == epochs
    # one worker group per target, on different nodes (1 CPU each)
    names = services.node_names()
    nodes = {a.pid: names.get(a.node_id) for a in services.actors(sid, "RayTrainWorker")}
    first = {nodes.get(vocals["attempts"][0]["pids"][0]), nodes.get(drums["attempts"][0]["pids"][0])}
    assert len(first) == 2 and None not in first, (first, nodes)
    # both models are in the bundle; the MLflow parent run has one child per target
    assert load_bundle(str(bundle)).targets == ["vocals", "drums"]
    parents = [r for r in mlflow_runs(services, "train") if r.data.tags.get("sepcluster.run_name") == "fan"
               and "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in mlflow_runs(services, "train")
                if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(c.data.tags["sepcluster.target"] for c in children) == ["drums", "vocals"]
