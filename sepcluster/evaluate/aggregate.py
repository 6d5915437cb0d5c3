"""Aggregation by the SiSEC 2018 protocol.

1. per (method, track, target, metric): the median over the track's frames, NaN frames
   ignored (a track whose frames are all NaN has a NaN median);
2. per (method, target, metric): the median over tracks of those medians, NaN ignored.

This is what museval's ``EvalStore``/``MethodStore.agg_frames_tracks_scores`` computes
(pandas' ``median`` skips NaN).

The SDX convention for whole-track metrics (global SDR "uSDR", SI-SDR; see
:mod:`sepcluster.evaluate.metrics`): :func:`sdx_scores` (mean over targets per song, then over
songs; and the per-target mean over songs). :func:`sisec_scores` and :func:`sdx_scores` name each
column ``"<metric> (<convention>)"`` and :func:`side_by_side` joins such tables, refusing a
column without a convention or in two tables, so that no column mixes conventions.
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


# ---------------------------------------------------------------------------------------------
# Conventions, named. Every aggregated column is "<metric> (<convention>)", so that a table (and
# a report built from it) can never hold numbers of two conventions in one column:
#
# - SiSEC (``SISEC``): BSS Eval per frame, median over a track's frames, then median over
#   tracks (the functions above; museval, SiSEC 2018);
# - SDX (``SDX``): one whole-track value per (track, target) (global SDR "uSDR", SI-SDR), the
#   mean over targets per song, then the mean over songs (row ``target == ALL_TARGETS``; the
#   Music Demixing / Sound Demixing challenges' "SDR"), and the per-target mean over songs.
# ---------------------------------------------------------------------------------------------

SISEC = "SiSEC median"
SDX = "SDX mean"
SDX_SONG = "SDX song mean"
CONVENTIONS = (SISEC, SDX, SDX_SONG)
TRACK_METRICS = ("uSDR", "SI-SDR")
ALL_TARGETS = "all"


def convention_column(metric: str, convention: str) -> str:
    """The column name of ``metric`` aggregated by ``convention``: ``"SDR (SiSEC median)"``."""
    if convention not in CONVENTIONS:
        raise DataError(f"convention '{convention}': unknown (choose from {', '.join(CONVENTIONS)})")
    return f"{metric} ({convention})"


def sisec_scores(frames: pd.DataFrame) -> pd.DataFrame:
    """:func:`aggregate` (SiSEC) with convention-named columns.

    frames: as :func:`track_medians`. Returns columns ``method, target, SDR (SiSEC median),
    SIR (SiSEC median), SAR (SiSEC median), ISR (SiSEC median), n_tracks (SiSEC median)``.
    """
    scores = aggregate(frames)
    names = {c: convention_column(c, SISEC) for c in (*METRICS, "n_tracks")}
    return scores.rename(columns=names)[["method", "target", *names.values()]]


def _track_table(scores: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    _check(scores, ("track", "target") + tuple(metrics), "per-track scores")
    df = scores.copy()
    if "method" not in df.columns:
        df["method"] = ""
    keys = ["method", "track", "target"]
    dup = df.duplicated(keys)
    if dup.any():
        first = df.loc[dup, keys].iloc[0]
        raise DataError(f"per-track scores: {int(dup.sum())} repeated (method, track, target) row(s), "
                        f"e.g. ({first['method']!r}, {first['track']!r}, {first['target']!r})")
    for m in metrics:
        df[m] = pd.to_numeric(df[m], errors="coerce").replace([np.inf, -np.inf], np.nan)
    return df


def sdx_song_means(scores: pd.DataFrame, metrics: tuple[str, ...] = TRACK_METRICS) -> pd.DataFrame:
    """Mean over targets per (method, track), NaN ignored: the SDX song score.

    scores: one row per (method, track, target) with whole-track metrics (``uSDR``, ``SI-SDR``:
    :func:`sepcluster.evaluate.metrics.track_scores` with ``method``/``track`` columns added; a
    missing ``method`` column counts as one method ``""``). Returns columns ``method, track,
    <metric> (SDX song mean)..., n_targets``.
    """
    df = _track_table(scores, metrics)
    g = df.groupby(["method", "track"], sort=True, dropna=False)
    out = g[list(metrics)].mean()
    out["n_targets"] = g.size()
    out = out.rename(columns={m: convention_column(m, SDX_SONG) for m in metrics})
    return out.reset_index()


def sdx_scores(scores: pd.DataFrame, metrics: tuple[str, ...] = TRACK_METRICS) -> pd.DataFrame:
    """SDX convention: per (method, target) the mean over songs, and per method the row
    ``target == ALL_TARGETS``: the mean over songs of each song's mean over targets. NaN ignored.

    scores: as :func:`sdx_song_means`. Returns columns ``method, target, <metric> (SDX mean)...,
    n_tracks (SDX mean)`` (songs in the group), the targets in sorted order, then ``ALL_TARGETS``.
    """
    df = _track_table(scores, metrics)
    g = df.groupby(["method", "target"], sort=True, dropna=False)
    per_target = g[list(metrics)].mean()
    per_target["n_tracks"] = g.size()
    songs = sdx_song_means(df, metrics)
    songs.columns = [m if m in ("method", "track") else m.replace(f" ({SDX_SONG})", "") for m in songs.columns]
    g = songs.groupby("method", sort=True, dropna=False)
    overall = g[list(metrics)].mean()
    overall["n_tracks"] = g.size()
    overall["target"] = ALL_TARGETS
    out = pd.concat([per_target.reset_index(), overall.reset_index()], ignore_index=True)
    out["_all"] = out["target"] == ALL_TARGETS
    out = out.sort_values(["method", "_all", "target"], kind="stable").drop(columns="_all")
    names = {c: convention_column(c, SDX) for c in (*metrics, "n_tracks")}
    return out.rename(columns=names)[["method", "target", *names.values()]].reset_index(drop=True)


def side_by_side(*tables: pd.DataFrame) -> pd.DataFrame:
    """Outer join of convention tables (:func:`sisec_scores`, :func:`sdx_scores`) on
    ``method, target``. Every other column must be named by one convention and appear in one
    table only (:class:`DataError` otherwise), so no column mixes conventions."""
    keys = ["method", "target"]
    seen: set[str] = set()
    out = None
    for table in tables:
        _check(table, tuple(keys), "convention table")
        for c in table.columns:
            if c in keys:
                continue
            if not any(str(c).endswith(f"({conv})") for conv in CONVENTIONS):
                raise DataError(f"convention table: column '{c}' is not named by a convention "
                                f"(expected '<metric> (<{' | '.join(CONVENTIONS)}>)')")
            if c in seen:
                raise DataError(f"convention tables: column '{c}' appears in two tables")
            seen.add(c)
        out = table if out is None else out.merge(table, on=keys, how="outer")
    if out is None:
        raise DataError("side_by_side: no tables")
    return out.reset_index(drop=True)
