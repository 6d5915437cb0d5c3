"""Listing inputs and safe output names."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sepcluster import storage
from sepcluster.errors import AudioError, DataError
from sepcluster.separate.inputs import TrackInput, assign_names, list_inputs, raw_track_name, safe_name

from .conftest import synth, write


@pytest.mark.parametrize("raw, expected", [
    ("My Song", "My Song"),
    ("Björk – Jóga (live) 日本", "Björk – Jóga (live) 日本"),
    ("../../etc/passwd", "_.._etc_passwd"),
    ("..", "track"),
    (".hidden", "hidden"),
    ("a/b\\c", "a_b_c"),
    ("tab\there\nnewline", "tab_here_newline"),
    ("  spaced out.  ", "spaced out"),
    ("", "track"),
    ("catalog.parquet", "catalog.parquet_"),
])
def test_safe_name(raw, expected):
    assert safe_name(raw) == expected


def test_safe_name_is_one_component_and_bounded():
    name = safe_name("é" * 500)
    assert len(name.encode("utf-8")) <= 160 and "/" not in name
    for raw in ("../x", "x/../../y", "/abs/path", "\\\\server\\share", "..\\..\\win"):
        n = safe_name(raw)
        assert "/" not in n and "\\" not in n and not n.startswith(".")


def test_assign_names_disambiguates_collisions_stably():
    tracks = [TrackInput("/a/Song.wav", "Song"), TrackInput("/b/song.flac", "song"),
              TrackInput("/c/Song.mp3", "Song"), TrackInput("/d/x.wav", "../Song")]
    names = assign_names(tracks)
    assert names["/a/Song.wav"] == "Song"
    values = list(names.values())
    assert len({v.casefold() for v in values}) == 4
    assert names["/b/song.flac"].startswith("song [")
    # names already in the catalog are kept, new tracks avoid them
    again = assign_names(list(reversed(tracks)) + [TrackInput("/e/Song.ogg", "Song")], taken=names)
    for key, name in names.items():
        assert again[key] == name
    assert again["/e/Song.ogg"].casefold() not in {v.casefold() for v in values}


def test_list_folder_musdb_layouts_and_plain_files(tmp_path):
    x = synth(0.5, 8000)
    for stem in ("mixture", "vocals", "drums", "bass", "other"):
        write(tmp_path / "lib" / "Track A" / f"{stem}.wav", x, 8000)
    write(tmp_path / "lib" / "deep" / "er" / "tune.flac", x, 8000)
    write(tmp_path / "lib" / "vocals.wav", x, 8000)  # no mixture beside it: a plain track
    (tmp_path / "lib" / "cover.jpg").write_bytes(b"jpg")
    tracks = list_inputs(str(tmp_path / "lib"))
    by_name = {t.name: t for t in tracks}
    assert sorted(by_name) == ["Track A", "tune", "vocals"]
    assert set(by_name["Track A"].references) == {"vocals", "drums", "bass", "other"}
    assert by_name["Track A"].source_uri.endswith("mixture.wav")
    assert by_name["tune"].references == {}
    (single,) = list_inputs(str(tmp_path / "lib" / "Track A" / "mixture.wav"))
    assert single.name == "Track A" and len(single.references) == 4
    with pytest.raises(DataError, match="no audio files"):
        (tmp_path / "empty").mkdir()
        list_inputs(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="not found"):
        list_inputs(str(tmp_path / "missing"))


def test_list_musdb_root_with_subset(musdb_sample):
    tracks = list_inputs(str(musdb_sample), subsets=["train"])
    assert [t.name for t in tracks] == ["Music Delta - 80s Rock"]
    assert tracks[0].subset == "train" and len(tracks[0].references) == 4
    with pytest.raises(DataError, match="'test' subset"):
        list_inputs(str(musdb_sample), subsets=["test"])
    (stem,) = list_inputs(str(musdb_sample / "stems"))
    assert stem.name == "Music Delta - 80s Rock" and stem.references["vocals"] == (stem.source_uri, 4)
    assert raw_track_name(stem.source_uri) == "Music Delta - 80s Rock"


def test_manifests_csv_and_parquet(tmp_path):
    a = write(tmp_path / "m" / "a.wav", synth(0.5, 8000), 8000)
    (tmp_path / "m" / "sub").mkdir()
    write(tmp_path / "m" / "sub" / "b.wav", synth(0.5, 8000), 8000)
    (tmp_path / "m" / "list.csv").write_text(f"uri,name\n{a},First\nsub/b.wav,\nnotes.txt,Bad\n")
    tracks = list_inputs(str(tmp_path / "m" / "list.csv"))
    assert [t.name for t in tracks] == ["First", "b", "Bad"]
    assert tracks[1].source_uri == str(tmp_path / "m" / "sub" / "b.wav")
    assert tracks[2].error and "unsupported audio format" in tracks[2].error
    storage.write_parquet(pa.table({"path": [a, "sub/b.wav"], "stream": [0, 0]}), str(tmp_path / "m" / "l.parquet"))
    assert [t.name for t in list_inputs(str(tmp_path / "m" / "l.parquet"))] == ["a", "b"]
    (tmp_path / "m" / "bad.csv").write_text("file_name\nx.wav\n")
    with pytest.raises(DataError, match="column named one of"):
        list_inputs(str(tmp_path / "m" / "bad.csv"))
