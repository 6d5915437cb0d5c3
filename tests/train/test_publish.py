"""The trained separator in MLflow without Ray: a bundle logged as a pyfunc model, registered, resolved back to
its files; child runs opened from threads under the parent run (the concurrent trainers)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sepcluster.errors import ConfigError
from tests.train.conftest import RATE, mlflow_client


def test_a_bundle_is_logged_registered_and_resolved(sepcluster_home, tmp_path):
    import mlflow

    from sepcluster import tracking
    from sepcluster.models import BundleMeta, build_model, save_bundle
    from sepcluster.models.inference import load_separator
    from sepcluster.train.publish import LOADER

    models = {t: build_model("umx", n_fft=256, sample_rate=RATE, bandwidth=4000, nb_channels=2, hidden_size=8,
                             nb_layers=1).eval() for t in ("vocals", "drums")}
    bundle = tmp_path / "bundle"
    save_bundle(str(bundle), models, BundleMeta(model="umx", sample_rate=float(RATE), n_fft=256, n_hop=64,
                                                bandwidth=4000))
    with tracking.job_run("train") as run:
        logged = tracking.log_separator_model(str(bundle), loader=LOADER, outputs=["vocals", "drums"], channels=2,
                                              sample_rate=RATE, kind="bundle", register="umx-bundle")
    assert logged["version"] == "1" or logged["version"] == 1
    client = mlflow_client()
    assert client.get_model_version("umx-bundle", "1").run_id == run.info.run_id
    path = tracking.resolve_model_uri("models:/umx-bundle/1")
    assert (tmp_path / "bundle" / "bundle.json").read_text() == open(f"{path}/bundle.json").read()
    assert tracking.resolve_model_uri("models:/umx-bundle/1") == path  # already there: reused
    audio = np.random.default_rng(0).standard_normal((RATE, 2)).astype(np.float32) * 0.1
    expected = load_separator(str(bundle))(audio)
    predicted = mlflow.pyfunc.load_model("models:/umx-bundle/1").predict(audio)
    assert list(predicted) == ["vocals", "drums"]
    for name in expected:
        np.testing.assert_allclose(predicted[name], expected[name], atol=1e-6)
    with pytest.raises(ConfigError, match="not an MLflow model URI"):
        tracking.resolve_model_uri("umx-bundle")


def test_child_runs_from_threads_belong_to_the_parent(sepcluster_home):
    from sepcluster import tracking

    seen = {}

    def unit(name):
        with tracking.child_run(name, {"target": name}, tags={"sepcluster.target": name},
                                parent_run_id=parent_id) as child:
            tracking.log_metrics({"loss": 1.0}, step=1)
            seen[name] = child.info.run_id

    with tracking.job_run("train") as parent:
        parent_id = parent.info.run_id
        threads = [threading.Thread(target=unit, args=(n,)) for n in ("vocals", "drums")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        tracking.log_metrics({"parent_metric": 2.0})
    client = mlflow_client()
    for name, run_id in seen.items():
        run = client.get_run(run_id)
        assert run.data.tags["mlflow.parentRunId"] == parent_id and run.data.metrics == {"loss": 1.0}
        assert run.data.tags["sepcluster.target"] == name
    assert client.get_run(parent_id).data.metrics == {"parent_metric": 2.0}
