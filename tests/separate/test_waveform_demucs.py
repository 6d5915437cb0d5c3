"""demucs models and bags through sepcluster's waveform engine equal demucs' own ``apply_model``.

Reference: ``demucs.apply.apply_model(model, mix, shifts=0, split=True, overlap=0.25)`` on the model
demucs' own loader reads back from the same file (random weights saved as demucs saves them).
Stated tolerance: max |diff| <= 1e-6 (``TOL``) with the reference's batch composition (one chunk
per call; measured 0.0, bit for bit, for the convolutional models and 4e-8 for HTDemucs, whose
self-attention takes the SDPA path on the CPU) and <= 1e-5 (``TOL_BATCHED``) with several chunks per call
or chunks in parallel threads (measured <= 1e-7); the outputs are of order 0.1-1.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from sepcluster.audio import read_audio, resample
from sepcluster.models.demucs import load_demucs
from sepcluster.separate.engine import separate_file, separate_track
from sepcluster.separate.estimators import make_estimator
from sepcluster.separate.waveform_estimators import DemucsEstimator
from tests.models.foreign_files import SOURCES4, SOURCES6, save_demucs, save_demucs_with_checksum, small_demucs

from .conftest import synth
from .waveform_cases import (SR, TOL, TOL_BATCHED, apply_model, demucs_reference, max_diff, one_thread,  # noqa: F401
                             short_last_chunk, small_htdemucs)

pytestmark = pytest.mark.usefixtures("one_thread")

pytest.importorskip("demucs")
pytest.importorskip("omegaconf")  # demucs.states.serialize_model needs it


@pytest.fixture(scope="module")
def htdemucs_file(tmp_path_factory):
    return save_demucs(small_htdemucs(), tmp_path_factory.mktemp("ht") / "htdemucs.th")


def test_htdemucs_equals_apply_model(htdemucs_file):
    ours = load_demucs(htdemucs_file)
    reference = demucs_reference(htdemucs_file)
    seg = ours.segment_length()
    assert seg == 343980
    cases = {"30 s": synth(30.0, SR, seed=1), "shorter than a segment": synth(2.5, SR, seed=2),
             "3-sample last chunk": synth(short_last_chunk(seg, extra=3) / SR, SR, seed=3)}
    for name, x in cases.items():
        expected = apply_model(reference, x)
        got = separate_track(ours, x, SR)
        assert set(got) == set(SOURCES4), name
        assert all(got[s].shape == x.shape for s in SOURCES4), name
        assert max_diff(got, expected, SOURCES4) <= TOL, (name, max_diff(got, expected, SOURCES4))
        assert np.abs(expected).max() > 0.05  # the random model's outputs are not negligible
    # several chunks per model call, and two chunks in two threads: float rounding only
    batched = separate_track(ours, x, SR, batch_chunks=3)
    assert max_diff(batched, expected, SOURCES4) <= TOL_BATCHED
    threaded = separate_track(DemucsEstimator(ours, batch_size=2, workers=2), x, SR)
    assert max_diff(threaded, expected, SOURCES4) <= TOL_BATCHED


@pytest.mark.parametrize("kind", ["hdemucs", "demucs"])
def test_hdemucs_and_demucs_equal_apply_model(tmp_path, kind):
    path = save_demucs(small_demucs(kind), tmp_path / f"{kind}.th")
    ours, reference = load_demucs(path), demucs_reference(path)
    seg = ours.segment_length()
    for seconds in (30.0, 1.3, short_last_chunk(seg, chunks=4, extra=16) / SR):  # demucs fails on 1 sample
        x = synth(seconds, SR, seed=4)
        expected = apply_model(reference, x)
        got = separate_track(ours, x, SR)
        assert max_diff(got, expected, SOURCES4) <= TOL, (kind, seconds)
    if kind == "demucs":  # Demucs pads every chunk to its valid length with the track's own samples
        assert ours.chunk_input_length(0, seg) > seg
        batched = separate_track(ours, x, SR, batch_chunks=4)
        assert max_diff(batched, expected, SOURCES4) <= TOL_BATCHED


def test_bag_with_per_source_weights_and_segments(tmp_path):
    """Two models with different segments (an HTDemucs keeps its 7.8 s, an HDemucs gets the bag's
    10 s) and per-source weights, in demucs' bag layout; equal to apply_model on demucs' own bag."""
    from demucs.pretrained import get_model

    save_demucs(small_htdemucs(seed=1), tmp_path / "aaaa1111.th")
    save_demucs_with_checksum(small_demucs("hdemucs", seed=2), tmp_path, "bbbb2222")
    (tmp_path / "mybag.yaml").write_text(
        "models: ['aaaa1111', 'bbbb2222']\nweights: [[1., 0.25, 1., 0.], [0.5, 1., 1., 2.]]\nsegment: 10\n")
    bag = load_demucs(tmp_path / "mybag.yaml")
    reference = get_model("mybag", repo=tmp_path)  # demucs' BagOfModels, read by demucs itself
    assert [bag.segment_length(i) for i in range(2)] == [343980, 441000]
    x = synth(20.0, SR, seed=5)
    est = make_estimator(bag, targets=["vocals", "drums"], residual=True)
    assert est.outputs == ("vocals", "drums", "accompaniment")
    got = separate_track(est, x, SR)
    expected = apply_model(reference, x)
    assert max_diff(got, expected[[3, 0]], ["vocals", "drums"]) <= TOL
    assert np.abs(got["accompaniment"] - (x - got["vocals"] - got["drums"])).max() <= 1e-6


def test_six_sources_give_six_stems(tmp_path):
    path = save_demucs(small_htdemucs(SOURCES6, seed=3), tmp_path / "six.th")
    x = synth(9.0, SR, seed=6)
    got = separate_track(load_demucs(path), x, SR)
    assert list(got) == SOURCES6
    assert max_diff(got, apply_model(demucs_reference(path), x), SOURCES6) <= TOL


def test_other_rate_and_mono(tmp_path, htdemucs_file):
    """A 22.05 kHz track goes to 44.1 kHz (soxr stream) and back at 22.05 kHz with its length (vs
    apply_model between whole-signal soxr resamplings: 1e-4 relative); a mono track feeds the stereo
    model duplicated and comes back mono (the two output channels averaged)."""
    ours, reference = load_demucs(htdemucs_file), demucs_reference(htdemucs_file)
    x = synth(9.0, 22050, seed=7)
    got = separate_track(ours, x, 22050)
    expected = apply_model(reference, resample(x, 22050, SR))
    for i, s in enumerate(SOURCES4):
        assert got[s].shape == x.shape
        back = resample(expected[i], SR, 22050)[:x.shape[0]]
        assert np.abs(got[s] - back).max() <= 1e-4 * max(1.0, np.abs(back).max())
    mono = synth(4.0, SR, channels=1, seed=8)
    got = separate_track(ours, mono, SR)
    expected = apply_model(reference, np.repeat(mono, 2, axis=1))
    for i, s in enumerate(SOURCES4):  # the stereo estimate averaged back to mono
        assert got[s].shape == mono.shape
        assert np.abs(got[s][:, 0] - expected[i].mean(axis=1)).max() <= TOL_BATCHED


def test_file_in_blocks_equals_apply_model(tmp_path, htdemucs_file):
    """separate_file decodes in small blocks and writes float WAVs: the same samples as apply_model."""
    x = synth(17.0, SR, seed=9)
    src = tmp_path / "in.wav"
    sf.write(str(src), x, SR, subtype="FLOAT")
    est = make_estimator(load_demucs(htdemucs_file))
    outs = {s: str(tmp_path / "out" / f"{s}.wav") for s in est.outputs}
    stats = separate_file(est, str(src), outs, format="wav", bits=32, block_frames=12345)
    assert stats.frames == x.shape[0] and stats.model_rate == SR and stats.chunks == 3
    expected = apply_model(demucs_reference(htdemucs_file), x)
    got = {s: sf.read(outs[s], dtype="float32", always_2d=True)[0] for s in est.outputs}
    assert max_diff(got, expected, SOURCES4) <= TOL


def test_musdb_sample_equals_apply_model(musdb_sample, htdemucs_file):
    """Real audio: the MUSDB sample's mixture (6.8 s, one short chunk padded to the segment)."""
    path = musdb_sample / "train" / "Music Delta - 80s Rock" / "mixture.wav"
    x, rate = read_audio(str(path))
    assert rate == SR
    got = separate_track(load_demucs(htdemucs_file), x, rate)
    assert max_diff(got, apply_model(demucs_reference(htdemucs_file), x), SOURCES4) <= TOL


def test_self_attention_takes_the_sdpa_path_on_the_cpu_and_the_setting_is_restored(htdemucs_file):
    """torch's MultiheadAttention inference fast path is off while HTDemucs runs (on the CPU it computes
    attention with explicit bmm + softmax; the regular path uses scaled_dot_product_attention), in both
    of two threads that run chunks at once; the process-wide setting is the caller's again afterwards."""
    ours = load_demucs(htdemucs_file)
    est = DemucsEstimator(ours, batch_size=2, workers=2)
    seen = []
    hook = est.models[0].register_forward_pre_hook(lambda *_: seen.append(torch.backends.mha.get_fastpath_enabled()))
    x = synth(12.0, SR, seed=11)
    try:
        for before in (True, False):
            torch.backends.mha.set_fastpath_enabled(before)
            seen.clear()
            got = separate_track(est, x, SR)
            assert seen and not any(seen), seen  # two chunks, each call with the fast path off
            assert torch.backends.mha.get_fastpath_enabled() is before
    finally:
        hook.remove()
        torch.backends.mha.set_fastpath_enabled(True)
    assert max_diff(got, apply_model(demucs_reference(htdemucs_file), x), SOURCES4) <= TOL_BATCHED
