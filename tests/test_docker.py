"""docker/: the images' Dockerfile, the manifests that name the images, the lock and the torch choice.

The slow test runs the Dockerfile's install steps (CPU variant) in a fresh venv with
docker/check_dockerfile.py: no image builder or registry is needed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docker"))
import check_dockerfile  # noqa: E402  (docker/ is no package)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


def _lock() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[canonicalize_name(name)] = version
    return out


def _variant(torch: str):
    args, stages = check_dockerfile.stages(check_dockerfile.instructions(check_dockerfile.DOCKERFILE.read_text()),
                                           {"TORCH": torch})
    base, path = check_dockerfile.chain(stages[-1], stages)
    return args, base, [step for stage in path for step in stage.steps]


def test_dockerfile_variants_match_the_lock_and_the_makefile():
    lock = _lock()
    ray_pin = next(r for r in map(Requirement, PYPROJECT["project"]["dependencies"]) if r.name == "ray")
    assert ray_pin.specifier.contains(lock["ray"])
    _, cpu_base, steps = _variant("cpu")
    _, cuda_base, _ = _variant("cuda")
    assert cpu_base == f"rayproject/ray:{lock['ray']}-py311-cpu"
    assert re.fullmatch(rf"rayproject/ray:{re.escape(lock['ray'])}-py311-cu1\d\d", cuda_base)
    runs = [s.text for s in steps if s.keyword == "RUN"]
    makefile = (ROOT / "Makefile").read_text()
    apt = re.search(r"^APT_PACKAGES := (.*)$", makefile, re.M).group(1).split()
    assert check_dockerfile._apt_packages(next(r for r in runs if "apt-get" in r)) == apt
    pip_runs = [r for r in runs if "pip install" in r]
    assert pip_runs and all(r.count("pip install") == r.count("pip install -c requirements.lock") for r in pip_runs)
    torch_run = next(r for r in pip_runs if "torch==" in r)
    assert "torch==${TORCH_VERSION}+cpu" in torch_run and "--extra-index-url" in torch_run  # the CPU index
    assert "torch==${TORCH_VERSION},!=${TORCH_VERSION}+cpu" in torch_run  # CUDA: PyPI's default wheel
    assert any("sepcluster --help" in r for r in runs)
    workdir = next(s.text for s in steps if s.keyword == "WORKDIR")
    job = yaml.safe_load((ROOT / "cluster" / "kuberay" / "rayjob.yaml").read_text())
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["working_dir"] == workdir
    copied = {w.rstrip("/") for s in steps if s.keyword == "COPY" for w in s.text.split()[1:-1]}
    assert {"requirements.lock", "pyproject.toml", "sepcluster", "jobs", "cluster"} <= copied


def _pods(spec: dict):
    yield "head", spec["headGroupSpec"]
    for group in spec["workerGroupSpecs"]:
        yield group["groupName"], group


def _gib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Gi|Mi)", quantity).groups()
    return float(number) / (1024 if unit == "Mi" else 1)


def test_kuberay_images_shm_and_secret():
    image = re.compile(rf"ghcr\.io/[\w.-]+/sepcluster:{re.escape(VERSION)}-(cpu|cuda)")
    secret = yaml.safe_load((ROOT / "cluster" / "kuberay" / "s3-secret.yaml").read_text())
    assert secret["kind"] == "Secret" and secret["apiVersion"] == "v1"
    assert all(re.fullmatch(r"<[^>]+>", v) for v in secret["stringData"].values())  # placeholders, no values
    for name in ("raycluster.yaml", "rayjob.yaml"):
        doc = yaml.safe_load((ROOT / "cluster" / "kuberay" / name).read_text())
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        for group, pod in _pods(spec):
            container = pod["template"]["spec"]["containers"][0]
            kind = image.fullmatch(container["image"]).group(1)
            gpus = int(container["resources"]["limits"].get("nvidia.com/gpu", 0))
            assert kind == ("cuda" if gpus else "cpu"), (name, group)
            # /dev/shm: memory-backed, larger than the object store, inside the pod's memory limit
            mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")
            volume = next(v for v in pod["template"]["spec"]["volumes"] if v["name"] == mount["name"])
            shm = _gib(volume["emptyDir"]["sizeLimit"])
            assert volume["emptyDir"]["medium"] == "Memory"
            store = int(pod["rayStartParams"]["object-store-memory"]) / 2 ** 30
            assert store < shm < _gib(container["resources"]["limits"]["memory"]) / 2, (name, group)
            # S3 keys from the Secret of s3-secret.yaml; required keys must exist there
            refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e]
            assert refs and all(r["name"] == secret["metadata"]["name"] for r in refs)
            assert {r["key"] for r in refs if not r.get("optional")} <= set(secret["stringData"])
            assert {e["name"] for e in container["env"]} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
            assert not any("SECRET" in e["name"] and "value" in e for e in container["env"])
    launcher = yaml.safe_load((ROOT / "cluster" / "ray-cluster.yaml").read_text())
    assert image.fullmatch(launcher["docker"]["image"]).group(1) == "cpu"
    gpu = launcher["available_node_types"]["gpu_worker"]
    assert image.fullmatch(gpu["docker"]["worker_image"]).group(1) == "cuda"


def test_lock_holds_what_pyproject_declares():
    lock = _lock()
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    reqs += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["test"]]
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in lock, f"{name} is declared but not locked"
        assert req.specifier.contains(lock[name], prereleases=True), (name, lock[name], str(req.specifier))
    assert lock["torch"] == "2.13.0"
    assert re.search(r"^torch==2\.13\.0 +# .*TORCH=cpu\|cuda", (ROOT / "requirements.lock").read_text(), re.M)
    assert "sepcluster" not in lock and "s3fs" not in lock
    declared = {canonicalize_name(r.name) for r in reqs}
    assert {"stempeg", "botocore", "einops"} <= declared and "s3fs" not in declared
    test_only = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["test"]}
    assert {"norbert", "jsonschema"} <= test_only
    assert not any(Requirement(r).name == "torch" and "==" in str(Requirement(r).specifier)
                   for r in PYPROJECT["project"]["dependencies"])  # library users bring their own torch
    constraints = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^-c requirements\.lock$", constraints, re.M)  # constraints, never requirements


def test_lock_is_what_this_venv_holds():
    """docker/lock.py (make lock) writes the lock from the venv: it must reproduce the committed one."""
    no_deps = re.search(r"^TEST_NO_DEPS := (.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    out = subprocess.run([sys.executable, str(ROOT / "docker" / "lock.py"), "--no-deps-roots", *no_deps],
                         capture_output=True, text=True, check=True).stdout
    assert out == (ROOT / "requirements.lock").read_text()


def _install_torch(tmp_path, **variables) -> str:
    args = [f"{k}={v}" for k, v in variables.items()]
    run = subprocess.run(["make", "-s", "--no-print-directory", "install-torch", f"VENV={tmp_path / 'venv'}",
                          "PIP=echo PIP", *args], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_make_install_torch_choice(tmp_path):
    # an empty venv (no torch in it), made here without pip so that make does not make one
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    cpu_index = _install_torch(tmp_path, TORCH="cpu", TORCH_LOCAL_CPU_WHEEL="")
    assert "PIP install -q -c requirements.lock --extra-index-url https://download.pytorch.org/whl/cpu " \
           "torch==2.13.0+cpu" in cpu_index
    cuda = _install_torch(tmp_path, TORCH="cuda")
    assert "PIP install -q -c requirements.lock torch==2.13.0,!=2.13.0+cpu" in cuda
    local = _install_torch(tmp_path, TORCH="cpu", TORCH_LOCAL_CPU_WHEEL="/wheels/torch-2.13.0+cpu-x.whl")
    assert re.search(r"PIP install -q -c requirements\.lock torch==2\.13\.0$", local, re.M)
    bad = subprocess.run(["make", "-s", "install-torch", "TORCH=gpu", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "TORCH must be cpu or cuda" in bad.stderr
    default = subprocess.run(["make", "-s", "--eval", "print-torch: ; @echo $(TORCH)", "print-torch"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
    has_gpu = subprocess.run("nvidia-smi -L", shell=True, capture_output=True).returncode == 0
    assert default == ("cuda" if has_gpu else "cpu")  # what the machine has


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_dockerfile_install_steps_work_in_a_fresh_venv(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "docker" / "check_dockerfile.py"), "--build-arg", "TORCH=cpu",
                          "--workdir", str(tmp_path / "check")], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "base image rayproject/ray:2.60.0-py311-cpu" in run.stdout
    assert "system packages all installed here" in run.stdout
    assert "`sepcluster --help` runs" in run.stdout and "all install steps work" in run.stdout
    assert re.search(r"torch 2\.13\.0\+cpu", run.stdout)
