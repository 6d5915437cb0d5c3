"""Shared fixtures: real data from ../shared (skipped when absent), temp homes for MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("SEPCLUSTER_NO_PROGRESS", "1")
# Ray 2.60 runs new clusters with token authentication. Ray reads the mode once, when it is first
# imported, so the whole test process (local `ray.init` clusters, the multi-node cluster of
# tests/cluster, job and state API clients) says "token" from the start, with this user's token
# made up front (as `ray start`/`ray.init` would) - before anything imports ray.
os.environ.setdefault("RAY_AUTH_MODE", "token")
if os.environ["RAY_AUTH_MODE"] == "token" and not os.environ.get("RAY_AUTH_TOKEN"):
    _ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    if not os.path.exists(_ray_cli):
        import shutil

        _ray_cli = shutil.which("ray") or _ray_cli
    subprocess.run([_ray_cli, "get-auth-token", "--generate"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MUSDB_SAMPLE = SHARED / "data" / "musdb18-sample"
MUSEVAL_REFERENCE = SHARED / "data" / "museval-reference"
SISEC18 = SHARED / "data" / "sisec18"


def checkpoint_metas(storage_path, ray_run: str) -> list[dict]:
    """Every readable ``meta.json`` of the train checkpoints of ``ray_run``, by epoch (files being
    written are skipped): what tests poll to see how far a training run got."""
    import glob
    import json

    out = []
    for path in glob.glob(str(Path(storage_path) / ray_run / "checkpoint_epoch*" / "meta.json")):
        try:
            with open(path) as f:
                out.append(json.load(f))
        except (OSError, ValueError):
            continue  # being written
    return sorted(out, key=lambda m: m["epoch"])


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder; tests using it skip when it is absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED / "data"


@pytest.fixture(scope="session")
def musdb_sample(shared_data) -> Path:
    if not MUSDB_SAMPLE.is_dir():
        pytest.skip("../shared/data/musdb18-sample is absent")
    return MUSDB_SAMPLE


@pytest.fixture()
def sepcluster_home(tmp_path, monkeypatch) -> Path:
    """A private SEPCLUSTER_HOME with its own SQLite MLflow store for one test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SEPCLUSTER_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(home / "mlflow.db"))
    return home


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on 127.0.0.1 for the whole session."""
    from sepcluster.localcluster import S3Server

    server = S3Server(str(tmp_path_factory.mktemp("seaweedfs")))
    try:
        server.start()
    except RuntimeError as exc:  # pragma: no cover - only when weed is missing
        pytest.skip(f"S3 server unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture()
def s3_bucket(s3_server, monkeypatch) -> str:
    """A fresh bucket ``s3://...`` with the AWS_* environment pointing at the local server."""
    import uuid

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server.create_bucket("t" + uuid.uuid4().hex[:12])


def fake_autoscaler(groups):
    """Write into the GCS the cluster config an autoscaler keeps there (KubeRay's or ``ray up``'s):
    ``groups`` of ``(resources of a node, max nodes)``; ``None`` removes it."""
    from ray._raylet import GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, GCS_AUTOSCALER_STATE_NAMESPACE
    from ray.core.generated import autoscaler_pb2
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_put

    key, namespace = GCS_AUTOSCALER_CLUSTER_CONFIG_KEY.encode(), GCS_AUTOSCALER_STATE_NAMESPACE.encode()
    if groups is None:
        _internal_kv_del(key, namespace=namespace)
        return
    config = autoscaler_pb2.ClusterConfig()
    for resources, count in groups:
        group = config.node_group_configs.add()
        group.max_count = count
        for name, value in resources.items():
            group.resources[name] = value
    _internal_kv_put(key, config.SerializeToString(), overwrite=True, namespace=namespace)

