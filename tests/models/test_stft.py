import pytest
import torch

from sepcluster.errors import AudioError, ConfigError
from sepcluster.models import ISTFT, STFT, magnitude, nb_frames
from tests.oracles import needs_openunmix, openunmix


def _wave(batch=2, channels=2, samples=44100, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, samples, generator=g) * 0.3


def test_shapes_and_frames():
    x = _wave(samples=10000)
    spec = STFT()(x)
    assert spec.is_complex()
    assert spec.shape == (2, 2, 2049, nb_frames(10000))
    assert magnitude(spec).shape == spec.shape
    assert magnitude(spec, mono=True).shape == (2, 1, 2049, spec.shape[-1])
    assert STFT(512, 128, center=False)(x).shape[-1] == nb_frames(10000, 512, 128, center=False)


@pytest.mark.parametrize("n_fft,n_hop", [(4096, 1024), (512, 128), (1024, 256)])
def test_round_trip(n_fft, n_hop):
    x = _wave(samples=30001)
    y = ISTFT(n_fft, n_hop)(STFT(n_fft, n_hop)(x), length=x.shape[-1])
    assert y.shape == x.shape
    assert torch.allclose(x, y, atol=1e-5)


def test_istft_keeps_leading_dims():
    x = _wave(batch=2, channels=2, samples=8000)
    spec = STFT(512, 128)(x)
    stacked = torch.stack([spec, 2 * spec, 0.5 * spec], dim=1)  # (batch, targets, ch, bins, frames)
    y = ISTFT(512, 128)(stacked, length=8000)
    assert y.shape == (2, 3, 2, 8000)
    assert torch.allclose(y[:, 1], 2 * x, atol=1e-5)


@needs_openunmix
@pytest.mark.parametrize("n_fft,n_hop", [(4096, 1024), (1024, 256)])
def test_matches_openunmix(n_fft, n_hop):
    x = _wave(samples=22050 + 17)
    ref_stft, ref_istft = openunmix.transforms.make_filterbanks(n_fft=n_fft, n_hop=n_hop, center=True,
                                                                method="torch")
    ref = torch.view_as_complex(ref_stft(x))
    ours = STFT(n_fft, n_hop)(x)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)

    ref_mag = openunmix.transforms.ComplexNorm(mono=False)(torch.view_as_real(ref))
    assert torch.allclose(magnitude(ours), ref_mag, atol=1e-5)
    ref_mono = openunmix.transforms.ComplexNorm(mono=True)(torch.view_as_real(ref))
    assert torch.allclose(magnitude(ours, mono=True), ref_mono, atol=1e-5)

    back_ref = ref_istft(torch.view_as_real(ref), length=x.shape[-1])
    back = ISTFT(n_fft, n_hop)(ours, length=x.shape[-1])
    assert torch.allclose(back, back_ref, atol=1e-6)


def test_bad_inputs():
    with pytest.raises(AudioError, match="batch, channels, samples"):
        STFT()(torch.zeros(2, 1000))
    with pytest.raises(AudioError, match="too short"):
        STFT(4096)(torch.zeros(1, 1, 100))
    with pytest.raises(AudioError, match="complex"):
        ISTFT()(torch.zeros(1, 1, 2049, 4))
    with pytest.raises(AudioError, match="bins"):
        ISTFT(4096)(torch.zeros(1, 1, 257, 4, dtype=torch.complex64))
    with pytest.raises(ConfigError):
        STFT(512, 1024)
    assert not STFT().state_dict()  # the window is not a saved parameter
