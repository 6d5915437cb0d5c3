"""What a report reads: evaluate results (frames, per-track scores), SiSEC 2018 data, published scores.

- :func:`load_frames` / :func:`load_track_scores` / :func:`load_results`: an evaluate ``--out``
  folder (``frames.parquet``, ``track_scores.parquet``), a ``frames.parquet`` file (its folder's
  ``track_scores.parquet`` beside it, when present), or a list of them (one method each,
  concatenated);
- :func:`sisec18_track_medians` / :func:`sisec18_scores`: the packaged SiSEC 2018 MUS campaign
  (``data/SOURCE.md``);
- :func:`published_entries`: ``data/published.json``, published scores of later models, each with
  its convention (``"SiSEC median"`` SDR or ``"SDX mean"`` uSDR) and source; :func:`published_sdr`
  the SiSEC-convention SDRs by model.
"""

from __future__ import annotations

import json
from importlib import resources

import pandas as pd

from .. import storage
from ..errors import DataError
from .aggregate import METRICS, SISEC

TRACK_METRICS = ("uSDR", "SI-SDR")


def sisec18_track_medians() -> pd.DataFrame:
    """SiSEC 2018 per-track medians (packaged): method, track, target, SDR, SIR, SAR, ISR, n_frames."""
    with resources.files(__package__).joinpath("data/per_track_medians.csv").open("rb") as f:
        return pd.read_csv(f)


def sisec18_scores() -> dict:
    """SiSEC 2018 medians over tracks: ``{method: {target: {SDR, SIR, SAR, ISR, n_tracks}}}``."""
    with resources.files(__package__).joinpath("data/median_scores.json").open("rb") as f:
        return json.load(f)


def published_entries() -> list[dict]:
    """Every published entry: ``{model, convention, metric, test_set, extra_data, scores: {target: dB},
    source}`` (``scores`` may hold ``"all"`` for the SDX convention)."""
    with resources.files(__package__).joinpath("data/published.json").open("rb") as f:
        return list(json.load(f)["models"])


def published_sdr() -> dict:
    """Published SiSEC-convention SDRs of later models: ``{model: {target: SDR}}``."""
    return {e["model"]: dict(e["scores"]) for e in published_entries()
            if e["convention"] == SISEC and e["metric"] == "SDR"}


def _frames_uri(results) -> str:
    uri = str(results)
    if not storage.exists(uri):
        raise DataError(f"{storage.redact(uri)}: results not found")
    if storage.isdir(uri):
        cand = storage.join(uri, "frames.parquet")
        if not storage.exists(cand) and not storage.exists(storage.join(uri, "track_scores.parquet")):
            raise DataError(f"{storage.redact(uri)}: no frames.parquet (is this an evaluate --out folder?)")
        return cand
    return uri


def load_frames(results) -> pd.DataFrame:
    """The frame table of an evaluate output folder (``frames.parquet``) or of a Parquet file.

    ``results`` may also be a list of them: e.g. a model's scores and the oracle's, each with its
    own ``method``; their frames are concatenated. Empty (with the columns) when the run had no ``bss``.
    """
    if isinstance(results, (list, tuple)):
        if len(results) > 1:
            return pd.concat([load_frames(p) for p in results], ignore_index=True)
        results = results[0]
    uri = _frames_uri(results)
    if not storage.exists(uri):
        return pd.DataFrame(columns=["method", "track", "target", "frame", "time", *METRICS])
    df = storage.read_parquet(uri).to_pandas()
    need = {"track", "target", *METRICS}
    if not need <= set(df.columns):
        raise DataError(f"{storage.redact(uri)}: not an evaluate frame table (needs {', '.join(sorted(need))})")
    if "method" not in df.columns:
        df["method"] = "sepcluster"
    return df


def load_track_scores(results) -> pd.DataFrame:
    """The scored rows of ``track_scores.parquet`` (beside the frames): ``method, track, target`` and the
    whole-track metrics present (``uSDR``, ``SI-SDR``); empty when the results have none."""
    if isinstance(results, (list, tuple)):
        parts = [load_track_scores(p) for p in results]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["method", "track", "target"])
    uri = storage.join(storage.parent(_frames_uri(results)), "track_scores.parquet")
    if not storage.exists(uri):
        return pd.DataFrame(columns=["method", "track", "target"])
    df = storage.read_parquet(uri).to_pandas()
    if "error" in df.columns:
        df = df[df["error"] == ""]
    keep = ["method", "track", "target"] + [m for m in TRACK_METRICS if m in df.columns]
    return df[keep].reset_index(drop=True)


def load_results(results) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(frames, track scores)`` of ``results``; DataError when both are empty."""
    frames, scores = load_frames(results), load_track_scores(results)
    if frames.empty and scores.empty:
        raise DataError(f"{storage.redact(str(results))}: no scores (no BSS Eval frames and no per-track scores)")
    return frames, scores
