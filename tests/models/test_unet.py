import pytest
import torch

from sepcluster.errors import AudioError
from sepcluster.models import UNet, build_model


@pytest.mark.parametrize("frames", [1, 2, 7, 16, 33])
def test_shapes_any_frame_count(frames):
    model = build_model("unet", n_fft=512, base_channels=4, depth=3).eval()
    assert model.hparams() == {"nb_bins": 257, "nb_channels": 2, "base_channels": 4, "depth": 3,
                               "freq_stride": 8, "max_bin": 186}
    mag = torch.rand(2, 2, 257, frames)
    with torch.no_grad():
        out = model(mag)
    assert out.shape == mag.shape
    assert (out >= 0).all() and (out <= mag + 1e-6).all()  # sigmoid mask times the mixture


def test_mono_full_band_and_odd_bins():
    model = UNet(nb_bins=129, nb_channels=1, base_channels=4, depth=2, freq_stride=3, max_bin=None).eval()
    mag = torch.rand(3, 1, 129, 13)
    assert model(mag).shape == mag.shape
    assert model.high_logits is None


def test_backward_and_rebuild_from_hparams():
    model = build_model("unet", n_fft=256, base_channels=4, depth=2, freq_stride=2)
    assert model.nb_bins < model.nb_output_bins  # 16 kHz bandwidth crop at 44.1 kHz
    mag = torch.rand(2, 2, 129, 10)
    model(mag).mean().backward()
    assert model.high_logits.grad is not None
    assert all(p.grad is not None for p in model.parameters())
    twin = build_model("unet", **model.hparams())
    twin.load_state_dict(model.state_dict(), strict=True)
    model.eval(), twin.eval()
    with torch.no_grad():
        assert torch.equal(model(mag), twin(mag))


def test_input_stats_and_bad_shape():
    model = build_model("unet", n_fft=256, base_channels=2, depth=1)
    model.set_input_stats(torch.full((129,), 0.5), torch.full((129,), 2.0))
    assert torch.allclose(model.input_mean, torch.full_like(model.input_mean, -0.5))
    assert torch.allclose(model.input_scale, torch.full_like(model.input_scale, 0.5))
    with pytest.raises(AudioError, match="UNet input"):
        model(torch.rand(1, 2, 100, 5))
