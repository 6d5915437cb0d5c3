"""MoisesDB layout: data.json parsing, label maps, summing stems of several files, missing files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sepcluster.datasets import moisesdb
from sepcluster.errors import ConfigError, DataError

from .moises import PROVIDER, RATE, TRACK_A, TRACK_B, TRACK_C, expected_targets, make_moisesdb, stereo


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    root = tmp_path_factory.mktemp("moisesdb")
    return root, make_moisesdb(root)


def test_listing_reads_data_json(db):
    root, written = db
    assert moisesdb.is_moisesdb_root(str(root))
    assert moisesdb.is_moisesdb_root(str(root / PROVIDER))  # one provider's folder is a root too
    tracks = moisesdb.list_moisesdb(str(root))
    assert [t.name for t in tracks] == [TRACK_A, TRACK_B, TRACK_C]
    a = tracks[0]
    assert a.provider == PROVIDER and a.song == "Song A" and a.artist == "Test Artist" and a.genre == "rock"
    assert a.stems() == ["vocals", "drums", "bass", "guitar", "piano"]
    assert [(f.stem, f.track_type) for f in a.files][:2] == [("vocals", "lead_female_singer"),
                                                            ("vocals", "background_vocals")]
    meta = json.loads((root / PROVIDER / TRACK_A / "data.json").read_text())
    first = meta["stems"][0]["tracks"][0]
    assert a.files[0].uri.endswith(f"{TRACK_A}/vocals/{first['id']}.wav")
    assert [t.name for t in moisesdb.list_moisesdb(str(root / PROVIDER))] == [TRACK_A, TRACK_B, TRACK_C]
    assert not moisesdb.is_moisesdb_root(str(root / PROVIDER / TRACK_A / "vocals"))


def test_default_map_sums_into_musdb_targets(db):
    root, written = db
    for track in moisesdb.list_moisesdb(str(root)):
        got, rate = moisesdb.read_track_targets(track)
        assert rate == RATE and list(got) == ["vocals", "drums", "bass", "other"]
        want = expected_targets(written[track.name])
        for t in got:
            assert got[t].dtype == np.float32 and got[t].shape == want[t].shape
            np.testing.assert_allclose(got[t], want[t], atol=1e-6)
    # track A: vocals = stereo lead + mono backing repeated; other = guitar + piano
    a = written[TRACK_A]
    got, _ = moisesdb.read_track_targets(moisesdb.list_moisesdb(str(root))[0])
    np.testing.assert_allclose(got["vocals"], a["vocals"]["lead_female_singer"]
                               + stereo(a["vocals"]["background_vocals"]), atol=1e-6)
    np.testing.assert_allclose(got["other"], a["guitar"]["clean_electric_guitar"] + a["piano"]["grand_piano"],
                               atol=1e-6)


def test_yaml_label_map(db, tmp_path):
    root, written = db
    spec = tmp_path / "map.yaml"
    spec.write_text("lead: vocals/lead_female_singer\nbacking: [vocals]\nkeys: [piano, other keys]\n"
                    "rhythm: [drums, bass]\n")
    label_map = moisesdb.load_label_map(str(spec))
    assert label_map["keys"] == ("piano", "other_keys")
    a, b = moisesdb.list_moisesdb(str(root))[:2]
    got, _ = moisesdb.read_track_targets(a, str(spec))
    wa = written[TRACK_A]
    np.testing.assert_allclose(got["lead"], wa["vocals"]["lead_female_singer"], atol=1e-6)  # the specific entry wins
    np.testing.assert_allclose(got["backing"], stereo(wa["vocals"]["background_vocals"]), atol=1e-6)
    np.testing.assert_allclose(got["keys"], wa["piano"]["grand_piano"], atol=1e-6)  # guitar: no target takes it
    np.testing.assert_allclose(got["rhythm"], sum(stereo(x) for s in ("drums", "bass") for x in wa[s].values()),
                               atol=1e-6)
    got_b, _ = moisesdb.read_track_targets(b, label_map)
    assert np.all(got_b["lead"] == 0) and got_b["lead"].shape == got_b["backing"].shape  # B has no lead female
    np.testing.assert_allclose(got_b["keys"], written[TRACK_B]["other_keys"]["synth_pad"], atol=1e-6)


def test_bad_label_maps():
    with pytest.raises(ConfigError, match="given to both 'a' and 'b'"):
        moisesdb.check_label_map({"a": ["vocals"], "b": ["Vocals"]})
    with pytest.raises(ConfigError, match="'\\*' is given to both"):
        moisesdb.check_label_map({"a": "*", "b": ["*"]})
    with pytest.raises(ConfigError, match="names no stems"):
        moisesdb.check_label_map({"a": []})
    with pytest.raises(ConfigError) as err:
        moisesdb.check_label_map(["vocals"])
    assert err.value.field == "label_map"


def test_missing_source_file_names_it(tmp_path):
    written = make_moisesdb(tmp_path, seconds=0.5, tracks={TRACK_A: {"vocals": [("lead_male_singer", 2)],
                                                                     "bass": [("bass_guitar", 2)]}})
    track = moisesdb.list_moisesdb(str(tmp_path))[0]
    gone = [f for f in track.files if f.stem == "bass"][0]
    (tmp_path / PROVIDER / TRACK_A / "bass" / gone.uri.rsplit("/", 1)[1]).unlink()
    with pytest.raises(DataError, match=rf"track '{TRACK_A}': the bass source file .*{gone.uri.rsplit('/', 1)[1]} "
                                        "is missing"):
        moisesdb.read_track_targets(track)
    assert written[TRACK_A]["vocals"]["lead_male_singer"].shape == (4000, 2)


def test_bad_data_json(tmp_path):
    folder = tmp_path / PROVIDER / TRACK_A
    folder.mkdir(parents=True)
    (folder / "data.json").write_text("{not json")
    with pytest.raises(DataError, match="data.json: not valid JSON"):
        moisesdb.list_moisesdb(str(tmp_path))
    (folder / "data.json").write_text(json.dumps({"song": "x"}))
    with pytest.raises(DataError, match="no 'stems' list"):
        moisesdb.list_moisesdb(str(tmp_path))
    (folder / "data.json").write_text(json.dumps({"stems": [{"stemName": "vocals", "tracks": [{"id": "x"}]}]}))
    with pytest.raises(DataError, match="stem 'vocals' has a track without id or extension"):
        moisesdb.list_moisesdb(str(tmp_path))
    with pytest.raises(DataError, match="no MoisesDB tracks"):
        moisesdb.list_moisesdb(str(tmp_path / PROVIDER / TRACK_A))


def test_sources_of_other_rates_and_lengths_are_aligned():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((800, 2)).astype(np.float32) * 0.1
    b = rng.standard_normal((400, 1)).astype(np.float32) * 0.1
    c = rng.standard_normal((1600, 2)).astype(np.float32) * 0.1  # 16 kHz: resampled to 8 kHz, 800 samples
    out = moisesdb.sum_sources([(a, 8000), (b, 8000), (c, 16000)], channels=2, rate=8000)
    assert out.shape == (800, 2) and out.dtype == np.float32
    from sepcluster.audio import resample

    want = a.copy()
    want[:400] += np.repeat(b, 2, axis=1)
    want += resample(c, 16000, 8000)
    np.testing.assert_allclose(out, want, atol=1e-6)
    with pytest.raises(DataError, match="x: a source file has 3 channels"):
        moisesdb.sum_sources([(np.zeros((10, 3), np.float32), 8000)], channels=2, rate=8000, what="x")
