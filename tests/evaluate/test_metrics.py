"""Global SDR and SI-SDR against the published formulas, re-implemented here from their sources:

- demucs ``demucs/evaluate.py`` ``new_sdr`` (facebookresearch/demucs e976d93, L30-43; float64 via
  ``eval_track`` L47-48), eps 1e-7 added to both sums over (time, channels);
- Music-Source-Separation-Training ``utils/metrics.py`` (ZFTurbo, ccc011a): ``sdr`` L29-34 (eps 1e-8,
  sums over axes (1, 2) of ``(1, channels, samples)``, ``get_metrics`` L431-434) and ``si_sdr``
  L64-70 (on ``(channels, samples)``, ``get_metrics`` L437);
- torchmetrics 1.9.0 ``scale_invariant_signal_distortion_ratio`` itself (the oracle, test-only).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sepcluster.errors import AudioError, DataError
from sepcluster.evaluate import metrics
from sepcluster.evaluate.engines import EvaluationWarning


def _track(nsrc=4, n=30_011, nchan=2, seed=0, dtype=np.float64):
    """Random references (coloured by a running mean) and imperfect estimates, (nsrc, n, nchan)."""
    rng = np.random.default_rng(seed)
    refs = rng.standard_normal((nsrc, n, nchan)) * rng.uniform(0.05, 0.5, (nsrc, 1, 1))
    refs = (refs + np.roll(refs, 1, axis=1)) / 2
    ests = 0.8 * refs + 0.1 * refs[::-1] + 0.05 * rng.standard_normal(refs.shape)
    return refs.astype(dtype), ests.astype(dtype)


# ---- the published formulas, written out independently --------------------------------------

def demucs_new_sdr(refs: np.ndarray, ests: np.ndarray) -> np.ndarray:
    """demucs/evaluate.py L30-43 on (1, sources, time, channels) doubles (eval_track L47-50)."""
    torch = pytest.importorskip("torch")
    r = torch.from_numpy(np.asarray(refs)).double()[None]
    e = torch.from_numpy(np.asarray(ests)).double()[None]
    delta = 1e-7
    num = torch.sum(torch.square(r), dim=(2, 3)) + delta
    den = torch.sum(torch.square(r - e), dim=(2, 3)) + delta
    return (10 * torch.log10(num / den))[0].numpy()


def msst_sdr(ref_cs: np.ndarray, est_cs: np.ndarray) -> float:
    """utils/metrics.py L29-34 via get_metrics L432-434: one target, (channels, samples)."""
    r, e = ref_cs[None], est_cs[None]
    eps = 1e-8
    num = np.sum(np.square(r), axis=(1, 2)) + eps
    den = np.sum(np.square(r - e), axis=(1, 2)) + eps
    return float(10 * np.log10(num / den)[0])


def msst_si_sdr(ref_cs: np.ndarray, est_cs: np.ndarray) -> float:
    """utils/metrics.py L64-70: one target, (channels, samples) - the channels concatenated."""
    eps = 1e-8
    scale = np.sum(est_cs * ref_cs + eps, axis=(0, 1)) / np.sum(ref_cs ** 2 + eps, axis=(0, 1))
    scaled = ref_cs * scale
    return float(np.mean(10 * np.log10(np.sum(scaled ** 2, axis=(0, 1))
                                       / (np.sum((scaled - est_cs) ** 2, axis=(0, 1)) + eps) + eps)))


def _cs(x: np.ndarray) -> np.ndarray:
    """(samples, channels) -> (channels, samples) as MSST reads audio."""
    return np.ascontiguousarray(x.T)


# ---- global SDR ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_global_sdr_equals_demucs(dtype):
    refs, ests = _track(dtype=dtype)
    ours = metrics.global_sdr(refs, ests)  # default variant: demucs
    assert ours.dtype == np.float64 and ours.shape == (4,)
    # demucs casts to double before the sums: float64 precision either way
    np.testing.assert_allclose(ours, demucs_new_sdr(refs, ests), rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_global_sdr_equals_msst(dtype):
    refs, ests = _track(dtype=dtype, seed=1)
    ours = metrics.global_sdr(refs, ests, variant="msst")
    want64 = [msst_sdr(_cs(r.astype(np.float64)), _cs(e.astype(np.float64))) for r, e in zip(refs, ests)]
    np.testing.assert_allclose(ours, want64, rtol=0, atol=1e-10)
    # MSST on the arrays as given (float32 arithmetic for float32 audio): float32 precision
    want = [msst_sdr(_cs(r), _cs(e)) for r, e in zip(refs, ests)]
    np.testing.assert_allclose(ours, want, rtol=0, atol=1e-10 if dtype == np.float64 else 1e-4)


def test_variants_differ_only_by_epsilon():
    # quiet signals where eps is not negligible: each variant equals its own formula
    refs, ests = _track(nsrc=2, n=50, seed=2)
    refs, ests = refs * 1e-5, ests * 1e-5
    demucs = metrics.global_sdr(refs, ests, variant="demucs")
    msst = metrics.global_sdr(refs, ests, variant="msst")
    np.testing.assert_allclose(demucs, demucs_new_sdr(refs, ests), atol=1e-10)
    np.testing.assert_allclose(msst, [msst_sdr(_cs(r), _cs(e)) for r, e in zip(refs, ests)], atol=1e-10)
    assert np.all(np.abs(demucs - msst) > 0.01)
    assert metrics.SDR_EPSILON == {"demucs": 1e-7, "msst": 1e-8}


def test_global_sdr_sums_channels_together():
    refs, ests = _track(nsrc=1, n=1000, seed=3)
    refs[0, :, 1] *= 10  # a loud right channel dominates the joint ratio
    ours = metrics.global_sdr(refs, ests)[0]
    ss, dd = np.sum(refs ** 2), np.sum((refs - ests) ** 2)
    assert ours == pytest.approx(10 * np.log10((ss + 1e-7) / (dd + 1e-7)), abs=1e-12)
    per_channel = [metrics.global_sdr(refs[:, :, c:c + 1], ests[:, :, c:c + 1])[0] for c in range(2)]
    assert abs(ours - np.mean(per_channel)) > 0.5


# ---- SI-SDR ----------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", ["joint", "mean"])
@pytest.mark.parametrize("zero_mean", [False, True])
def test_si_sdr_equals_torchmetrics(channels, zero_mean):
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.functional.audio")
    refs, ests = _track(seed=4)
    refs, ests = refs + 0.02, ests - 0.01  # offsets, so that zero_mean matters
    ours = metrics.si_sdr(refs, ests, channels=channels, zero_mean=zero_mean)
    r = torch.from_numpy(refs.transpose(0, 2, 1).copy())  # (sources, channels, time): time last
    e = torch.from_numpy(ests.transpose(0, 2, 1).copy())
    if channels == "mean":
        want = tm.scale_invariant_signal_distortion_ratio(e, r, zero_mean=zero_mean).mean(-1)
    else:
        if zero_mean:  # each channel centred, then the channels concatenated
            r, e = r - r.mean(-1, keepdim=True), e - e.mean(-1, keepdim=True)
        want = tm.scale_invariant_signal_distortion_ratio(e.reshape(4, -1), r.reshape(4, -1))
    np.testing.assert_allclose(ours, want.numpy(), rtol=0, atol=1e-9)
    other = metrics.si_sdr(refs, ests, channels=channels, zero_mean=not zero_mean)
    assert np.all(np.abs(other - ours) > 1e-3)


def test_si_sdr_float32_within_float32_precision_of_torchmetrics():
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.functional.audio")
    refs, ests = _track(seed=5, dtype=np.float32)
    ours = metrics.si_sdr(refs, ests)
    want = tm.scale_invariant_signal_distortion_ratio(torch.from_numpy(ests.reshape(4, -1)),
                                                     torch.from_numpy(refs.reshape(4, -1)))
    np.testing.assert_allclose(ours, want.numpy(), rtol=0, atol=1e-3)
    exact = metrics.si_sdr(refs.astype(np.float64), ests.astype(np.float64))
    np.testing.assert_array_equal(ours, exact)  # float64 accumulation: the dtype of the input does not matter


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_si_sdr_msst_variant_equals_msst(dtype):
    refs, ests = _track(seed=6, dtype=dtype)
    ours = metrics.si_sdr(refs, ests, variant="msst")
    want = [msst_si_sdr(_cs(r.astype(np.float64)), _cs(e.astype(np.float64))) for r, e in zip(refs, ests)]
    np.testing.assert_allclose(ours, want, rtol=0, atol=1e-9)
    # and the default (torchmetrics' eps) differs from it by eps only on these levels
    np.testing.assert_allclose(metrics.si_sdr(refs, ests), ours, atol=1e-4)


def test_si_sdr_is_scale_invariant_and_global_sdr_is_not():
    refs, ests = _track(nsrc=2, seed=7)
    base = metrics.si_sdr(refs, ests)
    np.testing.assert_allclose(metrics.si_sdr(refs, 3.0 * ests), base, atol=1e-9)
    assert np.all(np.abs(metrics.global_sdr(refs, 3.0 * ests) - metrics.global_sdr(refs, ests)) > 1)


# ---- edge cases ------------------------------------------------------------------------------

def test_silent_reference_is_nan_with_warning_naming_track_and_target():
    refs, ests = _track(nsrc=3, n=5000, seed=8)
    refs[1] = 0.0
    refs_d = {"vocals": refs[0], "drums": refs[1], "bass": refs[2]}
    ests_d = {"vocals": ests[0], "drums": ests[1], "bass": ests[2]}
    with pytest.warns(EvaluationWarning, match=r"track 'song A': reference 'drums' is silent") as rec:
        df = metrics.track_scores(refs_d, ests_d, track="song A").set_index("target")
    assert len([w for w in rec if "silent" in str(w.message)]) == 1
    assert np.isnan(df.loc["drums", "uSDR"]) and np.isnan(df.loc["drums", "SI-SDR"])
    assert np.isfinite(df.drop(index="drums").to_numpy()).all()
    assert list(df.index) == ["vocals", "drums", "bass"]  # museval's order
    assert list(df.reset_index().columns) == metrics.SCORE_COLUMNS == ["target", "uSDR", "SI-SDR"]
    with pytest.warns(EvaluationWarning, match="reference '#1' is silent"):
        assert np.isnan(metrics.global_sdr(refs, ests)[1])
    for channels in ("joint", "mean"):
        with pytest.warns(EvaluationWarning, match="'x' is silent"):
            out = metrics.si_sdr(refs, ests, channels=channels, targets=["v", "x", "b"])
        assert np.isnan(out[1]) and np.isfinite(out[[0, 2]]).all()


def test_silent_estimate_global_sdr_zero_si_sdr_nan():
    refs, ests = _track(nsrc=2, n=4000, seed=9)
    ests[0] = 0.0
    assert metrics.global_sdr(refs, ests)[0] == pytest.approx(0.0, abs=1e-12)  # (ss + eps) / (ss + eps)
    with pytest.warns(EvaluationWarning, match="estimate '#0' is silent; SI-SDR is NaN"):
        out = metrics.si_sdr(refs, ests)
    assert np.isnan(out[0]) and np.isfinite(out[1])


def test_constant_reference_with_zero_mean_and_silent_channel():
    refs, ests = _track(nsrc=2, n=3000, seed=10)
    refs[0] = 0.5
    with pytest.warns(EvaluationWarning, match="reference '#0' is silent after removing the mean"):
        out = metrics.si_sdr(refs, ests, zero_mean=True)
    assert np.isnan(out[0]) and np.isfinite(out[1])
    assert np.isfinite(metrics.si_sdr(refs, ests)).all()  # not centred: defined
    refs, ests = _track(nsrc=1, n=3000, seed=11)
    refs[0, :, 1] = 0.0
    assert np.isfinite(metrics.si_sdr(refs, ests, channels="joint")).all()
    with pytest.warns(EvaluationWarning, match="silent in a channel"):
        assert np.isnan(metrics.si_sdr(refs, ests, channels="mean")[0])


def test_lengths_pad_and_trim_like_engines():
    refs, ests = _track(nsrc=3, n=20_000, seed=12)
    short, long_ = ests[0][:-1234], np.concatenate([ests[1], ests[1][:777]])
    r = {"vocals": refs[0], "drums": refs[1], "bass": refs[2][:-100]}
    e = {"vocals": short, "drums": long_, "bass": ests[2]}
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        df = metrics.track_scores(r, e, track="t").set_index("target")
    text = " | ".join(str(w.message) for w in rec)
    assert "estimate 'vocals' is 1234 samples shorter than the reference; padded with zeros" in text
    assert "estimate 'drums' is 777 samples longer than the reference; trimmed" in text
    assert "reference 'bass' has 19900 samples, others 20000; padded with zeros" in text
    assert all(issubclass(w.category, EvaluationWarning) for w in rec)
    # the same as scoring explicitly padded / trimmed arrays
    pr = np.stack([refs[0], refs[1], np.pad(refs[2][:-100], ((0, 100), (0, 0)))])
    pe = np.stack([np.pad(short, ((0, 1234), (0, 0))), long_[:20_000], ests[2]])
    np.testing.assert_allclose(df["uSDR"].to_numpy(), demucs_new_sdr(pr, pe), atol=1e-10)
    np.testing.assert_allclose(df["SI-SDR"].to_numpy(), metrics.si_sdr(pr, pe), atol=1e-10)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        lists = metrics.global_sdr([refs[0], refs[1]], [short, long_])  # lists of different lengths
    assert ["shorter" in str(w.message) for w in rec] == [True, False] and "'#1' is 777" in str(rec[1].message)
    np.testing.assert_allclose(lists, df["uSDR"].to_numpy()[:2], atol=1e-12)
    for ch in ("joint", "mean"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EvaluationWarning)
            got = metrics.track_scores(r, e, sisdr_channels=ch, sisdr_zero_mean=True)["SI-SDR"].to_numpy()
        np.testing.assert_allclose(got, metrics.si_sdr(pr, pe, channels=ch, zero_mean=True), atol=1e-9)


def test_mono_broadcast_and_channel_mismatch():
    refs, ests = _track(nsrc=2, n=6000, seed=13)
    mono = ests[0].mean(axis=1)
    with pytest.warns(EvaluationWarning, match="mono estimate 'vocals' repeated on 2 channels"):
        df = metrics.track_scores({"vocals": refs[0], "drums": refs[1]}, {"vocals": mono, "drums": ests[1]})
    rep = np.repeat(mono[:, None], 2, axis=1)
    assert df["uSDR"].iloc[0] == pytest.approx(demucs_new_sdr(refs[:1], rep[None])[0], abs=1e-10)
    three = np.concatenate([ests[1], ests[1][:, :1]], axis=1)
    with pytest.raises(AudioError, match="channel counts differ"):
        metrics.track_scores({"vocals": refs[0], "drums": refs[1]}, {"vocals": ests[0], "drums": three})


def test_bad_inputs_raise_named_errors():
    refs, ests = _track(nsrc=2, n=9000, seed=14)
    bad = ests.copy()
    bad[1, 4321, 0] = np.nan
    with pytest.raises(AudioError, match=r"track 'x' estimate 'drums': holds NaN or infinite samples"):
        metrics.track_scores({"vocals": refs[0], "drums": refs[1]}, {"vocals": ests[0], "drums": bad[1]},
                             track="x")
    inf = refs.copy()
    inf[0, 10, 1] = np.inf
    with pytest.raises(AudioError, match="reference '#0': holds NaN"):
        metrics.global_sdr(inf, ests)
    with pytest.raises(DataError, match="no estimate for target.*bass"):
        metrics.track_scores({"vocals": refs[0]}, {"vocals": ests[0]}, targets=["vocals", "bass"])
    with pytest.raises(DataError, match="variant 'bsseval'"):
        metrics.global_sdr(refs, ests, variant="bsseval")
    with pytest.raises(DataError, match="channels 'left'"):
        metrics.si_sdr(refs, ests, channels="left")
    with pytest.raises(AudioError, match="looks like \\(channels, samples\\)"):
        metrics.track_scores({"vocals": refs[0].T}, {"vocals": ests[0].T})
    with pytest.raises(DataError, match="2 references but 1 estimates"):
        metrics.global_sdr(refs, ests[:1])


def test_accompaniment_reference_built_from_stems():
    refs, ests = _track(nsrc=4, n=7000, seed=15)
    names = ("vocals", "drums", "bass", "other")
    acc_est = ests[1] + ests[2] + ests[3]
    df = metrics.track_scores(dict(zip(names, refs)), {"vocals": ests[0], "accompaniment": acc_est})
    assert list(df["target"]) == ["vocals", "accompaniment"]
    acc_ref = refs[1] + refs[2] + refs[3]
    assert df["uSDR"].iloc[1] == pytest.approx(demucs_new_sdr(acc_ref[None], acc_est[None])[0], abs=1e-10)


def test_track_scores_equals_the_array_functions_on_real_audio(sample_excerpt):
    refs, ests = sample_excerpt  # 3 s of the real MUSDB sample, float64 (samples, 2)
    ests = {k: v.astype(np.float32) for k, v in ests.items()}
    df = metrics.track_scores(refs, ests).set_index("target")
    names = list(df.index)
    r = np.stack([refs[t] for t in names])
    e = np.stack([ests[t] for t in names])
    np.testing.assert_allclose(df["uSDR"].to_numpy(), demucs_new_sdr(r, e.astype(np.float64)), atol=1e-10)
    want = [msst_si_sdr(_cs(a), _cs(b.astype(np.float64))) for a, b in zip(r, e)]
    np.testing.assert_allclose(df["SI-SDR"].to_numpy(), want, atol=1e-3)  # MSST's eps only
    np.testing.assert_allclose(df["SI-SDR"].to_numpy(), metrics.si_sdr(r, e), atol=1e-12)


def test_block_boundaries_do_not_matter():
    # lengths around the block size, odd channel counts: the same as one naive sum
    for n, nchan in ((1, 2), (4095, 2), (4096, 2), (4097, 2), (8193, 1), (2731, 3), (20_000, 6)):
        refs, ests = _track(nsrc=1, n=n, nchan=nchan, seed=n)
        ss, dd = np.sum(refs ** 2), np.sum((refs - ests) ** 2)
        assert metrics.global_sdr(refs, ests)[0] == pytest.approx(10 * np.log10((ss + 1e-7) / (dd + 1e-7)),
                                                                  abs=1e-10)
        if n == 1:
            continue  # one sample: nothing left after removing the mean
        m = metrics.si_sdr(refs, ests, channels="mean", zero_mean=True)[0]
        per = []
        for c in range(nchan):
            s, x = refs[0, :, c] - refs[0, :, c].mean(), ests[0, :, c] - ests[0, :, c].mean()
            a = (x @ s + metrics.FLOAT64_EPS) / (s @ s + metrics.FLOAT64_EPS)
            per.append(10 * np.log10((np.sum((a * s) ** 2) + metrics.FLOAT64_EPS)
                                     / (np.sum((a * s - x) ** 2) + metrics.FLOAT64_EPS)))
        assert m == pytest.approx(np.mean(per), abs=1e-9)

