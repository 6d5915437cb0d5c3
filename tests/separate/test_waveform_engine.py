"""The waveform engine: streaming from files in bounded buffers, the estimators' interface, errors."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
import torch

from sepcluster.errors import ConfigError
from sepcluster.models import load_bundle
from sepcluster.models.demucs import load_demucs
from sepcluster.models.roformer import load_roformer
from sepcluster.separate.engine import ChunkedEngine, WaveformEngine, make_engine, separate_file, separate_track
from sepcluster.separate.estimators import WAVEFORM, make_estimator
from sepcluster.separate.waveform_estimators import DemucsEstimator, RoformerEstimator
from tests.models.foreign_files import SOURCES4, save_demucs, small_demucs

from .conftest import synth
from .waveform_cases import one_thread, save_roformer, small_htdemucs  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

pytest.importorskip("demucs")
pytest.importorskip("bs_roformer")

RATE = 8000


def _stream_and_compare(tmp_path, model, seconds: float, block: int):
    """``separate_file`` (float WAVs, ``block``-frame reads) vs ``separate_track`` on the whole array."""
    x = synth(seconds, RATE, seed=int(seconds))
    src = tmp_path / f"in{seconds:g}.wav"
    sf.write(str(src), x, RATE, subtype="FLOAT")
    est = make_estimator(model, residual=True)
    outs = {o: str(tmp_path / f"out{seconds:g}" / f"{o}.wav") for o in est.outputs}
    stats = separate_file(est, str(src), outs, format="wav", bits=32, block_frames=block)
    whole = separate_track(est, x, RATE)
    for o in est.outputs:
        got = sf.read(outs[o], dtype="float32", always_2d=True)[0]
        assert got.shape == x.shape and np.array_equal(got, whole[o]), o
    assert stats.frames == x.shape[0]
    return stats


def test_long_track_streams_in_bounded_buffers(tmp_path):
    """3 minutes at 8 kHz through a tiny HTDemucs (2 s segments) and a tiny BS-RoFormer (0.8 s chunks,
    4 per flush): the file streamed in blocks equals the whole array, and the engine's buffers hold
    no more than a few segments (``TrackStats.held_samples``), the same for 1 and for 3 minutes."""
    block = 4000
    ht = small_htdemucs(samplerate=RATE, segment=Fraction(2), depth=3, nfft=512)
    ht_model = load_demucs(save_demucs(ht, tmp_path / "ht8k.th"))
    seg = ht_model.segment_length()
    ckpt, _ = save_roformer("bs_roformer", tmp_path, "rf8k", sample_rate=RATE, num_overlap=2, batch_size=4)
    rf_model = load_roformer(ckpt)
    assert rf_model.sample_rate == RATE
    for model, bound in ((ht_model, 6 * seg + 2 * block), (rf_model, 6 * 4 * 6400 + 2 * block)):
        short = _stream_and_compare(tmp_path, model, 60.0, block)
        long = _stream_and_compare(tmp_path, model, 180.0, block)
        assert long.chunks > 2.9 * short.chunks
        assert 0 < long.held_samples <= bound, (long.held_samples, bound)
        assert long.held_samples <= short.held_samples + block  # does not grow with the track


def test_make_estimator_for_loaded_models(tmp_path):
    demucs_path = save_demucs(small_demucs("demucs"), tmp_path / "d.th")
    est = make_estimator(load_demucs(demucs_path), targets="vocals,bass", residual=True)
    assert isinstance(est, DemucsEstimator) and est.domain == WAVEFORM
    assert est.outputs == ("vocals", "bass", "accompaniment") and est.sources == tuple(SOURCES4)
    assert (est.sample_rate, est.nb_channels, est.references, est.batch_size) == (44100, 2, (), 1)
    assert est.bundle_id.startswith("demucs:") and len(est.bundle_id) == len("demucs:") + 16
    assert make_estimator(load_demucs(demucs_path)).bundle_id == est.bundle_id  # the weights' id
    other = save_demucs(small_demucs("demucs", seed=1), tmp_path / "d2.th")
    assert make_estimator(load_demucs(other)).bundle_id != est.bundle_id
    assert make_estimator(est) is est
    assert isinstance(make_engine(est), WaveformEngine)
    ckpt, _ = save_roformer("mel_band_roformer", tmp_path, "mel", batch_size=3)
    rf = make_estimator(load_roformer(ckpt), device="cpu", precision="bf16")
    assert isinstance(rf, RoformerEstimator) and rf.outputs == ("vocals",) and rf.bundle_id.startswith("mel_band")
    assert (rf.workers, rf.batch_size) == (1, 1)  # one torch thread (the fixture): one chunk at a time
    assert rf.chunkers(2)[0].flush_size == 3  # the windows follow the config's inference.batch_size
    assert make_estimator(load_roformer(ckpt), batch_size=8).batch_size == 8
    assert make_estimator(load_roformer(ckpt), workers=2).batch_size == 2
    with pytest.raises(ConfigError, match="precision"):
        make_estimator(load_demucs(demucs_path), precision="fp8")
    with pytest.raises(ConfigError, match="'piano' is not an output of demucs model"):
        make_estimator(load_demucs(demucs_path), targets=["piano"])


def test_cpu_bf16_autocasts_every_chunk_and_engines_check_domains(tmp_path, small_bundle):
    """bf16 on the CPU runs the model's convolutions in bf16, in the worker threads too (autocast is per
    thread), and moves the stems by bf16 rounding only; fp16 on the CPU is refused naming the option."""
    model = load_demucs(save_demucs(small_demucs("hdemucs"), tmp_path / "h.th"))
    x = synth(3.0, 44100, seed=3)
    seen = []
    conv = next(m for m in model.models[0].modules() if isinstance(m, torch.nn.Conv1d))
    hook = conv.register_forward_hook(lambda mod, inputs, output: seen.append(output.dtype))
    try:
        fp32 = separate_track(model, x, 44100)
        assert set(seen) == {torch.float32}
        seen.clear()
        for workers in (1, 2):  # one chunk per call, and two chunks at once in two threads
            est = make_estimator(model, precision="bf16", workers=workers, batch_size=workers)
            bf16 = separate_track(est, x, 44100)
            assert set(seen) == {torch.bfloat16}, workers
            seen.clear()
            for s in SOURCES4:
                assert bf16[s].dtype == np.float32 and not np.array_equal(fp32[s], bf16[s])
                err_db = 10 * np.log10(np.sum(fp32[s].astype(np.float64) ** 2) / np.sum((fp32[s] - bf16[s]) ** 2))
                assert err_db > 20, (s, workers, err_db)
    finally:
        hook.remove()
    with pytest.raises(ConfigError, match="fp16 autocast runs on CUDA only, not on cpu") as err:
        separate_track(model, x, 44100, precision="fp16")
    assert err.value.field == "precision"
    with pytest.raises(ConfigError, match="works on 'spectrogram' chunks"):
        WaveformEngine(make_estimator(load_bundle(small_bundle)))
    with pytest.raises(ConfigError, match="works on 'waveform' chunks"):
        ChunkedEngine(make_estimator(model))


def test_empty_and_multichannel_inputs(tmp_path):
    from sepcluster.errors import AudioError

    model = load_demucs(save_demucs(small_demucs("demucs"), tmp_path / "d.th"))
    six = synth(1.0, 44100, channels=6, seed=4)
    with pytest.raises(AudioError, match="6 channels"):
        separate_track(model, six, 44100)
    down = separate_track(model, six, 44100, downmix=True)
    assert all(v.shape == (six.shape[0], 1) for v in down.values())
    tiny = separate_track(model, synth(0.001, 44100, seed=5), 44100)
    assert all(v.shape == (44, 2) for v in tiny.values())
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 2), np.float32), 44100)
    with pytest.raises(AudioError):
        separate_file(make_estimator(model), str(empty), {s: str(tmp_path / f"{s}.wav") for s in SOURCES4})
