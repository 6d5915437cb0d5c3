"""Fixtures for the generate tests: small real stem libraries, a recipe, a local Ray."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import MUSDB_SAMPLE

LABELS = ("vocals", "drums", "bass", "other")


def tone_library(root: Path, songs: int, seconds: float, sample_rate: int, channels: int = 1) -> Path:
    """A plain numpy library (harmonic tones and noise bursts), used when stems.synth is absent."""
    rng = np.random.default_rng(1234)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    for label_index, label in enumerate(LABELS):
        (root / "foreground" / label).mkdir(parents=True, exist_ok=True)
        for song in range(songs):
            f0 = 110.0 * (1 + song) * (1 + label_index)
            x = 0.2 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * (song + 1) * t))
            x += 0.02 * rng.standard_normal(t.size)
            audio = np.repeat(x[:, None], channels, axis=1).astype(np.float32)
            sf.write(root / "foreground" / label / f"song{song:03d}.wav", audio, sample_rate, subtype="PCM_16")
    (root / "background").mkdir(parents=True, exist_ok=True)
    return root


def make_library(root: Path, songs: int = 3, seconds: float = 8.0, sample_rate: int = 44100,
                 channels: int = 1) -> Path:
    """A stem library in Scaper's layout: stems.synth when present, else numpy tones."""
    try:
        from sepcluster.stems.synth import synthesize_library
    except ImportError:
        return tone_library(root, songs, seconds, sample_rate, channels)
    synthesize_library(str(root), songs=songs, seconds=seconds, seed=7, sample_rate=sample_rate, channels=channels)
    return root


@pytest.fixture(scope="session")
def synth_library(tmp_path_factory) -> Path:
    """3 songs x 8 s, 44.1 kHz mono (the tutorial's template needs sources of 5 s or more)."""
    return make_library(tmp_path_factory.mktemp("lib") / "synth", songs=3, seconds=8.0)


@pytest.fixture(scope="session")
def small_library(tmp_path_factory) -> Path:
    """3 songs x 4 s at 16 kHz mono, for fast Ray runs."""
    return make_library(tmp_path_factory.mktemp("lib") / "small", songs=3, seconds=4.0, sample_rate=16000)


@pytest.fixture(scope="session")
def musdb_library(tmp_path_factory) -> Path:
    """Three songs made from the real MUSDB18 sample (as is, rolled by 2 s, first 5.5 s)."""
    track = MUSDB_SAMPLE / "train" / "Music Delta - 80s Rock"
    if not track.is_dir():
        pytest.skip("../shared/data/musdb18-sample is absent")
    root = tmp_path_factory.mktemp("lib") / "musdb"
    for label in LABELS:
        audio, sr = sf.read(track / f"{label}.wav", dtype="float32", always_2d=True)
        folder = root / "foreground" / label
        folder.mkdir(parents=True)
        sf.write(folder / "80s Rock.wav", audio, sr, subtype="PCM_16")
        sf.write(folder / "80s Rock rolled.wav", np.roll(audio, 2 * sr, axis=0), sr, subtype="PCM_16")
        sf.write(folder / "80s Rock short.wav", audio[: int(5.5 * sr)], sr, subtype="PCM_16")
    (root / "background").mkdir()
    return root


def small_recipe(**overrides) -> dict:
    """1 s mono mixtures at 16 kHz with pitch and time augmentation (quick)."""
    recipe = {
        "duration": 1.0, "sample_rate": 16000, "channels": 1, "ref_db": -20,
        "labels": list(LABELS), "coherent_probability": 0.5, "fix_clipping": True, "quick_pitch_time": True,
        "event": {"source_time": ["uniform", 0, 3], "event_time": ["const", 0], "event_duration": ["const", 1.0],
                  "snr": ["uniform", -5, 5], "pitch_shift": ["uniform", -2, 2], "time_stretch": ["uniform", 0.8, 1.2]},
    }
    for key, value in overrides.items():
        if key.startswith("event."):
            recipe["event"][key[len("event."):]] = value
        else:
            recipe[key] = value
    return recipe


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray (2 CPUs) for a test module; generate() reuses it and leaves it running."""
    from sepcluster import raycluster

    os.environ.setdefault("SEPCLUSTER_NO_PROGRESS", "1")
    raycluster.shutdown()
    raycluster.init(address="local", num_cpus=2)
    yield
    raycluster.shutdown()
