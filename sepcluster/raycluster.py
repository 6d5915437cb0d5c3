"""Connecting to Ray: a local cluster by default, or an existing one by address.

``init()`` with no address uses ``RAY_ADDRESS`` when set (as it is inside a Ray Jobs
entrypoint), and otherwise starts a new local Ray on this machine (no dashboard).
Non-secret settings (MLflow URI, S3 endpoint, SEPCLUSTER_HOME) travel to the workers in the
runtime env; credentials never do: nodes take them from their own environment.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
# Ray runs workers at niceness 15 by default: on a shared machine they then starve
os.environ.setdefault("RAY_worker_niceness", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import ray  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

_FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "SEPCLUSTER_HOME", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                  "AWS_REGION", "AWS_DEFAULT_REGION", "MLFLOW_DISABLE_TELEMETRY", "SEPCLUSTER_EXPERIMENT")
_started_here = False


def worker_env() -> dict[str, str]:
    """Environment variables (never secrets) that Ray workers need to see."""
    from . import tracking

    tracking.tracking_uri()  # make sure the default is set before we forward it
    return {k: os.environ[k] for k in _FORWARDED_ENV if os.environ.get(k)}


def init(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
         **kwargs) -> None:
    """Start or connect to Ray once per process.

    address: ``None`` (RAY_ADDRESS, else a new local Ray), ``"auto"``, ``"local"`` or
    ``host:port`` / ``ray://host:port``. num_cpus/num_gpus only apply to a new local Ray.
    """
    global _started_here
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    env = worker_env()
    # Inside a Ray Jobs entrypoint the job already has a runtime env; Ray refuses a driver
    # runtime env that repeats its keys, so forward only what the job does not set itself.
    job_config = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if job_config:
        import json

        try:
            job_env = (json.loads(job_config).get("runtime_env") or {}).get("env_vars") or {}
        except (ValueError, AttributeError):
            job_env = {}
        env = {k: v for k, v in env.items() if k not in job_env}
    runtime_env = {"env_vars": env}
    if address and address != "local":
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, **kwargs)
        return
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             runtime_env=runtime_env, log_to_driver=True, **kwargs)
    _started_here = True


def shutdown() -> None:
    """Disconnect (and stop the local Ray if this process started it)."""
    global _started_here
    if ray.is_initialized():
        ray.shutdown()
    _started_here = False


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 0))


def cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def progress(total: int, desc: str, unit: str = "it", initial: int = 0):
    """A tqdm progress bar on stderr (count, rate and ETA)."""
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr, mininterval=1.0,
                dynamic_ncols=True, disable=os.environ.get("SEPCLUSTER_NO_PROGRESS") == "1")
