"""Fixtures for the evaluate tests: excerpts of the real MUSDB sample, synthetic tracks."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import MUSDB_SAMPLE  # noqa: F401

TRACK = "Music Delta - 80s Rock"
SOURCES = ("vocals", "drums", "bass", "other")
RATE = 44100


def load_sample_stems(seconds: float | None = None, offset: float = 0.0) -> dict[str, np.ndarray]:
    """The sample's stems as musdb decodes the WAVs: float64 (samples, 2)."""
    import soundfile as sf

    folder = MUSDB_SAMPLE / "train" / TRACK
    out = {}
    for s in SOURCES:
        a, rate = sf.read(str(folder / f"{s}.wav"), always_2d=True)
        assert rate == RATE
        start = int(offset * RATE)
        out[s] = a[start: start + int(seconds * RATE)] if seconds else a[start:]
    return out


def make_estimates(refs: dict[str, np.ndarray], seed: int = 0, leak: float = 0.15, noise: float = 0.003
                   ) -> dict[str, np.ndarray]:
    """Plausible imperfect estimates: scaled target + leakage of the mixture + noise + a delayed copy."""
    rng = np.random.default_rng(seed)
    mix = sum(refs.values())
    out = {}
    for i, (t, r) in enumerate(refs.items()):
        delayed = np.roll(r, 7 + 5 * i, axis=0)
        out[t] = 0.7 * r + 0.2 * delayed + leak * mix + noise * rng.standard_normal(r.shape)
    return out


@pytest.fixture(scope="module")
def sample_excerpt(musdb_sample):
    """3 s of the real sample (seconds 2..5): stems and imperfect estimates."""
    refs = load_sample_stems(3.0, offset=2.0)
    return refs, make_estimates(refs)


def synthetic_track(seconds: float, nsrc: int = 3, nchan: int = 2, seed: int = 0, rate: int = 8000):
    """Coloured-noise sources with stereo images and estimates with leakage and artifacts."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    refs, ests = [], []
    for j in range(nsrc):
        src = lfilter([1.0], [1.0, -0.9 + 0.3 * j], rng.standard_normal(n))
        src *= 1 + 0.8 * np.sin(2 * np.pi * (0.3 + j) * np.arange(n) / rate)
        gains = rng.uniform(0.3, 1.0, nchan)
        # a panned, slightly delayed image plus an independent part per channel (a diffuse
        # field): real stereo images are never exact filtered copies of one another, which
        # would leave BSS Eval's distortion filters undetermined
        img = np.stack([g * np.roll(src, k) + 0.3 * lfilter([1.0], [1.0, -0.5], rng.standard_normal(n))
                        for k, g in enumerate(gains)], axis=1)
        refs.append(img)
    refs = np.stack(refs)
    for j in range(nsrc):
        leak = sum(0.2 * refs[k] for k in range(nsrc) if k != j)
        art = 0.05 * rng.standard_normal(refs[j].shape)
        ests.append(0.8 * refs[j] + 0.1 * np.roll(refs[j], 3, axis=0) + leak + art)
    return refs, np.stack(ests), rate
