"""The torch BSS Eval v4 against museval 0.4.1 itself (the oracle), on real and synthetic audio."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

museval = pytest.importorskip("museval")
import museval.metrics as mm  # noqa: E402

from sepcluster.evaluate import bsseval  # noqa: E402

from .conftest import RATE, SOURCES, load_sample_stems, synthetic_track  # noqa: E402

TOL_DB = 0.01
NAMES = ("SDR", "ISR", "SIR", "SAR")


def assert_matches(ours: bsseval.BSSEvalResult, ref: tuple, tol: float = TOL_DB) -> None:
    for name, a, b in zip(NAMES, (ours.sdr, ours.isr, ours.sir, ours.sar), ref[:4]):
        b = np.asarray(b, dtype=float)
        assert a.shape == b.shape, name
        assert np.array_equal(np.isnan(a), np.isnan(b)), f"{name}: NaN frames differ"
        assert np.array_equal(np.isposinf(a), np.isposinf(b)), f"{name}: +inf frames differ"
        finite = np.isfinite(b)
        if finite.any():
            worst = np.max(np.abs(a[finite] - b[finite]))
            assert worst <= tol, f"{name}: largest difference {worst:.3g} dB"


@pytest.fixture(scope="module")
def real_case(musdb_sample):
    refs = load_sample_stems(3.0, offset=2.0)
    rng = np.random.default_rng(0)
    mix = sum(refs.values())
    r = np.stack([refs[s] for s in SOURCES])
    e = np.stack([0.7 * refs[s] + 0.2 * np.roll(refs[s], 11, axis=0) + 0.15 * mix
                  + 0.003 * rng.standard_normal(refs[s].shape) for s in SOURCES])
    return r, e, mm.bss_eval(r, e, window=RATE, hop=RATE)


def test_real_audio_four_stereo_targets_match_museval(real_case):
    r, e, expected = real_case
    got = bsseval.bss_eval(r, e, window=RATE, hop=RATE)
    assert got.sdr.shape == (4, 3)
    assert np.all(np.isfinite(got.sdr))
    assert_matches(got, expected)
    np.testing.assert_array_equal(got.starts, [0, RATE, 2 * RATE])


def test_float32_input_matches_museval():
    r, e, rate = synthetic_track(2.0, nsrc=2, nchan=2, seed=11)
    r, e = r.astype(np.float32), e.astype(np.float32)
    assert_matches(bsseval.bss_eval(r, e, window=rate, hop=rate), mm.bss_eval(r, e, window=rate, hop=rate))


@pytest.mark.parametrize("nsrc,nchan,window,hop", [(3, 2, 8000, 8000), (2, 1, 8000, 4000), (4, 1, 6000, 3000)])
def test_synthetic_tracks_match_museval(nsrc, nchan, window, hop):
    r, e, _ = synthetic_track(2.3, nsrc=nsrc, nchan=nchan, seed=nsrc + nchan)  # with a tail
    assert_matches(bsseval.bss_eval(r, e, window=window, hop=hop), mm.bss_eval(r, e, window=window, hop=hop))


def test_project_synthetic_stems_match_museval():
    """The project's own synthetic songs (sepcluster stems synth, stereo with their room): the
    image model is well-posed on them, so every metric matches museval, not only SDR."""
    from sepcluster.stems.synth import render_song

    rate = 8000
    stems, _ = render_song(seed=5, index=1, seconds=3.0, sample_rate=rate, channels=2)
    r = np.stack([stems[s].astype(np.float64) for s in SOURCES])
    mix = r.sum(axis=0)
    rng = np.random.default_rng(1)
    e = np.stack([0.8 * r[j] + 0.1 * mix + 0.002 * rng.standard_normal(r[j].shape) for j in range(len(SOURCES))])
    got = bsseval.bss_eval(r, e, window=rate, hop=rate)
    assert np.all(np.isfinite(got.isr)) and np.all(np.isfinite(got.sar))
    assert_matches(got, mm.bss_eval(r, e, window=rate, hop=rate))


def test_silent_frames_are_nan_like_museval():
    r, e, rate = synthetic_track(4.0, nsrc=2, nchan=2, seed=3)
    r[0, rate:2 * rate] = 0.0  # a silent reference frame
    e[1, 3 * rate:] = 0.0  # a silent estimate frame (the last)
    # museval's silence test is the channel sum: L = -R counts as silent
    r[1, 2 * rate:3 * rate, 1] = -r[1, 2 * rate:3 * rate, 0]
    expected = mm.bss_eval(r, e, window=rate, hop=rate)
    got = bsseval.bss_eval(r, e, window=rate, hop=rate)
    assert np.isnan(got.sdr[:, 1:]).all() and np.isfinite(got.sdr[:, 0]).all()
    assert_matches(got, expected)


def test_single_source_gives_inf_sir_like_museval():
    r, e, rate = synthetic_track(2.0, nsrc=1, nchan=2, seed=5)
    expected = mm.bss_eval(r, e, window=rate, hop=rate)
    got = bsseval.bss_eval(r, e, window=rate, hop=rate)
    assert np.isposinf(got.sir).all()
    assert_matches(got, expected)


def test_signal_shorter_than_window_is_one_frame_like_museval():
    r, e, rate = synthetic_track(0.6, nsrc=2, nchan=2, seed=7)
    expected = mm.bss_eval(r, e, window=rate, hop=rate)
    got = bsseval.bss_eval(r, e, window=rate, hop=rate)
    assert got.sdr.shape == (2, 1)
    assert_matches(got, expected)


def test_whole_silent_source_is_nan_instead_of_an_error():
    r, e, rate = synthetic_track(2.0, nsrc=2, nchan=2, seed=8)
    r[1] = 0.0
    with pytest.raises(ValueError):
        mm.bss_eval(r, e, window=rate, hop=rate)
    got = bsseval.bss_eval(r, e, window=rate, hop=rate)
    assert np.isnan(got.sdr).all() and np.isnan(got.sar).all()


def test_framing_matches_museval():
    for n, win, hop in [(10, 3, 2), (44100 * 3 + 17, 44100, 44100), (500, 1000, 1000), (100, 100, 10),
                        (1000, np.inf, np.inf)]:
        starts, stops = bsseval.framing(n, win, hop)
        fr = mm.Framing(win, hop, n)
        sl = list(fr)
        assert len(sl) == fr.nwin == len(starts)
        assert [s.start for s in sl] == starts.tolist() and [s.stop for s in sl] == stops.tolist()


def test_gram_matrix_equals_museval():
    rng = np.random.default_rng(1)
    r = rng.standard_normal((3, 5000, 2))
    expected, _ = mm._compute_reference_correlations(r, 64)
    got = bsseval.museval_reference_correlations(r, 64).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * np.abs(expected).max())


def test_block_correlations_over_several_blocks():
    rng = np.random.default_rng(2)
    a = torch.as_tensor(rng.standard_normal((2, 3000)))
    b = torch.as_tensor(rng.standard_normal((3, 3000)))
    got = bsseval._block_xcorr(a, b, 20, nfft=256)  # many blocks, lags beyond a block edge
    for p in range(2):
        for q in range(3):
            full = np.correlate(b[q].numpy(), a[p].numpy(), mode="full")  # lag m at index m + n - 1
            want = full[3000 - 1 - 20: 3000 + 20]
            np.testing.assert_allclose(got[p, q].numpy(), want, atol=1e-9)


def test_museval_regression_vector(musdb_sample):
    """museval's own test data: random estimates vs vocals / accompaniment of the sample track."""
    from tests.conftest import MUSEVAL_REFERENCE

    path = MUSEVAL_REFERENCE / "Music Delta - 80s Rock.json"
    if not path.exists():
        pytest.skip("museval reference vector absent")
    stems = load_sample_stems()
    refs = np.stack([stems["vocals"], stems["drums"] + stems["bass"] + stems["other"]])
    np.random.seed(0)
    shape = refs.shape[1:]
    ests = np.stack([np.random.random(shape), np.random.random(shape)])
    got = bsseval.bss_eval(refs, ests, window=RATE, hop=RATE)
    expected = json.loads(path.read_text())
    for i, target in enumerate(expected["targets"]):
        assert target["name"] == ("vocals", "accompaniment")[i]
        for name, arr in zip(NAMES, (got.sdr, got.isr, got.sir, got.sar)):
            want = np.array([f["metrics"][name] for f in target["frames"]], dtype=float)
            # museval's own tolerance for this vector
            assert np.allclose(want, arr[i], atol=0.1, equal_nan=True), (target["name"], name)
        sdr = np.array([f["metrics"]["SDR"] for f in target["frames"]], dtype=float)
        assert np.max(np.abs(sdr - got.sdr[i])) < 1e-3  # SDR, the stable check, much tighter


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():  # pragma: no cover - only with a GPU
    r, e, rate = synthetic_track(2.0, nsrc=3, nchan=2, seed=9)
    cpu = bsseval.bss_eval(r, e, window=rate, hop=rate, device="cpu")
    gpu = bsseval.bss_eval(r, e, window=rate, hop=rate, device="cuda")
    for a, b in zip(cpu[:4], gpu[:4]):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_fft_sizes_are_scipys_next_fast_len():
    """The padded FFT length (museval pads with scipy's next_fast_len) without importing scipy.fft."""
    import scipy.fft

    sizes = list(range(1, 5000)) + [n + d for n in (44100, 2 * 44100, 30 * 44100, 3 * 2 ** 20) for d in range(-2, 3)]
    assert [bsseval._next_fast_len(n) for n in sizes] == [scipy.fft.next_fast_len(n, real=True) for n in sizes]
