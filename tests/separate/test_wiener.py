"""The torch Wiener filter equals norbert.wiener (numpy) and openunmix.filtering.wiener.

Tolerance: 1e-4 relative, as ``max|ours - theirs| <= 1e-4 * max|theirs|`` over the whole
output (element-wise relative error is meaningless in bins where the sources are ~0) and
``||ours - theirs|| <= 1e-4 ||theirs||``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sepcluster.separate.wiener import wiener
from tests.oracles import require_openunmix

norbert = pytest.importorskip("norbert")
RTOL = 1e-4


def _inputs(channels: int, seed: int, frames=40, bins=65, sources=3, zeros=True):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((frames, bins, channels)) + 1j * rng.standard_normal((frames, bins, channels)))
    x *= np.exp(rng.uniform(-4, 3.5, size=(frames, bins, 1)))  # quiet and loud bins (> scale_factor)
    if zeros:
        x[:3, :5] = 0  # silent bins: phase of 0, masks of 0/0
    v = np.abs(x[..., None]) * rng.uniform(0, 1, size=(frames, bins, channels, sources))
    v[5:8, 10:20, :, 0] = 0  # a silent source
    return x.astype(np.complex64), v.astype(np.float32)


def _ours(v, x, niter, softmask, residual, **kw):
    # norbert / openunmix layout (frames, bins, channels[, sources]) -> ours (batch, sources, channels, bins, frames)
    V = torch.from_numpy(v).permute(3, 2, 1, 0)[None]
    X = torch.from_numpy(x).permute(2, 1, 0)[None]
    Y = wiener(V, X, niter=niter, softmask=softmask, residual=residual, **kw)
    return Y[0].permute(3, 2, 1, 0).numpy()  # (frames, bins, channels, sources)


def _norbert(v, x, niter, softmask, residual, eps):
    if not residual:
        return norbert.wiener(v.copy(), x.copy(), niter, use_softmask=softmask, eps=eps)
    # norbert.wiener has no residual option: same steps with its own parts
    y = norbert.softmask(v, x, eps=eps) if softmask else v * np.exp(1j * np.angle(x[..., None]))
    y = np.concatenate([y, (x - y.sum(-1))[..., None]], axis=-1)
    if not niter:
        return y
    xs = x.copy()
    max_abs = max(1, np.abs(xs).max() / 10.0)
    xs /= max_abs
    return norbert.expectation_maximization(y / max_abs, xs, niter, eps=eps)[0] * max_abs


def _close(ours, ref):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= RTOL * np.abs(ref).max()
    assert np.linalg.norm(ours - ref) <= RTOL * np.linalg.norm(ref)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("softmask", [False, True])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("niter", [0, 1, 2])
def test_equals_norbert(channels, softmask, residual, niter):
    x, v = _inputs(channels, seed=channels * 10 + niter)
    _close(_ours(v, x, niter, softmask, residual, eps=1e-10), _norbert(v, x, niter, softmask, residual, 1e-10))


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("softmask", [False, True])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("niter", [0, 1, 2])
def test_equals_openunmix(channels, softmask, residual, niter):
    require_openunmix()
    from openunmix import filtering

    # no exactly-silent mixture bins here: openunmix's atan2 adds 1 in place to the real part
    # of the mixture where it is exactly 0, which changes its residual there (a bug of theirs)
    x, v = _inputs(channels, seed=100 + channels * 10 + niter, zeros=False)
    X = torch.view_as_real(torch.from_numpy(x))  # (frames, bins, channels, 2)
    ref = filtering.wiener(torch.from_numpy(v), X.clone(), niter, softmask=softmask, residual=residual)
    ref = torch.view_as_complex(ref.permute(0, 1, 2, 4, 3).contiguous()).numpy()
    _close(_ours(v, x, niter, softmask, residual), ref)


def test_norbert_default_eps_and_double_precision():
    x, v = _inputs(2, seed=7)
    # eps=None: machine epsilon of the working precision, as norbert
    ref = norbert.wiener(v.copy(), x.copy(), 2, use_softmask=False)
    _close(_ours(v, x, 2, False, False, eps=None), ref)
    ref64 = norbert.wiener(v.astype(np.float64), x.astype(np.complex128), 2, use_softmask=True)
    ours64 = _ours(v, x, 2, True, False, eps=None, double=True)
    assert ours64.dtype == np.complex128
    assert np.abs(ours64 - ref64).max() <= 1e-9 * np.abs(ref64).max()


def test_mono_magnitudes_broadcast_and_batch():
    # one magnitude channel for a stereo mixture, two batch items scaled independently
    rng = np.random.default_rng(3)
    X = torch.from_numpy((rng.standard_normal((2, 2, 33, 20)) + 1j * rng.standard_normal((2, 2, 33, 20)))
                         .astype(np.complex64)) * torch.tensor([1.0, 50.0]).view(2, 1, 1, 1)
    V = X.abs().mean(dim=1, keepdim=True).unsqueeze(1).repeat(1, 2, 1, 1, 1) * torch.rand(2, 2, 1, 33, 20)
    Y = wiener(V, X, niter=1)
    assert Y.shape == (2, 2, 2, 33, 20)
    for b in range(2):  # batch items are independent
        Yb = wiener(V[b:b + 1], X[b:b + 1], niter=1)
        assert torch.allclose(Y[b:b + 1], Yb, rtol=1e-5, atol=1e-6 * Yb.abs().max().item())
    # norbert accepts the broadcast magnitudes too
    v = V[0].permute(3, 2, 1, 0).numpy()
    x = X[0].permute(2, 1, 0).numpy()
    _close(Y[0].permute(3, 2, 1, 0).numpy(), norbert.wiener(v.copy(), x.copy(), 1, use_softmask=False, eps=1e-10))


def test_rejects_bad_shapes():
    from sepcluster.errors import AudioError

    X = torch.zeros(1, 2, 5, 4, dtype=torch.complex64)
    with pytest.raises(AudioError, match="does not match"):
        wiener(torch.zeros(1, 1, 2, 6, 4), X)
    with pytest.raises(AudioError, match="complex"):
        wiener(torch.zeros(1, 1, 2, 5, 4), X.real)


def test_identical_channels_in_float32_match_norbert_in_float64():
    """Identical channels make the mixture covariance singular up to the regularisation: the float32
    filter keeps its inverse in complex128 and matches norbert in float64 (no gain on the mixture;
    before, a 1.24x peak gain here)."""
    rng = np.random.default_rng(0)
    frames, bins, sources = 60, 129, 3
    mono = (rng.standard_normal((frames, bins)) + 1j * rng.standard_normal((frames, bins)))
    mono *= np.exp(rng.uniform(-3, 4, (frames, bins)))
    x = np.stack([mono, mono], -1).astype(np.complex64)
    v = (np.abs(x[..., None]) * rng.uniform(0, 1, (frames, bins, 2, sources))).astype(np.float32)
    v[:, :, 1] = v[:, :, 0]
    for niter in (1, 2):
        ref = norbert.wiener(v.astype(np.float64), x.astype(np.complex128), niter, use_softmask=False, eps=1e-10)
        ours = _ours(v, x, niter, False, False)
        assert ours.dtype == np.complex64
        _close(ours, ref)
        assert abs(np.abs(ours.sum(-1)).max() / np.abs(x).max() - 1.0) < 1e-4
