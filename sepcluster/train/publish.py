"""What a finished training run leaves: the separator files, their MLflow records, the held-out check.

* :func:`log_unit`: a unit's child run gets its final figures, its history and (one model per
  target) the ``model/<target>.pth`` weights;
* :func:`write_separator`: a bundle of the per-target models (:func:`sepcluster.models.save_bundle`),
  or a multi-source model in its own format (:func:`sepcluster.models.export.export_model`: HTDemucs
  ``.th``, RoFormer ``.ckpt`` + YAML), written atomically to ``--out``; the parent run gets the
  ``bundle.json`` or the model files (``model/``);
* :func:`log_separator`: the separator as an MLflow pyfunc model (waveform in, stems out) in the
  parent run, registered under ``--register`` when given (:func:`sepcluster.tracking.log_separator_model`);
* :func:`log_heldout`: the separator's SI-SDR improvement on held-out songs.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator

from .. import storage

LOADER = "sepcluster.models.inference:load_separator"
_FAMILY_REQUIREMENTS = {"htdemucs": ["demucs==4.1.0"], "bs_roformer": ["bs-roformer==0.4.1", "einops"],
                        "mel_roformer": ["bs-roformer==0.4.1", "einops"]}


@dataclass(frozen=True)
class Written:
    """The separator on storage: ``path`` (what ``sepcluster separate --model`` takes), its ``files``
    (``path`` first), ``kind`` (``bundle``, ``demucs``, ``bs_roformer``, ``mel_band_roformer``)."""

    path: str
    files: tuple
    kind: str


def log_unit(res, model, unit: str, multi_source: bool) -> None:
    """Log a finished unit into the active (child) run: final figures, tags, ``training_history.json``
    and, for a per-target model, its weights ``model/<target>.pth``."""
    import torch

    from .. import tracking

    tracking.log_metrics({"final_best_valid_loss": res.best_valid_loss, "final_best_epoch": res.best_epoch,
                          "final_epochs": res.epoch})
    tracking.set_tags({"sepcluster.stop_reason": res.stop_reason or "", "sepcluster.checkpoint": res.checkpoint})
    tracking.log_dict({"attempts": res.attempts, "history": res.history, "stop_reason": res.stop_reason},
                      "training_history.json")
    if multi_source:
        return
    with tempfile.TemporaryDirectory(prefix="sepcluster-model-") as tmp:
        path = os.path.join(tmp, f"{unit}.pth")
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
        tracking.log_artifact(path, artifact_path="model")


def write_separator(plan, models: dict, results: dict) -> Written:
    """Write the trained separator to ``plan.out`` (see the module docstring) and record it in the active run."""
    from .. import tracking

    if not plan.multi_source:
        meta = _save_bundle(plan, models, results)
        tracking.set_tags({"sepcluster.bundle": plan.out, "sepcluster.bundle_id": meta.bundle_id()})
        tracking.log_dict(json.loads(meta.to_json()), "bundle.json")
        files = tuple(storage.join(plan.out, w["file"]) for w in meta.weights.values())
        return Written(plan.out, files + (storage.join(plan.out, "bundle.json"),), "bundle")
    from ..models.export import export_model
    from ..models.registry import get_family

    family = get_family(plan.config.model)
    model = next(iter(models.values()))
    exported = export_model(model, family.name, family.export, plan.out, sources=list(plan.targets),
                            sample_rate=plan.sample_rate, chunk_size=int(round(plan.segment * plan.sample_rate)),
                            training=plan.config.to_dict())
    tracking.set_tags({"sepcluster.bundle": exported.path, "sepcluster.model_kind": exported.kind})
    with _local(exported.files) as paths:
        for path in paths:
            tracking.log_artifact(path, artifact_path="model")
    return Written(exported.path, exported.files, exported.kind)


def _save_bundle(plan, models: dict, results: dict):
    from ..models import BundleMeta, save_bundle

    cfg, spec = plan.config, plan.spec
    meta = BundleMeta(model=cfg.model, sample_rate=float(plan.sample_rate), n_fft=cfg.n_fft, n_hop=cfg.n_hop,
                      bandwidth=cfg.bandwidth, training_data=storage.redact(spec.uri), recipe_hash=spec.recipe_hash,
                      extra={"run_name": plan.run_name, "data": spec.describe(), "train_config": cfg.to_dict(),
                             "best_epochs": {t: r.best_epoch for t, r in results.items()},
                             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return save_bundle(plan.out, {t: models[t] for t in plan.targets}, meta)


@contextlib.contextmanager
def _local(files) -> Iterator[list]:
    """Local paths of ``files`` (remote ones copied into a temporary folder under their own names)."""
    if not any(storage.is_remote(f) for f in files):
        yield [storage.absolute(f) for f in files]
        return
    with tempfile.TemporaryDirectory(prefix="sepcluster-publish-") as tmp:
        out = []
        for uri in files:
            path = os.path.join(tmp, storage.basename(uri))
            with open(path, "wb") as f:
                f.write(storage.read_bytes(uri))
            out.append(path)
        yield out


def log_separator(plan, written: Written) -> dict:
    """Log ``written`` as the run's MLflow pyfunc model (registered as ``plan.register`` when set); returns
    :func:`sepcluster.tracking.log_separator_model`'s ``{"model_uri", "model_id", "version"}``."""
    from .. import __version__, tracking

    requirements = [f"sepcluster=={__version__}", "torch", "numpy", *_FAMILY_REQUIREMENTS.get(plan.config.model, [])]
    with _local(written.files) as paths:
        if written.kind == "bundle":  # the bundle folder (rebuilt locally when remote)
            separator = storage.absolute(written.path) if not storage.is_remote(written.path) else \
                os.path.dirname(paths[0])
            extra = []
        else:
            separator, extra = paths[0], paths[1:]
        return tracking.log_separator_model(separator, loader=LOADER, outputs=list(plan.targets),
                                            channels=plan.nb_channels, sample_rate=plan.sample_rate,
                                            kind=written.kind, extra_files=extra, register=plan.register,
                                            requirements=requirements)


def log_heldout(path: str, heldout: str, songs, results: dict, multi_source: bool) -> dict:
    """SI-SDR of the separator at ``path`` on the held-out library, logged into the active run."""
    from .. import tracking
    from .quality import evaluate_heldout

    report = evaluate_heldout(path, heldout, songs=songs)
    for target, r in report["targets"].items():
        tracking.log_metrics({f"heldout.{target}.sisdr": r["sisdr"], f"heldout.{target}.mix_sisdr": r["mix_sisdr"],
                              f"heldout.{target}.sisdr_improvement": r["improvement"]})
        if target in results:
            results[target].heldout = r
    if multi_source and len(results) == 1:
        unit = next(iter(results.values()))
        means = [r for r in report["targets"].values()]
        unit.heldout = {k: sum(r[k] for r in means) / len(means) for k in ("sisdr", "mix_sisdr", "improvement")}
    tracking.log_dict(report, "heldout.json")
    return report


__all__ = ["Written", "log_unit", "write_separator", "log_separator", "log_heldout", "LOADER"]
