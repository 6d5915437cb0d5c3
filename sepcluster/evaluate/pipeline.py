"""The evaluate job: BSS Eval v4, global SDR (uSDR) and SI-SDR over a catalog of tracks with Ray Data.

``metrics`` picks what is computed per track (default all three):

- ``bss``: BSS Eval v4 per 1 s frame, exactly as museval (:mod:`.engines`, the ``torch`` or
  ``museval`` engine);
- ``sdr``: the global SDR ("uSDR", the SDX challenges' SDR) per track and target, and
- ``sisdr``: SI-SDR per track and target (:mod:`.metrics`: one float64 pass over the audio; the
  epsilon and channel handling are stated there and in the Parquet metadata).

Without ``bss`` a track is read and scored and nothing else: a catalog runs at the speed its
audio can be read (tasks then ask for half a CPU each, so that reading one track overlaps
scoring another; ``num_cpus`` overrides).

The references and estimates of each track are listed and read by :mod:`.references` (MUSDB
roots, MoisesDB roots, stem-folder trees or one track folder, generate datasets; estimates
folders in either musdb layout, one track folder, or separate catalogs), each track in one Ray
task (:mod:`.worker`).

Or no estimates and ``separate_with`` = a separator bundle (``sepcluster separate --model``):
each track's mixture (the MUSDB mixture stream, a ``mixture.*`` file beside the stems, the
generate dataset's mixture; else the sum of the reference stems) is separated in the same Ray
task that scores it, in memory, and no stems are written (``summary.json`` then records the
separation time as ``separate_seconds``).

Bad input never stops the catalog: a track that cannot be read or scored is an error row (and
``failures.json``); an expected target without an estimate file (``targets``, else every target
estimated for some track) is an error row of its own, counted as ``n_missing_targets``;
adjustments (estimates resampled to the references' rate, mono repeated, lengths padded or
trimmed, silent references: uSDR and SI-SDR NaN) are warnings, kept per track in
``summary.json`` and printed one per line by :func:`format_summary`.

Output files: :mod:`.outputs`.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
import unicodedata
from typing import Any

import pandas as pd

from .. import storage
from ..errors import ConfigError, DataError
from . import aggregate
from .engines import ENGINES, METRICS
from .outputs import FRAME_SCHEMA, format_summary, museval_json  # noqa: F401  (re-exported)
from .outputs import by_convention, write_summary, write_tables
from .references import list_estimates, list_references
from .worker import BSS, METRIC_CHOICES, _evaluate_row

log = logging.getLogger(__name__)


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", str(name)).casefold().strip()


def evaluate(references, estimates, out: str, engine: str = "torch", targets: list[str] | None = None,
             window: float = 1.0, hop: float = 1.0, method: str = "sepcluster", address: str | None = None,
             subset: str | None = None, is_wav: bool | None = None, device: str | None = None,
             write_json: bool = True, log_mlflow: bool = True, num_cpus: float | None = None,
             tracks: list[str] | None = None, separate_with: str | None = None, niter: int = 1,
             metrics: list[str] | None = None, label_map=None, precision: str = "fp32") -> dict:
    """Score every track with both references and estimates; write Parquet, museval JSON, summary.json.

    references: MUSDB root / MoisesDB root / stem-folder tree or track folder / generate dataset
    URI, or an iterable of ``(track, {target: float (samples, channels)}, sample_rate)``.
    estimates: estimates folder or separate catalog Parquet (:mod:`.references`). out: output
    folder URI. metrics: any of ``bss``, ``sdr``, ``sisdr`` (default all). engine: ``"torch"``
    or ``"museval"`` (BSS Eval); device: torch device for the torch engine (``"cuda"`` asks Ray
    for one GPU per task). targets: restrict to these targets (and expect each of them).
    window/hop: BSS Eval frames in seconds. address: Ray address (None: RAY_ADDRESS or a new
    local Ray). num_cpus: CPUs per track task (default 1 with ``bss``, else 0.5). tracks: restrict
    to these track names. separate_with: a separator bundle; then ``estimates`` must be None and
    each track is separated in memory (``niter`` Wiener EM iterations, on ``device``, a demucs /
    RoFormer model with autocast ``precision``: ``bf16``, or ``fp16`` on CUDA) and scored in the same
    task. label_map: MoisesDB references' label map (mapping or YAML URI).

    Returns the summary dict (also written to ``out/summary.json``; :mod:`.outputs`): counts,
    timings (``seconds_per_track_minute``: BSS Eval engine seconds per minute of audio), worker
    peak memory, scores by convention, output URIs, failures, missing targets, warnings.
    """
    if isinstance(references, (str, os.PathLike)):
        references = storage.absolute(str(references))
    from .. import tracking
    from ..separate import model_uri

    estimates, out, separate_with = storage.absolute(estimates), storage.absolute(out), model_uri(separate_with)
    asked = _check_options(engine, window, hop, method, metrics)
    t_start = time.perf_counter()
    separator = _separator(separate_with, estimates, targets, precision, device)
    bundle_targets = list(separator.sources) if separator else []
    ref_specs, subset_name = list_references(references, subset=subset, is_wav=is_wav, label_map=label_map)
    if separate_with:
        est_map, skipped_rows = {name: {t: "" for t in bundle_targets} for name in ref_specs}, 0
    else:
        est_map, skipped_rows = list_estimates(estimates, subset=subset_name)
    items, missing, orphans = _plan(ref_specs, est_map, tracks, targets, estimates)
    expected = list(targets) if targets else sorted({t for it in items for t in json.loads(it["est_files"])})
    options = json.dumps({"method": method, "targets": list(targets) if targets else None, "window": float(window),
                          "hop": float(hop), "engine": engine, "device": device, "separate_with": separate_with,
                          "separator": separator.to_dict() if separator else None, "bundle_targets": bundle_targets,
                          "niter": int(niter), "metrics": asked, "precision": precision,
                          "expected_targets": [] if separate_with else expected})
    for it in items:
        it["options"] = options
    cpus = num_cpus if num_cpus is not None else (1.0 if BSS in asked else 0.5)
    mlflow_ready = tracking.prepare_in_background("evaluate") if log_mlflow else None  # while Ray works
    rows = pd.DataFrame(_run_ray(items, address=address, num_cpus=cpus,
                                 num_gpus=1.0 if (device and str(device).startswith("cuda")) else 0.0))
    meta = {"sepcluster.engine": engine, "sepcluster.window": window, "sepcluster.hop": hop,
            "sepcluster.method": method, "sepcluster.subset": subset_name}
    frames, medians, scores, uris = write_tables(rows, out, meta, method, subset_name, window, hop, asked,
                                                 write_json)
    summary = _summary(rows, frames, medians, scores, asked, uris, method=method, engine=engine, device=device,
                       window=window, hop=hop, subset=subset_name, separate_with=separate_with,
                       precision=precision,
                       counts={"n_missing_estimates": len(missing), "n_orphan_estimates": len(orphans),
                               "n_skipped_catalog_rows": int(skipped_rows)})
    summary["wall_seconds"] = time.perf_counter() - t_start
    write_summary(summary, out)
    if mlflow_ready:
        mlflow_ready()
        _log_run(summary, references, estimates or f"separate-with:{separate_with}", out, targets)
    return summary


def _summary(rows: pd.DataFrame, frames: pd.DataFrame, medians: pd.DataFrame, scores: pd.DataFrame, asked: list,
             uris: dict, *, method: str, engine: str, device, window: float, hop: float, subset: str,
             separate_with, precision: str, counts: dict) -> dict:
    """The summary dict of :func:`evaluate` (without ``wall_seconds``)."""
    ok, errors = rows[rows["error"] == ""], rows[rows["error"] != ""]
    missing_targets = {r.track: json.loads(r.missing_targets) for r in rows.itertuples()
                       if json.loads(r.missing_targets or "[]")}
    audio_s, eval_s = float(ok["audio_seconds"].sum()), float(ok["eval_seconds"].sum())
    conventions = by_convention(medians, scores, method, asked)
    return {
        "method": method, "metrics": asked, "engine": engine, "device": device or "cpu", "window": window,
        "hop": hop, "subset": subset,
        "n_tracks": int(len(ok)), "n_failed": int(len(errors)),
        "n_missing_targets": int(sum(len(v) for v in missing_targets.values())), **counts,
        "n_targets": int(pd.concat([frames["target"], scores.loc[scores["error"] == "", "target"]]).nunique()),
        "n_frames": int(len(frames)), "n_nan_frames": int(frames["SDR"].isna().sum()),
        "audio_seconds": audio_s, "eval_seconds": eval_s, "metric_seconds": float(ok["metric_seconds"].sum()),
        "read_seconds": float(rows["read_seconds"].sum()),
        "separate_with": separate_with, "separate_seconds": float(ok["separate_seconds"].sum()),
        "precision": precision,
        "seconds_per_track_minute": (eval_s / (audio_s / 60.0)) if (audio_s > 0 and BSS in asked) else None,
        "worker_peak_rss_mb": float(rows["worker_peak_rss_mb"].max()),
        "worker_peak_rss_mb_by_pid": {str(k): float(v) for k, v in
                                      rows.groupby("worker_pid")["worker_peak_rss_mb"].max().items()},
        "scores": conventions.get(aggregate.SISEC, {}),
        "scores_by_convention": conventions,
        **uris,
        "failures": {r.track: r.error for r in errors.itertuples()},
        "missing_targets": missing_targets,
        "warnings": {r.track: r.warnings for r in rows.itertuples() if r.warnings},
    }


def _check_options(engine: str, window: float, hop: float, method: str, metrics) -> list[str]:
    """Check the options; returns the metrics asked (in :data:`.worker.METRIC_CHOICES` order)."""
    asked = list(METRIC_CHOICES) if metrics is None else [str(m).strip().lower() for m in metrics]
    unknown = [m for m in asked if m not in METRIC_CHOICES]
    if unknown or not asked:
        raise ConfigError("metrics", f"{', '.join(unknown) or 'nothing'}: choose from {', '.join(METRIC_CHOICES)}")
    if engine not in ENGINES:
        raise ConfigError("engine", f"'{engine}' is not one of {', '.join(ENGINES)}")
    if not (window > 0 and hop > 0):
        raise ConfigError("window/hop", f"must be positive seconds, got {window}/{hop}")
    if not method or "/" in method:
        raise ConfigError("method", f"'{method}' must be a non-empty name without '/'")
    return [m for m in METRIC_CHOICES if m in asked]


def _separator(separate_with: str | None, estimates: str | None, targets, precision: str = "fp32", device=None):
    """The :class:`~sepcluster.separate.SeparatorSpec` of ``separate_with`` (any model ``sepcluster
    separate --model`` takes, loaded once here so a bad one fails before any work), or None; ``precision``
    checked against ``device``."""
    if not separate_with:
        if not estimates:
            raise ConfigError("estimates", "is required (a folder <track>/<target>.wav or a separate catalog), "
                                           "unless separate_with names a model bundle")
        if precision != "fp32":
            raise ConfigError("precision", f"{precision} applies to a model separated in memory (separate_with); "
                                           f"estimates are scored as they are")
        return None
    if estimates:
        raise ConfigError("estimates", "give either estimates or separate_with (a model bundle), not both")
    from ..separate import resolve_separator

    spec = resolve_separator(separate_with)
    spec.check_precision(precision, device or "cpu")
    if targets and not set(targets) & set(spec.sources):
        raise ConfigError("targets", f"{targets} are not outputs of {storage.redact(separate_with)} "
                                     f"(it has {', '.join(spec.sources)})")
    return spec


def _plan(ref_specs: dict, est_map: dict, tracks, targets, estimates) -> tuple[list, list, list]:
    """The work items (tracks with references and estimates), and the unmatched track names."""
    est_by_key = {_key(k): v for k, v in est_map.items()}
    items = []
    missing = []
    for name, spec in sorted(ref_specs.items()):
        if tracks is not None and name not in tracks:
            continue
        files = est_map.get(name) or est_by_key.get(_key(name))
        if not files:
            missing.append(name)
            continue
        if targets:
            files = {t: u for t, u in files.items() if t in targets}
        items.append({"track": name, "ref_spec": pickle.dumps(spec, protocol=5), "est_files": json.dumps(files)})
    orphans = sorted(set(map(_key, est_map)) - set(map(_key, ref_specs)))
    if missing:
        log.warning("%d reference track(s) have no estimates (e.g. %s)", len(missing), missing[0])
    if orphans:
        log.warning("%d estimate track(s) have no references (e.g. %s)", len(orphans), orphans[0])
    if not items:
        raise DataError(f"no track has both references ({len(ref_specs)} tracks) and estimates "
                        f"({len(est_map)} tracks): check the track names in {storage.redact(str(estimates))}")
    return items, missing, orphans


def _run_ray(items: list[dict], address: str | None, num_cpus: float, num_gpus: float) -> list[dict]:
    import ray

    from .. import raycluster

    with raycluster.session(address):
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        kwargs: dict[str, Any] = {"num_cpus": num_cpus}
        if num_gpus:
            kwargs["num_gpus"] = num_gpus
        ds = ds.flat_map(_evaluate_row, **kwargs)
        rows: list[dict] = []
        seen: set[str] = set()
        bar = raycluster.progress(len(items), "evaluate", unit="track")
        try:
            for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
                rows.extend(batch.to_dict("records"))
                new = set(batch["track"].unique()) - seen
                seen |= new
                bar.update(len(new))
        finally:
            bar.close()
    return rows


def _log_run(summary: dict, references, estimates, out: str, targets) -> None:
    from .. import tracking

    params = {"references": references if isinstance(references, (str, os.PathLike)) else "<iterable>",
              "estimates": estimates, "out": out, "engine": summary["engine"], "device": summary["device"],
              "window": summary["window"], "hop": summary["hop"], "method": summary["method"],
              "precision": summary["precision"],
              "targets": ",".join(targets) if targets else "all", "subset": summary["subset"],
              "metrics": ",".join(summary["metrics"])}
    with tracking.job_run("evaluate", params, run_name=f"evaluate-{summary['method']}"):
        metrics = {k: summary[k] for k in ("n_tracks", "n_failed", "n_missing_targets", "n_targets", "n_frames",
                                           "n_nan_frames", "audio_seconds", "eval_seconds", "metric_seconds",
                                           "wall_seconds", "seconds_per_track_minute", "worker_peak_rss_mb")
                   if summary.get(k) is not None}
        for target, vals in summary["scores"].items():  # SiSEC medians, as before
            for m in METRICS:
                if vals.get(m) is not None:
                    metrics[f"{target}.{m}"] = vals[m]
        for target, vals in summary["scores_by_convention"].get(aggregate.SDX, {}).items():
            for m, v in vals.items():
                if m != "n_tracks" and v is not None:
                    metrics[f"sdx_mean.{target}.{m}"] = v
        tracking.log_metrics(metrics)
        tracking.log_dict(summary, "summary.json")
