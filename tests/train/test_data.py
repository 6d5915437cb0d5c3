"""The data sources' sampling and seeding (no Ray); the config's own checks are in test_config.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from sepcluster.errors import ConfigError, DataError
from sepcluster.train.config import TrainConfig
from sepcluster.train.data import mixtures_per_batch, onthefly_seeds, onthefly_valid_seeds, resolve_data, split_songs
from sepcluster.train.sources import StemLibrarySource, open_source
from tests.train.conftest import RATE, TINY


# ----------------------------------------------------------------------------- stem library source

def _config(**kw) -> TrainConfig:
    return TrainConfig.from_dict(dict(TINY, **kw))


def test_validation_split_is_fixed_and_disjoint(stem_library):
    songs = [f"song{i:03d}" for i in range(10)]
    cfg = _config(valid_fraction=0.2)
    train, valid = split_songs(songs, cfg)
    assert (train, valid) == split_songs(songs, cfg)
    assert len(valid) == 2 and not set(train) & set(valid) and sorted(train + valid) == songs
    t2, v2 = split_songs(songs, _config(valid_songs=["song004"]))
    assert v2 == ["song004"] and "song004" not in t2
    with pytest.raises(ConfigError, match="valid_songs"):
        split_songs(songs, _config(valid_songs=["nope"]))
    with pytest.raises(ConfigError):
        split_songs(["song000"], _config(valid_songs=["song000"]))


def test_stem_batches_are_reproducible_and_differ_across_ranks(stem_library):
    cfg = _config()
    spec = resolve_data(str(stem_library), cfg, ["vocals"])
    assert spec.kind == "stems" and spec.sample_rate == RATE and spec.channels == 2
    r0 = open_source(spec, cfg, "vocals", 0, 2, RATE, 2)
    r1 = open_source(spec, cfg, "vocals", 1, 2, RATE, 2)
    assert isinstance(r0, StemLibrarySource)
    m0, t0 = r0.batch(3, 1)
    assert m0.shape == (cfg.batch_size, 2, RATE) and t0.shape == m0.shape and m0.dtype == np.float32
    again = open_source(spec, cfg, "vocals", 0, 2, RATE, 2).batch(3, 1)
    np.testing.assert_array_equal(m0, again[0])
    assert not np.allclose(m0, r1.batch(3, 1)[0])  # another rank draws another stream
    assert not np.allclose(m0, r0.batch(4, 1)[0])  # another epoch too
    # the target is one of the summed (augmented) sources: the rest of the mix is the other labels
    assert np.abs(m0 - t0).sum() > 0


def test_gains_and_channel_swap_stay_in_range(stem_library):
    """With one label in the library's place the mixture is the target itself: check the gain bounds."""
    cfg = _config(gain_min=0.5, gain_max=0.5, channel_swap=False, batch_size=2)
    spec = resolve_data(str(stem_library), cfg, ["vocals"])
    spec.library = {"vocals": spec.library["vocals"]}
    src = open_source(spec, cfg, "vocals", 0, 1, RATE, 2)
    mix, tgt = src.batch(0, 0)
    np.testing.assert_allclose(mix, tgt)
    rng = np.random.default_rng([cfg.seed, 0, 0, 0])
    song = src.train_by_label["vocals"][int(rng.integers(len(src.train_by_label["vocals"])))]
    path = src.files["vocals"][song]
    start = src._random_start(rng, path)
    raw = src.reader.window(path, start, src.seq_len)
    np.testing.assert_allclose(mix[0].T, 0.5 * raw, rtol=1e-6)


def test_loader_workers_make_the_same_batches(stem_library):
    """Loader worker w makes batches w, w+W, ...: together exactly the single-process stream."""
    spec = resolve_data(str(stem_library), _config(), ["vocals"])
    plain = list(open_source(spec, _config(samples_per_epoch=24), "vocals", 0, 1, RATE, 2).epoch_batches(2))
    forked = list(open_source(spec, _config(samples_per_epoch=24, loader_workers=2), "vocals", 0, 1, RATE, 2)
                  .epoch_batches(2))
    assert len(plain) == len(forked) == 6
    for (a, b), (c, d) in zip(plain, forked):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_valid_items_are_full_songs(stem_library):
    cfg = _config(valid_songs=["song001", "song003"])
    spec = resolve_data(str(stem_library), cfg, ["vocals"])
    items = open_source(spec, cfg, "vocals", 0, 1, RATE, 2).valid_items()
    assert len(items) == 2
    mix, tgt = items[0]
    assert mix.shape == (1, 2, 4 * RATE) and tgt.shape == mix.shape
    half = open_source(spec, cfg, "vocals", 1, 2, RATE, 2).valid_items()
    assert len(half) == 1 and torch.equal(half[0][0], items[1][0])


# ----------------------------------------------------------------------------- on-the-fly seeds

@pytest.mark.parametrize("excerpts", [1, 2])
def test_onthefly_seed_streams_are_disjoint(excerpts):
    cfg = _config(batch_size=3, valid_size=5, excerpts_per_mixture=excerpts)
    seen: dict = {}
    world, steps = 3, 4
    for epoch in range(3):
        for rank in range(world):
            for step in range(steps):
                for s in onthefly_seeds(cfg, epoch, step, rank, world, steps):
                    assert s not in seen, (s, seen.get(s), (epoch, rank, step))
                    seen[s] = (epoch, rank, step)
    assert not set(seen) & set(onthefly_valid_seeds(cfg))
    assert len(seen) == 3 * world * steps * mixtures_per_batch(cfg)


def test_onthefly_source_renders_in_memory(stem_library, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "duration": 2.0, "sample_rate": RATE, "channels": 2, "labels": ["vocals", "drums", "bass", "other"],
        "coherent_probability": 1.0, "quick_pitch_time": True,
        "event": {"source_time": ["uniform", 0, 2], "event_time": ["const", 0], "event_duration": ["const", 2.0],
                  "snr": ["uniform", -5, 5], "pitch_shift": None, "time_stretch": None}}))
    cfg = _config(stems=str(stem_library), batch_size=4, excerpts_per_mixture=2, seq_dur=0.5, valid_size=2)
    spec = resolve_data(str(recipe), cfg, ["vocals"])
    assert spec.kind == "onthefly" and spec.recipe_hash and spec.labels == ["vocals", "drums", "bass", "other"]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    src = open_source(spec, cfg, "vocals", 1, 2, RATE, 2)
    mix, tgt = src.batch(1, 0)
    assert mix.shape == (4, 2, RATE // 2) and tgt.shape == mix.shape
    assert src.seeds(1, 0) == onthefly_seeds(cfg, 1, 0, 1, 2, src.steps_per_epoch) and len(src.seeds(1, 0)) == 2
    again, _ = open_source(spec, cfg, "vocals", 1, 2, RATE, 2).batch(1, 0)
    np.testing.assert_array_equal(mix, again)  # any batch can be re-made from (epoch, rank, step)
    info = src.seed_info(1)
    assert info["first_seeds"][:2] == src.seeds(1, 0) and info["valid_seeds"] == [cfg.seed + 1]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


# ----------------------------------------------------------------------------- bad data

def test_bad_data_is_refused_before_training(stem_library, tmp_path):
    cfg = _config()
    with pytest.raises(DataError, match="not found"):
        resolve_data(str(tmp_path / "missing"), cfg, ["vocals"])
    with pytest.raises(ConfigError) as err:
        resolve_data(str(stem_library), cfg, ["piano"])
    assert err.value.field == "targets" and "piano" in str(err.value)
    empty = tmp_path / "empty"
    (empty / "foreground" / "vocals").mkdir(parents=True)
    with pytest.raises(DataError, match="empty"):
        resolve_data(str(empty), cfg, ["vocals"])
    (tmp_path / "junk").mkdir()
    with pytest.raises(DataError, match="not training data"):
        resolve_data(str(tmp_path / "junk"), cfg, ["vocals"])
