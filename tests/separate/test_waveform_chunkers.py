"""The waveform chunk schemes (sepcluster.separate.overlap) against the references' own loops, many lengths.

Tiny deterministic models whose output depends on the whole chunk (its mean), so any difference in a
chunk's content, padding, window or overlap-add order shows: demucs' ``apply_model`` drives them
through ``TensorChunk.padded`` / ``center_trim`` / the triangle weights, MSST's ``demix`` (the
``msst`` package) through its border padding, reflect-or-zero chunk padding and flush-dependent fade
windows. sepcluster's chunkers are fed the same signal in blocks of every size, with the model
called as late as a batching engine would; the results must be identical (``torch.equal``).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from sepcluster.separate.overlap import DemucsChunker, MSSTChunker, SampleBuffer, msst_window

from .waveform_cases import one_thread  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("one_thread")


class Toy(nn.Module):
    """``(batch, channels, T) -> (batch, sources, channels, T)``: ``x * (k + 1) + mean(x) * (k - 1)``."""

    def __init__(self, sources: int = 2, segment: int = 40, valid: str = "fixed"):
        super().__init__()
        self.sources = [f"s{k}" for k in range(sources)]
        self.samplerate = 1000
        self.segment = Fraction(segment, 1000)
        self.audio_channels = 2
        self.valid = valid
        if valid != "none":  # HDemucs has no valid_length
            self.valid_length = self._valid_length

    def _valid_length(self, n: int) -> int:
        seg = int(self.segment * self.samplerate)
        return seg if self.valid == "fixed" else -(-(n + 5) // 8) * 8  # HTDemucs-like / Demucs-like

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.arange(len(self.sources), dtype=x.dtype).view(1, -1, 1, 1)
        return x[:, None] * (k + 1) + x.mean(dim=-1, keepdim=True)[:, None] * (k - 1)


def _stream(chunker, model, x: np.ndarray, block: int, lag: int) -> torch.Tensor:
    """Feed ``x (n, channels)`` in blocks; run each job ``lag`` jobs late (as batches do); concatenate pops."""
    outs, waiting = [], []

    def run(final: bool) -> None:
        while waiting and (final or len(waiting) > lag):
            job = waiting.pop(0)
            with torch.no_grad():
                chunker.put(job, model(torch.from_numpy(job.input)[None])[0])
        outs.append(chunker.pop())

    for s in range(0, x.shape[0], block):
        chunker.push(x[s:s + block])
        waiting.extend(chunker.jobs())
        run(False)
    chunker.close()
    waiting.extend(chunker.jobs())
    run(True)
    return torch.cat(outs, dim=-1)


@pytest.mark.parametrize("valid", ["fixed", "demucs", "none"])
def test_demucs_chunker_equals_apply_model(valid):
    pytest.importorskip("demucs")
    from demucs.apply import apply_model

    model = Toy(segment=40, valid=valid).eval()
    rng = np.random.default_rng(0)
    for length in list(range(1, 70)) + [119, 120, 121, 150, 301]:
        x = rng.standard_normal((length, 2)).astype(np.float32)
        with torch.no_grad():
            ref = apply_model(model, torch.from_numpy(x.T.copy())[None], shifts=0, split=True, overlap=0.25)[0]
        for block, lag in ((1, 0), (7, 2), (length, 0)):
            chunker = DemucsChunker(40, getattr(model, "valid_length", lambda n: n), 2, 2)
            got = _stream(chunker, model, x, block, lag)
            assert torch.equal(got, ref), (valid, length, block, lag)
            assert chunker.finished and chunker.held() <= 3 * 40 + block


@pytest.mark.parametrize("chunk,num_overlap", [(40, 1), (40, 2), (41, 3), (40, 4), (9, 2)])
@pytest.mark.parametrize("flush", [1, 2, 3, 4])
def test_msst_chunker_equals_demix(chunk, num_overlap, flush):
    pytest.importorskip("msst")
    from ml_collections import ConfigDict
    from msst.utils.model_utils import demix

    model = Toy(sources=2).eval()
    cfg = ConfigDict({"audio": {"chunk_size": chunk}, "inference": {"num_overlap": num_overlap, "batch_size": flush},
                      "training": {"instruments": ["a", "b"], "target_instrument": None, "use_amp": True}})
    border = chunk - chunk // num_overlap
    rng = np.random.default_rng(1)
    lengths = sorted({n for n in (1, 2, 3, chunk // 2, chunk, chunk + 1, 2 * border, 2 * border + 1, 2 * border + 2,
                                  3 * chunk + 5, 7 * chunk + chunk // 3) if n > 0})
    for length in lengths:
        x = rng.standard_normal((length, 2)).astype(np.float32)
        ref = demix(cfg, model, x.T.copy(), "cpu", "bs_roformer")
        ref = torch.from_numpy(np.stack([ref["a"], ref["b"]]))
        for block, lag in ((1, 0), (5, 3), (length, 0)):
            chunker = MSSTChunker(chunk, num_overlap, flush, 2, 2)
            got = _stream(chunker, model, x, block, lag)
            assert got.shape == ref.shape and torch.equal(got, ref), (length, block, lag)
            assert chunker.held() <= 3 * chunk + (flush + 1) * chunk + block


def test_msst_window_and_buffer():
    pytest.importorskip("msst")
    from msst.utils.model_utils import _getWindowingArray

    for size, fade in ((100, 10), (7, 0), (9, 1), (44160, 4416)):
        assert torch.equal(msst_window(size, fade), _getWindowingArray(size, fade))
    buf = SampleBuffer(2)
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    buf.append(x[:6])
    buf.append(x[6:])
    assert np.array_equal(buf.take(-2, 3), np.concatenate([np.zeros((2, 2), np.float32), x[:3].T], axis=1))
    buf.drop_before(4)
    assert buf.start == 4 and buf.length == 10
    assert np.array_equal(buf.take(8, 12, total=10), np.concatenate([x[8:].T, np.zeros((2, 2), np.float32)], axis=1))
    with pytest.raises(AssertionError, match="not held"):
        buf.take(3, 5)
