"""MLflow tracking: one run per job, with params scrubbed of secrets; the only module that imports mlflow.

Tracking URI: ``MLFLOW_TRACKING_URI`` when set (a team server, ``http://...``), otherwise a
SQLite store at ``$SEPCLUSTER_HOME/mlflow.db`` (default ``~/.sepcluster``) with artifacts in
``$SEPCLUSTER_HOME/mlartifacts``. Each job logs into the experiment ``sepcluster-<job>``.

The driver logs into the active run (:func:`job_run`, :func:`child_run`, :func:`log_metrics`,
...); a process without an active run (a Ray Train worker) logs into a run by id with
:class:`RunLogger`. MLflow's environment defaults (:data:`MLFLOW_DEFAULTS`) are applied when
mlflow is first imported through this module, not when it is imported. The active run is per
thread (MLflow's own rule): a thread logs into a child run it opens with ``parent_run_id``.

Models: :func:`log_separator_model` logs a separator's files as an MLflow pyfunc model (a
waveform ``(samples, channels)`` in, ``{output: (samples, channels)}`` out, with that signature),
optionally registered under a name; :func:`resolve_model_uri` turns ``models:/NAME/VERSION``
back into the local path of those files.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from typing import Any, Callable, Iterator, Optional

from . import storage

log = logging.getLogger(__name__)

# MLflow settings sepcluster changes unless the user set them: no telemetry (each process would
# wait on the network at exit), no background trace-logging thread.
MLFLOW_DEFAULTS = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false"}

_SECRET_WORDS = ("secret", "password", "passwd", "token", "credential", "access_key", "accesskey", "api_key")
_MAX_PARAM_LEN = 6000


def home() -> str:
    """The folder that holds sepcluster's local state (``$SEPCLUSTER_HOME`` or ``~/.sepcluster``)."""
    path = os.path.abspath(os.path.expanduser(os.environ.get("SEPCLUSTER_HOME", "~/.sepcluster")))
    os.makedirs(path, exist_ok=True)
    return path


def tracking_uri() -> str:
    """The MLflow tracking URI in force (and set it in the environment for child processes)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = "sqlite:///" + os.path.join(home(), "mlflow.db")
        os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


def _default_artifact_root() -> str | None:
    uri = tracking_uri()
    if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
        return "file://" + os.path.join(home(), "mlartifacts")
    return None  # a server decides its own artifact root


def _import_mlflow():
    """``mlflow``, imported with :data:`MLFLOW_DEFAULTS` in the environment (variables already set win)
    and its chatty loggers at WARNING."""
    for key, value in MLFLOW_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return mlflow


_CHECKED: set = set()
SERVER_CHECK_SECONDS = 5.0


def check_server(uri: Optional[str] = None, timeout: float = SERVER_CHECK_SECONDS) -> None:
    """For an ``http(s)://`` tracking URI: one short request to the server's health endpoint, so that a
    dead or wrong server is a one-line :class:`~sepcluster.errors.ConfigError` (URI redacted) at the start
    of a job, not minutes of retries and a traceback at its end. Other stores need no check."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit, urlunsplit

    from .errors import ConfigError

    uri = uri or tracking_uri()
    if not uri.lower().startswith(("http://", "https://")) or uri in _CHECKED:
        return
    parts = urlsplit(uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    health = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    request = urllib.request.Request(health)
    if parts.username is not None:  # basic auth, as MLflow's client sends it
        import base64

        token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise ConfigError("MLFLOW_TRACKING_URI", f"{storage.redact(uri)}: the MLflow server refused the "
                                                     f"credentials (HTTP {exc.code})") from None
        # any other answer: a server is there (a proxy may not route /health)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError("MLFLOW_TRACKING_URI", f"{storage.redact(uri)}: no MLflow server answers "
                                                 f"({storage.redact(str(reason))}); start it, or unset "
                                                 f"MLFLOW_TRACKING_URI to log to the local SQLite store") from None
    _CHECKED.add(uri)


def _mlflow():
    check_server()
    mlflow = _import_mlflow()
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def prepare_in_background(job: str) -> Callable[[], None]:
    """Import mlflow and get or create ``job``'s experiment in a thread (about 1.5 s on 2 CPUs, more
    on a new store) while the driver starts Ray; returns a function that waits for it and raises
    what it raised. Runs are still opened in the calling thread (MLflow's active run is per thread).
    A tracking server is checked first, in the calling thread: a dead one stops the job before Ray starts."""
    import threading

    check_server()
    failure: list = []

    def work() -> None:
        try:
            experiment_id(job)
        except BaseException as exc:  # noqa: BLE001 - re-raised by wait() in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=work, name=f"sepcluster-mlflow-{job}", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failure:
            raise failure.pop()
    return wait


def experiment_id(job: str) -> str:
    """Get or create the experiment ``sepcluster-<job>``; returns its id."""
    mlflow = _mlflow()
    name = os.environ.get("SEPCLUSTER_EXPERIMENT") or f"sepcluster-{job}"
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return mlflow.create_experiment(name, artifact_location=_default_artifact_root())
    except Exception:  # created concurrently by another process
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def safe_params(params: dict) -> dict[str, str]:
    """Flatten nested params, drop secret-looking keys, redact credentials in values."""
    out = {}
    for key, value in _flatten(params).items():
        if any(w in key.lower() for w in _SECRET_WORDS):
            continue
        text = storage.redact("" if value is None else str(value))
        out[key] = text[:_MAX_PARAM_LEN]
    return out


def find_run(job: str, tags: dict[str, str], parent_run_id: str | None = None) -> str | None:
    """The id of the newest run of ``job`` with all ``tags`` (and, if given, that parent), or None."""
    mlflow = _mlflow()
    filters = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
    if parent_run_id:
        filters.append(f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    runs = mlflow.search_runs(experiment_ids=[experiment_id(job)], filter_string=" and ".join(filters),
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    return runs[0].info.run_id if runs else None


def _log_new_params(mlflow, run, params: dict) -> None:
    """Log params; on a reopened run only those it does not hold yet (MLflow params are immutable)."""
    params = safe_params(params)
    held = run.data.params if run is not None else {}
    fresh = {k: v for k, v in params.items() if k not in held}
    if fresh:
        mlflow.log_params(fresh)
    changed = {f"sepcluster.resumed.{k}": v for k, v in params.items() if k in held and held[k] != v}
    if changed:  # e.g. more epochs asked for on the rerun: recorded beside the original value
        mlflow.set_tags(changed)


@contextlib.contextmanager
def job_run(job: str, params: dict | None = None, run_name: str | None = None,
            tags: dict | None = None, resume_run_id: str | None = None) -> Iterator[Any]:
    """Open an MLflow run for ``job`` in experiment ``sepcluster-<job>``; yields the ActiveRun.

    ``resume_run_id``: reopen that run (a resumed job continues its own run) instead of a new one.
    On an exception the run ends with status FAILED and the error is re-raised.
    """
    mlflow = _mlflow()
    exp = experiment_id(job)
    all_tags = {"sepcluster.job": job}
    all_tags.update(tags or {})
    if resume_run_id:
        with mlflow.start_run(run_id=resume_run_id) as run:
            mlflow.set_tags(all_tags)
            if params:
                _log_new_params(mlflow, mlflow.get_run(resume_run_id), params)
            yield run
        return
    with mlflow.start_run(experiment_id=exp, run_name=run_name, tags=all_tags) as run:
        if params:
            mlflow.log_params(safe_params(params))
        yield run


@contextlib.contextmanager
def child_run(name: str, params: dict | None = None, tags: dict | None = None,
              resume_run_id: str | None = None, parent_run_id: str | None = None) -> Iterator[Any]:
    """A nested run under the active one (e.g. one per target in training), or under
    ``parent_run_id`` (from a thread, which has no active run of its own); ``resume_run_id``
    reopens an earlier child instead."""
    mlflow = _mlflow()
    if resume_run_id:
        with mlflow.start_run(run_id=resume_run_id, nested=True) as run:
            if tags:
                mlflow.set_tags(tags)
            if params:
                _log_new_params(mlflow, mlflow.get_run(resume_run_id), params)
            yield run
        return
    parent = mlflow.active_run()
    if parent is None and parent_run_id:
        where = {"experiment_id": mlflow.get_run(parent_run_id).info.experiment_id, "parent_run_id": parent_run_id}
    else:
        where = {"experiment_id": parent.info.experiment_id if parent else None, "nested": True}
    with mlflow.start_run(run_name=name, tags=tags, **where) as run:
        if params:
            mlflow.log_params(safe_params(params))
        yield run


def finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The values of ``metrics`` that are finite numbers, as floats (others are left out)."""
    clean = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            clean[k] = f
    return clean


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log numeric metrics to the active run (non-finite and non-numeric values are skipped)."""
    mlflow = _mlflow()
    clean = finite_metrics(metrics)
    if clean:
        mlflow.log_metrics(clean, step=step)


def set_tags(tags: dict) -> None:
    _mlflow().set_tags({k: storage.redact(str(v)) for k, v in tags.items()})


def log_artifact(local_path: str, artifact_path: str | None = None) -> None:
    """Upload a local file or folder to the active run's artifacts."""
    mlflow = _mlflow()
    if os.path.isdir(local_path):
        mlflow.log_artifacts(local_path, artifact_path=artifact_path)
    else:
        mlflow.log_artifact(local_path, artifact_path=artifact_path)


def log_dict(obj: Any, name: str) -> None:
    """Store a JSON/YAML-serialisable object as an artifact file ``name``."""
    _mlflow().log_dict(obj, name)


def log_text(text: str, name: str) -> None:
    _mlflow().log_text(storage.redact(text), name)


class RunLogger:
    """Logs metrics and dicts into one MLflow run by id, without an active run (rank 0 of the Ray Train workers).

    ``run_id`` None (the other ranks) or ``tracking_uri`` None: a logger that logs nothing.
    The tracking URI is the driver's (:func:`tracking_uri`, passed to the workers). Best
    effort: non-finite and non-numeric values are skipped, and a failure to connect or to
    log is a warning that never stops the caller.
    """

    def __init__(self, run_id: Optional[str], tracking_uri: Optional[str]):
        self.run_id = run_id
        self.client = None
        if run_id and tracking_uri:
            try:
                _import_mlflow()
                from mlflow.tracking import MlflowClient

                self.client = MlflowClient(tracking_uri=tracking_uri)
            except Exception as exc:  # noqa: BLE001 - logging is best effort on workers
                log.warning("MLflow logging disabled on the worker: %s", exc)

    def metrics(self, values: dict, step: int) -> None:
        """Log the finite numeric ``values`` at ``step`` in one batch."""
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        clean = [Metric(k, f, now, int(step)) for k, f in finite_metrics(values).items()]
        try:
            self.client.log_batch(self.run_id, metrics=clean)
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow: could not log metrics: %s", exc)

    def dict(self, obj: Any, name: str) -> None:
        """Store a JSON-serialisable ``obj`` as the artifact file ``name``."""
        if self.client is None:
            return
        try:
            self.client.log_dict(self.run_id, obj, name)
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow: could not log %s: %s", name, exc)

    def artifacts(self, local_dir: str, artifact_path: str) -> None:
        """Upload the files of ``local_dir`` under ``artifact_path``."""
        if self.client is None:
            return
        try:
            self.client.log_artifacts(self.run_id, local_dir, artifact_path)
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow: could not log %s: %s", artifact_path, exc)


# ----------------------------------------------------------------------------- separator models

# The pyfunc model, logged as code (MLflow's "models from code": nothing is unpickled to load it).
# ``loader`` ("module:function", a path -> a callable (samples, channels) -> {output: (samples, channels)})
# comes from the model config; the separator's files are the model's artifacts.
_PYFUNC_CODE = '''"""sepcluster separator as an MLflow pyfunc (written by sepcluster.tracking.log_separator_model)."""
import importlib

import mlflow
import numpy as np


class SeparatorModel(mlflow.pyfunc.PythonModel):
    """A waveform (samples, channels) float32 in; {output: (samples, channels) float32} out."""

    _skip_type_hint_validation = True  # the signature (tensor specs) describes the data

    def load_context(self, context):
        module, _, name = context.model_config["loader"].partition(":")
        loader = getattr(importlib.import_module(module), name)
        self.separator = loader(context.artifacts["separator"])

    def predict(self, context, model_input, params=None):
        return self.separator(np.asarray(model_input, dtype=np.float32))

mlflow.models.set_model(SeparatorModel())
'''


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow's artifact progress bars off inside the block (unless the user set the variable)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def log_separator_model(separator: str, *, loader: str, outputs: list, channels: int, sample_rate: int,
                        kind: str, extra_files: Optional[list] = None, register: Optional[str] = None,
                        requirements: Optional[list] = None, name: str = "separator") -> dict:
    """Log the separator whose files are at ``separator`` (a file, e.g. a demucs ``.th``, or a bundle
    folder; ``extra_files`` beside it, e.g. an MSST YAML) as an MLflow pyfunc model of the active run.

    The model takes a float32 waveform ``(samples, channels)`` at ``sample_rate`` and returns
    ``{output: (samples, channels)}`` (its signature says so); ``loader`` (``"module:function"``)
    builds the callable from the logged files when the model is loaded. ``register``: also register
    it under that name (a new version). Returns ``{"model_uri", "model_id", "version" (or None)}``.
    """
    import tempfile
    import warnings

    mlflow = _mlflow()
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    import numpy as np

    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype("float32"), (-1, int(channels)))]),
                               outputs=Schema([TensorSpec(np.dtype("float32"), (-1, int(channels)), name=str(o))
                                               for o in outputs]))
    artifacts = {"separator": separator, **{f"file{i}": f for i, f in enumerate(extra_files or [])}}
    config = {"loader": loader, "outputs": list(outputs), "sample_rate": int(sample_rate), "channels": int(channels),
              "kind": kind}
    with tempfile.TemporaryDirectory(prefix="sepcluster-pyfunc-") as tmp, warnings.catch_warnings(), \
            _no_progress_bars():
        warnings.simplefilter("ignore")  # MLflow's advice about type hints and input examples
        code = os.path.join(tmp, "separator_model.py")
        with open(code, "w") as f:
            f.write(_PYFUNC_CODE)
        info = mlflow.pyfunc.log_model(name=name, python_model=code, artifacts=artifacts, signature=signature,
                                       model_config=config, metadata={"sepcluster": config},
                                       pip_requirements=list(requirements or ["sepcluster", "torch", "numpy"]),
                                       registered_model_name=register)
    return {"model_uri": info.model_uri, "model_id": getattr(info, "model_id", None),
            "version": getattr(info, "registered_model_version", None)}


def resolve_model_uri(uri: str, dst: Optional[str] = None) -> str:
    """The local path of the separator files logged by :func:`log_separator_model` under an MLflow
    model URI (``models:/NAME/VERSION``, ``models:/NAME@alias``, ``models:/<model id>``): the model
    is downloaded into ``dst`` (default ``$SEPCLUSTER_HOME/mlflow-models/<name>/<version>``, reused
    when already complete) and the path of its ``separator`` artifact (a model file, beside any
    extra file such as an MSST YAML, or a bundle folder) is returned, for ``sepcluster separate --model``.

    Raises ConfigError naming the URI when it is not a ``models:/`` URI, names no model MLflow
    knows, or holds no sepcluster separator.
    """
    import yaml

    from .errors import ConfigError

    text = str(uri)
    if not text.startswith("models:/") or len(text) <= len("models:/"):
        raise ConfigError("model", f"{text!r} is not an MLflow model URI (models:/NAME/VERSION)")
    mlflow = _mlflow()
    if dst is None:
        key = text[len("models:/"):].strip("/").replace("@", "/alias-")
        dst = os.path.join(home(), "mlflow-models", *[p for p in key.split("/") if p not in ("", ".", "..")])
    marker = os.path.join(dst, ".complete")
    if not os.path.exists(marker) or "@" in text or text.rstrip("/").endswith("/latest"):
        try:
            with _no_progress_bars():
                mlflow.artifacts.download_artifacts(artifact_uri=text, dst_path=dst)
        except Exception as exc:  # noqa: BLE001 - MLflow raises its own exception types
            raise ConfigError("model", f"{text}: no such MLflow model ({storage.redact(str(exc)).splitlines()[0]})") \
                from None
        open(marker, "w").close()
    try:
        with open(os.path.join(dst, "MLmodel")) as f:
            mlmodel = yaml.safe_load(f)
        path = mlmodel["flavors"]["python_function"]["artifacts"]["separator"]["path"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        raise ConfigError("model", f"{text}: not a sepcluster separator model (no 'separator' artifact)") from None
    return os.path.join(dst, path)
