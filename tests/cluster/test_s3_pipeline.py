"""The pipeline on the 2-node cluster with every input and output in ``s3://`` (real SeaweedFS).

Stages are Ray Jobs API submissions of the documented entrypoints: ``jobs/pipeline.py`` (stems
+ held-out songs, generate), then ``jobs/train.py``, ``jobs/separate.py`` and
``jobs/evaluate.py --report``, each with ``--config``. The nodes hold the S3 keys in their environment.
Then: wrong credentials fail cleanly naming the bucket, and the keys appear in no job log,
MLflow param/tag or Parquet metadata.
"""

from __future__ import annotations

import json
import uuid

import pytest

from sepcluster import storage
from tests.cluster.conftest import RECIPE, TINY_TRAIN, mlflow_runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3_run(services, recipe_file, tmp_path_factory):
    """Run the pipeline once on S3; returns ``(workdir, bucket)``."""
    bucket = services.s3.create_bucket("pipe" + uuid.uuid4().hex[:10])
    work = storage.join(bucket, "run")
    folder = tmp_path_factory.mktemp("s3-pipeline")
    pipe = services.write_config(folder, "pipeline.yaml", {
        "workdir": work,
        "stems": {"songs": 3, "seconds": 3, "seed": 7, "sample_rate": 16000, "channels": 1},
        "heldout": {"songs": 2, "seconds": 3, "seed": 1000},
        "generate": {"recipe": str(recipe_file), "num_mixtures": 8, "shard_size": 2},
    })
    train = services.write_config(folder, "train.yaml", {
        **TINY_TRAIN, "data": storage.join(work, "mixtures"), "targets": "vocals", "num_workers": 1,
        "run_name": "s3", "storage_path": storage.join(work, "train-runs"), "out": storage.join(work, "model")})
    separate = services.write_config(folder, "separate.yaml", {
        "model": storage.join(work, "model"), "input": storage.join(work, "heldout"), "subset": "test",
        "targets": "vocals", "residual": True, "out": storage.join(work, "separated"), "chunk_seconds": 0,
        "run_name": "s3"})
    evaluate = services.write_config(folder, "evaluate.yaml", {
        "references": storage.join(work, "heldout"), "subset": "test", "is_wav": True,
        "estimates": storage.join(work, "separated", "catalog.parquet"), "out": storage.join(work, "scores"),
        "method": "sepcluster-s3", "report": True})
    services.run(f"python jobs/pipeline.py --config {pipe} --stages stems,generate")
    services.run(f"python jobs/train.py --config {train}")
    services.run(f"python jobs/separate.py --config {separate}")
    services.run(f"python jobs/evaluate.py --config {evaluate}")
    return work, bucket


def test_pipeline_outputs_on_s3(s3_run, services):
    from sepcluster.datasets import mixtures as ds
    from sepcluster.models import load_bundle

    work, _bucket = s3_run
    # stems + held-out songs
    for label in RECIPE["labels"]:
        assert len(storage.list_files(storage.join(work, "stems", "foreground", label), suffixes=(".wav",))) == 3
    assert len(storage.list_files(storage.join(work, "heldout", "test"), suffixes=("mixture.wav",))) == 2
    # mixtures
    mixtures = storage.join(work, "mixtures")
    assert ds.read_seeds(mixtures) == list(range(8))
    assert ds.load_mixture(mixtures, 5).mixture.shape == (16000, 1)
    # model (checkpoints on S3 too)
    bundle = load_bundle(storage.join(work, "model"))
    assert bundle.meta.targets == ["vocals"] and bundle.meta.training_data == mixtures
    assert storage.list_files(storage.join(work, "train-runs", "s3-vocals"), suffixes=("meta.json",))
    # separated catalog: every track done, files where the catalog says
    for name in ("separated",):
        catalog = storage.read_parquet(storage.join(work, name, "catalog.parquet")).to_pandas()
        assert set(catalog["status"]) <= {"ok", "done", "written", "success", "completed", "succeeded"}, catalog
        assert catalog["track"].nunique() == 2 and {"vocals", "accompaniment"} <= set(catalog["target"])
        for uri in catalog["output_uri"]:
            full = uri if "://" in uri else storage.join(work, name, uri)
            assert storage.exists(full), full
    # scores and report
    for name in ("scores",):
        summary = json.loads(storage.read_text(storage.join(work, name, "summary.json")))
        assert summary["n_tracks"] == 2 and summary["n_failed"] == 0, summary
        assert storage.exists(storage.join(work, name, "frames.parquet"))
    assert storage.list_files(storage.join(work, "scores"), suffixes=("report.md",))
    # every stage logged to the MLflow server
    for job in ("generate", "train", "separate", "evaluate"):
        outs = [str(r.data.params) + str(r.data.tags) for r in mlflow_runs(services, job)]
        assert any(work in text for text in outs), job


def test_credentials_never_leak(s3_run, services):
    work, bucket = s3_run
    secrets_ = [services.s3.secret_key, services.s3.access_key]
    # job logs (every job this session submitted, not only the pipeline's)
    for sid in services.submitted:
        text = services.logs(sid)
        for secret in secrets_:
            assert secret not in text, f"a key appears in the logs of job {sid}"
    # MLflow params and tags of every run on the server
    from mlflow.tracking import MlflowClient

    client = MlflowClient(services.mlflow.uri)
    runs = [r for exp in client.search_experiments() for r in client.search_runs([exp.experiment_id],
                                                                              max_results=1000)]
    assert len(runs) >= 5
    for run in runs:
        text = json.dumps(run.data.params) + json.dumps(run.data.tags)
        for secret in secrets_:
            assert secret not in text, f"a key appears in MLflow run {run.info.run_id}"
    # Parquet metadata and the dataset's JSON on S3
    files = storage.list_files(bucket, suffixes=(".parquet",))
    assert len(files) >= 6
    for uri in files:
        meta = json.dumps(storage.parquet_metadata(uri))
        for secret in secrets_:
            assert secret not in meta, f"a key appears in the metadata of {uri}"
    for uri in storage.list_files(bucket, suffixes=(".json", ".yaml", ".md")):
        text = storage.read_text(uri)
        for secret in secrets_:
            assert secret not in text, f"a key appears in {uri}"


def test_wrong_credentials_fail_cleanly_naming_the_bucket(s3_run, services, recipe_file, tmp_path):
    work, bucket = s3_run
    name = bucket[len("s3://"):]
    config = services.write_config(tmp_path, "generate.yaml", {
        "recipe": str(recipe_file), "stems": storage.join(work, "stems"), "out": storage.join(work, "again"),
        "num_mixtures": 2})
    wrong = "WrongSecret" + uuid.uuid4().hex
    sid = services.submit(f"python jobs/generate.py --config {config}", env_vars={"AWS_SECRET_ACCESS_KEY": wrong})
    info, logs = services.wait(sid)
    assert info.status == "FAILED" and info.driver_exit_code == 2, (info, logs[-3000:])
    assert "sepcluster: error:" in logs and name in logs, logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]
    assert wrong not in logs and services.s3.secret_key not in logs
    assert not storage.exists(storage.join(work, "again"))
