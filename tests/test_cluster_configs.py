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


def _declared_max(env_items) -> dict:
    from sepcluster.raycluster import MAX_RESOURCES_ENV, _parse_resources

    value = next(e["value"] for e in env_items if e["name"] == MAX_RESOURCES_ENV)
    return _parse_resources(value)


def test_declared_max_resources_are_what_the_autoscalers_may_bring_up():
    """SEPCLUSTER_MAX_RESOURCES (train's and separate's sizes while nodes are scaled down), set on the
    nodes of each config (never in the runtime env, which local clusters use too), equals its worker
    groups' max count x Ray resources (KubeRay: the pod's CPU limit and GPUs)."""
    from sepcluster.raycluster import _parse_resources

    launcher = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    most: dict = {}
    for node in launcher["available_node_types"].values():
        for name in ("CPU", "GPU"):
            most[name] = most.get(name, 0) + node["max_workers"] * node["resources"].get(name, 0)
    options = [o.split("=", 1)[1] for o in launcher["docker"]["run_options"] if "SEPCLUSTER_MAX_RESOURCES" in o]
    assert len(options) == 1 and _parse_resources(options[0]) == most
    cluster = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())["spec"]
    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())["spec"]["rayClusterSpec"]
    for spec in (cluster, job):
        most = {"CPU": 0.0, "GPU": 0.0}
        for group in spec["workerGroupSpecs"]:
            limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
            most["CPU"] += group["maxReplicas"] * float(limits["cpu"])
            most["GPU"] += group["maxReplicas"] * float(limits.get("nvidia.com/gpu", 0))
        head_env = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
        assert _declared_max(head_env) == most
