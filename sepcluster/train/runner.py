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


def parse_targets(targets: Union[str, Iterable[str], None]) -> list[str]:
    """``"vocals,drums"`` or a list -> checked, de-duplicated list (ConfigError names ``targets``)."""
    if targets is None:
        raise ConfigError("targets", "is required (e.g. vocals,drums,bass,other)")
    items = [t.strip() for t in targets.split(",")] if isinstance(targets, str) else [str(t).strip() for t in targets]
    items = [t for t in items if t]
    if not items:
        raise ConfigError("targets", "is empty (e.g. vocals,drums,bass,other)")
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

    See :func:`sepcluster.train.loop.newest_checkpoint`: this does not depend on Ray's run
    snapshot, which the controller may not have written yet when a driver is interrupted.
    """
    from .loop import newest_checkpoint

    return newest_checkpoint(storage.join(storage_path, ray_run))


def _checkpoint_state(uri: str) -> dict:
    from .loop import read_checkpoint_state

    return read_checkpoint_state(uri)


def _check_resources(num_workers: int, use_gpu: bool, config: TrainConfig) -> None:
    from .. import raycluster

    cpus, gpus = raycluster.cluster_cpus(), raycluster.cluster_gpus()
    if use_gpu and gpus < num_workers:
        raise ConfigError("gpus", f"{num_workers} GPU worker(s) asked for, the Ray cluster has {gpus} GPU(s)")
    need = num_workers * config.cpus_per_worker
    if not use_gpu and need > cpus:
        raise ConfigError("num_workers", f"{num_workers} worker(s) x {config.cpus_per_worker:g} CPU need {need:g} "
                                         f"CPUs, the Ray cluster has {cpus}")


def _signal(config: TrainConfig, sample_rate: int, nb_channels: int) -> dict:
    return {"sample_rate": int(sample_rate), "nb_channels": int(nb_channels)}


def train(data: str, targets: Union[str, Iterable[str]] = "vocals", config: Union[TrainConfig, dict, str, None] = None,
          *, num_workers: int = 1, use_gpu: bool = False, out: Optional[str] = None, run_name: Optional[str] = None,
          storage_path: Optional[str] = None, address: Optional[str] = None, heldout: Optional[str] = None,
          heldout_songs: Optional[Iterable[str]] = None, **overrides: Any) -> TrainResult:
    """Train one model per target on ``data`` and write a separator bundle.

    data: a generated dataset folder (Parquet), a recipe YAML (on-the-fly; set ``stems``) or a
    stem library; local or ``s3://``. targets: ``"vocals,drums"`` or a list. config: a
    :class:`TrainConfig`, a mapping or a YAML file; ``overrides`` set single fields.
    num_workers/use_gpu: Ray Train ``ScalingConfig``. out: bundle folder (default
    ``<storage_path>/<run_name>/bundle``). run_name: reuse one to resume (default: derived from
    data, targets and config). storage_path: checkpoints (default
    ``$SEPCLUSTER_HOME/train-runs``; local or ``s3://``). address: Ray address (default a
    local Ray). heldout: a stem library of songs never trained on; the bundle's SI-SDR
    improvement over the mixture on it is logged (``heldout_songs`` picks songs).

    Raises ConfigError / DataError / StorageError before any worker starts on bad input.
    """
    data, out, storage_path, heldout = (storage.absolute(u) for u in (data, out, storage_path, heldout))
    from .. import raycluster, tracking
    from .data import resolve_data

    cfg = load_train_config(config, **overrides)
    target_list = parse_targets(targets)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ConfigError("num_workers", f"must be an integer >= 1, got {num_workers!r}")
    if run_name is not None and not _RUN_NAME_RE.match(str(run_name)):
        raise ConfigError("run_name", f"must be letters, digits, '_', '-', '.' (at most 121), got {run_name!r}")
    spec = resolve_data(str(data), cfg, target_list)
    sample_rate = int(cfg.sample_rate or spec.sample_rate)
    nb_channels = int(cfg.nb_channels or spec.channels)
    if cfg.bandwidth is not None and cfg.bandwidth > sample_rate / 2:
        raise ConfigError("bandwidth", f"{cfg.bandwidth:g} Hz is above the Nyquist frequency of the training "
                                       f"rate {sample_rate} Hz")
    if cfg.seq_dur * sample_rate <= cfg.n_fft // 2:
        raise ConfigError("seq_dur", f"{cfg.seq_dur} s is too short for n_fft={cfg.n_fft} at {sample_rate} Hz")
    if spec.kind == "parquet" and len(spec.train_seeds) < num_workers:
        raise DataError(f"{storage.redact(str(data))}: {len(spec.train_seeds)} training mixtures cannot feed "
                        f"{num_workers} workers")
    if spec.kind == "onthefly":
        from .data import DEFAULT_ONTHEFLY_SAMPLES, MAX_SEED

        spe = cfg.samples_per_epoch or DEFAULT_ONTHEFLY_SAMPLES
        if cfg.seed + cfg.valid_size + (cfg.epochs + 1) * (spe + cfg.batch_size * num_workers) > MAX_SEED:
            raise ConfigError("epochs", "the on-the-fly seed stream would pass 2**32-1 (Scaper's seed limit): "
                                        "lower epochs, samples_per_epoch or seed")
    from .loop import make_model

    make_model(cfg, nb_channels, sample_rate)  # architecture arguments are valid (ConfigError otherwise)
    heldout_list = list(heldout_songs) if heldout_songs else None
    if heldout is not None:
        from .data import index_stems

        library = index_stems(heldout)
        missing = [t for t in target_list if t not in library]
        if missing:
            raise ConfigError("heldout", f"the held-out library {storage.redact(heldout)} has no '{missing[0]}' stems")
    run_name = run_name or default_run_name(str(data), target_list, cfg)
    storage_path = storage_path or default_storage_path()
    out = out or storage.join(storage_path, run_name, "bundle")
    architecture = cfg.architecture()
    signal = _signal(cfg, sample_rate, nb_channels)

    resume = {}
    for target in target_list:
        ray_run = f"{run_name}-{target}"
        found = latest_checkpoint(storage_path, ray_run)
        if found is not None:
            from .loop import check_compatible

            check_compatible(found["meta"], architecture, signal, target, storage.redact(found["uri"]))
            resume[target] = found
    raycluster.init(address)
    _check_resources(num_workers, use_gpu, cfg)

    params = {"data": storage.redact(str(data)), "targets": ",".join(target_list), "num_workers": num_workers,
              "use_gpu": use_gpu, "run_name": run_name, "storage_path": storage.redact(storage_path),
              "bundle": storage.redact(out), "sample_rate": sample_rate, "nb_channels": nb_channels,
              **{f"config.{k}": v for k, v in cfg.to_dict().items()},
              **{f"data.{k}": v for k, v in spec.describe().items()}}
    tags = {"sepcluster.run_name": run_name}
    if resume:
        tags["sepcluster.resumed_targets"] = ",".join(f"{t}@{f['meta'].get('epoch')}" for t, f in resume.items())
    results: dict[str, TargetResult] = {}
    models = {}
    # a resumed run continues its MLflow parent run (and each target its child run)
    previous = tracking.find_run("train", {"sepcluster.run_name": run_name}) if resume else None
    with tracking.job_run("train", params, run_name=run_name, tags=tags, resume_run_id=previous) as parent:
        for target in target_list:
            child_id = tracking.find_run("train", {"sepcluster.target": target},
                                         parent_run_id=previous) if previous else None
            res, model = _train_target(target, cfg, spec, sample_rate, nb_channels, architecture, signal,
                                       num_workers, use_gpu, run_name, storage_path, resume.get(target),
                                       child_run_id=child_id)
            results[target] = res
            models[target] = model
        meta = _save_bundle(out, models, cfg, spec, sample_rate, run_name, results)
        tracking.set_tags({"sepcluster.bundle": out, "sepcluster.bundle_id": meta.bundle_id()})
        tracking.log_dict(json.loads(meta.to_json()), "bundle.json")
        heldout_result = None
        if heldout is not None:
            heldout_result = _log_heldout(out, heldout, heldout_list, results)
        tracking.log_metrics({f"{t}.best_valid_loss": r.best_valid_loss for t, r in results.items()})
        parent_id = parent.info.run_id
    log.info("bundle written to %s", storage.redact(out))
    return TrainResult(bundle=out, run_name=run_name, storage_path=storage_path, mlflow_run_id=parent_id,
                       targets=results, data=spec.describe(), heldout=heldout_result)


def _train_target(target: str, cfg: TrainConfig, spec, sample_rate: int, nb_channels: int, architecture: dict,
                  signal: dict, num_workers: int, use_gpu: bool, run_name: str, storage_path: str, resume,
                  child_run_id: Optional[str] = None):
    """Train (or resume, or reuse a finished) model for one target inside its MLflow child run."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from .. import tracking
    from .loop import is_done, make_model, train_func

    ray_run = f"{run_name}-{target}"
    child_params = {"target": target, "ray_run": ray_run, "model": cfg.model, "sample_rate": sample_rate,
                    "nb_channels": nb_channels, "num_workers": num_workers, "use_gpu": use_gpu}
    with tracking.child_run(target, child_params, tags={"sepcluster.target": target},
                            resume_run_id=child_run_id) as child:
        if resume is None or not is_done(resume["meta"], cfg):
            path, fs = _ray_storage(storage_path)
            loop_config = {"config": cfg.to_dict(), "spec": spec.to_dict(), "target": target,
                           "sample_rate": sample_rate, "nb_channels": nb_channels, "architecture": architecture,
                           "signal": signal, "mlflow_run_id": child.info.run_id,
                           "tracking_uri": tracking.tracking_uri(),
                           "run_uri": storage.join(storage_path, ray_run)}
            datasets = None
            dataset_config = None
            if spec.kind == "parquet":
                from .data import parquet_datasets

                datasets = parquet_datasets(spec, target, cache=cfg.cache_dataset)
                dataset_config = DataConfig(datasets_to_split=["train"])
            trainer = TorchTrainer(
                train_func, train_loop_config=loop_config,
                torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
                scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                             resources_per_worker={"CPU": cfg.cpus_per_worker,
                                                                   **({"GPU": 1} if use_gpu else {})}),
                run_config=RunConfig(name=ray_run, storage_path=path, storage_filesystem=fs,
                                     failure_config=FailureConfig(max_failures=cfg.max_failures),
                                     checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
                                     logging_config=LoggingConfig(log_level="WARNING")),
                datasets=datasets, dataset_config=dataset_config)
            log.info("training target %s (Ray run %s, %d worker(s))", target, ray_run, num_workers)
            result = trainer.fit()
            if result.error is not None:
                raise result.error
            resume = latest_checkpoint(storage_path, ray_run)
        if resume is None:
            raise DataError(f"target {target}: training produced no checkpoint in "
                            f"{storage.redact(storage.join(storage_path, ray_run))}")
        state = _checkpoint_state(resume["uri"])
        model = make_model(cfg, nb_channels, sample_rate)
        model.load_state_dict(state["best_model_state"])
        model.eval()
        res = TargetResult(target=target, epoch=int(state["epoch"]), best_epoch=int(state["best_epoch"]),
                           best_valid_loss=float(state["best_loss"]), finished=bool(state["finished"]),
                           stop_reason=state.get("stop_reason"), checkpoint=resume["uri"], ray_run=ray_run,
                           mlflow_run_id=child.info.run_id, attempts=list(state.get("attempts", [])),
                           history=list(state.get("history", [])))
        tracking.log_metrics({"final_best_valid_loss": res.best_valid_loss, "final_best_epoch": res.best_epoch,
                              "final_epochs": res.epoch})
        tracking.set_tags({"sepcluster.stop_reason": res.stop_reason or "", "sepcluster.checkpoint": res.checkpoint})
        tracking.log_dict({"attempts": res.attempts, "history": res.history, "stop_reason": res.stop_reason},
                          "training_history.json")
        with tempfile.TemporaryDirectory(prefix="sepcluster-model-") as tmp:
            import torch

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
