"""The multi-source families as trained: MSST's classes unchanged in their weights, band layouts, chunked runs."""

from __future__ import annotations

import pytest
import torch

from sepcluster.errors import ConfigError
from sepcluster.models.multisource import (MSST_BANDS, BSRoformerNet, MelRoformerNet, chunked_forward, model_sources,
                                           roformer_bands)
from sepcluster.models.registry import build_model
from sepcluster.models.roformer_nets import MSSTBSRoformer, MSSTMelBandRoformer

pytest.importorskip("bs_roformer")
pytest.importorskip("demucs")

SMALL = dict(dim=16, depth=1, heads=2, dim_head=8, stft_n_fft=256, stft_hop_length=64, stft_win_length=256)


def test_band_layout_is_msst_for_2048_and_scales():
    assert roformer_bands(1025) == MSST_BANDS and sum(MSST_BANDS) == 1025
    for bins in (129, 257, 513, 2049):
        bands = roformer_bands(bins)
        assert sum(bands) == bins and all(b >= 1 for b in bands)
        assert bands[0] < bands[-1]  # narrow bands low, wide bands high, as MSST's
    with pytest.raises(ConfigError):
        roformer_bands(0)


@pytest.mark.parametrize("ours,msst,extra", [(BSRoformerNet, MSSTBSRoformer, {}),
                                             (MelRoformerNet, MSSTMelBandRoformer, {"num_bands": 8})])
def test_the_written_out_constructors_are_msst_s_classes(ours, msst, extra):
    """Same options -> the same state dict keys and shapes, the same output for the same weights."""
    torch.manual_seed(0)
    model = ours(**SMALL, num_stems=2, **extra).eval()
    options = dict(model.msst_options)
    reference = msst(options.pop("dim"), **options).eval()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    reference.load_state_dict(model.state_dict())
    x = torch.randn(1, 2, 4000)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert model.msst_options["dim_freqs_in"] == 129


def test_chunked_forward_equals_a_pointwise_model_and_covers_every_sample():
    class Pointwise(torch.nn.Module):  # each output sample depends on its input sample only
        def forward(self, x):
            return torch.stack([2 * x, -x, x ** 2], dim=1)

    mix = torch.randn(2, 2, 10007)
    whole = Pointwise()(mix)
    for chunk, overlap in ((1000, 0.25), (4096, 0.5), (20000, 0.25)):
        out = chunked_forward(Pointwise(), mix, chunk, overlap=overlap, batch_size=3)
        assert out.shape == (2, 3, 2, 10007)
        torch.testing.assert_close(out, whole)


def test_chunked_htdemucs_runs_past_its_training_length():
    model = build_model("htdemucs", sources=["vocals", "drums"], nb_channels=2, sample_rate=8000, segment=0.5,
                        channels=8, depth=2, nfft=256, t_layers=1, t_heads=2).eval()
    mix = torch.randn(1, 2, 4000 * 3 + 17)
    with torch.no_grad(), pytest.raises(RuntimeError):
        model(mix)  # HTDemucs in eval mode refuses inputs longer than its training segment
    with torch.no_grad():
        out = chunked_forward(model, mix, 4000)
    assert out.shape == (1, 2, 2, mix.shape[-1]) and torch.isfinite(out).all()
    assert model_sources(model) == ["vocals", "drums"]
    with pytest.raises(ConfigError):
        model_sources(torch.nn.Linear(2, 2))
