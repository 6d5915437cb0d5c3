"""Streaming audio reads: blocks from soundfile and ffmpeg equal whole-file decoding."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sepcluster.audio import read_audio, write_audio
from sepcluster.audiostream import open_reader
from sepcluster.errors import AudioError


def _tone(seconds: float, sr: int, channels: int = 2) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    rng = np.random.default_rng(0)
    return np.stack([0.3 * np.sin(2 * np.pi * 110.0 * (c + 1) * t) + 0.02 * rng.standard_normal(t.size)
                     for c in range(channels)], axis=1).astype(np.float32)


def test_block_reader_streams_soundfile_and_ffmpeg(tmp_path, musdb_sample):
    src = str(tmp_path / "x.flac")
    write_audio(src, _tone(3.0, 22050), 22050, format="flac")
    with open_reader(src, block_frames=10000) as r:
        blocks = list(r)
    assert all(b.shape[0] <= 10000 for b in blocks)
    got = np.concatenate(blocks)
    assert np.array_equal(got, sf.read(src, dtype="float32", always_2d=True)[0])
    mp4 = str(next((musdb_sample / "stems").iterdir()))
    ref, rate = read_audio(mp4, stream=4)
    with open_reader(mp4, stream=4, block_frames=50000) as r:
        assert r.sample_rate == rate == 44100 and r.channels == 2
        streamed = np.concatenate(list(r))
    assert np.array_equal(streamed, ref)
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(AudioError, match="bad.mp3"):
        with open_reader(str(bad)) as r:
            list(r)
