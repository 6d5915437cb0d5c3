"""Fixtures of the separate tests: small random separator bundles, synthetic audio, Ray."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from sepcluster.models import BundleMeta, build_model, save_bundle


def make_bundle(uri: str, targets=("vocals", "drums"), sample_rate=44100, n_fft=4096, n_hop=1024,
                hidden_size=16, nb_layers=1, nb_channels=2, seed=0) -> str:
    """A randomly initialised Open-Unmix bundle (weights perturbed so the masks vary)."""
    torch.manual_seed(seed)
    models = {}
    for t in targets:
        m = build_model("umx", n_fft=n_fft, sample_rate=sample_rate, nb_channels=nb_channels,
                        hidden_size=hidden_size, nb_layers=nb_layers)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
        models[t] = m.eval()
    save_bundle(uri, models, BundleMeta(model="umx", sample_rate=sample_rate, n_fft=n_fft, n_hop=n_hop))
    return uri


def synth(seconds: float, sr: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A music-like test signal: gliding tones, a pulse and noise, ``float32 (samples, channels)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    chans = []
    for c in range(channels):
        f0 = 110.0 * (c + 1) * (1 + 0.2 * np.sin(2 * np.pi * 0.05 * t))
        tone = 0.25 * np.sin(2 * np.pi * np.cumsum(f0) / sr)
        pulse = 0.2 * (np.sin(2 * np.pi * 2.0 * t) > 0.95) * rng.standard_normal(t.size)
        chans.append(tone + pulse + 0.02 * rng.standard_normal(t.size))
    return np.stack(chans, axis=1).astype(np.float32)


def write(path, audio, sr, subtype=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr, subtype=subtype)
    return str(path)


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory) -> str:
    return make_bundle(str(tmp_path_factory.mktemp("bundle") / "umx-small"))


@pytest.fixture(scope="module")
def ray_local():
    from sepcluster import raycluster

    raycluster.init(address="local", num_cpus=2)
    yield
    raycluster.shutdown()


ROOT_DIR = str(__import__("pathlib").Path(__file__).resolve().parents[2])
