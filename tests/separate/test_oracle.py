"""The IRM oracle through the streaming engine, on the MUSDB sample."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from sepcluster.separate.engine import separate_file
from sepcluster.separate.oracle import IdealRatioMask

REFS = ("vocals", "drums", "bass", "other")


def _snr(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est) ** 2), 1e-30)))


def test_oracle_on_musdb_sample_stem_mp4(musdb_sample, tmp_path):
    """IRM1 from the .stem.mp4 streams (ffmpeg, streamed) vs the WAV references: SDR sanity."""
    from sepcluster.separate.inputs import list_inputs

    (track,) = list_inputs(str(musdb_sample / "stems"))
    est = IdealRatioMask.from_name("irm").estimator(residual=False)
    outs = {o: str(tmp_path / f"{o}.wav") for o in est.outputs}
    stats = separate_file(est, track.source_uri, outs, references=track.references, bits=32)
    assert stats.channels == 2 and stats.sample_rate == 44100
    wav_dir = musdb_sample / "train" / "Music Delta - 80s Rock"
    for name in REFS:
        ref, _ = sf.read(str(wav_dir / f"{name}.wav"), dtype="float32", always_2d=True)
        got, _ = sf.read(outs[name], dtype="float32", always_2d=True)
        n = min(len(ref), len(got))
        assert _snr(ref[:n], got[:n]) > 6.0, name
