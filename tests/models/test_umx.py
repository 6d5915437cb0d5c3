import numpy as np
import pytest
import torch

from sepcluster.errors import AudioError, ConfigError
from sepcluster.models import OpenUnmix, bandwidth_to_max_bin, build_model
from tests.oracles import needs_openunmix, openunmix


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Move parameters and BatchNorm statistics away from their init so equality means something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


@needs_openunmix
@pytest.mark.parametrize("kwargs,frames", [
    (dict(nb_bins=2049, nb_channels=2, hidden_size=512, nb_layers=3, max_bin=1487), 40),  # umxhq shape
    (dict(nb_bins=2049, nb_channels=1, hidden_size=64, nb_layers=3, max_bin=300), 23),
    (dict(nb_bins=513, nb_channels=2, hidden_size=32, nb_layers=2, max_bin=None), 17),
    (dict(nb_bins=257, nb_channels=2, hidden_size=16, nb_layers=1, unidirectional=True, max_bin=100), 9),
])
def test_state_dict_and_outputs_match_openunmix(kwargs, frames):
    torch.manual_seed(1)
    ref = openunmix.model.OpenUnmix(**kwargs)
    _randomise(ref)
    ref.eval()
    ours = OpenUnmix(**kwargs)
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(our_sd) == list(ref_sd)
    assert {k: tuple(v.shape) for k, v in our_sd.items()} == {k: tuple(v.shape) for k, v in ref_sd.items()}
    ours.load_state_dict(ref_sd, strict=True)
    ours.eval()

    mag = torch.rand(3, kwargs["nb_channels"], kwargs["nb_bins"], frames, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref(mag.clone())
        got = ours(mag.clone())
    assert got.shape == mag.shape
    assert _rel_err(expected, got) <= 1e-5


@needs_openunmix
def test_train_mode_matches_openunmix():
    # single LSTM layer: no dropout, so train mode (batch statistics) is deterministic
    kwargs = dict(nb_bins=257, nb_channels=2, hidden_size=24, nb_layers=1, max_bin=200)
    ref = openunmix.model.OpenUnmix(**kwargs)
    _randomise(ref, seed=3)
    ours = OpenUnmix(**kwargs)
    ours.load_state_dict(ref.state_dict())
    mag = torch.rand(4, 2, 257, 11)
    expected = ref(mag.clone())
    got = ours(mag.clone())
    assert _rel_err(expected, got) <= 1e-5
    got.sum().backward()
    assert ours.fc1.weight.grad is not None and torch.isfinite(ours.fc1.weight.grad).all()


@needs_openunmix
def test_input_stats_as_openunmix():
    rng = np.random.default_rng(0)
    mean = rng.random(2049).astype(np.float32)
    std = (rng.random(2049) + 0.5).astype(np.float32)
    ref = openunmix.model.OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=16, max_bin=1487,
                                    input_mean=mean, input_scale=std)
    ours = OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=16, max_bin=1487, input_mean=mean, input_scale=std)
    assert torch.allclose(ours.input_mean, ref.input_mean)
    assert torch.allclose(ours.input_scale, ref.input_scale)
    late = OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=16, max_bin=1487)
    late.set_input_stats(torch.from_numpy(mean), torch.from_numpy(std))
    assert torch.allclose(late.input_scale, ref.input_scale)


@needs_openunmix
def test_bandwidth_to_max_bin_matches_openunmix():
    for rate in (16000, 22050, 44100, 48000):
        for n_fft in (512, 1024, 4096):
            for bw in (2000, 8000, 11025, 16000, 22050, 30000):
                assert bandwidth_to_max_bin(rate, n_fft, bw) == int(openunmix.utils.bandwidth_to_max_bin(rate, n_fft, bw))
    assert bandwidth_to_max_bin(44100, 4096, 16000) == 1487
    assert bandwidth_to_max_bin(44100, 4096, None) == 2049


def test_build_model_defaults_and_errors():
    m = build_model("umx", hidden_size=16)
    assert m.hparams() == {"nb_bins": 2049, "nb_channels": 2, "hidden_size": 16, "nb_layers": 3,
                           "unidirectional": False, "max_bin": 1487}
    m = build_model("umx", n_fft=512, sample_rate=16000, bandwidth=None, hidden_size=8, nb_channels=1)
    assert (m.nb_output_bins, m.nb_bins, m.nb_channels) == (257, 257, 1)
    assert build_model("UMX", **m.hparams()).hparams() == m.hparams()
    with pytest.raises(ConfigError, match="model"):
        build_model("transformer")
    with pytest.raises(ConfigError, match="hiden_size"):
        build_model("umx", hiden_size=3)
    with pytest.raises(ConfigError, match="max_bin"):
        OpenUnmix(nb_bins=257, max_bin=400)
    with pytest.raises(AudioError, match=r"\(batch, 2, 257, frames\)"):
        build_model("umx", n_fft=512, hidden_size=8)(torch.rand(1, 1, 257, 4))
