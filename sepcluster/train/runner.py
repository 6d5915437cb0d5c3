"""The ``train`` job: Ray Train ``TorchTrainer`` s, run concurrently, checkpoints, resume, MLflow, a separator.

:func:`train` checks everything first (config ranges, the data URI, the targets, what the model
can estimate, the resources, an existing checkpoint's architecture, ``--out``) and raises before
any worker starts. Then it trains *units*, each :func:`sepcluster.train.loop.train_func` on its own
``TorchTrainer`` of ``num_workers`` DDP workers (gloo on CPU, NCCL on GPU) with a checkpoint every
epoch in ``RunConfig(storage_path, name=<run_name>-<unit>)`` (local or ``s3://``):

* a per-target family (umx, unet): one unit per target, run concurrently
  (:mod:`sepcluster.train.fanout`). ``num_workers`` is *per target*: 4 targets with 2 workers each
  ask for 8 workers; with enough resources all 4 worker groups train at the same time, with fewer
  Ray queues the groups that do not fit and starts them as earlier ones finish (an autoscaler sees
  them pending); ``concurrent_units`` caps the trainers at a time (the others wait in the driver);
* a multi-source family (htdemucs, bs_roformer, mel_roformer): one unit, named after the model,
  that trains all targets at once (the targets are the model's sources, in order).

Resuming: rerunning with the same run name (the default run name is derived from the data,
targets and config, so rerunning the same command resumes) continues every unit from its
newest complete checkpoint at the next epoch (a damaged one is skipped with a warning); units that
stopped early or reached ``epochs`` are not trained again (raise ``epochs`` with the same run name
to train further). ``FailureConfig(max_failures)`` restarts a worker group that lost a process
from the last checkpoint (at most one epoch of work is lost).

MLflow: one parent run per run name (experiment ``sepcluster-train``; a resumed run reopens
it) with a child run per unit. Rank 0 logs per-epoch train/valid loss, valid SI-SDR and global
SDR (and their improvement over the mixture; per source for a multi-source model), learning rate,
epoch time and samples/s into the child run, and every ``diagnostics_every`` epochs a spectrogram
PNG and FLAC excerpts (:mod:`sepcluster.train.diagnostics`); the driver adds the final model
files, the checkpoint summary and, with ``heldout``, the held-out SI-SDR improvement. The result
(:mod:`sepcluster.train.publish`): for per-target families a separator bundle
(:func:`sepcluster.models.save_bundle`) holding the best (lowest validation loss) weights of every
target, the training data URI and the recipe hash; for multi-source families the model file the
separate job loads (HTDemucs ``.th``, RoFormer ``.ckpt`` + YAML). Either is also logged as an MLflow
pyfunc model, registered under ``register`` when given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Union

from .. import storage
from ..errors import ConfigError, DataError
from .config import TrainConfig, load_train_config

log = logging.getLogger(__name__)

_TARGET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")


@dataclass
class TargetResult:
    """How one unit's training ended (a target's model, or a multi-source model of ``target``:
    its sources joined by ``+``): epochs, best epoch/loss, checkpoint URI, history."""

    target: str
    epoch: int
    best_epoch: int
    best_valid_loss: float
    finished: bool
    stop_reason: Optional[str]
    checkpoint: str
    ray_run: str
    mlflow_run_id: Optional[str]
    attempts: list = field(default_factory=list)
    history: list = field(default_factory=list)
    heldout: Optional[dict] = None


@dataclass
class TrainResult:
    """The outcome of :func:`train`: ``bundle`` is what ``sepcluster separate --model`` takes (a bundle
    folder, or a multi-source model's ``.th`` / ``.ckpt``); ``targets`` is keyed by unit."""

    bundle: str
    run_name: str
    storage_path: str
    mlflow_run_id: Optional[str]
    targets: dict
    data: dict
    heldout: Optional[dict] = None
    model_uri: Optional[str] = None
    registered: Optional[str] = None

    def format(self) -> str:
        """The console summary: the bundle, how to resume, and each unit's training."""
        lines = [f"bundle: {storage.redact(self.bundle)}",
                 f"run name: {self.run_name} (rerun with --run-name {self.run_name} to resume)",
                 f"mlflow run: {self.mlflow_run_id}"]
        if self.registered:
            lines.append(f"registered model: {self.registered} (sepcluster separate --model {self.registered})")
        for t, r in self.targets.items():
            line = (f"{t}: {r.epoch} epochs, best valid loss {r.best_valid_loss:.5g} at epoch {r.best_epoch}"
                    f" ({r.stop_reason or 'stopped'})")
            if r.heldout:
                line += (f"; held-out SI-SDR {r.heldout['sisdr']:.2f} dB, {r.heldout['improvement']:+.2f} dB over "
                         f"the mixture")
            lines.append(line)
        return "\n".join(lines)


def parse_targets(targets: Union[str, Iterable[str], None]) -> list[str]:
    """A list of target names (or one name) -> checked, de-duplicated list (ConfigError names ``targets``)."""
    if targets is None:
        raise ConfigError("targets", "is required (e.g. vocals, drums, bass, other)")
    items = [targets.strip()] if isinstance(targets, str) else [str(t).strip() for t in targets]
    items = [t for t in items if t]
    if not items:
        raise ConfigError("targets", "is empty (e.g. vocals, drums, bass, other)")
    for t in items:
        if not _TARGET_RE.match(t):
            raise ConfigError("targets", f"invalid target name {t!r} (letters, digits, _ . + -)")
    if len(set(items)) != len(items):
        raise ConfigError("targets", f"lists a target twice: {','.join(items)}")
    return items


def default_run_name(data: str, targets: list[str], config: TrainConfig) -> str:
    """A run name that is the same for the same data, targets and config (so reruns resume)."""
    key = json.dumps({"data": storage.redact(str(data)), "targets": targets, "config": config.to_dict()},
                     sort_keys=True, default=str)
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", storage.basename(str(data)) or "data").strip("-.")[:40] or "data"
    return f"train-{base}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def default_storage_path() -> str:
    from .. import tracking

    return os.path.join(tracking.home(), "train-runs")


def _ray_storage(storage_path: str) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for RunConfig (S3 through the project's filesystem)."""
    if storage.is_remote(storage_path):
        return storage_path[len("s3://"):].rstrip("/"), storage.s3_filesystem()
    return storage.absolute(storage_path), None


def latest_checkpoint(storage_path: str, ray_run: str) -> Optional[dict]:
    """The newest complete checkpoint of ``ray_run`` under ``storage_path`` (``{"uri", "meta"}``) or None.

    See :meth:`sepcluster.train.checkpoint.TrainState.newest`: this does not depend on Ray's run
    snapshot, which the controller may not have written yet when a driver is interrupted.
    """
    from .checkpoint import TrainState

    return TrainState.newest(storage.join(storage_path, ray_run))


def _check_resources(num_workers: int, use_gpu: bool, config: TrainConfig) -> None:
    """A worker group must fit the cluster: its nodes now or, on an autoscaling cluster, the most its
    autoscaler may bring up (the worker groups then wait for nodes)."""
    from .. import raycluster

    cpus, gpus = raycluster.cluster_cpus(), raycluster.cluster_gpus()
    grown = raycluster.autoscaling_max() or {}
    cpus, gpus = max(cpus, int(grown.get("CPU", 0))), max(gpus, int(grown.get("GPU", 0)))
    has = "can grow to" if grown else "has"
    if use_gpu and gpus < num_workers:
        raise ConfigError("gpus", f"{num_workers} GPU worker(s) asked for, the Ray cluster {has} {gpus} GPU(s)")
    need = num_workers * config.cpus_per_worker
    if not use_gpu and need > cpus:
        raise ConfigError("num_workers", f"{num_workers} worker(s) x {config.cpus_per_worker:g} CPU need {need:g} "
                                         f"CPUs, the Ray cluster {has} {cpus}")


@dataclass
class _Plan:
    """A checked training job, before any worker starts."""

    data: str
    config: TrainConfig
    targets: list
    spec: Any
    sample_rate: int
    nb_channels: int
    num_workers: int
    use_gpu: bool
    run_name: str
    storage_path: str
    out: str
    heldout: Optional[str]
    heldout_songs: Optional[list]
    resume: dict  # unit -> {"uri", "meta"} of its newest complete checkpoint
    segment: float = 0.0  # seconds of a training excerpt (a multi-source model's training length)
    register: Optional[str] = None
    at_once: Optional[int] = None  # at most this many units at a time (None: all)

    @property
    def multi_source(self) -> bool:
        return self.config.multi_source

    @property
    def units(self) -> list:
        """What one TorchTrainer each trains: every target, or the multi-source model (its name)."""
        return [self.config.model] if self.multi_source else list(self.targets)

    def unit_target(self, unit: str) -> str:
        """The checkpoints' ``target`` of ``unit``: the target, or a multi-source model's targets joined by ``+``."""
        return "+".join(self.targets) if self.multi_source else unit

    @property
    def architecture(self) -> dict:
        return self.config.architecture()

    @property
    def signal(self) -> dict:
        return {"sample_rate": int(self.sample_rate), "nb_channels": int(self.nb_channels)}

    def params(self) -> dict:
        """The parent MLflow run's params."""
        return {"data": storage.redact(self.data), "targets": ",".join(self.targets), "num_workers": self.num_workers,
                "use_gpu": self.use_gpu, "run_name": self.run_name, "storage_path": storage.redact(self.storage_path),
                "bundle": storage.redact(self.out), "sample_rate": self.sample_rate, "nb_channels": self.nb_channels,
                **{f"config.{k}": v for k, v in self.config.to_dict().items()},
                **{f"data.{k}": v for k, v in self.spec.describe().items()}}


def train(data: str, targets: Union[str, Iterable[str]] = "vocals", config: Union[TrainConfig, dict, str, None] = None,
          *, num_workers: int = 1, use_gpu: bool = False, out: Optional[str] = None, run_name: Optional[str] = None,
          storage_path: Optional[str] = None, address: Optional[str] = None, heldout: Optional[str] = None,
          heldout_songs: Optional[Iterable[str]] = None, register: Optional[str] = None,
          concurrent_units: Optional[int] = None, **overrides: Any) -> TrainResult:
    """Train the model(s) of ``config.model`` for ``targets`` on ``data`` and write the separator.

    data: a generated dataset folder (Parquet), a recipe YAML (on-the-fly; set ``stems``) or a
    stem library; local or ``s3://``. targets: a list of target names (or one name). config: a
    :class:`TrainConfig`, a mapping or a YAML file; ``overrides`` set single fields.
    num_workers/use_gpu: Ray Train ``ScalingConfig`` of each trainer (per target for umx/unet,
    whose targets train concurrently). out: bundle folder (default
    ``<storage_path>/<run_name>/bundle``); for a multi-source model a ``.th`` / ``.ckpt`` file or a
    folder to hold ``<model>.th`` / ``<model>.ckpt`` + ``.yaml``. run_name: reuse one to resume
    (default: derived from data, targets and config). storage_path: checkpoints (default
    ``$SEPCLUSTER_HOME/train-runs``; local or ``s3://``). address: Ray address (default
    ``RAY_ADDRESS``, else a local Ray; inside a Ray session already open, that one). heldout: a
    stem library of songs never trained on; the separator's SI-SDR improvement over the mixture on
    it is logged (``heldout_songs`` picks songs). register: register the logged MLflow model under
    this name (``sepcluster separate --model models:/NAME/VERSION``). concurrent_units: at most
    this many trainers (targets of umx/unet) at a time, the others wait in the driver (default
    ``None`` or 0: all at once; Ray queues the worker groups that do not fit).

    Raises ConfigError / DataError / StorageError before any worker starts on bad input.
    """
    from .. import raycluster

    data, out, storage_path, heldout = (storage.absolute(u) for u in (data, out, storage_path, heldout))
    plan = _plan(str(data), targets, load_train_config(config, **overrides), num_workers, use_gpu, out, run_name,
                 storage_path, heldout, heldout_songs)
    plan.register = _check_register(register)
    if concurrent_units is not None and not 0 <= int(concurrent_units) <= 10000:
        raise ConfigError("concurrent_units", f"must be in 0..10000 (0 = all at once), got {concurrent_units}")
    with raycluster.session(address):
        _check_resources(plan.num_workers, plan.use_gpu, plan.config)
        plan.at_once = int(concurrent_units or 0) or None
        return _run(plan)


def _check_register(name: Optional[str]) -> Optional[str]:
    if name is None:
        return None
    name = str(name).strip()
    if not name or "/" in name or ":" in name or len(name) > 200:
        raise ConfigError("register", f"must be a model name (no '/' or ':', at most 200 characters), got {name!r}")
    return name


def _plan(data: str, targets, cfg: TrainConfig, num_workers: int, use_gpu: bool, out: Optional[str],
          run_name: Optional[str], storage_path: Optional[str], heldout: Optional[str], heldout_songs) -> _Plan:
    """Check everything that needs no Ray cluster (config, data, targets, held-out library, checkpoints to resume)."""
    from ..models.registry import get_family
    from .data import resolve_data

    target_list = parse_targets(targets)
    family = get_family(cfg.model)
    for target in target_list:
        problem = family.cannot_estimate(target)
        if problem:
            raise ConfigError("targets", f"model '{family.name}' cannot produce target '{target}': {problem}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ConfigError("num_workers", f"must be an integer >= 1, got {num_workers!r}")
    if run_name is not None and not _RUN_NAME_RE.match(str(run_name)):
        raise ConfigError("run_name", f"must be letters, digits, '_', '-', '.' (at most 121), got {run_name!r}")
    spec = resolve_data(data, cfg, target_list)
    sample_rate = int(cfg.sample_rate or spec.sample_rate)
    nb_channels = int(cfg.nb_channels or spec.channels)
    _check_signal_and_data(cfg, spec, data, sample_rate, num_workers)
    segment = _segment(cfg, spec, sample_rate)
    from .epoch import make_model

    # architecture arguments are valid (ConfigError otherwise)
    make_model(cfg, nb_channels, sample_rate, target_list if cfg.multi_source else None, segment)
    if heldout is not None:
        from ..datasets.library import index_stems

        library = index_stems(heldout)
        missing = [t for t in target_list if t not in library]
        if missing:
            raise ConfigError("heldout", f"the held-out library {storage.redact(heldout)} has no '{missing[0]}' stems")
    run_name = run_name or default_run_name(data, target_list, cfg)
    storage_path = storage_path or default_storage_path()
    plan = _Plan(data=data, config=cfg, targets=target_list, spec=spec, sample_rate=sample_rate,
                 nb_channels=nb_channels, num_workers=num_workers, use_gpu=use_gpu, run_name=run_name,
                 storage_path=storage_path, out=out or storage.join(storage_path, run_name, "bundle"),
                 heldout=heldout, heldout_songs=list(heldout_songs) if heldout_songs else None, resume={},
                 segment=segment)
    if plan.multi_source:
        from ..models.export import export_path

        export_path(plan.out, family.name, family.export)  # ConfigError for an --out of another format
    for unit in plan.units:
        found = latest_checkpoint(storage_path, f"{run_name}-{unit}")
        if found is not None:
            from .checkpoint import check_compatible

            check_compatible(found["meta"], plan.architecture, plan.signal, plan.unit_target(unit),
                             storage.redact(found["uri"]))
            plan.resume[unit] = found
    return plan


def _segment(cfg: TrainConfig, spec, sample_rate: int) -> float:
    """Seconds of a training excerpt as the workers cut them (``seq_dur``, at most a generated mixture)."""
    seq_len = int(round(cfg.seq_dur * sample_rate))
    if spec.kind in ("parquet", "onthefly") and spec.num_samples:
        seq_len = min(seq_len, int(spec.num_samples * sample_rate // spec.sample_rate))
    return seq_len / sample_rate


def _check_signal_and_data(cfg: TrainConfig, spec, data: str, sample_rate: int, num_workers: int) -> None:
    """ConfigError / DataError when the training rate, excerpt length or data cannot work together."""
    if not cfg.multi_source:  # the per-target families' STFT; the multi-source ones have their own
        if cfg.bandwidth is not None and cfg.bandwidth > sample_rate / 2:
            raise ConfigError("bandwidth", f"{cfg.bandwidth:g} Hz is above the Nyquist frequency of the training "
                                           f"rate {sample_rate} Hz")
        if cfg.seq_dur * sample_rate <= cfg.n_fft // 2:
            raise ConfigError("seq_dur", f"{cfg.seq_dur} s is too short for n_fft={cfg.n_fft} at {sample_rate} Hz")
    if spec.kind == "parquet" and len(spec.train_seeds) < num_workers:
        raise DataError(f"{storage.redact(data)}: {len(spec.train_seeds)} training mixtures cannot feed "
                        f"{num_workers} workers")
    if spec.kind == "onthefly":
        from ..datasets import MAX_SEED
        from .data import DEFAULT_ONTHEFLY_SAMPLES

        spe = cfg.samples_per_epoch or DEFAULT_ONTHEFLY_SAMPLES
        if cfg.seed + cfg.valid_size + (cfg.epochs + 1) * (spe + cfg.batch_size * num_workers) > MAX_SEED:
            raise ConfigError("epochs", "the on-the-fly seed stream would pass 2**32-1 (Scaper's seed limit): "
                                        "lower epochs, samples_per_epoch or seed")


def _run(plan: _Plan) -> TrainResult:
    """Train every unit of ``plan`` (concurrently) inside the run's MLflow parent run, then write and log
    the separator."""
    from .. import tracking
    from . import publish
    from .fanout import Unit, run_units

    tags = {"sepcluster.run_name": plan.run_name}
    if plan.resume:
        tags["sepcluster.resumed_targets"] = ",".join(f"{t}@{f['meta'].get('epoch')}" for t, f in plan.resume.items())
    # a resumed run continues its MLflow parent run (and each unit its child run)
    previous = tracking.find_run("train", {"sepcluster.run_name": plan.run_name}) if plan.resume else None
    with tracking.job_run("train", plan.params(), run_name=plan.run_name, tags=tags, resume_run_id=previous) as parent:
        parent_id = parent.info.run_id
        children = {u: tracking.find_run("train", {"sepcluster.target": plan.unit_target(u)}, parent_run_id=previous)
                    if previous else None for u in plan.units}
        units = [Unit(u, storage.join(plan.storage_path, f"{plan.run_name}-{u}"), plan.config.epochs)
                 for u in plan.units]
        if plan.at_once and plan.at_once < len(units):
            log.info("training %d units, %d at a time (concurrent_units)", len(units), plan.at_once)
        done = run_units(units, lambda unit: _train_target(plan, unit.name, parent_id, children[unit.name]),
                         at_once=plan.at_once)
        results = {u: r for u, (r, _m) in done.items()}
        models = {u: m for u, (_r, m) in done.items()}
        written = publish.write_separator(plan, models, results)
        logged = publish.log_separator(plan, written)
        heldout_result = None
        if plan.heldout is not None:
            heldout_result = publish.log_heldout(written.path, plan.heldout, plan.heldout_songs, results,
                                                 plan.multi_source)
        tracking.log_metrics({f"{t}.best_valid_loss": r.best_valid_loss for t, r in results.items()})
    log.info("separator written to %s", storage.redact(written.path))
    return TrainResult(bundle=written.path, run_name=plan.run_name, storage_path=plan.storage_path,
                       mlflow_run_id=parent_id, targets=results, data=plan.spec.describe(), heldout=heldout_result,
                       model_uri=logged.get("model_uri"),
                       registered=f"models:/{plan.register}/{logged['version']}" if logged.get("version") else None)


def _trainer(plan: _Plan, unit: str, child_run_id: str):
    """The Ray Train ``TorchTrainer`` of one unit: :func:`~sepcluster.train.loop.train_func` on
    ``num_workers`` DDP workers, checkpoints in ``<storage_path>/<run_name>-<unit>``."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from .. import tracking
    from .data import needed_stems
    from .loop import WorkerJob, train_func

    cfg = plan.config
    ray_run = f"{plan.run_name}-{unit}"
    path, fs = _ray_storage(plan.storage_path)
    sources = list(plan.targets) if plan.multi_source else None
    job = WorkerJob(config=cfg, spec=plan.spec, target=plan.unit_target(unit), sample_rate=plan.sample_rate,
                    nb_channels=plan.nb_channels, architecture=plan.architecture, signal=plan.signal,
                    mlflow_run_id=child_run_id, tracking_uri=tracking.tracking_uri(),
                    run_uri=storage.join(plan.storage_path, ray_run), sources=sources,
                    segment=plan.segment if plan.multi_source else None)
    datasets = dataset_config = None
    if plan.spec.kind == "parquet":
        from .data import parquet_datasets

        stems = needed_stems(plan.spec, cfg, None if sources else unit, sources)
        datasets = parquet_datasets(plan.spec, stems, cache=cfg.cache_dataset)
        dataset_config = DataConfig(datasets_to_split=["train"])
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if plan.use_gpu else {})}
    return TorchTrainer(
        train_func, train_loop_config=job.to_loop_config(),
        torch_config=TorchConfig(backend="nccl" if plan.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=plan.num_workers, use_gpu=plan.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=ray_run, storage_path=path, storage_filesystem=fs,
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
                             logging_config=LoggingConfig(log_level="WARNING")),
        datasets=datasets, dataset_config=dataset_config)


def _train_target(plan: _Plan, unit: str, parent_run_id: str, child_run_id: Optional[str] = None):
    """Train (or resume, or reuse a finished) unit inside its MLflow child run (opened from this thread
    under ``parent_run_id``); returns ``(TargetResult, model with the best weights)``."""
    from .. import tracking
    from . import publish
    from .checkpoint import TrainState, is_done
    from .epoch import make_model

    ray_run = f"{plan.run_name}-{unit}"
    target = plan.unit_target(unit)
    resume = plan.resume.get(unit)
    child_params = {"target": target, "ray_run": ray_run, "model": plan.config.model, "sample_rate": plan.sample_rate,
                    "nb_channels": plan.nb_channels, "num_workers": plan.num_workers, "use_gpu": plan.use_gpu}
    with tracking.child_run(unit, child_params, tags={"sepcluster.target": target},
                            resume_run_id=child_run_id, parent_run_id=parent_run_id) as child:
        if resume is None or not is_done(resume["meta"], plan.config.epochs):
            log.info("training %s (Ray run %s, %d worker(s))", unit, ray_run, plan.num_workers)
            result = _trainer(plan, unit, child.info.run_id).fit()
            if result.error is not None:
                raise result.error
            resume = latest_checkpoint(plan.storage_path, ray_run)
        if resume is None:
            raise DataError(f"{unit}: training produced no checkpoint in "
                            f"{storage.redact(storage.join(plan.storage_path, ray_run))}")
        state = TrainState.read(resume["uri"])
        model = make_model(plan.config, plan.nb_channels, plan.sample_rate,
                           list(plan.targets) if plan.multi_source else None, plan.segment)
        model.load_state_dict(state.best_model_state)
        model.eval()
        res = TargetResult(target=target, epoch=int(state.epoch), best_epoch=int(state.best_epoch),
                           best_valid_loss=float(state.best_loss), finished=bool(state.finished),
                           stop_reason=state.stop_reason, checkpoint=resume["uri"], ray_run=ray_run,
                           mlflow_run_id=child.info.run_id, attempts=list(state.attempts),
                           history=list(state.history))
        publish.log_unit(res, model, unit, plan.multi_source)
    return res, model


__all__ = ["train", "TrainResult", "TargetResult", "parse_targets", "default_run_name", "default_storage_path",
           "latest_checkpoint"]
