"""tracking: runs land in the SQLite store with params (no secrets), metrics and artifacts."""

import os

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


def test_run_logger_logs_into_a_run_by_id_without_an_active_run(sepcluster_home):
    with tracking.job_run("unittest") as run:
        pass
    logger = tracking.RunLogger(run.info.run_id, tracking.tracking_uri())
    logger.metrics({"loss": 0.5, "nan": float("nan"), "inf": float("inf"), "name": "x"}, step=3)
    logger.metrics({"loss": 0.25}, step=4)
    logger.dict({"ranks": [0, 1]}, "seed_stream/attempt1.json")
    client = mlflow.tracking.MlflowClient(tracking.tracking_uri())
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(3, 0.5), (4, 0.25)]
    assert set(client.get_run(run.info.run_id).data.metrics) == {"loss"}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "seed_stream")] == ["seed_stream/attempt1.json"]


def test_run_logger_is_best_effort(sepcluster_home, caplog):
    silent = tracking.RunLogger(None, tracking.tracking_uri())  # ranks other than 0
    assert silent.client is None
    silent.metrics({"loss": 1.0}, step=1)
    missing = tracking.RunLogger("0123456789abcdef0123456789abcdef", tracking.tracking_uri())
    missing.metrics({"loss": 1.0}, step=1)  # no such run: a warning, no exception
    missing.dict({"a": 1}, "a.json")
    assert "could not log" in caplog.text


def test_mlflow_defaults_are_set_when_mlflow_is_first_used_not_at_import(sepcluster_home):
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import os; from sepcluster import tracking; print(os.environ.get('MLFLOW_DISABLE_TELEMETRY')); "
            "tracking.experiment_id('unittest'); print(os.environ.get('MLFLOW_DISABLE_TELEMETRY'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") or k == "MLFLOW_TRACKING_URI"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out == ["None", "true"]


def test_dead_tracking_server_is_one_line_without_the_password(tmp_path):
    """A dead MLflow server (a real closed port) stops a job at its start: one line, URI redacted, exit 2."""
    import socket
    import subprocess
    import sys

    import numpy as np
    import soundfile as sf

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = tmp_path / "mix" / "mixture.wav"
    src.parent.mkdir()
    sf.write(src, np.zeros((800, 2), np.float32), 8000)
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"http://user:s3cr3t@127.0.0.1:{port}",
               SEPCLUSTER_HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, "-m", "sepcluster", "separate", "--oracle", "irm", str(src), "-o",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "s3cr3t" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert f"127.0.0.1:{port}" in done.stderr and "MLFLOW_TRACKING_URI" in done.stderr
