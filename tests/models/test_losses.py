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
