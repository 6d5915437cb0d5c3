"""The Parquet dataset: schema, sample formats, atomic shards, reading back by seed."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from sepcluster.errors import ConfigError, DataError
from sepcluster.datasets import mixtures as layout
from sepcluster.datasets.library import index_library
from sepcluster.generate import dataset as ds
from sepcluster.generate import dataset_recipe, iter_mixtures, load_mixture, read_manifest
from sepcluster.generate.mixing import make_mixture
from sepcluster.generate.recipe import load_recipe
from tests.generate.conftest import small_recipe


def _write(out, recipe, library, first, last, fmt):
    with ds.ShardWriter(str(out / layout.shard_name(first, last)), recipe, fmt, first, last) as writer:
        for seed in range(first, last + 1):
            writer.write(make_mixture(recipe, library, seed))


@pytest.mark.parametrize("fmt", ["float32", "flac16", "flac24"])
def test_shards_round_trip(small_library, tmp_path, fmt):
    recipe = load_recipe(small_recipe(channels=2))
    library = index_library(str(small_library), recipe.labels)
    out = tmp_path / "ds"
    info = ds.new_dataset_info(recipe, 5, 10, 3, fmt, str(small_library))
    ds.write_dataset_info(str(out), info)
    _write(out, recipe, library, 10, 12, fmt)
    _write(out, recipe, library, 13, 14, fmt)
    manifest = read_manifest(str(out))
    assert [(s["name"], s["num_mixtures"]) for s in manifest] == [
        ("shard-0000000010-0000000012.parquet", 3), ("shard-0000000013-0000000014.parquet", 2)]
    assert dataset_recipe(str(out)) == recipe and dataset_recipe(str(out)).hash == recipe.hash
    # schema and file metadata
    pf = pq.ParquetFile(manifest[0]["uri"])
    meta = {k.decode(): v.decode() for k, v in pf.schema_arrow.metadata.items()}
    assert meta["sepcluster.recipe_hash"] == recipe.hash
    assert json.loads(meta["sepcluster.recipe"]) == recipe.to_dict()
    assert meta["sepcluster.audio_format"] == fmt
    assert json.loads(meta["sepcluster.labels"]) == ["vocals", "drums", "bass", "other"]
    assert pf.metadata.num_row_groups == 3
    assert str(pf.schema_arrow.field("seed").type) == "int64"
    assert str(pf.schema_arrow.field("coherent").type) == "bool"
    assert "bass_time_stretch" in pf.schema_arrow.names and "stem_other" in pf.schema_arrow.names
    # every seed reads back as stored
    seeds = []
    for m in iter_mixtures(str(out)):
        seeds.append(m.seed)
        fresh = make_mixture(recipe, library, m.seed)
        expected = layout.roundtrip(fresh.mixture, recipe.sample_rate, fmt)
        assert m.mixture.dtype == np.float32 and m.mixture.shape == (16000, 2)
        assert np.array_equal(m.mixture, expected)
        if fmt == "float32":
            assert np.array_equal(m.mixture, fresh.mixture)
            assert all(np.array_equal(m.stems[k], fresh.stems[k]) for k in recipe.labels)
        else:
            step = 2.0 ** (-15 if fmt == "flac16" else -23)
            assert np.max(np.abs(m.mixture - fresh.mixture)) <= step
        assert m.jams == fresh.jams and m.coherent == fresh.coherent
        assert m.events == fresh.events
    assert seeds == [10, 11, 12, 13, 14]
    one = load_mixture(str(out), 13)
    assert one.seed == 13 and one.sample_rate == 16000 and list(one.stems) == list(recipe.labels)
    with pytest.raises(DataError, match="outside the dataset"):
        load_mixture(str(out), 99)


def test_raw_float32_layout_is_documented(small_library, tmp_path):
    """float32 cells are little-endian (samples, channels) row-major bytes."""
    recipe = load_recipe(small_recipe(channels=2))
    library = index_library(str(small_library), recipe.labels)
    out = tmp_path / "ds"
    ds.write_dataset_info(str(out), ds.new_dataset_info(recipe, 1, 0, 1, "float32", str(small_library)))
    _write(out, recipe, library, 0, 0, "float32")
    row = pq.read_table(str(out / layout.shard_name(0, 0))).to_pylist()[0]
    raw = np.frombuffer(row["mixture"], "<f4").reshape(row["num_samples"], row["channels"])
    assert np.array_equal(raw, make_mixture(recipe, library, 0).mixture)


def test_failed_shard_leaves_nothing(small_library, tmp_path):
    recipe = load_recipe(small_recipe())
    library = index_library(str(small_library), recipe.labels)
    out = tmp_path / "ds"
    ds.write_dataset_info(str(out), ds.new_dataset_info(recipe, 3, 0, 3, "float32", str(small_library)))
    target = out / layout.shard_name(0, 2)
    with pytest.raises(RuntimeError):
        with ds.ShardWriter(str(target), recipe, "float32", 0, 2) as writer:
            writer.write(make_mixture(recipe, library, 0))
            raise RuntimeError("actor crashed")
    assert not target.exists()
    assert sorted(p.name for p in out.iterdir()) == ["_dataset.json"]
    assert read_manifest(str(out)) == []
    with pytest.raises(DataError, match="not generated yet"):
        load_mixture(str(out), 1)


def test_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="_dataset.json"):
        read_manifest(str(tmp_path))
    with pytest.raises(ConfigError) as err:
        layout.check_audio_format("mp3")
    assert err.value.field == "audio_format"
