"""Preparing stem libraries from MUSDB18 (both layouts, the real sample) and folder trees."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from sepcluster.errors import ConfigError, DataError
from sepcluster.datasets import MUSDB_SOURCES as LABELS
from sepcluster.datasets.library import list_library, validate_library
from sepcluster.stems import prepare_folders, prepare_musdb, safe_name

TRACK = "Music Delta - 80s Rock"


def _read(path):
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return audio, rate


def _check_layout(out, names, labels=LABELS):
    assert os.path.isdir(out / "background") and os.listdir(out / "background") == []
    listing = validate_library(str(out), labels)
    for label in labels:
        assert listing[label] == names


@pytest.fixture(scope="module")
def musdb_hq(musdb_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("hq") / "lib"
    info = prepare_musdb(str(musdb_sample), str(out), subset="train", is_wav=True)
    return out, info


def test_musdb_hq_layout(musdb_sample, musdb_hq):
    out, info = musdb_hq
    _check_layout(out, [f"{TRACK}.wav"])
    for label in LABELS:
        got, rate = _read(out / "foreground" / label / f"{TRACK}.wav")
        ref, ref_rate = _read(musdb_sample / "train" / TRACK / f"{label}.wav")
        assert rate == ref_rate == 44100
        assert got.shape == ref.shape and got.shape[1] == 2
        np.testing.assert_array_equal(got, ref)  # 16-bit in, 16-bit out: exact
    meta = json.loads((out / "library.json").read_text())
    assert meta == info
    assert meta["source"] == "musdb" and meta["is_wav"] is True and meta["songs"] == 1
    assert meta["tracks"][0]["source"] == TRACK


def test_musdb_stem_mp4(musdb_sample, musdb_hq, tmp_path):
    # musdb reads ROOT/<subset>/*.stem.mp4: point a temporary root's train/ at the sample's stems/
    root = tmp_path / "musdb18"
    root.mkdir()
    os.symlink(musdb_sample / "stems", root / "train")
    out = tmp_path / "lib"
    info = prepare_musdb(str(root), str(out), subset="train")
    _check_layout(out, [f"{TRACK}.wav"])
    assert info["is_wav"] is False
    hq, _ = musdb_hq
    for label in LABELS:
        got, rate = _read(out / "foreground" / label / f"{TRACK}.wav")
        ref, _ = _read(hq / "foreground" / label / f"{TRACK}.wav")
        assert rate == 44100 and got.shape == ref.shape
        # the same AAC streams, decoded by ffmpeg: at most a couple of LSBs apart
        assert np.max(np.abs(got - ref)) <= 3 / 32768, label
        assert np.sqrt(np.mean(got ** 2)) > 1e-3, label


def test_musdb_errors(musdb_sample, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare_musdb(str(tmp_path / "nowhere"), str(tmp_path / "out"))
    # stem files not under train/: the message says where they belong
    flat = tmp_path / "flat"
    flat.mkdir()
    os.symlink(musdb_sample / "stems" / f"{TRACK}.stem.mp4", flat / f"{TRACK}.stem.mp4")
    with pytest.raises(DataError, match=r"no 'train' folder.*belong in"):
        prepare_musdb(str(flat), str(tmp_path / "out"))
    # a train folder with no tracks in the requested layout
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no MUSDB18 tracks"):
        prepare_musdb(str(empty), str(tmp_path / "out"))
    with pytest.raises(DataError, match="no MUSDB18 tracks"):
        prepare_musdb(str(musdb_sample), str(tmp_path / "out"), is_wav=False)  # train/ holds folders, not mp4
    with pytest.raises(ConfigError) as err:
        prepare_musdb(str(musdb_sample), str(tmp_path / "out"), subset="valid")
    assert err.value.field == "subset"
    with pytest.raises(ConfigError) as err:
        prepare_musdb(str(musdb_sample), str(tmp_path / "out"), subset="test", split="valid")
    assert err.value.field == "split"
    assert not (tmp_path / "out").exists()


def test_musdb_split(musdb_sample, tmp_path):
    # "Music Delta - 80s Rock" is not one of musdb's validation tracks
    info = prepare_musdb(str(musdb_sample), str(tmp_path / "train"), is_wav=True, split="train")
    assert info["songs"] == 1
    with pytest.raises(DataError, match="no MUSDB18 tracks"):
        prepare_musdb(str(musdb_sample), str(tmp_path / "valid"), is_wav=True, split="valid")


def _write(path, audio, rate=8000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate, subtype="PCM_16")


def test_folders(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "songs"
    a = {lb: (rng.uniform(-0.5, 0.5, (800, 2)) * 32768).round() / 32768 for lb in ("voice", "keys", "mixture")}
    for lb, audio in a.items():
        _write(root / "Song A" / f"{lb}.wav", audio)
    _write(root / "Song B" / "voice.wav", rng.uniform(-0.5, 0.5, (400, 1)))
    _write(root / "Song B" / "keys.wav", rng.uniform(-0.5, 0.5, (600, 1)))  # longer: voice gets padded
    (root / "Song B" / "notes.txt").write_text("not audio")
    (root / "empty song").mkdir()
    out = tmp_path / "lib"
    info = prepare_folders(str(root), str(out))
    assert info["labels"] == ["keys", "voice"] and info["songs"] == 2
    _check_layout(out, ["Song A.wav", "Song B.wav"], labels=("keys", "voice"))
    assert "mixture" not in list_library(str(out))
    got, rate = _read(out / "foreground" / "voice" / "Song A.wav")
    assert rate == 8000
    np.testing.assert_array_equal(got, a["voice"].astype(np.float32))
    voice_b, _ = _read(out / "foreground" / "voice" / "Song B.wav")
    keys_b, _ = _read(out / "foreground" / "keys" / "Song B.wav")
    assert voice_b.shape == keys_b.shape == (600, 1)
    assert np.all(voice_b[400:] == 0)


def test_folders_from_musdb_tree(musdb_sample, musdb_hq, tmp_path):
    out = tmp_path / "lib"
    prepare_folders(str(musdb_sample / "train"), str(out))
    _check_layout(out, [f"{TRACK}.wav"])
    hq, _ = musdb_hq
    for label in LABELS:
        assert (out / "foreground" / label / f"{TRACK}.wav").read_bytes() == \
            (hq / "foreground" / label / f"{TRACK}.wav").read_bytes()


def test_folders_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare_folders(str(tmp_path / "nowhere"), str(tmp_path / "out"))
    root = tmp_path / "root"
    (root / "song").mkdir(parents=True)
    (root / "song" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no song folders with stems"):
        prepare_folders(str(root), str(tmp_path / "out"))
    _write(root / "song" / "mixture.wav", np.zeros((10, 1)))
    with pytest.raises(DataError, match="no song folders with stems"):
        prepare_folders(str(root), str(tmp_path / "out"))
    _write(root / "song" / "a.wav", np.zeros((10, 1)), rate=8000)
    _write(root / "song" / "b.wav", np.zeros((10, 1)), rate=16000)
    with pytest.raises(DataError, match="different sample rates"):
        prepare_folders(str(root), str(tmp_path / "out"))
    with pytest.raises(DataError, match=r"no stem for label\(s\) c"):
        prepare_folders(str(root), str(tmp_path / "out"), labels=["a", "c"])


def test_safe_name():
    assert safe_name("Music Delta - 80s Rock") == "Music Delta - 80s Rock"
    assert safe_name("AC/DC: Back\\in") == "AC_DC_ Back_in"
    assert safe_name("../..") == "_.."
    assert safe_name("...") == "track"
    assert "/" not in safe_name("a/b") and "\n" not in safe_name("a\nb")


# ---- MoisesDB ------------------------------------------------------------------------------------

def test_moisesdb_library_sums_stems_and_skips_a_track_with_a_missing_file(tmp_path):
    from sepcluster.stems.prepare import prepare_moisesdb
    from tests.datasets.moises import PROVIDER, TRACK_A, TRACK_B, TRACK_C, expected_targets, make_moisesdb

    written = make_moisesdb(tmp_path / "db", seconds=1.0)
    gone = next((tmp_path / "db" / PROVIDER / TRACK_C / "bass").glob("*.wav"))
    gone.unlink()
    out = tmp_path / "lib"
    info = prepare_moisesdb(str(tmp_path / "db"), str(out))
    assert info["source"] == "moisesdb" and info["labels"] == list(LABELS) and info["songs"] == 2
    assert info["skipped"][0]["track"] == TRACK_C and gone.name in info["skipped"][0]["error"]
    _check_layout(out, ["Test Artist - Song A.wav", "Test Artist - Song B.wav"])
    assert [t["source"] for t in info["tracks"]] == [TRACK_A, TRACK_B]
    for song, track in (("Song A", TRACK_A), ("Song B", TRACK_B)):
        want = expected_targets(written[track])
        for label in LABELS:
            got, rate = _read(out / "foreground" / label / f"Test Artist - {song}.wav")
            assert rate == 8000 and got.shape == want[label].shape
            # sums of 16-bit sources written back as 16-bit: within one LSB (plus rounding)
            np.testing.assert_allclose(got, want[label], atol=1.5 / 32768)
    assert json.loads((out / "library.json").read_text())["skipped"] == info["skipped"]


def test_moisesdb_label_map_labels_and_silent_labels(tmp_path):
    from sepcluster.stems.prepare import prepare_moisesdb
    from tests.datasets.moises import TRACK_A, TRACK_B, make_moisesdb

    written = make_moisesdb(tmp_path / "db", seconds=0.5, tracks={
        TRACK_A: {"vocals": [("lead_female_singer", 2)], "piano": [("grand_piano", 2)]},
        TRACK_B: {"vocals": [("lead_male_singer", 1)], "drums": [("kick_drum", 2)]}})
    spec = tmp_path / "map.yaml"
    spec.write_text("voice: [vocals]\nkeys: [piano]\nkit: [drums]\n")
    info = prepare_moisesdb(str(tmp_path / "db"), str(tmp_path / "lib"), label_map=str(spec), labels=["voice", "keys"])
    assert info["labels"] == ["voice", "keys"] and sorted(os.listdir(tmp_path / "lib" / "foreground")) == [
        "keys", "voice"]
    assert info["tracks"][1]["silent"] == ["keys"]
    keys_b, _ = _read(tmp_path / "lib" / "foreground" / "keys" / "Test Artist - Song B.wav")
    voice_b, _ = _read(tmp_path / "lib" / "foreground" / "voice" / "Test Artist - Song B.wav")
    assert keys_b.shape == voice_b.shape == (4000, 2) and np.all(keys_b == 0)
    np.testing.assert_allclose(voice_b, np.repeat(written[TRACK_B]["vocals"]["lead_male_singer"], 2, axis=1),
                               atol=1 / 32768)
    with pytest.raises(ConfigError, match="not targets of the label map"):
        prepare_moisesdb(str(tmp_path / "db"), str(tmp_path / "x"), labels=["voice"])
    with pytest.raises(DataError, match="no MoisesDB tracks"):
        prepare_moisesdb(str(tmp_path / "lib"), str(tmp_path / "y"))


def test_moisesdb_cli(tmp_path, capsys):
    from sepcluster.cli import main
    from tests.datasets.moises import make_moisesdb

    make_moisesdb(tmp_path / "db", seconds=0.5)
    assert main(["stems", "prepare", "--moisesdb", str(tmp_path / "db"), "--out", str(tmp_path / "lib"),
                 "--labels", "vocals,other"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["songs"] == 3
    assert sorted(os.listdir(tmp_path / "lib" / "foreground")) == ["other", "vocals"]
    assert main(["stems", "prepare", "--folders", str(tmp_path / "db"), "--label-map", "m.yaml",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--label-map" in capsys.readouterr().err
    assert main(["stems", "prepare", "--moisesdb", "A", "--musdb", "B", "--out", str(tmp_path / "x")]) == 2
