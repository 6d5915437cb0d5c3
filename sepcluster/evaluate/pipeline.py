"""The evaluate job: BSS Eval v4 over a catalog of tracks with Ray Data.

The references and estimates of each track are listed and read by
:mod:`sepcluster.evaluate.references` (MUSDB roots, stem-folder trees, generate datasets,
estimates folders and separate catalogs).

Or no estimates and ``separate_with`` = a separator bundle (``sepcluster separate --model``):
each track's mixture (the MUSDB mixture stream, a ``mixture.*`` file beside the stems, the
generate dataset's mixture; else the sum of the reference stems) is separated in the same Ray
task that scores it, in memory, and no stems are written (``summary.json`` then records the
separation time as ``separate_seconds``).

Output under ``out``:

- ``frames.parquet``: one row per (method, track, target, frame): ``method, track, target,
  frame, time, duration, SDR, SIR, SAR, ISR`` (float64 dB, NaN as museval's store);
- ``track_medians.parquet``: the per-track medians (SiSEC protocol step 1);
- ``museval/<method>/<subset>/<track>.json``: museval's own JSON (``TrackStore``), so
  ``museval.MethodStore().add_eval_dir(out + "/museval/<method>")`` reads our results
  (the subset is ``test`` unless the references are a MUSDB root's other subset);
- ``summary.json``: counts, timings and per-target medians; ``failures.json`` when a track
  failed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import time
import unicodedata
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import storage
from ..errors import ConfigError, DataError, SepclusterError
from . import aggregate
from .engines import ENGINES, METRICS, evaluate_track, ordered_targets
from .references import RefSpec, list_estimates, list_references, read_mixture, read_references

log = logging.getLogger(__name__)

FRAME_SCHEMA = pa.schema([
    ("method", pa.string()), ("track", pa.string()), ("target", pa.string()), ("frame", pa.int64()),
    ("time", pa.float64()), ("duration", pa.float64()), ("SDR", pa.float64()), ("SIR", pa.float64()),
    ("SAR", pa.float64()), ("ISR", pa.float64()),
])


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", str(name)).casefold().strip()


_BUNDLES: dict = {}  # (bundle uri, device) -> loaded SeparatorBundle, one per worker process


def _separate_in_memory(opts: dict, spec: RefSpec, refs: dict[str, np.ndarray], sr: int,
                        targets: list[str]) -> dict[str, np.ndarray]:
    """Separate one track's mixture with the bundle ``opts['separate_with']``: ``{target: audio}``.

    Uses the separate job's public :func:`sepcluster.separate.separate_track`.
    """
    from ..models import load_bundle
    from ..separate import separate_track

    device = opts["device"] or "cpu"
    key = (opts["separate_with"], device)
    if key not in _BUNDLES:
        _BUNDLES.clear()
        _BUNDLES[key] = load_bundle(opts["separate_with"], device=device)
    bundle = _BUNDLES[key]
    mixture = read_mixture(spec, refs, sr)
    outs = separate_track(bundle, mixture, sr, targets=targets, niter=opts["niter"], device=device,
                          downmix=mixture.shape[1] > 2)
    return {t: outs[t] for t in targets}


# ------------------------------------------------------------------------------- the work

def _evaluate_row(row: dict) -> list[dict]:
    """Ray Data flat_map: one work item (track) -> its frame rows (or one error row)."""
    from .. import audio

    opts = json.loads(row["options"])
    track = row["track"]
    spec: RefSpec = pickle.loads(row["ref_spec"])
    est_files: dict[str, str] = json.loads(row["est_files"])
    base = {"method": opts["method"], "track": track, "error": "", "eval_seconds": 0.0, "audio_seconds": 0.0,
            "separate_seconds": 0.0, "warnings": ""}
    try:
        refs, sr = read_references(spec)
        if opts.get("separate_with"):
            targets = [t for t in opts["bundle_targets"] if t in refs and (not opts["targets"] or t in opts["targets"])]
            if not targets:
                raise DataError(f"track '{track}': no reference for the bundle's targets {opts['bundle_targets']} "
                                f"(references: {sorted(refs)})")
            t_sep = time.perf_counter()
            ests = _separate_in_memory(opts, spec, refs, sr, targets)
            base["separate_seconds"] = time.perf_counter() - t_sep
        else:
            targets = opts["targets"] or list(est_files)
            targets = [t for t in targets if t in est_files]
            if not targets:
                raise DataError(f"track '{track}': none of the targets {opts['targets']} has an estimate "
                                f"(estimates: {sorted(est_files)})")
            ests = {t: audio.read_audio(est_files[t], sample_rate=sr)[0] for t in targets}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            df = evaluate_track(refs, ests, sr, window=opts["window"], hop=opts["hop"], engine=opts["engine"],
                                targets=targets, device=opts["device"], track=track)
            seconds = time.perf_counter() - t0
        n = max(a.shape[0] for t, a in refs.items() if t in targets) if any(t in refs for t in targets) else 0
        base.update(eval_seconds=seconds, audio_seconds=n / float(sr),
                    warnings="\n".join(sorted({str(w.message) for w in caught})))
    except Exception as exc:  # one bad track must not stop the catalog
        kind = "" if isinstance(exc, SepclusterError) else f"{type(exc).__name__}: "
        err = dict(base, error=storage.redact(f"{kind}{exc}") or type(exc).__name__)
        return [dict(err, target="", frame=-1, time=math.nan, duration=math.nan,
                     **{m: math.nan for m in METRICS})]
    rows = []
    for rec in df.to_dict("records"):
        rows.append(dict(base, **rec))
    return rows


def evaluate(references, estimates, out: str, engine: str = "torch", targets: list[str] | None = None,
             window: float = 1.0, hop: float = 1.0, method: str = "sepcluster", address: str | None = None,
             subset: str | None = None, is_wav: bool | None = None, device: str | None = None,
             write_json: bool = True, log_mlflow: bool = True, num_cpus: float = 1.0,
             tracks: list[str] | None = None, separate_with: str | None = None, niter: int = 1) -> dict:
    """Evaluate every track with both references and estimates; write Parquet + museval JSON.

    references: MUSDB root / stem-folder tree / generate dataset URI, or an iterable of
    ``(track, {target: float (samples, channels)}, sample_rate)``. estimates: estimates folder
    or separate catalog Parquet (module docstring). out: output folder URI. engine:
    ``"torch"`` or ``"museval"``; device: torch device for the torch engine (``"cuda"`` asks
    Ray for one GPU per task). targets: restrict to these targets. window/hop: seconds.
    address: Ray address (None: RAY_ADDRESS or a new local Ray). num_cpus: CPUs per track task.
    tracks: restrict to these track names. separate_with: a separator bundle; then
    ``estimates`` must be None and each track is separated in memory (``niter`` Wiener EM
    iterations, on ``device``) and scored in the same task.

    Returns the summary dict (also written to ``out/summary.json``): counts, timings
    (``seconds_per_track_minute``: engine seconds per minute of audio), per-target medians
    over tracks, output URIs, failures.
    """
    if isinstance(references, (str, os.PathLike)):
        references = storage.absolute(str(references))
    estimates, out, separate_with = (storage.absolute(u) for u in (estimates, out, separate_with))
    _check_options(engine, window, hop, method)
    t_start = time.perf_counter()
    bundle_targets = _bundle_targets(separate_with, estimates, targets)
    ref_specs, subset_name = list_references(references, subset=subset, is_wav=is_wav)
    if separate_with:
        est_map, skipped_rows = {name: {t: "" for t in bundle_targets} for name in ref_specs}, 0
    else:
        est_map, skipped_rows = list_estimates(estimates, subset=subset_name)
    items, missing, orphans = _plan(ref_specs, est_map, tracks, targets, estimates)
    options = json.dumps({"method": method, "targets": list(targets) if targets else None, "window": float(window),
                          "hop": float(hop), "engine": engine, "device": device, "separate_with": separate_with,
                          "bundle_targets": bundle_targets, "niter": int(niter)})
    for it in items:
        it["options"] = options

    rows = _run_ray(items, address=address, num_cpus=num_cpus,
                    num_gpus=1.0 if (device and str(device).startswith("cuda")) else 0.0)
    df = pd.DataFrame(rows)
    errors = df[df["error"] != ""].drop_duplicates("track")
    ok = df[df["error"] == ""]
    per_track = ok.groupby("track").agg(eval_seconds=("eval_seconds", "first"),
                                        audio_seconds=("audio_seconds", "first"),
                                        separate_seconds=("separate_seconds", "first"),
                                        warnings=("warnings", "first"))
    meta = {"sepcluster.engine": engine, "sepcluster.window": window, "sepcluster.hop": hop,
            "sepcluster.method": method, "sepcluster.subset": subset_name}
    frames, medians, uris = _write_tables(ok, out, meta, method, subset_name, window, hop, write_json)
    scores = aggregate.method_medians(medians) if len(medians) else medians
    audio_s = float(per_track["audio_seconds"].sum())
    eval_s = float(per_track["eval_seconds"].sum())
    summary = {
        "method": method, "engine": engine, "device": device or "cpu", "window": window, "hop": hop,
        "subset": subset_name,
        "n_tracks": int(len(per_track)), "n_failed": int(len(errors)), "n_missing_estimates": len(missing),
        "n_orphan_estimates": len(orphans), "n_skipped_catalog_rows": int(skipped_rows),
        "n_targets": int(frames["target"].nunique()), "n_frames": int(len(frames)),
        "n_nan_frames": int(frames["SDR"].isna().sum()),
        "audio_seconds": audio_s, "eval_seconds": eval_s,
        "separate_with": separate_with, "separate_seconds": float(per_track["separate_seconds"].sum()),
        "seconds_per_track_minute": (eval_s / (audio_s / 60.0)) if audio_s > 0 else None,
        "wall_seconds": time.perf_counter() - t_start,
        "scores": aggregate.summary_dict(scores).get(method, {}) if len(scores) else {},
        **uris,
        "failures": {r.track: r.error for r in errors.itertuples()},
        "warnings": {t: w for t, w in per_track["warnings"].items() if w},
    }
    _write_summary(summary, out)
    if log_mlflow:
        _log_run(summary, references, estimates or f"separate-with:{separate_with}", out, targets)
    return summary


def _check_options(engine: str, window: float, hop: float, method: str) -> None:
    if engine not in ENGINES:
        raise ConfigError("engine", f"'{engine}' is not one of {', '.join(ENGINES)}")
    if not (window > 0 and hop > 0):
        raise ConfigError("window/hop", f"must be positive seconds, got {window}/{hop}")
    if not method or "/" in method:
        raise ConfigError("method", f"'{method}' must be a non-empty name without '/'")


def _bundle_targets(separate_with: str | None, estimates: str | None, targets) -> list[str]:
    """The targets of the ``separate_with`` bundle (loaded here, so a bad one fails before any work)."""
    if not separate_with:
        if not estimates:
            raise ConfigError("estimates", "is required (a folder <track>/<target>.wav or a separate catalog), "
                                           "unless separate_with names a model bundle")
        return []
    if estimates:
        raise ConfigError("estimates", "give either estimates or separate_with (a model bundle), not both")
    from ..models import load_bundle

    bundle_targets = load_bundle(separate_with).targets
    if targets and not set(targets) & set(bundle_targets):
        raise ConfigError("targets", f"{targets} are not in the bundle {storage.redact(separate_with)} "
                                     f"(it has {', '.join(bundle_targets)})")
    return bundle_targets


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


def _write_tables(ok: pd.DataFrame, out: str, meta: dict, method: str, subset_name: str, window: float,
                  hop: float, write_json: bool) -> tuple:
    """Write frames.parquet, track_medians.parquet and the museval JSON; returns (frames, medians, uris)."""
    frames = ok[[f.name for f in FRAME_SCHEMA]].copy()
    order = {t: i for i, t in enumerate(ordered_targets(frames["target"].unique()))}
    frames["_o"] = frames["target"].map(order)
    frames = frames.sort_values(["track", "_o", "frame"]).drop(columns="_o").reset_index(drop=True)
    frames_uri = storage.join(out, "frames.parquet")
    medians_uri = storage.join(out, "track_medians.parquet")
    storage.write_parquet(pa.Table.from_pandas(frames, schema=FRAME_SCHEMA, preserve_index=False), frames_uri,
                          metadata=meta)
    medians = aggregate.track_medians(frames) if len(frames) else pd.DataFrame(
        columns=["method", "track", "target", *METRICS, "n_frames", "n_valid"])
    storage.write_parquet(pa.Table.from_pandas(medians, preserve_index=False), medians_uri, metadata=meta)
    json_root = storage.join(out, "museval", method)
    if write_json:
        for track, tdf in frames.groupby("track", sort=True):
            storage.write_text(storage.join(json_root, subset_name, f"{track}.json"),
                               museval_json(tdf, window=window, hop=hop))
    uris = {"frames_uri": frames_uri, "track_medians_uri": medians_uri, "json_uri": json_root if write_json else None}
    return frames, medians, uris


def _write_summary(summary: dict, out: str) -> None:
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2, default=str))
    if summary["failures"]:
        storage.write_text(storage.join(out, "failures.json"), json.dumps(summary["failures"], indent=2))
        for track, err in summary["failures"].items():
            log.error("track '%s' failed: %s", track, err)


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


def format_summary(summary: dict) -> str:
    """The console summary of an :func:`evaluate` run."""
    lines = [f"evaluated {summary['n_tracks']} track(s) with the {summary['engine']} engine "
             f"({summary['n_failed']} failed); {summary['n_frames']} frames"]
    spm = summary.get("seconds_per_track_minute")
    if spm is not None:
        lines.append(f"engine time: {spm:.2f} s per track-minute")
    if summary.get("separate_with"):
        lines.append(f"separated in memory with {summary['separate_with']}: {summary['separate_seconds']:.1f} s")
    for target, vals in summary["scores"].items():
        lines.append(f"  {target:<14} " + "  ".join(f"{m} {vals[m]:7.2f}" if vals[m] is not None else f"{m}     nan"
                                                    for m in ("SDR", "SIR", "SAR", "ISR")))
    for track, err in summary.get("failures", {}).items():
        lines.append(f"  FAILED {track}: {err}")
    lines.append(f"results: {summary['frames_uri']}")
    return "\n".join(lines)


def museval_json(frames: pd.DataFrame, window: float = 1.0, hop: float = 1.0) -> str:
    """museval's JSON for one track (``TrackStore(win, hop).json``) from its frame rows.

    frames: rows of one track with ``target, frame, SDR, SIR, SAR, ISR`` (any order).
    """
    from museval.aggregate import TrackStore

    track = str(frames["track"].iloc[0]) if "track" in frames.columns and len(frames) else "track"
    store = TrackStore(track_name=track, win=window, hop=hop)
    for target in ordered_targets(frames["target"].unique()):
        tdf = frames[frames["target"] == target].sort_values("frame")
        store.add_target(target_name=target, values={m: tdf[m].astype(float).tolist() for m in METRICS})
    return store.json


def _log_run(summary: dict, references, estimates, out: str, targets) -> None:
    from .. import tracking

    params = {"references": references if isinstance(references, (str, os.PathLike)) else "<iterable>",
              "estimates": estimates, "out": out, "engine": summary["engine"], "device": summary["device"],
              "window": summary["window"], "hop": summary["hop"], "method": summary["method"],
              "targets": ",".join(targets) if targets else "all", "subset": summary["subset"]}
    with tracking.job_run("evaluate", params, run_name=f"evaluate-{summary['method']}"):
        metrics = {k: summary[k] for k in ("n_tracks", "n_failed", "n_targets", "n_frames", "n_nan_frames",
                                           "audio_seconds", "eval_seconds", "wall_seconds",
                                           "seconds_per_track_minute") if summary.get(k) is not None}
        for target, vals in summary["scores"].items():
            for m in METRICS:
                if vals.get(m) is not None:
                    metrics[f"{target}.{m}"] = vals[m]
        tracking.log_metrics(metrics)
        tracking.log_dict(summary, "summary.json")
