"""Jobs submitted through the Ray Jobs API to a real 2-node cluster on 127.0.0.1.

generate places its actors on both nodes and makes the same dataset as a single process;
MLflow runs land on the MLflow server, also from Ray workers on the worker node.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.cluster.conftest import RECIPE, local_mixture, mlflow_runs, summary_json

pytestmark = pytest.mark.slow

NUM_MIXTURES = 8


def test_generate_job_uses_both_nodes_and_matches_a_single_process(services, stem_library, recipe_file,
                                                                     tmp_path):
    from sepcluster.datasets import mixtures as ds

    services.wait_idle()  # both nodes' CPUs free, so both actors are placed at once
    out = tmp_path / "mixtures"
    config = services.write_config(tmp_path, "generate.yaml", {
        "recipe": str(recipe_file), "stems": str(stem_library), "out": str(out), "num_mixtures": NUM_MIXTURES,
        "shard_size": 2, "no_progress": True, "json": True})
    sid = services.submit(f"python jobs/generate.py --config {config}")
    info, logs = services.wait(sid)
    assert info.status == "SUCCEEDED", logs[-6000:]
    summary = summary_json(logs)
    assert summary["complete"] and summary["generated"] == NUM_MIXTURES and summary["num_actors"] == 2

    # the job's actors ran on both nodes (Ray state API: node of every MixerActor of this job)
    names = services.node_names()
    actors = services.actors(sid, "MixerActor")
    nodes = {names[a.node_id] for a in actors if a.node_id}
    assert len(nodes) == 2 and "head" in nodes, [(a.node_id, a.pid, a.state) for a in actors]
    # ... and those actors made the shards (the summary records each actor's pid)
    assert {str(a.pid) for a in actors} >= set(summary["peak_rss_mb"]), (actors, summary)
    assert info.driver_node_id in names and names[info.driver_node_id] == "head"

    # every seed exactly once, each identical to a single-process render of (recipe, seed)
    assert ds.read_seeds(str(out)) == list(range(NUM_MIXTURES))
    for seed in range(NUM_MIXTURES):
        stored = ds.load_mixture(str(out), seed)
        mix, stems, result = local_mixture(RECIPE, str(stem_library), seed)
        np.testing.assert_array_equal(stored.mixture, mix)
        for label in RECIPE["labels"]:
            np.testing.assert_array_equal(stored.stems[label], stems[label])
        assert stored.coherent == result.coherent

    # logged to the MLflow server through MLFLOW_TRACKING_URI of the nodes
    runs = [r for r in mlflow_runs(services, "generate") if r.data.tags.get("sepcluster.output") == str(out)]
    assert len(runs) == 1 and runs[0].data.metrics["mixtures_total"] == NUM_MIXTURES


def test_mlflow_server_receives_a_job_run_from_the_driver_and_a_worker_node(services):
    """MLFLOW_TRACKING_URI in the job's runtime env reaches a Ray task pinned to the worker node."""
    import json

    from mlflow.tracking import MlflowClient

    worker = services.worker_name()
    sid = services.submit(f"python tests/cluster/mlflow_probe.py sepcluster_{worker}")
    info, logs = services.wait(sid)
    assert info.status == "SUCCEEDED", logs[-4000:]
    probe = json.loads(next(line for line in logs.splitlines() if line.startswith("PROBE "))[len("PROBE "):])
    assert services.node_names()[probe["node_id"]] == worker
    assert probe["uri"] == probe["driver_uri"] == services.mlflow.uri
    run = MlflowClient(services.mlflow.uri).get_run(probe["run_id"])
    assert run.data.metrics == {"from_driver": 1.0, "from_worker": 2.0}
    assert run.data.params == {"node": f"sepcluster_{worker}"}
