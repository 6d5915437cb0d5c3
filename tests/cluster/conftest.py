"""One real 2-node Ray cluster on 127.0.0.1 (head + worker, 1 CPU each) for the cluster tests.

The cluster, a SeaweedFS S3 server and an MLflow server live for the whole ``tests/cluster``
session. Nodes are started the way a user's nodes would be: the S3 endpoint and keys in the
environment of ``ray start`` (never in a runtime env, which the dashboard shows), so Jobs API
entrypoints and the Ray workers they start on either node inherit them. Jobs are submitted
with :class:`ray.job_submission.JobSubmissionClient` exactly as ``ray job submit
--working-dir . --runtime-env cluster/runtime_env.yaml`` would, with the MLflow server's URI
added to the runtime env's ``env_vars`` (the commented line of that file).

Every node has its own Ray temp dir (``RayLocalCluster``), as separate machines would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from sepcluster.threads import run_in_threads

ROOT = Path(__file__).resolve().parents[2]
JOB_TIMEOUT = 420.0

# A tiny 16 kHz mono recipe: 1 s mixtures, pitch/time augmentation on (quick_pitch_time).
LABELS = ["vocals", "drums", "bass", "other"]
RECIPE = {
    "duration": 1.0, "sample_rate": 16000, "channels": 1, "ref_db": -20, "labels": LABELS,
    "coherent_probability": 0.5, "fix_clipping": True, "quick_pitch_time": True,
    "event": {"source_time": ["uniform", 0, 1.5], "event_time": ["const", 0], "event_duration": ["const", 1.0],
              "snr": ["uniform", -5, 5], "pitch_shift": ["uniform", -1, 1], "time_stretch": ["uniform", 0.9, 1.1]},
}
# A tiny Open-Unmix and signal for 1 s, 16 kHz training data (trains in seconds on one core).
TINY_TRAIN = {"model": "umx", "hidden_size": 8, "nb_layers": 1, "n_fft": 256, "n_hop": 64, "bandwidth": 4000,
              "seq_dur": 0.5, "batch_size": 4, "samples_per_epoch": 8, "stats_batches": 1, "epochs": 2,
              "patience": 50, "lr_decay_patience": 50, "valid_fraction": 0.25, "max_failures": 2}


def runtime_env() -> dict:
    """``cluster/runtime_env.yaml`` plus ``working_dir`` = the repo root (as ``--working-dir .``)."""
    with open(ROOT / "cluster" / "runtime_env.yaml") as f:
        env = yaml.safe_load(f)
    env["working_dir"] = str(ROOT)
    env.setdefault("excludes", [])
    env["excludes"] = list(env["excludes"]) + [".pytest_cache", "*.egg-info", ".ci"]
    return env


class Services:
    """The running cluster and servers, plus helpers to submit jobs and read their state."""

    def __init__(self, cluster, mlflow, s3, home: Path):
        self.cluster = cluster
        self.mlflow = mlflow
        self.s3 = s3
        self.home = home
        self.client = cluster.job_client()
        self.submitted: list[str] = []
        self.workers_started = len(cluster.pids) - 1

    # ---------------------------------------------------------------- jobs
    def poll(self, what: str, check, sid: str, timeout: float = 300.0):
        """``check()``'s first truthy value, polled while job ``sid`` runs (its logs in the failure)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = check()
            if value:
                return value
            status = self.client.get_job_status(sid)
            assert not status.is_terminal(), f"job ended ({status}) before {what}:\n{self.logs(sid)[-4000:]}"
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    def submit(self, entrypoint: str, env_vars: dict | None = None) -> str:
        """Submit ``entrypoint`` (run in the uploaded working dir). The MLflow server's URI goes in
        the runtime env, as ``cluster/runtime_env.yaml`` suggests; S3 keys come from the nodes."""
        renv = runtime_env()
        renv["env_vars"] = dict(renv.get("env_vars") or {}, MLFLOW_TRACKING_URI=self.mlflow.uri, **(env_vars or {}))
        deadline = time.time() + 120
        while True:
            try:
                sid = self.client.submit_job(entrypoint=entrypoint, runtime_env=renv)
                break
            except RuntimeError as exc:  # the head's job agent comes up a little after the dashboard
                if "No available agent" not in str(exc) or time.time() > deadline:
                    raise
                time.sleep(1.0)
        self.submitted.append(sid)
        return sid

    def wait(self, sid: str, timeout: float = JOB_TIMEOUT):
        """Wait for a terminal state; returns ``(JobDetails, logs)``."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.client.get_job_status(sid).is_terminal():
                break
            time.sleep(1.0)
        else:
            self.client.stop_job(sid)
            raise AssertionError(f"job {sid} still running after {timeout:.0f}s:\n{self.logs(sid)[-4000:]}")
        return self.client.get_job_info(sid), self.logs(sid)

    def run(self, entrypoint: str, env_vars: dict | None = None, timeout: float = JOB_TIMEOUT) -> str:
        """Submit, wait, assert it SUCCEEDED; returns the logs."""
        from ray.job_submission import JobStatus

        sid = self.submit(entrypoint, env_vars)
        info, logs = self.wait(sid, timeout)
        assert info.status == JobStatus.SUCCEEDED, f"{entrypoint}\n{info.message}\n{logs[-6000:]}"
        return logs

    def logs(self, sid: str) -> str:
        return self.client.get_job_logs(sid)

    # ---------------------------------------------------------------- cluster state
    def node_names(self) -> dict[str, str]:
        """Ray node id -> our node name (``head``, ``worker1``, ...) from the custom resources."""
        from ray.util.state import list_nodes

        out = {}
        for node in list_nodes(address=self.cluster.dashboard, limit=1000, detail=True):
            for key in (node.resources_total or {}):
                if key.startswith("sepcluster_"):
                    out[node.node_id] = key[len("sepcluster_"):]
        return out

    def ray_job_id(self, sid: str) -> str:
        return self.client.get_job_info(sid).job_id

    def actors(self, sid: str, class_name: str) -> list:
        """Every actor (alive or dead) of class ``class_name`` that job ``sid`` created."""
        from ray.util.state import list_actors

        job_id = self.ray_job_id(sid)
        found = list_actors(address=self.cluster.dashboard, filters=[("class_name", "=", class_name)],
                            limit=10000, detail=True)
        return [a for a in found if a.job_id == job_id]

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Wait until no alive actor holds a CPU (earlier jobs have given their CPUs back).

        Ray's own system actors (e.g. Ray Data's autoscaling coordinator) hold none and stay."""
        from ray.util.state import list_actors

        def holding():
            alive = list_actors(address=self.cluster.dashboard, filters=[("state", "=", "ALIVE")],
                                limit=1000, detail=True)
            return [(a.class_name, a.required_resources) for a in alive
                    if (a.required_resources or {}).get("CPU", 0) > 0]

        deadline = time.time() + timeout
        while busy := holding():
            assert time.time() < deadline, f"actors of earlier jobs still hold CPUs: {busy}"
            time.sleep(1.0)

    def worker_name(self) -> str:
        """The name of the (one) worker node now running besides the head."""
        workers = [n for n in self.cluster.pids if n != "head"]
        assert len(workers) == 1, self.cluster.pids
        return workers[0]

    def stop_worker(self) -> str:
        """Stop the worker node's processes (as a machine failure would); returns its name."""
        name = self.worker_name()
        self.cluster.stop_node(name)
        self.wait_nodes(1)
        return name

    def add_worker(self) -> str:
        """Start a fresh worker node (a new name); returns its name."""
        self.workers_started += 1
        name = f"worker{self.workers_started}"
        self.cluster.add_worker(name)
        self.wait_nodes(2)
        return name

    def alive(self) -> int:
        return self.cluster.alive_nodes()

    def wait_nodes(self, count: int, timeout: float = 90.0) -> None:
        deadline = time.time() + timeout
        while self.alive() != count:
            assert time.time() < deadline, f"{self.alive()} nodes alive, expected {count}"
            time.sleep(0.5)

    # ---------------------------------------------------------------- configs
    def write_config(self, folder: Path, name: str, data: dict) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return str(path)


@pytest.fixture(scope="session")
def services(tmp_path_factory, s3_server):
    """Start the MLflow server and a head + 1 worker node (1 CPU each) for the session."""
    from sepcluster.localcluster import MlflowServer, RayLocalCluster

    base = tmp_path_factory.mktemp("cluster")
    home = base / "home"
    home.mkdir()
    mlflow = MlflowServer(str(base / "mlflow"))
    cluster = RayLocalCluster(str(base / "ray"), workers=1, num_cpus=1)
    # S3 endpoint and keys in the nodes' own environment (never in a runtime env); the MLflow URI
    # comes with each job's runtime env (Services.submit)
    cluster.env = {**s3_server.env(), "SEPCLUSTER_HOME": str(home)}
    mp = pytest.MonkeyPatch()
    try:
        # this process is a job client (token auth) and reads S3 to check results
        for key, value in {**cluster.client_env(), **s3_server.env(), "SEPCLUSTER_HOME": str(home)}.items():
            mp.setenv(key, value)
        run_in_threads([mlflow.start, cluster.start])  # both take tens of seconds on a busy machine
        mp.setenv("MLFLOW_TRACKING_URI", mlflow.uri)
        yield Services(cluster, mlflow, s3_server, home)
    finally:
        run_in_threads([cluster.stop, mlflow.stop])
        mp.undo()


@pytest.fixture(scope="session")
def stem_library(tmp_path_factory) -> Path:
    """3 synthetic songs x 3 s, 16 kHz mono, Scaper layout (shared by every node: same machine)."""
    from sepcluster.stems.synth import synthesize_library

    out = tmp_path_factory.mktemp("stems") / "lib"
    synthesize_library(str(out), songs=3, seconds=3.0, seed=7, sample_rate=16000, channels=1)
    return out


@pytest.fixture(scope="session")
def recipe_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    return path


def local_mixture(recipe: dict, stems: str, seed: int, audio_format: str = "float32"):
    """Mixture ``seed`` rendered in this process (no Ray), in the dataset's sample format."""
    from sepcluster.datasets.library import index_library
    from sepcluster.datasets.mixtures import roundtrip
    from sepcluster.generate.mixing import make_mixture
    from sepcluster.generate.recipe import load_recipe

    r = load_recipe(recipe)
    result = make_mixture(r, index_library(stems, r.labels), seed)
    mix = roundtrip(result.mixture, r.sample_rate, audio_format)
    stems_out = {k: roundtrip(v, r.sample_rate, audio_format) for k, v in result.stems.items()}
    return mix, stems_out, result


def summary_json(logs: str) -> dict:
    """The JSON summary a ``--json`` job printed (the last top-level ``{...}`` block of its logs)."""
    lines = logs.splitlines()
    end = max(i for i, line in enumerate(lines) if line.rstrip() == "}")
    start = max(i for i in range(end + 1) if lines[i].rstrip() == "{")
    return json.loads("\n".join(lines[start:end + 1]))


def mlflow_runs(services: Services, job: str) -> list:
    """Every run of experiment ``sepcluster-<job>`` on the session's MLflow server."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(services.mlflow.uri)
    exp = client.get_experiment_by_name(f"sepcluster-{job}")
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], max_results=1000)
