"""The evaluate job's Ray task: one track read, (separated,) scored; one result row back.

:func:`_evaluate_row` is the Ray Data ``flat_map`` function of :func:`sepcluster.evaluate.pipeline.evaluate`.
Its input row: ``track``, ``ref_spec`` (a pickled :class:`~.references.RefSpec`), ``est_files``
(JSON ``{target: uri}``), ``options`` (JSON). Its output, one row per track:

- ``method, track, error`` (``""`` when scored), ``warnings`` (the track's
  :class:`~.engines.EvaluationWarning` messages, one per line, each naming the track),
  ``missing_targets`` (JSON list: expected targets without an estimate file);
- ``frames``: the pickled BSS Eval frame table of :func:`.engines.evaluate_track` (``b""`` without
  ``bss``); ``scores``: the pickled :func:`.metrics.track_scores` table (``b""`` without ``sdr``/``sisdr``);
- timings ``read_seconds, separate_seconds, eval_seconds`` (BSS Eval), ``metric_seconds``
  (uSDR + SI-SDR), ``audio_seconds``; ``worker_pid`` and ``worker_peak_rss_mb`` (the worker
  process's peak resident memory so far, ``getrusage``).

Estimates at another sample rate than the references are resampled to it (soxr HQ) with a
warning naming the track and the rates; other channel counts than the references' are an error
of the track (mono is repeated on every channel, with a warning), see :mod:`.engines`.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import time
import warnings

import numpy as np

from .. import storage
from ..errors import DataError, SepclusterError
from .engines import EvaluationWarning, evaluate_track
from .references import RefSpec, read_mixture, read_references

BSS = "bss"
SDR = "sdr"
SISDR = "sisdr"
METRIC_CHOICES = (BSS, SDR, SISDR)
_BUNDLES: dict = {}  # (bundle id, device) -> the loaded separator, one per worker process


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _separate_in_memory(opts: dict, spec: RefSpec, refs: dict[str, np.ndarray], sr: int,
                        targets: list[str]) -> dict[str, np.ndarray]:
    """Separate one track's mixture with ``opts['separator']`` (any model ``sepcluster separate
    --model`` takes: a bundle, an Open-Unmix ``.pth``, a demucs ``.th`` / bag, a RoFormer ``.ckpt``):
    ``{target: audio}``. Uses the separate job's public functions; one model per worker process.
    """
    from ..separate import SeparatorSpec, load_separator, separate_track

    device = opts["device"] or "cpu"
    separator = SeparatorSpec.from_dict(opts["separator"])
    key = (separator.bundle_id, device)
    if key not in _BUNDLES:
        _BUNDLES.clear()
        _BUNDLES[key] = load_separator(separator, device=device)
    model = _BUNDLES[key]
    mixture = read_mixture(spec, refs, sr)
    outs = separate_track(model, mixture, sr, targets=targets, niter=opts["niter"], device=device,
                          downmix=mixture.shape[1] > 2, precision=opts.get("precision") or "fp32")
    return {t: outs[t] for t in targets}


def read_estimate(uri: str, sample_rate: int, track: str, target: str) -> np.ndarray:
    """One estimate file as float32 ``(samples, channels)`` at ``sample_rate`` (resampled with a warning)."""
    from .. import audio

    est, rate = audio.read_audio(uri)
    if rate != sample_rate:
        warnings.warn(f"track '{track}': estimate '{target}' is {rate} Hz, the references {sample_rate} Hz; "
                      "resampled (soxr HQ)", EvaluationWarning, stacklevel=2)
        est = audio.resample(est, rate, sample_rate)
    return est


def _estimates(row: dict, opts: dict, spec: RefSpec, refs: dict, sr: int, out: dict) -> tuple[dict, list]:
    """``({target: estimate}, targets)`` of one track, separated in memory or read from files."""
    track = row["track"]
    if opts.get("separate_with"):
        targets = [t for t in opts["bundle_targets"] if t in refs and (not opts["targets"] or t in opts["targets"])]
        if not targets:
            raise DataError(f"track '{track}': no reference for the bundle's targets {opts['bundle_targets']} "
                            f"(references: {sorted(refs)})")
        t0 = time.perf_counter()
        ests = _separate_in_memory(opts, spec, refs, sr, targets)
        out["separate_seconds"] = time.perf_counter() - t0
        return ests, targets
    est_files: dict[str, str] = json.loads(row["est_files"])
    expected = opts.get("expected_targets") or opts["targets"] or list(est_files)
    targets = [t for t in expected if t in est_files]
    if not targets:
        raise DataError(f"track '{track}': none of the targets {expected} has an estimate "
                        f"(estimates: {sorted(est_files)})")
    out["missing_targets"] = json.dumps([t for t in expected if t not in est_files])
    return {t: read_estimate(est_files[t], sr, track, t) for t in targets}, targets


def _score(refs: dict, ests: dict, sr: int, targets: list, opts: dict, track: str, out: dict) -> None:
    """Run the asked metrics on one track; fills ``out``'s frames, scores and timings."""
    from . import metrics

    asked = opts["metrics"]
    if BSS in asked:
        t0 = time.perf_counter()
        frames = evaluate_track(refs, ests, sr, window=opts["window"], hop=opts["hop"], engine=opts["engine"],
                                targets=targets, device=opts["device"], track=track)
        out["eval_seconds"] = time.perf_counter() - t0
        out["frames"] = pickle.dumps(frames, protocol=5)
    if SDR in asked or SISDR in asked:
        t0 = time.perf_counter()
        scores = metrics.track_scores(refs, ests, targets=targets, track=track)
        keep = ["target"] + (["uSDR"] if SDR in asked else []) + (["SI-SDR"] if SISDR in asked else [])
        out["metric_seconds"] = time.perf_counter() - t0
        out["scores"] = pickle.dumps(scores[keep], protocol=5)
    lengths = [a.shape[0] for t, a in refs.items() if t in targets]
    out["audio_seconds"] = (max(lengths) if lengths else 0) / float(sr)


def _evaluate_row(row: dict) -> list[dict]:
    """Ray Data flat_map: one work item (track) -> its result row (module docstring)."""
    opts = json.loads(row["options"])
    track = row["track"]
    out = {"method": opts["method"], "track": track, "error": "", "warnings": "", "missing_targets": "[]",
           "frames": b"", "scores": b"", "read_seconds": 0.0, "separate_seconds": 0.0, "eval_seconds": 0.0,
           "metric_seconds": 0.0, "audio_seconds": 0.0, "worker_pid": os.getpid(), "worker_peak_rss_mb": math.nan}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            t0 = time.perf_counter()
            spec: RefSpec = pickle.loads(row["ref_spec"])
            refs, sr = read_references(spec)
            ests, targets = _estimates(row, opts, spec, refs, sr, out)
            out["read_seconds"] = time.perf_counter() - t0 - out["separate_seconds"]
            _score(refs, ests, sr, targets, opts, track, out)
        except Exception as exc:  # one bad track must not stop the catalog
            kind = "" if isinstance(exc, SepclusterError) else f"{type(exc).__name__}: "
            out.update(error=storage.redact(f"{kind}{exc}") or type(exc).__name__, frames=b"", scores=b"")
    out["warnings"] = "\n".join(sorted({str(w.message) for w in caught if issubclass(w.category, EvaluationWarning)}))
    out["worker_peak_rss_mb"] = _peak_rss_mb()
    return [out]
