"""Recipes: parsing, canonical hash, and validation against a stem library (field-named errors)."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from sepcluster.errors import ConfigError
from sepcluster.datasets.library import index_library
from sepcluster.generate.recipe import load_recipe, parse_recipe, validate_recipe
from tests.generate.conftest import small_recipe

TUTORIAL_YAML = """
duration: 5.0
sample_rate: 44100
channels: 1
ref_db: -20
labels: [vocals, drums, bass, other]
coherent_probability: 0.5
fix_clipping: true
quick_pitch_time: false
event:
  source_time: [uniform, 0, 7]
  event_time: [const, 0]
  event_duration: [const, 5.0]
  snr: [uniform, -5, 5]
  pitch_shift: [uniform, -2, 2]     # or null for none
  time_stretch: [uniform, 0.8, 1.2] # or null for none
"""


def test_yaml_recipe_parses_to_scaper_tuples(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(TUTORIAL_YAML)
    recipe = load_recipe(str(path))
    assert recipe.duration == 5.0 and recipe.labels == ("vocals", "drums", "bass", "other")
    assert recipe.event.source_time == ("uniform", 0.0, 7.0)
    assert recipe.event.scaper_parameters("bass") == {
        "label": ("const", "bass"), "source_file": ("choose", []), "source_time": ("uniform", 0.0, 7.0),
        "event_time": ("const", 0.0), "event_duration": ("const", 5.0), "snr": ("uniform", -5.0, 5.0),
        "pitch_shift": ("uniform", -2.0, 2.0), "time_stretch": ("uniform", 0.8, 1.2)}
    assert recipe.to_yaml() == TUTORIAL_YAML  # the original text is kept for the dataset metadata


def test_hash_is_canonical():
    data = yaml.safe_load(TUTORIAL_YAML)
    a = parse_recipe(data)
    assert len(a.hash) == 64
    # key order and defaults written out or left implicit do not matter
    reordered = dict(reversed(list(data.items())))
    assert parse_recipe(reordered).hash == a.hash
    implicit = {k: v for k, v in data.items() if k not in ("sample_rate", "channels", "labels", "ref_db")}
    assert parse_recipe(implicit).hash == a.hash
    assert parse_recipe(a.to_dict()) == a and parse_recipe(a.to_dict()).hash == a.hash
    # any value change does; numbers are kept as written (Scaper copies them into the JAMS)
    c = copy.deepcopy(data)
    c["event"]["snr"] = ["uniform", -6, 5]
    assert parse_recipe(c).hash != a.hash
    d = copy.deepcopy(data)
    d["event"]["pitch_shift"] = None
    assert parse_recipe(d).event.pitch_shift is None and parse_recipe(d).hash != a.hash
    e = copy.deepcopy(data)
    e["event"]["event_time"] = ["const", 0.0]
    assert parse_recipe(e).hash != a.hash
    assert a.to_json() == json.dumps(a.to_dict(), sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize("overrides, field, words", [
    ({"event.snr": ["gauss", 0, 1]}, "event.snr", "unknown distribution"),
    ({"event.snr": ["uniform", 5, -5]}, "event.snr", "min 5 > max -5"),
    ({"event.snr": ["uniform", -5]}, "event.snr", "takes 2 argument"),
    ({"event.snr": ["uniform", -100, 5]}, "event.snr", "outside the allowed range"),
    ({"event.pitch_shift": ["const", 20]}, "event.pitch_shift", "outside the allowed range"),
    ({"event.time_stretch": ["uniform", 0.1, 1.2]}, "event.time_stretch", "outside the allowed range"),
    ({"event.time_stretch": ["normal", 1, 0.1]}, "event.time_stretch", "truncnorm"),
    ({"event.source_time": ["uniform", -1, 3]}, "event.source_time", "outside the allowed range"),
    ({"event.event_duration": ["const", 0]}, "event.event_duration", "outside the allowed range"),
    ({"event.event_time": ["choose", []]}, "event.event_time", "non-empty list"),
    ({"event.snr": ["choose_weighted", [1, 2], [0.5, 0.6]]}, "event.snr", "sum to 1"),
    ({"event.snr": ["const", "loud"]}, "event.snr", "finite number"),
    ({"event.snr": None}, "event.snr", "required"),
    ({"event.reverb": ["const", 1]}, "event.reverb", "unknown field"),
    ({"duration": 0}, "duration", "must be > 0"),
    ({"duration": -2.5}, "duration", "must be > 0"),
    ({"coherent_probability": 1.5}, "coherent_probability", "<= 1"),
    ({"coherent_probability": -0.1}, "coherent_probability", ">= 0"),
    ({"channels": 3}, "channels", "<= 2"),
    ({"sample_rate": 44100.5}, "sample_rate", "integer"),
    ({"fix_clipping": "yes"}, "fix_clipping", "true or false"),
    ({"labels": []}, "labels", "non-empty"),
    ({"labels": ["vocals", "vocals"]}, "labels", "unique"),
    ({"labels": ["mixture"]}, "labels", "reserved"),
    ({"labels": ["../etc"]}, "labels", "folder name"),
    ({"ref_db": 10}, "ref_db", "<= 0"),
    ({"durration": 5}, "durration", "unknown field"),
])
def test_invalid_recipes_name_the_field(overrides, field, words):
    with pytest.raises(ConfigError) as err:
        parse_recipe(small_recipe(**overrides))
    assert err.value.field == field
    assert words in err.value.problem, err.value.problem
    assert str(err.value).startswith(field + ":")


def test_validation_against_the_library(small_library, tmp_path):
    library = index_library(str(small_library))
    assert set(library.files) == {"vocals", "drums", "bass", "other"}
    assert library.files["vocals"] == ("song000.wav", "song001.wav", "song002.wav")
    assert validate_recipe(parse_recipe(small_recipe()), library) == []
    # a label with no folder / no files
    with pytest.raises(ConfigError) as err:
        index_library(str(small_library), ("vocals", "piano"))
    assert err.value.field == "labels" and "piano" in err.value.problem
    empty = tmp_path / "lib"
    (empty / "foreground" / "vocals").mkdir(parents=True)
    with pytest.raises(ConfigError) as err:
        index_library(str(empty), ("vocals",))
    assert err.value.field == "labels" and "no files" in err.value.problem
    # a non-audio file in a label folder would break Scaper's choose []
    (empty / "foreground" / "vocals" / "notes.txt").write_text("hi")
    with pytest.raises(ConfigError) as err:
        index_library(str(empty), ("vocals",))
    assert "notes.txt" in err.value.problem


def test_coherent_needs_every_song_in_every_label(small_library, tmp_path):
    import shutil

    lib = tmp_path / "lib"
    shutil.copytree(small_library, lib)
    (lib / "foreground" / "bass" / "song001.wav").unlink()
    library = index_library(str(lib))
    with pytest.raises(ConfigError) as err:
        validate_recipe(parse_recipe(small_recipe()), library)
    assert err.value.field == "coherent_probability" and "song001.wav" in err.value.problem
    # incoherent only: fine
    assert validate_recipe(parse_recipe(small_recipe(coherent_probability=0)), library) == []
