"""Local services: a real MLflow server that Ray workers log to; the 2-node Ray cluster."""

from __future__ import annotations

import mlflow
import pytest
import ray

from sepcluster import raycluster, tracking
from sepcluster.localcluster import MlflowServer, RayLocalCluster


@ray.remote(num_cpus=0.5)
def _log_from_worker(run_id: str, value: float) -> str:
    import os

    from sepcluster import tracking as t

    client = mlflow.tracking.MlflowClient(t.tracking_uri())
    client.log_metric(run_id, "from_worker", value)
    return os.environ["MLFLOW_TRACKING_URI"]


@pytest.mark.slow
def test_mlflow_server_receives_runs_from_driver_and_ray_workers(tmp_path, monkeypatch):
    server = MlflowServer(str(tmp_path / "mlflow")).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        monkeypatch.setenv("SEPCLUSTER_HOME", str(tmp_path / "home"))
        raycluster.init(num_cpus=1)
        try:
            with tracking.job_run("servertest", {"a": 1}) as run:
                tracking.log_metrics({"from_driver": 1.0})
                seen_uri = ray.get(_log_from_worker.remote(run.info.run_id, 2.0))
        finally:
            raycluster.shutdown()
        assert seen_uri == server.uri
        client = mlflow.tracking.MlflowClient(server.uri)
        got = client.get_run(run.info.run_id)
        assert got.data.metrics == {"from_driver": 1.0, "from_worker": 2.0}
        assert got.data.params == {"a": "1"}
        exp = client.get_experiment(got.info.experiment_id)
        assert exp.name == "sepcluster-servertest"
    finally:
        server.stop()


@pytest.mark.slow
def test_two_node_cluster_up_jobs_api_and_stop_node(tmp_path, monkeypatch):
    from ray.job_submission import JobStatus

    cluster = RayLocalCluster(str(tmp_path / "ray"), workers=1, num_cpus=1).start()
    try:
        for key, value in cluster.client_env().items():
            monkeypatch.setenv(key, value)
        assert cluster.alive_nodes() == 2
        client = cluster.job_client()
        job = client.submit_job(entrypoint=(
            "python -c \"import ray; ray.init(); r = ray.cluster_resources(); "
            "print('NODES', sorted(k for k in r if k.startswith('sepcluster_')))\""))
        import time

        deadline = time.time() + 120
        while not client.get_job_status(job).is_terminal() and time.time() < deadline:
            time.sleep(1)
        logs = client.get_job_logs(job)
        assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs
        assert "NODES ['sepcluster_head', 'sepcluster_worker1']" in logs
        cluster.stop_node("worker1")
        deadline = time.time() + 60
        while cluster.alive_nodes() != 1 and time.time() < deadline:
            time.sleep(1)
        assert cluster.alive_nodes() == 1
    finally:
        cluster.stop()
