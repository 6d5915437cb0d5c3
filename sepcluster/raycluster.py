"""Connecting to Ray: one session policy for every job.

:func:`session` is the only way the jobs use Ray. It connects to an existing cluster
(``address``, else ``RAY_ADDRESS``, as inside a Ray Jobs entrypoint) or starts a new local Ray
on this machine (no dashboard), and on exit shuts down only what it started itself: inside
another session (the pipeline running its stages, a test's fixture, a notebook that called
``ray.init``) it reuses the connection and leaves it open. Non-secret settings (MLflow URI, S3
endpoint, SEPCLUSTER_HOME) travel to the workers in the runtime env; credentials never do:
nodes take them from their own environment. Ray's own defaults that sepcluster changes are
set by :func:`ray_environment` when a session starts, never at import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from typing import Any, Callable, Iterator, Optional

_FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "SEPCLUSTER_HOME", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                  "AWS_REGION", "AWS_DEFAULT_REGION", "MLFLOW_DISABLE_TELEMETRY", "SEPCLUSTER_EXPERIMENT")
# Ray's settings sepcluster changes unless the user set them: usage stats off, repeated log lines
# folded, and workers at normal priority (Ray runs them at niceness 15: on a shared machine they starve)
RAY_DEFAULTS = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "1", "RAY_worker_niceness": "0",
                "MLFLOW_DISABLE_TELEMETRY": "true"}


def verbose() -> bool:
    """Whether Ray's own log lines are wanted (``sepcluster --verbose`` sets ``SEPCLUSTER_VERBOSE=1``)."""
    return os.environ.get("SEPCLUSTER_VERBOSE") == "1"


def ray_environment() -> None:
    """Apply :data:`RAY_DEFAULTS` to this process's environment (variables already set win); unless
    :func:`verbose`, Ray Data logs warnings only (its per-dataset execution lines are INFO)."""
    for key, value in RAY_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not verbose():
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")


def worker_env() -> dict[str, str]:
    """Environment variables (never secrets) that Ray workers need to see."""
    from . import tracking

    tracking.tracking_uri()  # make sure the default is set before we forward it
    return {k: os.environ[k] for k in _FORWARDED_ENV if os.environ.get(k)}


def _runtime_env() -> dict:
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
    return {"env_vars": env}


def _connect(address: Optional[str], num_cpus: Optional[int], num_gpus: Optional[int]) -> bool:
    """``ray.init``; True when it started a new local Ray. By default the workers' own output (Ray
    Train's and Ray Data's internals) stays in Ray's log files and the driver shows only warnings:
    each job prints progress bars and a summary instead. :func:`verbose` forwards everything, as Ray
    does by default."""
    import logging

    import ray

    ray_environment()
    worker_env()  # sets the MLflow default before a new local Ray inherits the environment
    loud = verbose()
    if not loud:
        _drop_setting_notices()
    quiet = dict(log_to_driver=loud, logging_level=logging.INFO if loud else logging.WARNING)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "local":
        ray.init(address=address, runtime_env=_runtime_env(), **quiet)
    else:
        # A new local Ray: its raylet and workers inherit this process's environment, so the
        # forwarded settings reach them without a runtime env, and the workers Ray prestarts at
        # node start serve the job (a runtime env, even of env_vars only, makes Ray start other
        # workers for it: about 1 s more for ray.init and 1 s more for the first tasks on 2 CPUs).
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **quiet)
    if not loud:
        for name in ("ray", "ray.data", "ray.train", "ray.tune"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # Ray Data's advice to set `memory=` on operators the user does not write (a BSS Eval task
        # of a 3-minute track holds about 4 GB): shown with --verbose only
        logging.getLogger("ray.data._internal.issue_detection").setLevel(logging.ERROR)
    return not (address and address != "local")


# Ray's notices about settings sepcluster chose on purpose (token auth on a local Ray that has a
# token, Ray Data's own progress bars off: each job shows its own); shown again with --verbose
_SETTING_NOTICES = {"ray._private.authentication.authentication_token_setup": "Token authentication is enabled",
                    "ray.data._internal.progress": "Progress bars disabled"}


class _DropNotice(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _drop_setting_notices() -> None:
    for name, prefix in _SETTING_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) for f in logger.filters):
            logger.addFilter(_DropNotice(prefix))


@contextlib.contextmanager
def session(address: Optional[str] = None, num_cpus: Optional[int] = None,
            num_gpus: Optional[int] = None) -> Iterator[None]:
    """Use Ray for the body: connect or start it, and on exit shut down only what this call started.

    address: ``None`` (``RAY_ADDRESS``, else a new local Ray), ``"auto"``, ``"local"`` or
    ``host:port`` / ``ray://host:port``. num_cpus/num_gpus only apply to a new local Ray. When
    Ray is already initialised in this process (an enclosing session, a test fixture, a user's
    ``ray.init``) the body runs on that connection and it stays open afterwards.
    """
    import ray

    _wait_for_shutdown()
    if ray.is_initialized():
        yield
        return
    started_here = _connect(address, num_cpus, num_gpus)
    # Ray's notices are dropped until Ray is shut down: its log deduplicator prints what it held back then
    quiet = contextlib.ExitStack()
    if not verbose():
        for fd in (1, 2):
            quiet.enter_context(without_lines(RAY_NOTICES, fd))
    try:
        yield
    finally:
        if started_here:
            _shutdown_in_background(then=quiet.close)
        else:
            try:
                ray.shutdown()
            finally:
                quiet.close()


# Lines Ray prints on the driver's stdout or stderr that are Ray's own notices about what
# sepcluster does on purpose, not the job's errors, and that the user cannot act on; shown with
# --verbose. They come from Ray's C++ core or its error channel (printed to stdout), not through
# Python logging, so no logging filter reaches them.
RAY_NOTICES = (
    # Every Ray Data actor pool (separate's workers) makes the driver's core print, once per actor,
    # at ERROR level, about the arguments Ray Data itself passes (ray-project/ray#57733; it holds
    # them for the whole job): "Actor ... has constructor arguments in the object store and
    # max_restarts > 0 ...".
    re.compile(rb"\[\d{4}-\d\d-\d\d [\d:,.]+ [EW] \d+ \d+\] core_worker\.cc:\d+: Actor with class name: '[^']*' "
               rb"and ID: '[0-9a-f]+' has constructor arguments in the object store and max_restarts > 0\.[^\n]*\n"),
    # Concurrent trainers (train's per-target fan-out) start Ray Train's helper actors at once, and
    # the raylet warns "(raylet) WARNING: N PYTHON worker processes have been started on node ...
    # which is Nx the maximum expected startup concurrency" (coloured, perhaps "[repeated Nx ...]").
    re.compile(rb"(\x1b\[\d+m)?\(raylet[^)]*\)(\x1b\[0m)? WARNING: \d+ PYTHON worker processes have been started "
               rb"on node: [^\n]*\n"),
)


# The filter process of :func:`without_lines`: it ignores Ctrl-C (the job handles it and the filter
# must pass its last lines on) and ends when every write end of its pipe is closed.
_FILTER = ("import os, re, signal, sys\n"
           "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
           "patterns = [re.compile(p.encode('latin-1')) for p in sys.argv[1:]]\n"
           "while True:\n"
           "    chunk = os.read(0, 1 << 20)\n"
           "    if not chunk:\n"
           "        break\n"
           "    for p in patterns:\n"
           "        chunk = p.sub(b'', chunk)\n"
           "    try:\n"
           "        os.write(1, chunk)\n"
           "    except OSError:\n"
           "        pass\n")


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # replaced, closed or broken streams
            pass


@contextlib.contextmanager
def without_lines(patterns: tuple, fd: int = 2) -> Iterator[None]:
    """For the body, what this process writes to ``fd`` (Python and C++ alike) goes through a small
    filter process that drops the matches of ``patterns`` (compiled bytes regexes, each a whole
    line) and passes everything else on at once, in order. A separate process, so that nothing is
    lost when this one dies: the last lines of a crash still come out. Ray's core writes each line
    in one ``write`` (atomic in a pipe up to 4 kB), so a line arrives whole. Without a usable
    ``fd`` (a daemon), the body runs unfiltered."""
    import subprocess

    _flush()
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    try:
        filt = subprocess.Popen([sys.executable, "-c", _FILTER, *(p.pattern.decode("latin-1") for p in patterns)],
                                stdin=subprocess.PIPE, stdout=saved, close_fds=True)
    except OSError:
        os.close(saved)
        yield
        return
    os.dup2(filt.stdin.fileno(), fd)
    filt.stdin.close()
    try:
        yield
    finally:
        _flush()
        os.dup2(saved, fd)  # the pipe's last write end here closes: the filter passes the rest on and ends
        os.close(saved)
        try:
            filt.wait(timeout=2)  # (a child process of ours that still holds the pipe keeps it open)
        except subprocess.TimeoutExpired:
            pass


# Stopping a local Ray takes about 1.4 s (Ray stops its processes one by one, each given up to 1 s to
# exit): a session that started one stops it in a thread, so the job writes its results meanwhile.
# The thread is not a daemon (the process waits for it before it exits) and the next use of Ray in
# this process (session, init, shutdown) waits for it first.
_SHUTDOWN: Optional["threading.Thread"] = None


def _shutdown_in_background(then: Optional[Callable[[], Any]] = None) -> None:
    """``ray.shutdown()`` in a thread, then ``then()`` in it."""
    global _SHUTDOWN
    import threading

    import ray

    def stop() -> None:
        try:
            ray.shutdown()
        finally:
            if then is not None:
                then()

    _SHUTDOWN = threading.Thread(target=stop, name="sepcluster-ray-shutdown")
    _SHUTDOWN.start()


def _wait_for_shutdown() -> None:
    global _SHUTDOWN
    if _SHUTDOWN is not None:
        _SHUTDOWN.join()
        _SHUTDOWN = None


def init(address: Optional[str] = None, num_cpus: Optional[int] = None, num_gpus: Optional[int] = None) -> None:
    """Connect or start Ray for the rest of the process (no-op when already initialised).

    For scripts, benchmarks and test fixtures that hold Ray across many calls; the jobs use
    :func:`session`. Same arguments as :func:`session`; end it with :func:`shutdown`.
    """
    import ray

    _wait_for_shutdown()
    if not ray.is_initialized():
        _connect(address, num_cpus, num_gpus)


def shutdown() -> None:
    """Disconnect from Ray (stopping the local Ray when this process started it)."""
    import ray

    _wait_for_shutdown()
    if ray.is_initialized():
        ray.shutdown()


def current_cluster() -> dict:
    """Where this process's Ray session runs: ``{"gcs_address", "job_id", "node_id", "cluster_cpus"}``."""
    import ray

    ctx = ray.get_runtime_context()
    return {"gcs_address": ctx.gcs_address, "job_id": ctx.get_job_id(), "node_id": ctx.get_node_id(),
            "cluster_cpus": cluster_cpus()}


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 0))


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


MAX_RESOURCES_ENV = "SEPCLUSTER_MAX_RESOURCES"


def autoscaling_max() -> Optional[dict]:
    """The most of each resource an autoscaling cluster may grow to (``{"CPU": 288.0, "GPU": 4.0}``),
    or None for a cluster of fixed size.

    From ``$SEPCLUSTER_MAX_RESOURCES`` (``CPU=288,GPU=4``: the configs in ``cluster/`` set it to
    their node groups' max counts times resources), else from the cluster config an autoscaler
    reports to the GCS, which Ray Train and Ray Data read too (``ray._private.state``: no public API
    has it; Ray's open-source autoscalers do not report it, so the variable is what works there).
    """
    declared = os.environ.get(MAX_RESOURCES_ENV, "").strip()
    if declared:
        return _parse_resources(declared)
    try:
        from ray._private.state import state

        found = state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - a Ray without it: treat the cluster as fixed
        return None
    return {k: float(v) for k, v in found.items()} if found else None


def _parse_resources(text: str) -> dict:
    from .errors import ConfigError

    out = {}
    for item in text.replace(" ", "").split(","):
        name, _, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            out[name] = -1.0
        if not name or out[name] < 0:
            raise ConfigError(MAX_RESOURCES_ENV, f"{text!r}: expected NAME=AMOUNT,... (for example CPU=288,GPU=4), "
                                                 f"not {item!r}")
    return out


def progress(total: int, desc: str, unit: str = "it", initial: int = 0):
    """A tqdm progress bar on stderr (count, rate and ETA)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr, mininterval=1.0,
                dynamic_ncols=True, disable=os.environ.get("SEPCLUSTER_NO_PROGRESS") == "1")
