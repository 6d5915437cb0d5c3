"""The pipeline against an already running cluster named by ``address:`` in its YAML.

The driver runs in this test process with no ``RAY_ADDRESS``: every stage must use the cluster
the config names (one Ray session for the whole run), never a local Ray of its own. The
cluster's state API then shows the work of each stage under this run's Ray job: the generate
actors, the Ray Train workers, the separate actor pool and the evaluate tasks.
"""

from __future__ import annotations

import pytest

from sepcluster import storage
from tests.cluster.conftest import TINY_TRAIN

pytestmark = pytest.mark.slow


def test_pipeline_runs_every_stage_on_the_configured_cluster(services, recipe_file, tmp_path, monkeypatch):
    import ray
    from ray.util.state import list_actors, list_tasks

    from sepcluster.pipeline import run_pipeline

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("SEPCLUSTER_NO_PROGRESS", "1")
    services.wait_idle()
    train_yaml = services.write_config(tmp_path, "train.yaml", {
        k: v for k, v in TINY_TRAIN.items() if k not in ("max_failures",)})
    config = {
        "workdir": str(tmp_path / "work"), "address": services.cluster.address,
        "stems": {"songs": 3, "seconds": 3, "seed": 7, "sample_rate": 16000, "channels": 1},
        "heldout": {"songs": 1, "seconds": 3, "seed": 1000},
        "generate": {"recipe": str(recipe_file), "num_mixtures": 8, "shard_size": 4, "num_actors": 1},
        "train": {"config": train_yaml, "targets": ["vocals"], "num_workers": 1, "run_name": "on-cluster",
                  "storage_path": str(tmp_path / "runs")},
        "separate": {"niter": 0, "residual": True, "oracle": True},
        "evaluate": {"engine": "torch", "method": "on-cluster"},
    }
    assert not ray.is_initialized()
    result = run_pipeline(config)
    assert not ray.is_initialized()  # the pipeline's session ended with the run; the cluster lives on
    assert services.alive() == 2

    # the session was the configured cluster's (its GCS port, one of its nodes), from the first stage to the last
    assert result.ray["gcs_address"].rsplit(":", 1)[1] == services.cluster.address.rsplit(":", 1)[1]
    assert result.ray["node_id"] in services.node_names()
    job = result.ray["job_id"]
    assert result.status == 0, result.results
    assert list(result.timings) == ["stems", "generate", "train", "separate", "evaluate", "report"]
    assert result.results["generate"].complete and result.results["generate"].generated == 8
    assert result.results["separate"].tracks_done == 1 and result.results["separate-oracle"].tracks_done == 1
    assert result.results["evaluate"]["n_tracks"] == 1 and result.results["evaluate-oracle"]["n_tracks"] == 1
    assert storage.exists(storage.join(result.paths["report"], "report.md"))

    # ... and the cluster itself did each stage's work under this run's job
    actors = [a for a in list_actors(address=services.cluster.dashboard, limit=10000, detail=True)
              if a.job_id == job]
    classes = {a.class_name for a in actors}
    assert "MixerActor" in classes                                      # generate
    assert "RayTrainWorker" in classes                                  # train
    assert any("SeparateWorker" in c for c in classes), classes         # separate (Ray Data actor pool)
    tasks = [t for t in list_tasks(address=services.cluster.dashboard, limit=10000, detail=True)
             if t.job_id == job]
    assert any("_evaluate_row" in (t.name or "") for t in tasks), sorted({t.name for t in tasks})  # evaluate
