"""The synthetic stem library: layout, determinism, levels and a crude musicality check."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from sepcluster.errors import ConfigError, DataError
from sepcluster.datasets import MUSDB_SOURCES as LABELS
from sepcluster.datasets.library import list_library, validate_library
from sepcluster.stems import render_song, synthesize_library

SR = 22050  # the musicality checks use a lower rate to stay fast


def _files(root) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "lib"
    info = synthesize_library(str(out), songs=3, seconds=2.0, seed=5, sample_rate=SR, channels=2)
    return out, info


def test_layout_and_shared_names(library):
    out, info = library
    assert sorted(os.listdir(out)) == ["background", "foreground", "library.json"]
    assert os.listdir(out / "background") == []
    listing = list_library(str(out))
    assert sorted(listing) == sorted(LABELS)
    names = ["song000.wav", "song001.wav", "song002.wav"]
    for label in LABELS:
        assert listing[label] == names  # every stem of a song shares its file name
    assert validate_library(str(out), LABELS) == listing
    meta = json.loads((out / "library.json").read_text())
    assert meta == info
    assert meta["generator"] == "sepcluster.stems.synth" and meta["version"]
    assert (meta["seed"], meta["songs"], meta["seconds"], meta["sample_rate"], meta["channels"]) == (5, 3, 2.0, SR, 2)
    assert meta["labels"] == list(LABELS)
    assert [t["name"] for t in meta["tracks"]] == names


def test_files_are_stereo_pcm_without_clipping(library):
    out, _ = library
    for label in LABELS:
        for name in ("song000.wav", "song002.wav"):
            audio, rate = sf.read(out / "foreground" / label / name, dtype="float32", always_2d=True)
            info = sf.info(out / "foreground" / label / name)
            assert rate == SR and info.subtype == "PCM_16"
            assert audio.shape == (2 * SR, 2)
            assert np.all(np.isfinite(audio))
            peak = np.max(np.abs(audio))
            assert 0.29 <= peak <= 0.91, (label, name, peak)
            assert np.sqrt(np.mean(audio ** 2)) > 0.01  # not near-silent


def test_same_seed_gives_identical_bytes(library, tmp_path):
    out, _ = library
    again = tmp_path / "again"
    synthesize_library(str(again), songs=3, seconds=2.0, seed=5, sample_rate=SR, channels=2)
    assert _files(out) == _files(again)


def test_adding_songs_keeps_existing_ones(library, tmp_path):
    out, _ = library
    fewer = tmp_path / "fewer"
    synthesize_library(str(fewer), songs=2, seconds=2.0, seed=5, sample_rate=SR, channels=2)
    a, b = _files(out), _files(fewer)
    for rel, data in b.items():
        if rel != "library.json":
            assert a[rel] == data, rel


def test_rerun_with_fewer_songs_removes_the_extra_ones(tmp_path):
    out = tmp_path / "lib"
    synthesize_library(str(out), songs=3, seconds=0.5, seed=1, sample_rate=8000, channels=1)
    (out / "foreground" / "vocals" / "mine.wav").write_bytes(b"kept: not a synth song")
    synthesize_library(str(out), songs=1, seconds=0.5, seed=1, sample_rate=8000, channels=1)
    listing = list_library(str(out))
    assert listing["drums"] == ["song000.wav"]
    assert listing["vocals"] == ["mine.wav", "song000.wav"]


def test_different_seed_differs(library, tmp_path):
    out, _ = library
    other = tmp_path / "other"
    synthesize_library(str(other), songs=1, seconds=2.0, seed=6, sample_rate=SR, channels=2)
    a, b = _files(out), _files(other)
    for label in LABELS:
        rel = os.path.join("foreground", label, "song000.wav")
        assert a[rel] != b[rel], label
    # songs of one library differ from each other too
    for label in LABELS:
        assert a[os.path.join("foreground", label, "song000.wav")] != a[os.path.join("foreground", label, "song001.wav")]


def test_mono_and_stereo():
    mono, _ = render_song(3, 0, 1.0, SR, channels=1)
    stereo, _ = render_song(3, 0, 1.0, SR, channels=2)
    for label in LABELS:
        assert mono[label].shape == (SR, 1) and mono[label].dtype == np.float32
        assert stereo[label].shape == (SR, 2) and stereo[label].dtype == np.float32
    # panned / detuned instruments make left and right differ
    for label in ("drums", "other"):
        left, right = stereo[label][:, 0], stereo[label][:, 1]
        assert np.max(np.abs(left - right)) > 0.01, label


# ------------------------------------------------------------------------- musicality

def _f0(x: np.ndarray, sr: int, fmin: float = 70.0, fmax: float = 1000.0) -> tuple[float, float]:
    """Autocorrelation pitch estimate and the normalised peak height (harmonicity)."""
    x = x - x.mean()
    ac = signal.fftconvolve(x, x[::-1])[len(x) - 1:]
    ac = ac / (ac[0] + 1e-12)
    lo, hi = int(sr / fmax), int(sr / fmin)
    lag = lo + int(np.argmax(ac[lo:hi]))
    a, b, c = ac[lag - 1], ac[lag], ac[lag + 1]
    return sr / (lag + 0.5 * (a - c) / (a - 2 * b + c + 1e-12)), float(b)


@pytest.fixture(scope="module")
def songs():
    return [render_song(11, i, 6.0, SR, channels=1) for i in range(4)]


def test_vocals_sing_the_notes_in_key_with_rests(songs):
    checked = 0
    for stems, meta in songs:
        v = stems["vocals"][:, 0]
        scale = set(meta["scale_pcs"])
        gate = np.zeros(v.size, bool)
        for nt in meta["vocal_notes"]:
            assert nt["midi"] % 12 in scale
            gate[int(nt["start"] * SR):int((nt["start"] + nt["dur"]) * SR)] = True
            if nt["dur"] < 0.25 or nt["start"] + 0.3 > 6.0:
                continue
            seg = v[int((nt["start"] + 0.05) * SR):int((nt["start"] + min(nt["dur"], 0.5) - 0.05) * SR)]
            f0, harmonicity = _f0(seg, SR)
            expected = 440.0 * 2 ** ((nt["midi"] - 69) / 12)
            assert abs(12 * np.log2(f0 / expected)) < 0.5, (nt, f0)  # energy at the sung pitch
            assert harmonicity > 0.8, (nt, harmonicity)  # voiced, periodic
            checked += 1
        # phrases with rests: the rests are (nearly) silent
        assert (~gate).any()
        rms_rest = np.sqrt(np.mean(v[~gate] ** 2))
        rms_sung = np.sqrt(np.mean(v[gate] ** 2))
        assert rms_rest < 0.05 * rms_sung
    assert checked >= 12


def test_vowels_have_different_formants(songs):
    bright, dark = [], []
    for stems, meta in songs + [render_song(11, i, 6.0, SR, channels=1) for i in (4, 5)]:
        v = stems["vocals"][:, 0]
        for nt in meta["vocal_notes"]:
            seg = v[int((nt["start"] + 0.05) * SR):int((nt["start"] + 0.5 * nt["dur"]) * SR)]
            if seg.size < 2048:
                continue
            f, p = signal.welch(seg, SR, nperseg=1024)
            ratio = 10 * np.log10(p[(f > 1400) & (f < 2600)].sum() / p[(f > 150) & (f < 1300)].sum())
            (bright if nt["vowel"] in "ei" else dark if nt["vowel"] in "ou" else []).append(ratio)
    assert len(bright) >= 3 and len(dark) >= 3
    assert np.mean(bright) - np.mean(dark) > 10.0  # "e"/"i" have a high F2, "o"/"u" do not


def _onset_envelope(x: np.ndarray, sr: int, hop: int = 128) -> np.ndarray:
    _, _, z = signal.stft(x, sr, nperseg=1024, noverlap=1024 - hop)
    mag = np.log1p(100 * np.abs(z))
    return np.maximum(0.0, np.diff(mag, axis=1)).sum(axis=0)


def test_drums_hit_at_the_song_tempo(songs):
    hop = 128
    rate = SR / hop
    for stems, meta in songs:
        env = _onset_envelope(stems["drums"][:, 0], SR, hop)
        base = np.median(env)
        # every kick / backbeat onset is a strong peak of the onset envelope
        for onset in meta["drum_onsets"]:
            k = int(onset * rate)
            assert env[max(0, k - 2):k + 4].max() > 2.0 * base, onset
        # the periodicity of the onsets gives back the tempo (or half / double)
        e = env - env.mean()
        ac = np.correlate(e, e, "full")[e.size - 1:]
        tempos = np.arange(60.0, 200.0, 0.25)
        score = [np.mean([np.interp(k * 60.0 / t * rate, np.arange(ac.size), ac) for k in (1, 2, 3, 4)])
                 for t in tempos]
        best = tempos[int(np.argmax(score))]
        assert any(abs(best / (meta["tempo"] * m) - 1) < 0.02 for m in (0.5, 1.0, 2.0)), (best, meta["tempo"])


def _chroma_in_scale(x: np.ndarray, lo: float, hi: float, scale, nperseg: int) -> float:
    f, _, z = signal.stft(x, SR, nperseg=nperseg)
    p = (np.abs(z) ** 2).sum(axis=1)
    sel = (f > lo) & (f < hi)
    pcs = np.round(12 * np.log2(f[sel] / 440.0) + 69).astype(int) % 12
    chroma = np.bincount(pcs, weights=p[sel], minlength=12)
    return float(chroma[list(scale)].sum() / chroma.sum())


def test_bass_and_chords_are_in_key(songs):
    for stems, meta in songs:
        scale = meta["scale_pcs"]
        # 7 of 12 pitch classes would hold about 58% of the energy by chance
        assert _chroma_in_scale(stems["bass"][:, 0], 30, 400, scale, 8192) > 0.75
        assert _chroma_in_scale(stems["other"][:, 0], 80, 2000, scale, 4096) > 0.8
        assert _chroma_in_scale(stems["vocals"][:, 0], 80, 1000, scale, 4096) > 0.8
        # the bass stem is low: most of its energy sits below 500 Hz
        f, p = signal.welch(stems["bass"][:, 0], SR, nperseg=4096)
        assert p[f < 500].sum() > 0.9 * p.sum()


def test_songs_vary():
    metas = [render_song(2, i, 0.5, 8000, channels=1)[1] for i in range(12)]
    assert len({m["tempo"] for m in metas}) > 8
    assert len({m["key"] for m in metas}) > 4
    assert {m["mode"] for m in metas} == {"major", "minor"}


# ------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, field", [
    ({"songs": 0}, "songs"), ({"songs": 1.5}, "songs"), ({"seconds": 0}, "seconds"),
    ({"seconds": float("nan")}, "seconds"), ({"seed": -1}, "seed"), ({"sample_rate": 100}, "sample_rate"),
    ({"channels": 3}, "channels"), ({"bits": 8}, "bits"),
])
def test_bad_arguments(tmp_path, kwargs, field):
    args = {"songs": 1, "seconds": 1.0, "seed": 0, "sample_rate": 8000, "channels": 1, **kwargs}
    with pytest.raises(ConfigError) as err:
        synthesize_library(str(tmp_path / "lib"), **args)
    assert err.value.field == field
    assert not (tmp_path / "lib").exists()


def test_validate_library_errors(library, tmp_path):
    out, _ = library
    with pytest.raises(ConfigError) as err:
        validate_library(str(out), ["vocals", "piano"])
    assert "piano" in str(err.value) and str(out / "foreground" / "piano") in str(err.value)
    empty = tmp_path / "empty"
    (empty / "foreground" / "vocals").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        validate_library(str(empty), ["vocals"])
    assert "vocals" in str(err.value) and str(empty / "foreground" / "vocals") in str(err.value)
    with pytest.raises(DataError, match="does not exist"):
        list_library(str(tmp_path / "missing"))
    (tmp_path / "nofg").mkdir()
    with pytest.raises(DataError, match="foreground"):
        list_library(str(tmp_path / "nofg"))


def test_stereo_channels_are_not_short_filtered_copies():
    """Each stereo stem's right channel is not a 256-tap filtered copy of its left one (a room,
    not just panning), so BSS Eval's image model is well-posed on synthetic references."""
    from sepcluster.stems.synth import render_song

    stems, _ = render_song(seed=3, index=0, seconds=1.0, sample_rate=8000, channels=2)
    taps = 256
    for label, audio in stems.items():
        left, right = audio[:, 0].astype(np.float64), audio[:, 1].astype(np.float64)
        n = left.size
        delayed = np.stack([np.concatenate([np.zeros(k), left[: n - k]]) for k in range(taps)], axis=1)
        fit, *_ = np.linalg.lstsq(delayed, right, rcond=None)
        residual = np.sum((right - delayed @ fit) ** 2) / np.sum(right ** 2)
        assert residual > 1e-3, (label, residual)
