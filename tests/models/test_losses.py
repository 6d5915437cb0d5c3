import math

import numpy as np
import pytest
import torch

from sepcluster.errors import AudioError, ConfigError
from sepcluster.models import get_loss, l1, mse, si_sdr


def _hand_si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    est = est - est.mean(axis=-1, keepdims=True)
    ref = ref - ref.mean(axis=-1, keepdims=True)
    e, r = est.ravel().astype(np.float64), ref.ravel().astype(np.float64)
    alpha = np.dot(e, r) / np.dot(r, r)
    target = alpha * r
    return 10 * math.log10(np.sum(target ** 2) / np.sum((target - e) ** 2))


def test_si_sdr_against_hand_computation():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3, 2, 4000)).astype(np.float32)
    noise = rng.standard_normal((3, 2, 4000)).astype(np.float32)
    est = 0.7 * ref + np.array([0.1, 0.3, 1.0], dtype=np.float32)[:, None, None] * noise + 0.05
    got = si_sdr(torch.from_numpy(est), torch.from_numpy(ref))
    assert got.shape == (3,)
    for i in range(3):
        assert got[i].item() == pytest.approx(_hand_si_sdr(est[i], ref[i]), abs=1e-3)
    assert got[0] > got[1] > got[2]


def test_si_sdr_properties():
    ref = torch.randn(2, 1, 1000)
    est = ref + 0.1 * torch.randn(2, 1, 1000)
    base = si_sdr(est, ref)
    assert torch.allclose(si_sdr(3.0 * est, ref), base, atol=1e-3)  # scale invariant
    assert (si_sdr(ref, ref) > 60).all()
    assert torch.allclose(si_sdr(est[:, 0], ref[:, 0]), base)  # (batch, samples) = mono
    loss = get_loss("si_sdr")
    assert loss.domain == "time"
    assert loss(est, ref).item() == pytest.approx(-base.mean().item(), abs=1e-5)
    silent = si_sdr(torch.zeros(1, 2, 100), torch.zeros(1, 2, 100))
    assert torch.isfinite(silent).all()


def test_magnitude_losses():
    a, b = torch.rand(2, 2, 33, 5), torch.rand(2, 2, 33, 5)
    assert torch.allclose(mse(a, b), torch.nn.functional.mse_loss(a, b))
    assert torch.allclose(l1(a, b), torch.nn.functional.l1_loss(a, b))
    assert get_loss().name == "mse" and get_loss().domain == "magnitude"
    assert get_loss("L1").name == "l1"
    with pytest.raises(ConfigError, match="loss"):
        get_loss("hinge")
    with pytest.raises(AudioError, match="shape"):
        mse(a, b[..., :4])


# ----------------------------------------------------------------------------- waveform losses, validation figures

def test_global_sdr_equals_the_evaluate_job_and_takes_sources():
    from sepcluster.evaluate.metrics import global_sdr as reference_sdr
    from sepcluster.models.losses import global_sdr

    rng = np.random.default_rng(1)
    ref = rng.standard_normal((2, 3, 2, 3000)).astype(np.float32)  # (batch, sources, channels, samples)
    est = ref + rng.standard_normal(ref.shape).astype(np.float32) * np.array([0.1, 0.5, 2.0])[None, :, None, None]
    got = global_sdr(torch.from_numpy(est), torch.from_numpy(ref))
    assert got.shape == (2, 3)
    for b in range(2):
        # the evaluate job's uSDR: (targets, samples, channels) arrays, demucs' eps
        expected = reference_sdr(ref[b].transpose(0, 2, 1), est[b].transpose(0, 2, 1))
        np.testing.assert_allclose(got[b].numpy(), expected, atol=1e-4)
    assert got[0, 0] > got[0, 1] > got[0, 2]
    flat = global_sdr(torch.from_numpy(est[:, 0]), torch.from_numpy(ref[:, 0]))
    assert flat.shape == (2,) and torch.allclose(flat, got[:, 0])


def test_time_losses_take_sources():
    est, ref = torch.randn(2, 3, 2, 1000), torch.randn(2, 3, 2, 1000)
    assert get_loss("wave_l1")(est, ref).item() == pytest.approx(torch.nn.functional.l1_loss(est, ref).item())
    assert get_loss("wave_l2")(est, ref).item() == pytest.approx(torch.nn.functional.mse_loss(est, ref).item())
    assert get_loss("wave_mse").name == "wave_l2"
    per_source = torch.stack([si_sdr(est[:, k], ref[:, k]) for k in range(3)], dim=1)
    assert get_loss("si_sdr")(est, ref).item() == pytest.approx(-per_source.mean().item(), abs=1e-5)
    for name in ("wave_l1", "wave_l2", "mrstft", "si_sdr"):
        assert get_loss(name).domain == "time"
        with pytest.raises(AudioError, match="shape"):
            get_loss(name)(est, ref[..., :999])


def test_mrstft_is_the_bs_roformer_training_loss():
    """The package's BSRoformer returns L1 + its multi-resolution STFT loss for (audio, target):
    ours on the same reconstruction and target is the same number (stft_n_fft 2048, as MSST's configs)."""
    pytest.importorskip("bs_roformer")
    import warnings

    from bs_roformer import BSRoformer

    from sepcluster.models.losses import mrstft, multi_resolution_stft
    from sepcluster.models.multisource import MSST_BANDS

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BSRoformer(8, depth=1, stereo=True, num_stems=2, time_transformer_depth=1, freq_transformer_depth=1,
                           freqs_per_bands=MSST_BANDS, dim_head=8, heads=1, stft_n_fft=2048, stft_hop_length=512,
                           stft_win_length=2048).eval()
    audio, target = torch.randn(1, 2, 8192) * 0.1, torch.randn(1, 2, 2, 8192) * 0.1
    with torch.no_grad():
        recon = model(audio)
        total, (l1_part, stft_part) = model(audio, target=target, return_loss_breakdown=True)
    assert recon.shape == target.shape
    assert multi_resolution_stft(recon, target).item() == pytest.approx(stft_part.item(), rel=1e-5)
    assert mrstft(recon, target).item() == pytest.approx(total.item(), rel=1e-5)
    assert l1_part.item() == pytest.approx(get_loss("wave_l1")(recon, target).item(), rel=1e-6)
