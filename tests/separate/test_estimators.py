"""The estimator interface: what make_estimator builds, and what each estimator states."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sepcluster.errors import ConfigError
from sepcluster.models import load_bundle
from sepcluster.models.stft import STFT
from sepcluster.separate.engine import ChunkedEngine
from sepcluster.separate.estimators import (SPECTROGRAM, Estimator, IRMEstimator, ModelEstimator,
                                            SpectrogramEstimator, make_estimator)
from sepcluster.separate.oracle import IdealRatioMask
from sepcluster.separate.wiener import softmask_estimates, wiener

from .conftest import synth

REFS = ("vocals", "drums", "bass", "other")


def test_make_estimator_for_a_bundle(small_bundle):
    bundle = load_bundle(small_bundle)
    est = make_estimator(bundle, targets="vocals", niter=0, residual=True)
    assert isinstance(est, ModelEstimator) and isinstance(est, SpectrogramEstimator)
    assert est.domain == SPECTROGRAM
    assert (est.sample_rate, est.n_fft, est.n_hop, est.nb_channels) == (44100, 4096, 1024, 2)
    assert est.outputs == ("vocals", "accompaniment") and est.references == ()
    assert est.bundle_id == bundle.bundle_id
    assert make_estimator(est) is est
    # the models' magnitudes through the Wiener filter, nothing else
    X = STFT()(torch.from_numpy(synth(1.0, 44100).T.copy())[None])
    V = bundle.estimate_magnitudes(X.abs(), ["vocals"])["vocals"][:, None]
    with torch.inference_mode():
        assert torch.equal(est.separate_chunks(X, None), wiener(V, X, niter=0, residual=True))
    with pytest.raises(ConfigError, match="'piano' is not in bundle"):
        make_estimator(bundle, targets=["piano"])


def test_make_estimator_for_the_oracle():
    est = make_estimator(IdealRatioMask.from_name("irm2"), targets=["vocals", "bass"], residual=True, niter=3)
    assert isinstance(est, IRMEstimator) and est.domain == SPECTROGRAM
    assert est.sample_rate is None and est.nb_channels is None and est.references == REFS
    assert est.outputs == ("vocals", "bass", "accompaniment") and est.bundle_id == "oracle:irm2"
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2, 2, 9, 5, dtype=torch.complex64, generator=g)
    R = torch.randn(2, 4, 2, 9, 5, dtype=torch.complex64, generator=g)
    Y = est.separate_chunks(X, R)
    assert Y.shape == (2, 3, 2, 9, 5)
    masked = softmask_estimates(R.abs() ** 2, X, 1e-10)
    assert torch.equal(Y[:, :2], masked[:, [0, 2]])
    assert torch.equal(Y[:, 2], X - Y[:, :2].sum(dim=1))
    with pytest.raises(ConfigError, match="needs the reference stems"):
        est.separate_chunks(X, None)
    with pytest.raises(ConfigError, match="not 'piano'"):
        make_estimator(IdealRatioMask(), targets=["piano"])


def test_make_estimator_refuses_other_objects():
    with pytest.raises(ConfigError, match="expected a separator bundle or an oracle, got ndarray"):
        make_estimator(np.zeros(3))


def test_engine_runs_spectrogram_estimators_only():
    class Waveform(Estimator):
        domain = "waveform"

    with pytest.raises(ConfigError, match="works on 'waveform' chunks"):
        ChunkedEngine(Waveform())
    with pytest.raises(TypeError):
        SpectrogramEstimator()  # separate_chunks is abstract


def test_estimators_do_not_import_the_oracle():
    import subprocess
    import sys

    code = ("import sys; import sepcluster.separate.estimators, sepcluster.separate.engine; "
            "print('sepcluster.separate.oracle' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
