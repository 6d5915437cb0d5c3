"""The ``train`` job: one Ray Train ``TorchTrainer`` per target, checkpoints, resume, MLflow, bundle.

:func:`train` checks everything first (config ranges, the data URI, the targets, the
resources, an existing checkpoint's architecture) and raises before any worker starts; then,
for each target in turn, it runs :func:`sepcluster.train.loop.train_func` on
``num_workers`` DDP workers (gloo on CPU, NCCL on GPU) with a checkpoint every epoch in
``RunConfig(storage_path, name=<run_name>-<target>)`` (local or ``s3://``).

Resuming: rerunning with the same run name (the default run name is derived from the data,
targets and config, so rerunning the same command resumes) continues every target from its
newest complete checkpoint at the next epoch; targets that stopped early or reached
``epochs`` are not trained again (raise ``epochs`` with the same run name to train further).
``FailureConfig(max_failures)`` restarts a worker group that lost a process from the last
checkpoint (at most one epoch of work is lost).

MLflow: one parent run per run name (experiment ``sepcluster-train``; a resumed run reopens
it) with a child run per target. Rank 0 logs per-epoch train/valid loss, valid SI-SDR (and its improvement over
the mixture), learning rate, epoch time and samples/s into the child run; the driver adds the
final model file, the checkpoint summary and, with ``heldout``, the held-out SI-SDR
improvement. The result is a separator bundle (:func:`sepcluster.models.save_bundle`) holding
the best (lowest validation loss) weights of every target, the training data URI and the
recipe hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
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
    """How one target's training ended: epochs, best epoch/loss, checkpoint URI, history."""

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
    """The outcome of :func:`train`."""

    bundle: str
    run_name: str
    storage_path: str
    mlflow_run_id: Optional[str]
    targets: dict
    data: dict
    heldout: Optional[dict] = None

    def format(self) -> str:
        """The console summary: the bundle, how to resume, and each target's training."""
        lines = [f"bundle: {storage.redact(self.bundle)}",
                 f"run name: {self.run_name} (rerun with --run-name {self.run_name} to resume)",
                 f"mlflow run: {self.mlflow_run_id}"]
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
    from .. import raycluster

    cpus, gpus = raycluster.cluster_cpus(), raycluster.cluster_gpus()
    if use_gpu and gpus < num_workers:
        raise ConfigError("gpus", f"{num_workers} GPU worker(s) asked for, the Ray cluster has {gpus} GPU(s)")
    need = num_workers * config.cpus_per_worker
    if not use_gpu and need > cpus:
        raise ConfigError("num_workers", f"{num_workers} worker(s) x {config.cpus_per_worker:g} CPU need {need:g} "
                                         f"CPUs, the Ray cluster has {cpus}")


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
    resume: dict  # target -> {"uri", "meta"} of its newest complete checkpoint

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
          heldout_songs: Optional[Iterable[str]] = None, **overrides: Any) -> TrainResult:
    """Train one model per target on ``data`` and write a separator bundle.

    data: a generated dataset folder (Parquet), a recipe YAML (on-the-fly; set ``stems``) or a
    stem library; local or ``s3://``. targets: a list of target names (or one name). config: a
    :class:`TrainConfig`, a mapping or a YAML file; ``overrides`` set single fields.
    num_workers/use_gpu: Ray Train ``ScalingConfig``. out: bundle folder (default
    ``<storage_path>/<run_name>/bundle``). run_name: reuse one to resume (default: derived from
    data, targets and config). storage_path: checkpoints (default
    ``$SEPCLUSTER_HOME/train-runs``; local or ``s3://``). address: Ray address (default
    ``RAY_ADDRESS``, else a local Ray; inside a Ray session already open, that one). heldout: a
    stem library of songs never trained on; the bundle's SI-SDR improvement over the mixture on
    it is logged (``heldout_songs`` picks songs).

    Raises ConfigError / DataError / StorageError before any worker starts on bad input.
    """
    from .. import raycluster

    data, out, storage_path, heldout = (storage.absolute(u) for u in (data, out, storage_path, heldout))
    plan = _plan(str(data), targets, load_train_config(config, **overrides), num_workers, use_gpu, out, run_name,
                 storage_path, heldout, heldout_songs)
    with raycluster.session(address):
        _check_resources(plan.num_workers, plan.use_gpu, plan.config)
        return _run(plan)


def _plan(data: str, targets, cfg: TrainConfig, num_workers: int, use_gpu: bool, out: Optional[str],
          run_name: Optional[str], storage_path: Optional[str], heldout: Optional[str], heldout_songs) -> _Plan:
    """Check everything that needs no Ray cluster (config, data, targets, held-out library, checkpoints to resume)."""
    from .data import resolve_data

    target_list = parse_targets(targets)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ConfigError("num_workers", f"must be an integer >= 1, got {num_workers!r}")
    if run_name is not None and not _RUN_NAME_RE.match(str(run_name)):
        raise ConfigError("run_name", f"must be letters, digits, '_', '-', '.' (at most 121), got {run_name!r}")
    spec = resolve_data(data, cfg, target_list)
    sample_rate = int(cfg.sample_rate or spec.sample_rate)
    nb_channels = int(cfg.nb_channels or spec.channels)
    _check_signal_and_data(cfg, spec, data, sample_rate, num_workers)
    from .epoch import make_model

    make_model(cfg, nb_channels, sample_rate)  # architecture arguments are valid (ConfigError otherwise)
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
                 heldout=heldout, heldout_songs=list(heldout_songs) if heldout_songs else None, resume={})
    for target in target_list:
        found = latest_checkpoint(storage_path, f"{run_name}-{target}")
        if found is not None:
            from .checkpoint import check_compatible

            check_compatible(found["meta"], plan.architecture, plan.signal, target, storage.redact(found["uri"]))
            plan.resume[target] = found
    return plan


def _check_signal_and_data(cfg: TrainConfig, spec, data: str, sample_rate: int, num_workers: int) -> None:
    """ConfigError / DataError when the training rate, excerpt length or data cannot work together."""
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
    """Train every target of ``plan`` inside the run's MLflow parent run, then write and log the bundle."""
    from .. import tracking

    tags = {"sepcluster.run_name": plan.run_name}
    if plan.resume:
        tags["sepcluster.resumed_targets"] = ",".join(f"{t}@{f['meta'].get('epoch')}" for t, f in plan.resume.items())
    results: dict[str, TargetResult] = {}
    models = {}
    # a resumed run continues its MLflow parent run (and each target its child run)
    previous = tracking.find_run("train", {"sepcluster.run_name": plan.run_name}) if plan.resume else None
    with tracking.job_run("train", plan.params(), run_name=plan.run_name, tags=tags, resume_run_id=previous) as parent:
        for target in plan.targets:
            child_id = tracking.find_run("train", {"sepcluster.target": target},
                                         parent_run_id=previous) if previous else None
            results[target], models[target] = _train_target(plan, target, child_run_id=child_id)
        meta = _save_bundle(plan.out, models, plan.config, plan.spec, plan.sample_rate, plan.run_name, results)
        tracking.set_tags({"sepcluster.bundle": plan.out, "sepcluster.bundle_id": meta.bundle_id()})
        tracking.log_dict(json.loads(meta.to_json()), "bundle.json")
        heldout_result = None
        if plan.heldout is not None:
            heldout_result = _log_heldout(plan.out, plan.heldout, plan.heldout_songs, results)
        tracking.log_metrics({f"{t}.best_valid_loss": r.best_valid_loss for t, r in results.items()})
        parent_id = parent.info.run_id
    log.info("bundle written to %s", storage.redact(plan.out))
    return TrainResult(bundle=plan.out, run_name=plan.run_name, storage_path=plan.storage_path,
                       mlflow_run_id=parent_id, targets=results, data=plan.spec.describe(), heldout=heldout_result)


def _trainer(plan: _Plan, target: str, child_run_id: str):
    """The Ray Train ``TorchTrainer`` of one target: :func:`~sepcluster.train.loop.train_func` on
    ``num_workers`` DDP workers, checkpoints in ``<storage_path>/<run_name>-<target>``."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from .. import tracking
    from .loop import WorkerJob, train_func

    cfg = plan.config
    ray_run = f"{plan.run_name}-{target}"
    path, fs = _ray_storage(plan.storage_path)
    job = WorkerJob(config=cfg, spec=plan.spec, target=target, sample_rate=plan.sample_rate,
                    nb_channels=plan.nb_channels, architecture=plan.architecture, signal=plan.signal,
                    mlflow_run_id=child_run_id, tracking_uri=tracking.tracking_uri(),
                    run_uri=storage.join(plan.storage_path, ray_run))
    datasets = dataset_config = None
    if plan.spec.kind == "parquet":
        from .data import parquet_datasets

        datasets = parquet_datasets(plan.spec, target, cache=cfg.cache_dataset)
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


def _fit_with_progress(trainer, run_uri: str, target: str, epochs: int):
    """``trainer.fit()`` with a progress bar on the driver: epochs done, with the last epoch's losses
    (read from the newest checkpoint's ``meta.json`` in the run folder while the workers train)."""
    import threading

    from .. import raycluster
    from .checkpoint import latest_epoch_meta

    done = threading.Event()
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the driver's thread
            outcome["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=fit, name=f"fit-{target}", daemon=True)
    bar = raycluster.progress(total=epochs, desc=f"train {target}", unit="epoch")
    thread.start()
    try:
        while not done.wait(2.0):
            _show_epoch(bar, latest_epoch_meta(run_uri))
        _show_epoch(bar, latest_epoch_meta(run_uri))
    finally:
        bar.close()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _show_epoch(bar, meta: Optional[dict]) -> None:
    if not meta:
        return
    epoch = int(meta.get("epoch") or 0)
    if epoch > bar.n:
        bar.update(epoch - bar.n)
    metrics = meta.get("metrics") or {}
    shown = {k: f"{float(metrics[k]):.4g}" for k in ("train_loss", "valid_loss", "valid_sisdr") if k in metrics}
    if shown:
        bar.set_postfix(shown, refresh=False)


def _train_target(plan: _Plan, target: str, child_run_id: Optional[str] = None):
    """Train (or resume, or reuse a finished) model for one target inside its MLflow child run."""
    import torch

    from .. import tracking
    from .checkpoint import TrainState, is_done
    from .epoch import make_model

    ray_run = f"{plan.run_name}-{target}"
    resume = plan.resume.get(target)
    child_params = {"target": target, "ray_run": ray_run, "model": plan.config.model, "sample_rate": plan.sample_rate,
                    "nb_channels": plan.nb_channels, "num_workers": plan.num_workers, "use_gpu": plan.use_gpu}
    with tracking.child_run(target, child_params, tags={"sepcluster.target": target},
                            resume_run_id=child_run_id) as child:
        if resume is None or not is_done(resume["meta"], plan.config.epochs):
            log.info("training target %s (Ray run %s, %d worker(s))", target, ray_run, plan.num_workers)
            result = _fit_with_progress(_trainer(plan, target, child.info.run_id),
                                        storage.join(plan.storage_path, ray_run), target, plan.config.epochs)
            if result.error is not None:
                raise result.error
            resume = latest_checkpoint(plan.storage_path, ray_run)
        if resume is None:
            raise DataError(f"target {target}: training produced no checkpoint in "
                            f"{storage.redact(storage.join(plan.storage_path, ray_run))}")
        state = TrainState.read(resume["uri"])
        model = make_model(plan.config, plan.nb_channels, plan.sample_rate)
        model.load_state_dict(state.best_model_state)
        model.eval()
        res = TargetResult(target=target, epoch=int(state.epoch), best_epoch=int(state.best_epoch),
                           best_valid_loss=float(state.best_loss), finished=bool(state.finished),
                           stop_reason=state.stop_reason, checkpoint=resume["uri"], ray_run=ray_run,
                           mlflow_run_id=child.info.run_id, attempts=list(state.attempts),
                           history=list(state.history))
        tracking.log_metrics({"final_best_valid_loss": res.best_valid_loss, "final_best_epoch": res.best_epoch,
                              "final_epochs": res.epoch})
        tracking.set_tags({"sepcluster.stop_reason": res.stop_reason or "", "sepcluster.checkpoint": res.checkpoint})
        tracking.log_dict({"attempts": res.attempts, "history": res.history, "stop_reason": res.stop_reason},
                          "training_history.json")
        with tempfile.TemporaryDirectory(prefix="sepcluster-model-") as tmp:
            path = os.path.join(tmp, f"{target}.pth")
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
            tracking.log_artifact(path, artifact_path="model")
    return res, model


def _save_bundle(out: str, models: dict, cfg: TrainConfig, spec, sample_rate: int, run_name: str, results: dict):
    from ..models import BundleMeta, save_bundle

    meta = BundleMeta(model=cfg.model, sample_rate=float(sample_rate), n_fft=cfg.n_fft, n_hop=cfg.n_hop,
                      bandwidth=cfg.bandwidth, training_data=storage.redact(spec.uri), recipe_hash=spec.recipe_hash,
                      extra={"run_name": run_name, "data": spec.describe(), "train_config": cfg.to_dict(),
                             "best_epochs": {t: r.best_epoch for t, r in results.items()},
                             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return save_bundle(out, models, meta)


def _log_heldout(bundle: str, heldout: str, songs, results: dict) -> dict:
    from .. import tracking
    from .quality import evaluate_heldout

    report = evaluate_heldout(bundle, heldout, songs=songs)
    for target, r in report["targets"].items():
        tracking.log_metrics({f"heldout.{target}.sisdr": r["sisdr"], f"heldout.{target}.mix_sisdr": r["mix_sisdr"],
                              f"heldout.{target}.sisdr_improvement": r["improvement"]})
        if target in results:
            results[target].heldout = r
    tracking.log_dict(report, "heldout.json")
    return report


__all__ = ["train", "TrainResult", "TargetResult", "parse_targets", "default_run_name", "default_storage_path",
           "latest_checkpoint"]
