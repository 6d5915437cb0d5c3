"""tracking: runs land in the SQLite store with params (no secrets), metrics and artifacts."""

import mlflow
import pytest

from sepcluster import tracking


def test_job_run_logs_params_metrics_artifacts(sepcluster_home, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "topsecretvalue123")
    note = tmp_path / "note.txt"
    note.write_text("hi")
    params = {"recipe": {"duration": 5.0}, "out": "s3://bucket/x", "aws_secret_access_key": "x",
              "endpoint": "http://u:topsecretvalue123@h"}
    with tracking.job_run("unittest", params, run_name="r1") as run:
        tracking.log_metrics({"rate": 2.5, "bad": float("nan"), "text": "x"}, step=0)
        tracking.log_artifact(str(note))
        with tracking.child_run("vocals", {"target": "vocals"}) as child:
            tracking.log_metrics({"loss": 0.1})
    client = mlflow.tracking.MlflowClient(tracking.tracking_uri())
    got = client.get_run(run.info.run_id)
    assert got.data.params["recipe.duration"] == "5.0"
    assert "aws_secret_access_key" not in got.data.params
    assert all("topsecretvalue123" not in v for v in got.data.params.values())
    assert got.data.metrics == {"rate": 2.5}
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    kid = client.get_run(child.info.run_id)
    assert kid.data.tags["mlflow.parentRunId"] == run.info.run_id and kid.data.metrics["loss"] == 0.1
    assert str(sepcluster_home) in tracking.tracking_uri()


def test_failed_job_marks_run_failed(sepcluster_home):
    with pytest.raises(ValueError):
        with tracking.job_run("unittest") as run:
            raise ValueError("boom")
    client = mlflow.tracking.MlflowClient(tracking.tracking_uri())
    assert client.get_run(run.info.run_id).info.status == "FAILED"
