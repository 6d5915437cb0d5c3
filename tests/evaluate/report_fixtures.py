"""Evaluate results written by hand (frames.parquet + track_scores.parquet) for the report tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from sepcluster import storage
from sepcluster.evaluate import report

TARGETS = ("vocals", "drums", "bass", "other")


def write_results(folder, method: str, shift: float, n_tracks: int = 8, seed: int = 0, bss: bool = True):
    """A results folder for ``method`` on the first SiSEC 2018 tracks: 6 frames per track and target,
    per-track uSDR / SI-SDR. Returns ``(frames, scores)``."""
    rng = np.random.default_rng(seed)
    tracks = sorted(report.sisec18_track_medians()["track"].unique())[:n_tracks]
    frames, scores = [], []
    for i, track in enumerate(tracks):
        for j, target in enumerate(TARGETS):
            base = 4.0 + j + 0.3 * i + shift
            sdr = base + rng.normal(0, 1.0, 6)
            if i == 0:
                sdr[2:4] -= 8  # a bad passage: track 0 is among the worst
            for f, v in enumerate(sdr):
                frames.append({"method": method, "track": track, "target": target, "frame": f, "time": float(f),
                               "duration": 1.0, "SDR": v, "SIR": v + 8, "SAR": v + 1, "ISR": v + 4})
            scores.append({"method": method, "track": track, "target": target, "uSDR": base + 0.5,
                           "SI-SDR": base + 0.2 + rng.normal(0, 0.1), "error": ""})
    scores.append({"method": method, "track": "broken", "target": "", "uSDR": np.nan, "SI-SDR": np.nan,
                   "error": "track 'broken': not audio"})  # an error row: never aggregated
    frames, scores = pd.DataFrame(frames), pd.DataFrame(scores)
    if bss:
        storage.write_parquet(pa.Table.from_pandas(frames, preserve_index=False), str(folder / "frames.parquet"))
    else:
        frames = frames.iloc[0:0]
        storage.write_parquet(pa.Table.from_pandas(frames, preserve_index=False), str(folder / "frames.parquet"))
    storage.write_parquet(pa.Table.from_pandas(scores, preserve_index=False), str(folder / "track_scores.parquet"))
    return frames, scores[scores["error"] == ""]
