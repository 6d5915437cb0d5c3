"""BS-/Mel-Band RoFormers through sepcluster's waveform engine equal MSST's own inference.

Reference: ``demix`` of the PyPI package ``msst`` 0.1.0 (ZFTurbo's Music-Source-Separation-Training;
its generic-mode loop is the one of MSST commit ccc011a described in the engine's notes) with MSST's
own ``BSRoformer`` / ``MelBandRoformer`` classes loading the same checkpoint and config.
Stated tolerance: max |diff| <= 1e-6 (``TOL``) when the model runs the config's batches (measured
0.0, bit for bit), <= 1e-5 (``TOL_BATCHED``) with other model batches (measured <= 1e-7); the
fade windows always follow the config's ``inference.batch_size``.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sepcluster.errors import ConfigError
from sepcluster.models.roformer import load_roformer
from sepcluster.separate.engine import separate_file, separate_track
from sepcluster.separate.estimators import make_estimator
from sepcluster.separate.waveform_estimators import RoformerEstimator

from .conftest import synth
from .waveform_cases import SR, TOL, TOL_BATCHED, msst_demix, one_thread, save_roformer  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

pytest.importorskip("bs_roformer")
pytest.importorskip("msst")
pytest.importorskip("ml_collections")

CHUNK = 6400  # the test configs' chunk_size (25 hops of 256)


def _diff(got: dict, expected: dict) -> float:
    assert list(got) == list(expected)
    return max(float(np.abs(got[k] - expected[k]).max()) for k in expected)


@pytest.mark.parametrize("kind", ["bs_roformer", "mel_band_roformer"])
@pytest.mark.parametrize("num_overlap,batch_size", [(2, 1), (2, 4), (4, 1), (4, 4)])
def test_equals_msst_demix(tmp_path, kind, num_overlap, batch_size):
    ckpt, config = save_roformer(kind, tmp_path, "m", num_overlap=num_overlap, batch_size=batch_size)
    model = load_roformer(ckpt)
    border = CHUNK - CHUNK // num_overlap
    # a border-padded track whose last chunks are short (reflect- and zero-padded), one of <= 2 * border
    for samples in (4 * CHUNK + CHUNK // num_overlap + 7, 2 * border - 5):
        x = synth(samples / SR, SR, seed=samples % 97)
        assert x.shape[0] == samples
        expected = msst_demix(kind, ckpt, config, x)
        got = separate_track(model, x, SR, batch_chunks=batch_size)  # the config's batches: bit for bit
        assert list(got) == ["vocals"] and got["vocals"].shape == x.shape
        assert _diff(got, expected) <= TOL, (samples, _diff(got, expected))
        assert np.abs(expected["vocals"]).max() > 0.01
    # the model batches differently (the CPU default: one chunk per thread), or three at a time:
    # rounding only, the windows still follow the config's batches
    for batch in (None, 3):
        assert _diff(separate_track(model, x, SR, batch_chunks=batch), expected) <= TOL_BATCHED


def test_thirty_seconds_all_instruments_and_residual(tmp_path):
    """Without target_instrument the model outputs every instrument of the config, in its order."""
    ckpt, config = save_roformer("bs_roformer", tmp_path, "two", stems=2, target=None, num_overlap=2, batch_size=4)
    model = load_roformer(ckpt)
    assert model.instruments == ["vocals", "other"] and model.target_instrument is None
    x = synth(30.0, SR, seed=11)
    expected = msst_demix("bs_roformer", ckpt, config, x)
    got = separate_track(model, x, SR, batch_chunks=4)
    assert _diff(got, expected) <= TOL
    est = make_estimator(model, targets="other", residual=True)
    assert isinstance(est, RoformerEstimator) and est.outputs == ("other", "accompaniment")
    assert est.sources == ("vocals", "other") and est.chunkers(2)[0].flush_size == 4
    sub = separate_track(est, x[:5 * SR], SR)
    assert np.abs(sub["accompaniment"] - (x[:5 * SR] - sub["other"])).max() <= 1e-6
    with pytest.raises(ConfigError, match="'drums' is not an output"):
        make_estimator(model, targets=["drums"])


def test_target_instrument_and_file_streaming(tmp_path):
    """A one-stem Mel-Band model (target_instrument: vocals) through separate_file in small blocks:
    the flushes' windows are only known blocks later, the result is still MSST's."""
    ckpt, config = save_roformer("mel_band_roformer", tmp_path, "mel", num_overlap=4, batch_size=4)
    model = load_roformer(ckpt)
    assert model.instruments == ["vocals"] and model.target_instrument == "vocals"
    x = synth(1.5, SR, seed=12)
    src = tmp_path / "in.wav"
    sf.write(str(src), x, SR, subtype="FLOAT")
    est = make_estimator(model, residual=True, batch_size=4)
    outs = {o: str(tmp_path / "out" / f"{o}.wav") for o in est.outputs}
    expected = msst_demix("mel_band_roformer", ckpt, config, x)
    for block in (1000, 6399, 1 << 17):
        stats = separate_file(est, str(src), outs, format="wav", bits=32, block_frames=block)
        assert stats.frames == x.shape[0] and stats.chunks == -(-(x.shape[0] + 2 * 4800) // 1600)
        vocals = sf.read(outs["vocals"], dtype="float32", always_2d=True)[0]
        assert np.abs(vocals - expected["vocals"]).max() <= TOL, block
        rest = sf.read(outs["accompaniment"], dtype="float32", always_2d=True)[0]
        assert np.abs(rest - (x - vocals)).max() <= 1e-6


def test_normalize_config_is_refused(tmp_path):
    ckpt, config = save_roformer("bs_roformer", tmp_path, "norm")
    config.write_text(config.read_text() + "  normalize: true\n")
    with pytest.raises(ConfigError, match="inference.normalize"):
        make_estimator(load_roformer(ckpt))


@pytest.mark.parametrize("kind", ["bs_roformer", "mel_band_roformer"])
def test_musdb_sample_equals_msst_demix(musdb_sample, tmp_path, kind):
    """Real audio: the MUSDB sample's mixture (6.8 s stereo) through both RoFormer kinds, the config's batches."""
    from sepcluster.audio import read_audio

    x, rate = read_audio(str(musdb_sample / "train" / "Music Delta - 80s Rock" / "mixture.wav"))
    assert rate == SR and x.shape[1] == 2
    ckpt, config = save_roformer(kind, tmp_path, "m", num_overlap=2, batch_size=2)
    expected = msst_demix(kind, ckpt, config, x)
    got = separate_track(load_roformer(ckpt), x, rate, batch_chunks=2)
    assert got["vocals"].shape == x.shape and np.abs(expected["vocals"]).max() > 0.01
    assert _diff(got, expected) <= TOL
