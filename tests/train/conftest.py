"""Shared fixtures of the train tests: a tiny synthetic stem library, a tiny config, a local Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# A model and signal small enough for 2 CPU cores: 16 kHz, 256-point FFT, 16-unit LSTM.
TINY = dict(model="umx", hidden_size=16, nb_layers=1, n_fft=256, n_hop=64, bandwidth=4000, seq_dur=1.0,
            batch_size=4, samples_per_epoch=32, stats_batches=2, lr=3e-3, epochs=4, patience=50,
            lr_decay_patience=50, max_failures=2)
RATE = 16000


@pytest.fixture(scope="session")
def stem_library(tmp_path_factory) -> Path:
    """5 synthetic songs x 4 s, stereo, 16 kHz (Scaper layout)."""
    from sepcluster.stems.synth import synthesize_library

    out = tmp_path_factory.mktemp("train-lib") / "lib"
    synthesize_library(str(out), songs=5, seconds=4.0, seed=3, sample_rate=RATE)
    return out


@pytest.fixture(scope="session")
def heldout_library(tmp_path_factory) -> Path:
    """2 other synthetic songs (another seed: never seen in training)."""
    from sepcluster.stems.synth import synthesize_library

    out = tmp_path_factory.mktemp("train-heldout") / "heldout"
    synthesize_library(str(out), songs=2, seconds=4.0, seed=77, sample_rate=RATE)
    return out


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    """A private SEPCLUSTER_HOME / SQLite MLflow store for a whole test module."""
    home = tmp_path_factory.mktemp("train-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEPCLUSTER_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(home / "mlflow.db"))
        yield home


@pytest.fixture(scope="module")
def ray_local(module_home):
    """A local Ray with 2 CPUs for the module (started after the home, so workers see it)."""
    from sepcluster import raycluster

    raycluster.shutdown()
    raycluster.init(num_cpus=2)
    yield
    raycluster.shutdown()


def mlflow_client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
