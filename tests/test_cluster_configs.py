"""cluster/: the launcher YAML against ray's own schema; KubeRay manifests; runtime env."""

import json
import os
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


def test_launcher_yaml_matches_ray_schema():
    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    schema = json.loads((Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["CPU"] == 0
    assert types["gpu_worker"]["resources"]["GPU"] >= 1
    assert "GPU" not in types["cpu_worker"]["resources"]
    for name in ("cpu_worker", "gpu_worker"):
        assert 0 <= types[name]["min_workers"] <= types[name]["max_workers"]
    assert any("pip install" in c and "-e ." in c for c in config["setup_commands"])


def _group(spec, name):
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == name)


def _check_cluster_spec(spec):
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    gpu = _group(spec, "gpu-workers")["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(gpu["nvidia.com/gpu"]) >= 1
    cpu = _group(spec, "cpu-workers")["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in cpu
    for g in spec["workerGroupSpecs"]:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]


def test_kuberay_manifests():
    cluster = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert cluster["metadata"]["name"]
    _check_cluster_spec(cluster["spec"])
    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].startswith("python jobs/pipeline.py")
    yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    _check_cluster_spec(job["spec"]["rayClusterSpec"])
    # secrets come from a Secret, never inline
    text = (CLUSTER / "kuberay" / "rayjob.yaml").read_text() + (CLUSTER / "kuberay" / "raycluster.yaml").read_text()
    assert "secretKeyRef" in text


def test_runtime_env_has_no_secrets():
    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert ".venv" in env["excludes"]
    for key in env.get("env_vars", {}):
        assert "SECRET" not in key and "ACCESS_KEY" not in key
