"""The engine's streaming pieces: padded buffer, chunk scheduler, cross-fade, resampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sepcluster.audio import resample
from sepcluster.errors import ConfigError
from sepcluster.separate.chunking import ChunkScheduler, CrossFade, PaddedSignal, StreamResampler, chunk_frames


def _cut(x: np.ndarray, n_fft: int, hop: int, chunk, overlap, block: int) -> list:
    signal = PaddedSignal(n_fft // 2, x.shape[1])
    sched = ChunkScheduler(n_fft, hop, chunk, overlap)
    chunks = []
    for s in range(0, x.shape[0], block):
        if signal.append(x[s:s + block]):
            chunks += list(sched.cut(signal))
    signal.close()
    return chunks + list(sched.cut(signal, eos=True))


@pytest.mark.parametrize("samples,block", [(10000, 777), (10000, 10000), (100, 7), (3, 1)])
def test_chunks_are_the_frames_of_the_padded_signal(samples, block):
    n_fft, hop, chunk, overlap = 256, 64, 20, 5
    x = np.random.default_rng(0).standard_normal((samples, 2)).astype(np.float32)
    whole = x if samples > n_fft // 2 else np.concatenate([x, np.zeros((n_fft // 2 + 1 - samples, 2), np.float32)])
    padded = np.pad(whole, ((n_fft // 2, n_fft // 2), (0, 0)), mode="reflect")
    chunks = _cut(x, n_fft, hop, chunk, overlap, block)
    total_frames = whole.shape[0] // hop + 1
    assert chunks[0].start == 0 and chunks[-1].stop == total_frames and chunks[-1].last
    assert not any(c.last for c in chunks[:-1])
    for prev, cur in zip(chunks, chunks[1:]):
        assert cur.start == prev.stop - overlap and prev.stop - prev.start == chunk
    for c in chunks:
        assert np.array_equal(c.segment, padded[c.start * hop:(c.stop - 1) * hop + n_fft])


def test_one_chunk_without_chunk_frames():
    x = np.random.default_rng(1).standard_normal((5000, 1)).astype(np.float32)
    (only,) = _cut(x, 512, 128, None, 0, 1000)
    assert (only.start, only.stop, only.last) == (0, 5000 // 128 + 1, True)


def test_crossfade_weights_sum_to_one():
    fade = CrossFade(7)
    assert torch.allclose(fade.w_in + fade.w_out, torch.ones(7))
    ones = torch.ones(3, 20)
    first = fade.apply(ones, first=True, last=False)
    second = fade.apply(ones, first=False, last=True)
    assert first.shape[-1] == 13 and second.shape[-1] == 20
    assert torch.allclose(second[..., :7], torch.ones(3, 7))
    assert torch.equal(CrossFade(0).apply(ones, first=False, last=False), ones)


def test_chunk_frames_checks():
    assert chunk_frames(None, 3.0, 43.0) == (None, 0)
    assert chunk_frames(30.0, 3.0, 44100 / 1024) == (1292, 129)
    with pytest.raises(ConfigError, match="at most half"):
        chunk_frames(2.0, 1.5, 10.0)
    with pytest.raises(ConfigError, match="must be > 0"):
        chunk_frames(0.0, 0.0, 10.0)


def test_stream_resampler_equals_whole_signal_resampling():
    x = np.random.default_rng(2).standard_normal((48000, 2)).astype(np.float32)
    res = StreamResampler(48000, 44100, 2)
    out = np.concatenate([res(x[s:s + 5000]) for s in range(0, 48000, 5000)] + [res(x[:0], last=True)])
    ref = resample(x, 48000, 44100)
    assert out.shape == ref.shape and np.abs(out - ref).max() <= 1e-5
    assert StreamResampler(8000, 8000, 2)(x) is x
