"""Aggregation by the SiSEC 2018 protocol.

1. per (method, track, target, metric): the median over the track's frames, NaN frames
   ignored (a track whose frames are all NaN has a NaN median);
2. per (method, target, metric): the median over tracks of those medians, NaN ignored.

This is what museval's ``EvalStore``/``MethodStore.agg_frames_tracks_scores`` computes
(pandas' ``median`` skips NaN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DataError

METRICS = ("SDR", "SIR", "SAR", "ISR")


def _check(frames: pd.DataFrame, needed: tuple[str, ...], what: str) -> None:
    missing = [c for c in needed if c not in frames.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {', '.join(missing)} (have {', '.join(map(str, frames.columns))})")


def track_medians(frames: pd.DataFrame) -> pd.DataFrame:
    """Median over frames per (method, track, target), NaN ignored.

    frames: one row per (method, track, target, frame) with SDR, SIR, SAR, ISR (a missing
    ``method`` column counts as one method ``""``). Returns columns
    ``method, track, target, SDR, SIR, SAR, ISR, n_frames, n_valid`` (``n_valid``: frames with
    a finite SDR).
    """
    _check(frames, ("track", "target") + METRICS, "frame table")
    df = frames.copy()
    if "method" not in df.columns:
        df["method"] = ""
    for m in METRICS:
        df[m] = pd.to_numeric(df[m], errors="coerce").replace([np.inf, -np.inf], np.nan)
    keys = ["method", "track", "target"]
    g = df.groupby(keys, sort=True, dropna=False)
    out = g[list(METRICS)].median()
    out["n_frames"] = g.size()
    out["n_valid"] = g["SDR"].count()
    return out.reset_index()


def method_medians(medians: pd.DataFrame) -> pd.DataFrame:
    """Median over tracks per (method, target) of per-track medians, NaN ignored.

    medians: the output of :func:`track_medians` (or SiSEC's ``per_track_medians.csv``).
    Returns columns ``method, target, SDR, SIR, SAR, ISR, n_tracks``.
    """
    _check(medians, ("method", "target") + METRICS, "per-track medians")
    g = medians.groupby(["method", "target"], sort=True, dropna=False)
    out = g[list(METRICS)].median()
    out["n_tracks"] = g.size()
    return out.reset_index()


def aggregate(frames: pd.DataFrame) -> pd.DataFrame:
    """SiSEC protocol in one call: :func:`method_medians` of :func:`track_medians`."""
    return method_medians(track_medians(frames))


def summary_dict(scores: pd.DataFrame) -> dict:
    """``{method: {target: {SDR, SIR, SAR, ISR, n_tracks}}}`` from :func:`method_medians` output
    (the layout of SiSEC's ``median_scores.json``); NaN becomes None."""
    out: dict = {}
    for row in scores.itertuples(index=False):
        d = out.setdefault(str(row.method), {}).setdefault(str(row.target), {})
        for m in METRICS:
            v = float(getattr(row, m))
            d[m] = None if not np.isfinite(v) else round(v, 4)
        d["n_tracks"] = int(row.n_tracks)
    return out
