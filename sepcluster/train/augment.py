"""Stem augmentation on the fly: random gain per stem, channel swap, polarity flip, remix across songs.

:func:`augment_stems` works on a batch of stems ``(batch, labels, channels, samples)`` (float32) and
is what a generated dataset or on-the-fly Scaper mixtures get with ``augment: true`` (the mixture
the model sees is then the sum of the augmented stems). A stem library
(:class:`~sepcluster.train.sources.StemLibrarySource`) draws the same augmentations stem by stem
while it mixes (its song per label is the remix), so each source applies every switch:

* ``random_track_mix`` (remix): each label's stem of batch item ``i`` comes from item ``perm[i]``
  (one random permutation per label), so a mixture combines the stems of several songs;
* ``gain_min`` / ``gain_max``: each stem scaled by a gain drawn uniformly from that range;
* ``channel_swap``: each stereo stem's channels swapped with probability 1/2;
* ``polarity_flip``: each stem negated with probability 1/2.

Random numbers come from :func:`augmentation_rng` (``numpy.random.default_rng([seed, epoch, rank,
step, 1])``), a stream of its own: the sampling draws of the sources (which songs, windows and
excerpts) are the same with augmentation on or off, and so are batches of runs that do not use it.
Every draw is made whatever the switches, so turning one switch changes that transform only.
"""

from __future__ import annotations

import numpy as np

from .config import TrainConfig

AUGMENT_STREAM = 1


def augmentation_rng(seed: int, epoch: int, rank: int, step: int) -> np.random.Generator:
    """The augmentation stream of batch ``step`` of ``epoch`` on ``rank``."""
    return np.random.default_rng([int(seed), int(epoch), int(rank), int(step), AUGMENT_STREAM])


def augment_stems(stems: np.ndarray, rng: np.random.Generator, config: TrainConfig) -> np.ndarray:
    """Augmented copy of ``stems`` ``(batch, labels, channels, samples)`` (see the module docstring).

    Draws, in order: one permutation of the batch per label, a gain per stem, a channel-swap coin
    per stem, a polarity coin per stem.
    """
    batch, labels, channels = stems.shape[:3]
    perms = np.stack([rng.permutation(batch) for _ in range(labels)])  # (labels, batch)
    gains = rng.uniform(config.gain_min, config.gain_max, size=(batch, labels)).astype(np.float32)
    swaps = rng.random((batch, labels)) < 0.5
    flips = rng.random((batch, labels)) < 0.5
    out = np.array(stems, dtype=np.float32, copy=True)
    if config.random_track_mix:
        out = np.stack([out[perms[k], k] for k in range(labels)], axis=1)
    out *= gains[:, :, None, None]
    if config.channel_swap and channels == 2:
        out[swaps] = out[swaps][:, ::-1]
    if config.polarity_flip:
        out[flips] = -out[flips]
    return np.ascontiguousarray(out)


def wants_augment(config: TrainConfig, kind: str) -> bool:
    """Whether a source of ``kind`` augments its stems: ``augment`` when set, else only a stem library."""
    return config.augment if config.augment is not None else kind == "stems"


__all__ = ["augment_stems", "augmentation_rng", "wants_augment", "AUGMENT_STREAM"]
