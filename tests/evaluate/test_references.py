"""Listing references and estimates: MoisesDB roots, one track folder, both musdb estimates layouts."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sepcluster.errors import ConfigError, DataError
from sepcluster.evaluate.references import list_estimates, list_references, read_references


def _wav(path, n=800, channels=2, value=0.1):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.full((n, channels), value), 8000, subtype="FLOAT")


def test_track_folder_tree_and_single_track_folder(tmp_path):
    for track in ("A", "B"):
        for t in ("vocals", "bass"):
            _wav(tmp_path / "refs" / track / f"{t}.wav")
    specs, subset = list_references(str(tmp_path / "refs"))
    assert sorted(specs) == ["A", "B"] and subset == "test"
    one, _ = list_references(str(tmp_path / "refs" / "B"))
    assert list(one) == ["B"] and sorted(one["B"].stems) == ["bass", "vocals"]
    refs, rate = read_references(one["B"])
    assert rate == 8000 and refs["vocals"].shape == (800, 2)
    with pytest.raises(ConfigError) as err:
        list_references(str(tmp_path / "refs"), label_map={"x": ["vocals"]})
    assert err.value.field == "label_map"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no track folders"):
        list_references(str(tmp_path / "empty"))


def test_estimates_layouts(tmp_path):
    for t in ("vocals", "bass"):
        _wav(tmp_path / "flat" / "A" / f"{t}.wav")
        _wav(tmp_path / "musdb" / "train" / "A" / f"{t}.wav")
    flat, _ = list_estimates(str(tmp_path / "flat"))
    assert list(flat) == ["A"] and sorted(flat["A"]) == ["bass", "vocals"]
    sub, _ = list_estimates(str(tmp_path / "musdb"), subset="train")
    assert list(sub) == ["A"] and sub["A"]["vocals"].endswith("musdb/train/A/vocals.wav")
    one, _ = list_estimates(str(tmp_path / "musdb" / "train" / "A"))
    assert list(one) == ["A"] and sorted(one["A"]) == ["bass", "vocals"]
    with pytest.raises(DataError, match="no estimates"):
        list_estimates(str(tmp_path / "musdb"), subset="test")  # the references' subset is not there


def test_moisesdb_references(tmp_path):
    from tests.datasets.moises import TRACK_A, TRACK_B, TRACK_C, expected_targets, make_moisesdb

    written = make_moisesdb(tmp_path, seconds=0.5)
    specs, _ = list_references(str(tmp_path))
    assert sorted(specs) == [TRACK_A, TRACK_B, TRACK_C] and specs[TRACK_A].kind == "moisesdb"
    assert len(specs[TRACK_A].stems["other"]) == 2 and len(specs[TRACK_A].stems["vocals"]) == 2
    refs, rate = read_references(specs[TRACK_B])
    want = expected_targets(written[TRACK_B])
    assert rate == 8000 and sorted(refs) == sorted(want)
    for t in want:
        np.testing.assert_allclose(refs[t], want[t], atol=1e-6)
    two, _ = list_references(str(tmp_path), label_map={"vocals": "vocals", "rest": "*"})
    assert sorted(two[TRACK_C].stems) == ["rest", "vocals"] and len(two[TRACK_C].stems["rest"]) == 3
