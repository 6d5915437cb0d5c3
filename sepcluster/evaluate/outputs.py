"""What the evaluate job writes and prints: Parquet tables, museval JSON, summary.json, the console summary.

Files under ``out`` (every file is written on every run, so a rerun with other metrics leaves no
stale table; a table of metrics not asked for has no rows):

- ``frames.parquet``: BSS Eval v4, one row per (method, track, target, frame): ``method, track,
  target, frame, time, duration, SDR, SIR, SAR, ISR`` (float64 dB, NaN as museval's store);
- ``track_medians.parquet``: the BSS Eval per-track medians over frames (SiSEC step 1):
  ``method, track, target, SDR, SIR, SAR, ISR, n_frames, n_valid``;
- ``track_scores.parquet``: one row per (method, track, target) with every metric computed:
  ``uSDR`` (global SDR) and ``SI-SDR`` when asked, the BSS Eval per-track medians ``SDR, SIR,
  SAR, ISR, n_frames, n_valid`` when ``bss`` was asked, and ``error`` (``""``; else why the row
  has no scores: a failed track has one row with target ``""``, a target without an estimate
  file one row of its own). uSDR/SI-SDR definitions (epsilon, channels) are in
  :mod:`.metrics`; the Parquet metadata states them;
- ``museval/<method>/<subset>/<track>.json`` (BSS Eval only): museval's own ``TrackStore`` JSON;
- ``summary.json``: counts, timings, worker memory, and the scores aggregated by both
  conventions, each named (``scores_by_convention``: ``"SiSEC median"``: per target, median over
  tracks of per-track frame medians; ``"SDX mean"``: per target the mean over tracks, and
  ``"all"``: the mean over tracks of each track's mean over targets). ``scores`` is the SiSEC
  one, as before. ``failures.json`` when a track failed.
"""

from __future__ import annotations

import json
import logging
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import storage
from . import aggregate
from .engines import METRICS, ordered_targets

log = logging.getLogger(__name__)

FRAME_SCHEMA = pa.schema([
    ("method", pa.string()), ("track", pa.string()), ("target", pa.string()), ("frame", pa.int64()),
    ("time", pa.float64()), ("duration", pa.float64()), ("SDR", pa.float64()), ("SIR", pa.float64()),
    ("SAR", pa.float64()), ("ISR", pa.float64()),
])
MEDIAN_COLUMNS = ["method", "track", "target", *METRICS, "n_frames", "n_valid"]
SCORE_META = {
    "sepcluster.uSDR": "global SDR per track and target: 10 log10((sum s^2 + 1e-7) / (sum (s - s_hat)^2 + 1e-7)), "
                       "sums over every sample of every channel (demucs' new_sdr), float64; NaN for a silent reference",
    "sepcluster.SI-SDR": "SI-SDR per track and target, channels concatenated, no mean removal, eps = float64 eps "
                         "(torchmetrics' formula); NaN for a silent reference or estimate",
}


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    if df.empty:
        return df.reset_index(drop=True)
    order = {t: i for i, t in enumerate(ordered_targets(df["target"].unique()))}
    return (df.assign(_o=df["target"].map(order)).sort_values(["track", "_o", *keys], kind="stable")
            .drop(columns="_o").reset_index(drop=True))


def frame_table(ok: pd.DataFrame) -> pd.DataFrame:
    """The BSS Eval frames of the scored tracks (rows of :func:`.worker._evaluate_row` unpickled)."""
    parts = [pickle.loads(r.frames).assign(method=r.method, track=r.track)
             for r in ok.itertuples() if r.frames]
    if not parts:
        return pd.DataFrame({f.name: pd.Series(dtype=f.type.to_pandas_dtype()) for f in FRAME_SCHEMA})
    return _sorted(pd.concat(parts, ignore_index=True)[[f.name for f in FRAME_SCHEMA]], ["frame"])


def score_table(rows: pd.DataFrame, medians: pd.DataFrame, asked: list[str]) -> pd.DataFrame:
    """``track_scores``: whole-track metrics beside the BSS Eval track medians, plus error rows."""
    parts = [pickle.loads(r.scores).assign(method=r.method, track=r.track)
             for r in rows.itertuples() if r.scores]
    whole = [m for m, k in (("uSDR", "sdr"), ("SI-SDR", "sisdr")) if k in asked]
    scores = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["method", "track", "target", *whole])
    keys = ["method", "track", "target"]
    if "bss" in asked:
        scores = medians.merge(scores, on=keys, how="outer") if whole else medians.copy()
    errors = []
    for r in rows.itertuples():
        if r.error:
            errors.append({"method": r.method, "track": r.track, "target": "", "error": r.error})
        for t in json.loads(r.missing_targets or "[]"):
            errors.append({"method": r.method, "track": r.track, "target": t,
                           "error": f"track '{r.track}': no estimate file for target '{t}'"})
    scores = scores.assign(error="")
    if errors:
        scores = pd.concat([scores, pd.DataFrame(errors)], ignore_index=True)
    cols = keys + whole + ([*METRICS, "n_frames", "n_valid"] if "bss" in asked else []) + ["error"]
    out = scores.reindex(columns=cols)
    for c in ("n_frames", "n_valid"):
        if c in out.columns:
            out[c] = out[c].astype("Int64")
    return _sorted(out, [])


def write_tables(rows: pd.DataFrame, out: str, meta: dict, method: str, subset: str, window: float, hop: float,
                 asked: list[str], write_json: bool) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Write the Parquet tables and museval JSON; returns ``(frames, medians, track_scores, uris)``."""
    ok = rows[rows["error"] == ""]
    frames = frame_table(ok)
    medians = aggregate.track_medians(frames) if len(frames) else pd.DataFrame(columns=MEDIAN_COLUMNS)
    scores = score_table(rows, medians, asked)
    uris = {"frames_uri": storage.join(out, "frames.parquet"),
            "track_medians_uri": storage.join(out, "track_medians.parquet"),
            "track_scores_uri": storage.join(out, "track_scores.parquet")}
    storage.write_parquet(pa.Table.from_pandas(frames, schema=FRAME_SCHEMA, preserve_index=False),
                          uris["frames_uri"], metadata=meta)
    storage.write_parquet(pa.Table.from_pandas(medians, preserve_index=False), uris["track_medians_uri"],
                          metadata=meta)
    storage.write_parquet(pa.Table.from_pandas(scores, preserve_index=False), uris["track_scores_uri"],
                          metadata={**meta, **SCORE_META, "sepcluster.metrics": ",".join(asked)})
    json_root = storage.join(out, "museval", method)
    uris["json_uri"] = json_root if (write_json and len(frames)) else None
    if uris["json_uri"]:
        for track, tdf in frames.groupby("track", sort=True):
            storage.write_text(storage.join(json_root, subset, f"{track}.json"),
                               museval_json(tdf, window=window, hop=hop))
    return frames, medians, scores, uris


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


def _round(v) -> float | None:
    v = float(v)
    return None if not np.isfinite(v) else round(v, 4)


def by_convention(medians: pd.DataFrame, scores: pd.DataFrame, method: str, asked: list[str]) -> dict:
    """``{"SiSEC median": {target: {SDR, SIR, SAR, ISR, n_tracks}}, "SDX mean": {target|"all": {uSDR,
    SI-SDR, n_tracks}}}`` for ``method`` (a convention whose metrics were not asked is absent)."""
    out: dict = {}
    if len(medians):
        out[aggregate.SISEC] = aggregate.summary_dict(aggregate.method_medians(medians)).get(method, {})
    whole = tuple(m for m, k in (("uSDR", "sdr"), ("SI-SDR", "sisdr")) if k in asked)
    ok = scores[(scores["error"] == "")] if len(scores) else scores
    if whole and len(ok):
        sdx = aggregate.sdx_scores(ok[["method", "track", "target", *whole]], metrics=whole)
        block = {}
        for row in sdx[sdx["method"] == method].to_dict("records"):
            block[row["target"]] = {m: _round(row[aggregate.convention_column(m, aggregate.SDX)]) for m in whole}
            block[row["target"]]["n_tracks"] = int(row[aggregate.convention_column("n_tracks", aggregate.SDX)])
        out[aggregate.SDX] = block
    return out


def write_summary(summary: dict, out: str) -> None:
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2, default=str))
    if summary["failures"]:
        storage.write_text(storage.join(out, "failures.json"), json.dumps(summary["failures"], indent=2))
        for track, err in summary["failures"].items():
            log.error("track '%s' failed: %s", track, err)


def _score_lines(summary: dict) -> list[str]:
    lines = []
    conv = summary.get("scores_by_convention", {})
    if conv.get(aggregate.SISEC):
        lines.append(f"{aggregate.SISEC} (BSS Eval v4: median over 1 s frames per track, then median over tracks):")
        for target, vals in conv[aggregate.SISEC].items():
            lines.append(f"  {target:<14} " + "  ".join(f"{m} {vals[m]:7.2f}" if vals[m] is not None
                                                        else f"{m}     nan" for m in METRICS))
    if conv.get(aggregate.SDX):
        lines.append(f"{aggregate.SDX} (whole-track uSDR / SI-SDR: mean over tracks; 'all': mean over targets per "
                     "track, then over tracks):")
        for target, vals in conv[aggregate.SDX].items():
            lines.append(f"  {target:<14} " + "  ".join(
                f"{m} {v:7.2f}" if v is not None else f"{m}     nan" for m, v in vals.items() if m != "n_tracks")
                + f"  ({vals['n_tracks']} tracks)")
    return lines


def format_summary(summary: dict) -> str:
    """The console summary of an :func:`~.pipeline.evaluate` run: counts, both conventions (named), then
    one line per failed track, missing target and warning (each naming its track)."""
    asked = summary.get("metrics", ["bss"])
    engine = f" with the {summary['engine']} engine" if "bss" in asked else ""
    lines = [f"evaluated {summary['n_tracks']} track(s){engine} ({summary['n_failed']} failed, "
             f"{summary.get('n_missing_targets', 0)} missing target(s)); metrics: {', '.join(asked)}"
             + (f"; {summary['n_frames']} frames" if "bss" in asked else "")]
    spm = summary.get("seconds_per_track_minute")
    if spm is not None:
        lines.append(f"engine time: {spm:.2f} s per track-minute")
    if summary.get("separate_with"):
        autocast = f" ({summary['precision']} autocast)" if summary.get("precision", "fp32") != "fp32" else ""
        lines.append(f"separated in memory with {summary['separate_with']}{autocast}: "
                     f"{summary['separate_seconds']:.1f} s")
    lines += _score_lines(summary)
    for track, err in summary.get("failures", {}).items():
        lines.append(f"  FAILED {track}: {err}")
    for track, targets in summary.get("missing_targets", {}).items():
        lines.append(f"  MISSING track '{track}': no estimate for {', '.join(targets)}")
    for text in summary.get("warnings", {}).values():
        lines += [f"  WARNING {w}" for w in text.splitlines()]
    lines.append(f"results: {summary['track_scores_uri']}")
    return "\n".join(lines)
