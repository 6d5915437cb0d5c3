"""Ray Jobs entrypoint used by the cluster tests: log one MLflow run from the job's driver and
from a Ray task pinned to a given node, through ``MLFLOW_TRACKING_URI``.

    python tests/cluster/mlflow_probe.py sepcluster_worker1

Prints ``PROBE {json}`` with the run id and what the task saw (tracking URI, node id, pid).
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import ray  # noqa: E402

from sepcluster import raycluster, tracking  # noqa: E402


@ray.remote(num_cpus=0)
def _log_from_task(run_id: str, value: float) -> dict:
    from mlflow.tracking import MlflowClient

    from sepcluster import tracking as t

    MlflowClient(t.tracking_uri()).log_metric(run_id, "from_worker", value)
    return {"uri": os.environ.get("MLFLOW_TRACKING_URI"), "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid()}


def main(node_resource: str) -> int:
    raycluster.init()
    try:
        with tracking.job_run("clusterprobe", {"node": node_resource}) as run:
            tracking.log_metrics({"from_driver": 1.0})
            seen = ray.get(_log_from_task.options(resources={node_resource: 1}).remote(run.info.run_id, 2.0))
    finally:
        raycluster.shutdown()
    print("PROBE " + json.dumps({"run_id": run.info.run_id, "driver_uri": tracking.tracking_uri(), **seen}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
