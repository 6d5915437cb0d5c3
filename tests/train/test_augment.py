"""Stem augmentation: each switch changes what the model sees, and only in its own way; the sources give
all stems to a multi-source model and keep the per-target batches and their seeding."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from sepcluster.train.augment import augment_stems, augmentation_rng
from sepcluster.train.config import TrainConfig
from sepcluster.train.data import resolve_data
from sepcluster.train.sources import open_source
from tests.train.conftest import RATE, TINY

OFF = dict(gain_min=1.0, gain_max=1.0, channel_swap=False, polarity_flip=False, random_track_mix=False)
LABELS = ["bass", "drums", "other", "vocals"]


def _cfg(**kw) -> TrainConfig:
    return TrainConfig.from_dict(dict(TINY, **{**OFF, **kw}))


def _stems(batch=6, labels=3, channels=2, samples=64) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, labels, channels, samples)).astype(np.float32)


def _augment(cfg, stems, seed=5):
    return augment_stems(stems, augmentation_rng(seed, 2, 0, 1), cfg)


def test_with_every_switch_off_the_stems_pass_unchanged():
    stems = _stems()
    np.testing.assert_array_equal(_augment(_cfg(), stems), stems)


def test_gain_scales_each_stem_within_its_range():
    stems = _stems()
    out = _augment(_cfg(gain_min=0.5, gain_max=1.5), stems)
    ratio = out / stems
    per_stem = ratio[..., 0, 0]
    np.testing.assert_allclose(ratio, per_stem[..., None, None] * np.ones_like(ratio), rtol=1e-5)
    assert (per_stem >= 0.5).all() and (per_stem <= 1.5).all() and np.unique(per_stem.round(6)).size > 10


def test_channel_swap_swaps_some_stems():
    stems = _stems()
    out = _augment(_cfg(channel_swap=True), stems)
    same = np.all(out == stems, axis=(2, 3))
    swapped = np.all(out == stems[:, :, ::-1], axis=(2, 3))
    assert (same | swapped).all() and same.any() and swapped.any()


def test_polarity_flip_negates_some_stems():
    stems = _stems()
    out = _augment(_cfg(polarity_flip=True), stems)
    same, flipped = np.all(out == stems, axis=(2, 3)), np.all(out == -stems, axis=(2, 3))
    assert (same | flipped).all() and same.any() and flipped.any()


def test_remix_takes_each_label_from_other_songs():
    stems = _stems()
    out = _augment(_cfg(random_track_mix=True), stems)
    moved = 0
    for k in range(stems.shape[1]):
        sources = [next(j for j in range(len(stems)) if np.array_equal(out[i, k], stems[j, k])) for i in range(len(stems))]
        assert sorted(sources) == list(range(len(stems)))  # a permutation of the batch, per label
        moved += sum(i != j for i, j in enumerate(sources))
    assert moved > 0
    # mixtures now combine stems of several songs: item 0's labels come from different items
    assert len({next(j for j in range(len(stems)) if np.array_equal(out[0, k], stems[j, k]))
                for k in range(stems.shape[1])}) > 1


def test_one_switch_changes_its_transform_only():
    stems = _stems()
    on = dict(gain_min=0.5, gain_max=1.5, channel_swap=True, random_track_mix=True)
    with_flip, without = _augment(_cfg(polarity_flip=True, **on), stems), _augment(_cfg(**on), stems)
    assert np.array_equal(np.abs(with_flip), np.abs(without)) and not np.array_equal(with_flip, without)
    again = _augment(_cfg(polarity_flip=True, **on), stems)
    np.testing.assert_array_equal(with_flip, again)  # reproducible from (seed, epoch, rank, step)


# ----------------------------------------------------------------------------- the stem library source

def _library_source(stem_library, outputs=None, target="vocals", **kw):
    cfg = _cfg(**kw)
    spec = resolve_data(str(stem_library), cfg, outputs or [target])
    return open_source(spec, cfg, None if outputs else target, 0, 1, RATE, 2, outputs=outputs)


def test_stem_library_polarity_flip_changes_the_mixture_not_the_sampling(stem_library):
    plain = _library_source(stem_library, gain_min=0.5, gain_max=1.0, random_track_mix=True)
    flipped = _library_source(stem_library, gain_min=0.5, gain_max=1.0, random_track_mix=True, polarity_flip=True)
    (m0, t0), (m1, t1) = plain.batch(1, 2), flipped.batch(1, 2)
    np.testing.assert_array_equal(np.abs(t0), np.abs(t1))  # the same songs, windows and gains
    assert not np.array_equal(t0, t1) and not np.allclose(m0, m1)
    assert any(np.array_equal(t1[i], -t0[i]) for i in range(len(t0)))


def test_stem_library_remix_draws_every_label_from_its_own_song(stem_library):
    """random_track_mix off: all labels from one song at one start; on: each label its own draw."""
    for remix in (False, True):
        src = _library_source(stem_library, random_track_mix=remix)
        rng = np.random.default_rng([src.config.seed, 0, 0, 0])
        mix, stems = src.draw(np.random.default_rng([src.config.seed, 0, 0, 0]))
        songs = {}
        if remix:
            for lab, train_songs in src.train_by_label.items():  # a song and a start per label, then the gains
                songs[lab] = train_songs[int(rng.integers(len(train_songs)))]
                start = src._random_start(rng, src.files[lab][songs[lab]])
                window = src.reader.window(src.files[lab][songs[lab]], start, src.seq_len)
                np.testing.assert_array_equal(stems[lab], window)
        else:
            song = src.train_by_label["vocals"][int(rng.integers(len(src.train_by_label["vocals"])))]
            start = src._random_start(rng, src.files["vocals"][song])
            for lab in stems:
                np.testing.assert_array_equal(stems[lab], src.reader.window(src.files[lab][song], start, src.seq_len))
        np.testing.assert_allclose(mix, sum(stems.values()), atol=1e-6)
    assert len(set(songs.values())) > 1  # with remix, one mixture holds several songs


def test_multi_source_batches_hold_every_output_stem(stem_library):
    outputs = ["vocals", "drums", "bass"]
    multi = _library_source(stem_library, outputs=outputs, gain_min=0.5, gain_max=1.0, channel_swap=True,
                            random_track_mix=True, polarity_flip=True)
    mix, tgt = multi.batch(3, 1)
    assert mix.shape == (TINY["batch_size"], 2, RATE) and tgt.shape == (TINY["batch_size"], 3, 2, RATE)
    rng, aug = np.random.default_rng([multi.config.seed, 3, 0, 1]), augmentation_rng(multi.config.seed, 3, 0, 1)
    first_mix, first_stems = multi.draw(rng, aug)
    np.testing.assert_array_equal(mix[0], first_mix.T)
    for k, lab in enumerate(outputs):
        np.testing.assert_array_equal(tgt[0, k], first_stems[lab].T)
    np.testing.assert_allclose(mix[0], sum(s.T for s in first_stems.values()), atol=1e-6)  # with "other" too
    # the per-target source of the same config sees the same mixtures, and its target is one of the stems
    single = _library_source(stem_library, target="drums", gain_min=0.5, gain_max=1.0, channel_swap=True,
                             random_track_mix=True, polarity_flip=True)
    m1, t1 = single.batch(3, 1)
    np.testing.assert_array_equal(m1, mix)
    np.testing.assert_array_equal(t1, tgt[:, 1])
    items = multi.valid_items()
    assert items and items[0][1].shape[:3] == (1, 3, 2) and items[0][0].shape[:2] == (1, 2)


# ----------------------------------------------------------------------------- on-the-fly mixtures

@pytest.fixture(scope="module")
def recipe(stem_library, tmp_path_factory):
    path = tmp_path_factory.mktemp("aug-recipe") / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "duration": 2.0, "sample_rate": RATE, "channels": 2, "labels": ["vocals", "drums", "bass", "other"],
        "coherent_probability": 1.0, "quick_pitch_time": True,
        "event": {"source_time": ["uniform", 0, 2], "event_time": ["const", 0], "event_duration": ["const", 2.0],
                  "snr": ["uniform", -5, 5], "pitch_shift": None, "time_stretch": None}}))
    return path


def test_onthefly_augment_rebuilds_the_mixture_from_augmented_stems(stem_library, recipe):
    base = dict(stems=str(stem_library), batch_size=2, seq_dur=0.5, valid_size=1)
    cfg = TrainConfig.from_dict(dict(TINY, **base))
    spec = resolve_data(str(recipe), cfg, ["vocals"])
    plain = open_source(spec, cfg, "vocals", 0, 1, RATE, 2)
    assert plain.stem_labels == ["vocals"] and not plain.augment
    mix, tgt = plain.batch(0, 0)
    # per target and without augment: the rendered mixture and target, cut as always
    seeds = plain.seeds(0, 0)
    rendered, stems = plain.render_stems(seeds[0], ["vocals"])
    rng = np.random.default_rng([cfg.seed, seeds[0]])
    start = int(rng.integers(0, rendered.shape[0] - plain.seq_len + 1))
    np.testing.assert_array_equal(mix[0], rendered[start:start + plain.seq_len].T.astype(np.float32))
    np.testing.assert_array_equal(tgt[0], stems["vocals"][start:start + plain.seq_len].T.astype(np.float32))

    # augment: the stems of every label, augmented together, and the mixture their sum
    labels = list(spec.labels)
    for flip in (False, True):
        aug_cfg = TrainConfig.from_dict(dict(TINY, **base, **{**OFF, "polarity_flip": flip}, augment=True))
        multi = open_source(spec, aug_cfg, None, 0, 1, RATE, 2, outputs=labels)
        assert multi.augment and multi.stem_labels == labels
        amix, seen = multi.batch(0, 0)
        _, all_stems = multi.render_stems(seeds[0], labels)
        raw = np.stack([all_stems[lab][start:start + plain.seq_len].T for lab in labels]).astype(np.float32)
        np.testing.assert_allclose(amix, seen.sum(axis=1), atol=1e-5)
        same, flipped = np.all(seen[0] == raw, axis=(1, 2)), np.all(seen[0] == -raw, axis=(1, 2))
        assert (same | flipped).all() and (flipped.any() if flip else same.all())
        single = open_source(spec, aug_cfg, "vocals", 0, 1, RATE, 2)
        smix, stgt = single.batch(0, 0)
        np.testing.assert_array_equal(smix, amix)
        np.testing.assert_array_equal(stgt, seen[:, labels.index("vocals")])
        if flip:
            assert not np.allclose(amix, mix)
