"""evaluate_track: both engines agree, museval's grouping, and edge cases warn instead of crashing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

museval = pytest.importorskip("museval")

from sepcluster.errors import AudioError, DataError  # noqa: E402
from sepcluster.evaluate.engines import EvaluationWarning, evaluate_track, groups_for  # noqa: E402

from .conftest import MUSDB_SAMPLE, TRACK, load_sample_stems, make_estimates, synthetic_track  # noqa: E402

METRICS = ["SDR", "SIR", "SAR", "ISR"]


def _dicts(refs: np.ndarray, ests: np.ndarray, names=("a", "b", "c", "d")):
    return ({names[i]: refs[i] for i in range(len(refs))}, {names[i]: ests[i] for i in range(len(ests))})


def _same(a: pd.DataFrame, b: pd.DataFrame, tol: float = 0.01) -> None:
    assert list(a["target"]) == list(b["target"]) and list(a["frame"]) == list(b["frame"])
    for m in METRICS:
        x, y = a[m].to_numpy(), b[m].to_numpy()
        assert np.array_equal(np.isnan(x), np.isnan(y)), m
        ok = ~np.isnan(x)
        if ok.any():
            assert np.max(np.abs(x[ok] - y[ok])) <= tol, m


def test_groups_follow_museval():
    assert groups_for(["vocals", "accompaniment"]) == [(["vocals", "accompaniment"], ["vocals", "accompaniment"])]
    assert groups_for(["bass", "vocals", "drums", "accompaniment", "other"]) == [
        (["vocals", "drums", "bass", "other"], ["drums", "bass", "other"]),
        (["vocals", "accompaniment"], ["vocals", "accompaniment"])]
    assert groups_for(["x", "y"]) == [(["x", "y"], ["x", "y"])]


def test_musdb_track_matches_museval_eval_mus_track(musdb_sample):
    """The real sample via musdb (2 s): vocals, drums and accompaniment, grouped as museval groups
    them (drums scored with vocals, vocals scored with accompaniment)."""
    import musdb

    db = musdb.DB(root=str(MUSDB_SAMPLE), subsets="train", is_wav=True)
    track = [t for t in db.tracks if t.name == TRACK][0]
    track.chunk_start, track.chunk_duration = 1.0, 2.0
    refs = {k: track.targets[k].audio for k in ("vocals", "drums", "bass", "other")}
    ests = make_estimates(refs, seed=4)
    ests["accompaniment"] = ests["drums"] + ests["bass"] + ests["other"]
    del ests["bass"], ests["other"]
    store = museval.eval_mus_track(track, ests)
    want = store.df.pivot_table(index=["target", "time"], columns="metric", values="score").reset_index()
    got = evaluate_track(refs, ests, track.rate, engine="torch")
    assert sorted(got["target"].unique()) == sorted(want["target"].unique())
    for target in got["target"].unique():
        g = got[got["target"] == target].sort_values("time")
        w = want[want["target"] == target].sort_values("time")
        np.testing.assert_allclose(g["time"], w["time"])
        for m in METRICS:
            # museval's store rounds to 5 decimals
            np.testing.assert_allclose(g[m].to_numpy(), w[m].to_numpy().astype(float), atol=2e-5, err_msg=m)


def test_engines_agree_on_synthetic_track():
    r, e, rate = synthetic_track(2.0, nsrc=3, nchan=1, seed=1)
    refs, ests = _dicts(r, e)
    a = evaluate_track(refs, ests, rate, engine="museval")
    b = evaluate_track(refs, ests, rate, engine="torch")
    assert list(a.columns) == ["target", "frame", "time", "duration", *METRICS]
    assert len(a) == 3 * 2
    _same(a, b)


def test_estimate_longer_or_shorter_is_trimmed_or_padded():
    """museval.evaluate crashes on ragged estimates (sigsep-mus-eval #85); we pad/trim as its
    pad_or_truncate documents: trim what is longer, pad zeros at the end of what is shorter."""
    r, e, rate = synthetic_track(2.5, nsrc=2, nchan=1, seed=2)
    refs, ests = _dicts(r, e)
    n = refs["a"].shape[0]
    longer = {"a": np.concatenate([ests["a"], ests["a"][:3000]]), "b": ests["b"]}
    shorter = {"a": ests["a"][:-3000], "b": ests["b"]}
    with pytest.raises(ValueError):
        museval.evaluate([refs["a"], refs["b"]], [shorter["a"], shorter["b"]], win=rate, hop=rate)
    for variant, fixed in ((longer, ests["a"]), (shorter, np.concatenate([ests["a"][:-3000], np.zeros((3000, 1))]))):
        with pytest.warns(EvaluationWarning, match="estimate 'a' is 3000 samples"):
            got = evaluate_track(refs, variant, rate, engine="torch")
        assert fixed.shape[0] == n
        sdr, isr, sir, sar = museval.evaluate([refs["a"], refs["b"]], [fixed, ests["b"]], win=rate, hop=rate)
        for m, want in (("SDR", sdr), ("ISR", isr), ("SIR", sir), ("SAR", sar)):
            np.testing.assert_allclose(got[got.target == "a"][m], want[0], atol=0.01)
            np.testing.assert_allclose(got[got.target == "b"][m], want[1], atol=0.01)
    with pytest.warns(EvaluationWarning):
        _same(evaluate_track(refs, shorter, rate, engine="museval"), evaluate_track(refs, shorter, rate))


def test_track_shorter_than_one_window_is_one_frame():
    r, e, rate = synthetic_track(0.5, nsrc=2, nchan=1, seed=3)
    refs, ests = _dicts(r, e)
    with pytest.warns(EvaluationWarning, match="shorter than one"):
        got = evaluate_track(refs, ests, rate, window=1.0, hop=1.0, engine="torch")
    assert len(got) == 2 and (got["frame"] == 0).all()
    assert got["duration"].iloc[0] == pytest.approx(0.5)
    assert np.isfinite(got[METRICS].to_numpy()).all()
    with pytest.warns(EvaluationWarning):
        _same(got, evaluate_track(refs, ests, rate, engine="museval"))


def test_silent_reference_is_nan_not_a_crash():
    r, e, rate = synthetic_track(3.0, nsrc=2, nchan=1, seed=4)
    r[0, rate:2 * rate] = 0.0  # one silent reference frame
    refs, ests = _dicts(r, e)
    for engine in ("torch", "museval"):
        with pytest.warns(EvaluationWarning, match="1 of 3 frames"):
            got = evaluate_track(refs, ests, rate, engine=engine)
        assert got[got.frame == 1][METRICS].isna().all().all()
        assert got[got.frame != 1][METRICS].notna().all().all()
    # a reference silent over the whole track: museval itself raises (sigsep-mus-eval #94)
    refs["b"] = np.zeros_like(refs["b"])
    for engine in ("torch", "museval"):
        with pytest.warns(EvaluationWarning, match="silent reference or estimate for b"):
            got = evaluate_track(refs, ests, rate, engine=engine)
        assert got[METRICS].isna().all().all() and len(got) == 6


def test_silent_estimate_is_nan():
    r, e, rate = synthetic_track(2.0, nsrc=2, nchan=2, seed=5)
    refs, ests = _dicts(r, e)
    ests["b"] = np.zeros_like(ests["b"])
    with pytest.warns(EvaluationWarning):
        got = evaluate_track(refs, ests, rate, engine="torch")
    assert got[METRICS].isna().all().all()


def test_mono_is_broadcast_to_stereo():
    r, e, rate = synthetic_track(2.0, nsrc=2, nchan=2, seed=6)
    refs, ests = _dicts(r, e)
    mono_est = dict(ests, a=ests["a"].mean(axis=1))  # (samples,) mono estimate
    with pytest.warns(EvaluationWarning, match="mono estimate 'a' repeated on 2 channels"):
        got = evaluate_track(refs, mono_est, rate, engine="torch")
    with pytest.warns(EvaluationWarning):
        want = evaluate_track(refs, mono_est, rate, engine="museval")
    _same(got, want)
    # all-mono input stays mono (no warning)
    rm, em, _ = synthetic_track(2.0, nsrc=2, nchan=1, seed=6)
    refs_m, ests_m = _dicts(rm, em)
    _same(evaluate_track(refs_m, ests_m, rate), evaluate_track(refs_m, ests_m, rate, engine="museval"))


def test_accompaniment_reference_is_built_from_stems(musdb_sample):
    stems = load_sample_stems(2.0)
    ests = make_estimates(stems, seed=2)
    ests = {"vocals": ests["vocals"], "accompaniment": ests["drums"] + ests["bass"] + ests["other"]}
    got = evaluate_track(stems, ests, 44100, engine="torch")
    refs = {"vocals": stems["vocals"], "accompaniment": stems["drums"] + stems["bass"] + stems["other"]}
    _same(got, evaluate_track(refs, ests, 44100, engine="torch"), tol=1e-9)


def test_bad_inputs_raise_named_errors():
    r, e, rate = synthetic_track(1.0, nsrc=2, nchan=2, seed=7)
    refs, ests = _dicts(r, e)
    with pytest.raises(DataError, match="engine 'fast'"):
        evaluate_track(refs, ests, rate, engine="fast")
    with pytest.raises(DataError, match="no target has both"), pytest.warns(EvaluationWarning):
        evaluate_track({"x": r[0]}, {"y": e[0]}, rate)
    with pytest.raises(AudioError, match="estimate 'a' 3, "):
        evaluate_track(refs, dict(ests, a=np.zeros((rate, 3)) + 0.1), rate)
    with pytest.raises(AudioError, match="NaN"):
        evaluate_track(refs, dict(ests, a=np.full_like(ests["a"], np.nan)), rate)
