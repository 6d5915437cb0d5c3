"""The streaming inverse STFT against the whole-signal inverse STFT."""

from __future__ import annotations

import torch

from sepcluster.models.stft import ISTFT
from sepcluster.separate.istft import StreamingISTFT


def test_streaming_istft_equals_torch_istft():
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(3, 2, 1025, 700, dtype=torch.complex64, generator=g)
    length = 699 * 512 + 123
    ist = StreamingISTFT(2048, 512)
    parts = [ist.push(Y[..., :1], 0), ist.push(Y[..., 1:300], 1), ist.push(Y[..., 300:], 300), ist.finish(length)]
    ours = torch.cat(parts, dim=-1)
    ref = ISTFT(2048, 512)(Y, length=length)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() <= 1e-6 * ref.abs().max()
