"""Training data on the workers: one :class:`Source` per rank and target, three kinds.

1. :class:`ParquetSource`: rows of a generated dataset from this rank's Ray Data shard
   (``ray.train.get_dataset_shard("train")``); each row gives random ``seq_dur`` excerpts cut
   on the worker. Validation: the last ``valid_fraction`` of the seeds, as full mixtures read
   with :func:`sepcluster.datasets.mixtures.load_mixture`.
2. :class:`OnTheFlySource`: Scaper mixtures rendered in memory (never touching disk) with the
   generate job's :class:`~sepcluster.generate.MixtureRenderer`. Seeds form disjoint streams:
   batch ``k`` of epoch ``e`` on rank ``r`` holds the mixtures with seeds
   ``train_base + e * epoch_span + (k * world + r) * M + j``, ``j < M`` (``M`` mixtures per
   batch: ``ceil(batch_size / excerpts_per_mixture)``; each mixture gives that many random
   excerpts), and DataLoader worker ``w`` renders the batches ``k = w (mod loader_workers)``. So
   no two ranks, loader workers or epochs share a seed, and any batch can be re-made from
   ``(epoch, rank, k)``. Validation: seeds ``seed .. seed + valid_size - 1``;
   ``train_base = seed + valid_size``.
3. :class:`StemLibrarySource`: a stem library sampled as Open-Unmix does: for every label a
   random training song and a random ``seq_dur`` window, a random gain in
   ``[gain_min, gain_max]`` and a random channel swap, summed into the mixture; a fixed
   validation split of full songs. Batch ``k`` of epoch ``e`` on rank ``r`` draws from
   ``numpy.random.default_rng([seed, e, r, k])``: independent per rank, batch and (through
   ``k``) loader worker, and reproducible.

Batches are torch tensors ``(batch, channels, samples)`` (mixture, target); validation items
are ``(1, channels, samples)`` pairs. For a multi-source model (``outputs``: the targets it
estimates, in order) the target is every output's stem, ``(batch, outputs, channels, samples)``
(``(1, outputs, channels, samples)`` for validation); the mixture and the sampling are the same.
Stem augmentation (:mod:`sepcluster.train.augment`: gain, channel swap, polarity flip, remix across
songs) is drawn from a stream of its own, so the sampling draws above do not depend on it.
:func:`open_source` gives a rank its source.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Iterator, Optional

import numpy as np

from .. import storage
from ..datasets import mixtures
from ..datasets.library import index_library
from ..errors import DataError
from .config import TrainConfig
from .augment import augment_stems, augmentation_rng, wants_augment
from .data import (DEFAULT_ONTHEFLY_SAMPLES, DataSpec, mixtures_per_batch, needed_stems, onthefly_seeds,
                   onthefly_valid_seeds)
from .stem_reader import AudioReader, excerpt, fit_length, local_copy_of_library, to_channels

ONTHEFLY_CACHE_BYTES = 256 << 20  # each worker's Scaper source cache (whole library only when it fits)


class Source:
    """One rank's view of the training data for one target.

    ``steps_per_epoch``: batches per epoch (the same on every rank, as DDP needs).
    ``epoch_batches(epoch)`` yields ``(mixture, target)`` float32 tensors
    ``(batch, channels, samples)``; ``stats_batches(n)`` yields mixture tensors for the input
    statistics; ``valid_items()`` returns this rank's validation pairs ``(1, channels, samples)``.
    With ``outputs`` (a multi-source model's targets) every target is
    ``(batch, outputs, channels, samples)`` (validation ``(1, outputs, channels, samples)``).
    """

    kind = "base"

    def __init__(self, spec: DataSpec, config: TrainConfig, target: Optional[str], rank: int, world_size: int,
                 sample_rate: int, channels: int, outputs: Optional[list] = None):
        self.spec = spec
        self.config = config
        self.target = target
        self.outputs = list(outputs) if outputs else None
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.seq_len = int(round(config.seq_dur * self.sample_rate))
        self._valid: Optional[list] = None
        self.steps_per_epoch = 1
        self.augment = wants_augment(config, self.kind)
        self.stem_labels = needed_stems(spec, config, target, self.outputs)

    # --- to override
    def batch(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Mixture and target ``(batch, channels, samples)`` float32 for batch ``step`` of ``epoch``."""
        raise NotImplementedError

    def _load_valid(self) -> list:
        raise NotImplementedError

    def seed_info(self, epoch: int = 0, steps: int = 2) -> dict:
        """How this rank draws its random numbers (logged so any batch can be re-made)."""
        return {}

    # --- shared
    def epoch_batches(self, epoch: int) -> Iterator:
        import torch

        workers = self.config.loader_workers
        if workers <= 0:
            for k in range(self.steps_per_epoch):
                mix, tgt = self.batch(epoch, k)
                yield torch.from_numpy(mix), torch.from_numpy(tgt)
            return
        loader = torch.utils.data.DataLoader(_BatchStream(self, epoch), batch_size=None,
                                             num_workers=min(workers, self.steps_per_epoch),
                                             persistent_workers=False, prefetch_factor=2)
        yield from loader

    def stats_batches(self, n: int) -> Iterator:
        import torch

        for k in range(n):
            mix, _ = self.batch(0, k % max(1, self.steps_per_epoch))
            yield torch.from_numpy(mix)

    def valid_items(self) -> list:
        if self._valid is None:
            import torch

            items = []
            for mix, tgt in self._load_valid():
                items.append((torch.from_numpy(np.ascontiguousarray(mix.T[None], dtype=np.float32)),
                              torch.from_numpy(np.ascontiguousarray(channels_first(tgt)[None], dtype=np.float32))))
            self._valid = items
        return self._valid

    def _crop_valid(self, mix: np.ndarray, tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.config.valid_seq_dur is not None:
            n = int(round(self.config.valid_seq_dur * self.sample_rate))
            mix, tgt = mix[:n], tgt[..., :n, :]
        return mix, tgt

    def _target(self, stems: dict, like: np.ndarray) -> np.ndarray:
        """The target of one item from its stems ``{label: (samples, channels)}``: the target's stem
        ``(samples, channels)``, or every output's ``(outputs, samples, channels)`` (silence where absent)."""
        if self.outputs is None:
            found = stems.get(self.target)
            return np.ascontiguousarray(found) if found is not None else np.zeros_like(like)
        return np.stack([stems[o] if o in stems else np.zeros_like(like) for o in self.outputs])

    def _assemble(self, mixes: list, stems: list, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch from items (``mixes``: ``(samples, channels)``; ``stems``: ``{label: (samples, channels)}``):
        ``(batch, channels, samples)`` mixture and the targets. With augmentation the stems of
        :attr:`stem_labels` are augmented together (:func:`~sepcluster.train.augment.augment_stems`)
        and the mixture is their sum."""
        if not self.augment:
            mix = np.stack([m.T for m in mixes])
            tgt = np.stack([channels_first(self._target(s, m)) for s, m in zip(stems, mixes)])
            return np.ascontiguousarray(mix, dtype=np.float32), np.ascontiguousarray(tgt, dtype=np.float32)
        labels = self.stem_labels
        arr = np.stack([np.stack([s[lab].T for lab in labels]) for s in stems]).astype(np.float32, copy=False)
        arr = augment_stems(arr, augmentation_rng(self.config.seed, epoch, self.rank, step), self.config)
        mix = arr.sum(axis=1)
        picked = {lab: arr[:, i] for i, lab in enumerate(labels)}
        zeros = np.zeros_like(mix)
        if self.outputs is None:
            tgt = picked.get(self.target, zeros)
        else:
            tgt = np.stack([picked.get(o, zeros) for o in self.outputs], axis=1)
        return np.ascontiguousarray(mix, dtype=np.float32), np.ascontiguousarray(tgt, dtype=np.float32)

    def _steps(self, samples: int) -> int:
        return max(1, int(samples) // (self.config.batch_size * self.world_size))


class _BatchStream:
    """An IterableDataset over one epoch's batches; loader worker ``w`` makes batches ``k = w (mod W)``."""

    def __new__(cls, source: Source, epoch: int):
        import torch

        class _Stream(torch.utils.data.IterableDataset):
            def __init__(self, src, ep):
                super().__init__()
                self.src, self.ep = src, ep

            def __iter__(self):
                info = torch.utils.data.get_worker_info()
                wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
                for k in range(wid, self.src.steps_per_epoch, nw):
                    mix, tgt = self.src.batch(self.ep, k)
                    yield torch.from_numpy(mix), torch.from_numpy(tgt)

        return _Stream(source, epoch)


class StemLibrarySource(Source):
    """Open-Unmix-style random mixing of a stem library (see the module docstring)."""

    kind = "stems"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.files = local_copy_of_library(self.spec.library)
        self.labels = sorted(self.files)
        self.reader = AudioReader(self.sample_rate, self.channels)
        # Keep whole files in memory only when the library fits the budget; a large library
        # (MUSDB) is read window by window instead of thrashing the cache.
        total = sum(self.reader.length(p) for files in self.files.values() for p in files.values())
        self.reader.cache = total * self.channels * 4 <= self.reader.max_bytes
        self.train_by_label = {lab: [s for s in self.spec.train_songs if s in self.files[lab]] for lab in self.labels}
        self.train_by_label = {lab: songs for lab, songs in self.train_by_label.items() if songs}
        samples = self.config.samples_per_epoch or self.config.samples_per_track * len(self.spec.train_songs)
        self.steps_per_epoch = self._steps(samples)

    def _random_start(self, rng: np.random.Generator, path: str) -> int:
        room = self.reader.length(path) - self.seq_len
        return int(rng.integers(0, room + 1)) if room > 0 else 0

    def _augment(self, rng: np.random.Generator, audio: np.ndarray, aug_rng: Optional[np.random.Generator]):
        """A random gain and channel swap (the sampling stream's draws, as always), and a polarity flip
        (the augmentation stream's); ``augment: false`` draws them and applies none."""
        cfg = self.config
        gain = np.float32(rng.uniform(cfg.gain_min, cfg.gain_max))
        swap = cfg.channel_swap and audio.shape[1] == 2 and rng.random() < 0.5
        flip = aug_rng is not None and aug_rng.random() < 0.5
        if not self.augment:
            return audio
        audio = audio * gain
        if swap:
            audio = audio[:, ::-1]
        if flip and cfg.polarity_flip:
            audio = -audio
        return audio

    def draw(self, rng: np.random.Generator, aug_rng: Optional[np.random.Generator] = None):
        """One training example: the ``(samples, channels)`` mixture and the augmented stems
        ``{label: (samples, channels)}`` summed into it."""
        mix = np.zeros((self.seq_len, self.channels), dtype=np.float32)
        if self.config.random_track_mix:  # remix: every label from a song of its own
            picks = {}
            for lab, songs in self.train_by_label.items():
                song = songs[int(rng.integers(len(songs)))]
                path = self.files[lab][song]
                picks[lab] = (path, self._random_start(rng, path))
        else:
            anchor = self.target if self.outputs is None else next(
                (o for o in self.outputs if o in self.train_by_label), next(iter(self.train_by_label)))
            songs = self.train_by_label[anchor]
            song = songs[int(rng.integers(len(songs)))]
            start = self._random_start(rng, self.files[anchor][song])
            picks = {lab: (self.files[lab][song], start) for lab in self.labels if song in self.files[lab]}
        stems = {}
        for lab, (path, start) in picks.items():
            audio = self._augment(rng, self.reader.window(path, start, self.seq_len), aug_rng)
            mix += audio
            stems[lab] = np.ascontiguousarray(audio)
        return mix, stems

    def sample(self, rng: np.random.Generator, aug_rng: Optional[np.random.Generator] = None):
        """One training example ``(samples, channels)`` mixture and its target (see :meth:`Source._target`)."""
        mix, stems = self.draw(rng, aug_rng)
        return mix, self._target(stems, mix)

    def batch(self, epoch: int, step: int):
        rng = np.random.default_rng([self.config.seed, int(epoch), self.rank, int(step)])
        aug_rng = augmentation_rng(self.config.seed, epoch, self.rank, step)
        pairs = [self.sample(rng, aug_rng) for _ in range(self.config.batch_size)]
        mix = np.stack([p[0].T for p in pairs]).astype(np.float32, copy=False)
        tgt = np.stack([channels_first(p[1]) for p in pairs]).astype(np.float32, copy=False)
        return np.ascontiguousarray(mix), np.ascontiguousarray(tgt)

    def _load_valid(self):
        out = []
        for song in self.spec.valid_songs[self.rank::self.world_size]:
            stems = {lab: self.reader.full(files[song]) for lab, files in self.files.items() if song in files}
            length = max(a.shape[0] for a in stems.values())
            stems = {lab: fit_length(a, length) for lab, a in stems.items()}
            mix = np.zeros((length, self.channels), dtype=np.float32)
            for a in stems.values():
                mix += a
            out.append(self._crop_valid(mix, self._target(stems, mix)))
        return out

    def seed_info(self, epoch: int = 0, steps: int = 2) -> dict:
        return {"kind": "stems", "rng": "numpy.random.default_rng([seed, epoch, rank, step])",
                "augment_rng": "numpy.random.default_rng([seed, epoch, rank, step, 1]) (polarity flips)",
                "seed": self.config.seed, "rank": self.rank, "world_size": self.world_size,
                "loader_workers": self.config.loader_workers, "steps_per_epoch": self.steps_per_epoch,
                "valid_songs": list(self.spec.valid_songs)}


class OnTheFlySource(Source):
    """Scaper mixtures rendered in memory from the recipe, in disjoint seed streams."""

    kind = "onthefly"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        samples = self.config.samples_per_epoch or DEFAULT_ONTHEFLY_SAMPLES
        self.steps_per_epoch = self._steps(samples)
        self.seq_len = min(self.seq_len, int(self.spec.num_samples * self.sample_rate // self.spec.sample_rate))
        self._renderer = None

    def _setup(self):
        if self._renderer is None:
            logging.getLogger("sox").setLevel(logging.ERROR)
            from ..generate import MixtureRenderer, parse_recipe

            recipe = parse_recipe(json.loads(self.spec.recipe_json), source_yaml=self.spec.recipe_yaml)
            self._renderer = MixtureRenderer(recipe, index_library(self.spec.stems_dir, recipe.labels),
                                             cache_bytes=ONTHEFLY_CACHE_BYTES)
        return self._renderer

    def render_stems(self, seed: int, labels: list) -> tuple[np.ndarray, dict]:
        """Mixture ``(samples, channels)`` of mixture ``seed`` and its stems ``{label: (samples, channels)}``
        of ``labels``, at the training rate."""
        from ..audio import resample

        res = self._setup().render(int(seed))
        mix, stems = res.mixture, {lab: res.stems[lab] for lab in labels if lab in res.stems}
        if self.spec.sample_rate != self.sample_rate:
            mix = resample(mix, self.spec.sample_rate, self.sample_rate)
            stems = {lab: resample(a, self.spec.sample_rate, self.sample_rate) for lab, a in stems.items()}
        return to_channels(mix, self.channels), {lab: to_channels(a, self.channels) for lab, a in stems.items()}

    def render(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Mixture and target (see :meth:`Source._target`) of mixture ``seed``, at the training rate."""
        mix, stems = self.render_stems(seed, self.stem_labels)
        return mix, self._target(stems, mix)

    def seeds(self, epoch: int, step: int) -> list[int]:
        return onthefly_seeds(self.config, epoch, step, self.rank, self.world_size, self.steps_per_epoch)

    def batch(self, epoch: int, step: int):
        """Render this batch's mixtures; each gives ``excerpts_per_mixture`` random excerpts."""
        mixes, stems = [], []
        for seed in self.seeds(epoch, step):
            mix, parts = self.render_stems(seed, self.stem_labels)
            rng = np.random.default_rng([self.config.seed, seed])
            room = mix.shape[0] - self.seq_len
            for _ in range(self.config.excerpts_per_mixture):
                start = int(rng.integers(0, room + 1)) if room > 0 else 0
                mixes.append(fit_length(mix[start:], self.seq_len))
                stems.append({lab: fit_length(a[start:], self.seq_len) for lab, a in parts.items()})
        n = self.config.batch_size
        return self._assemble(mixes[:n], stems[:n], epoch, step)

    def _load_valid(self):
        seeds = onthefly_valid_seeds(self.config)[self.rank::self.world_size]
        return [self._crop_valid(*self.render(s)) for s in seeds]

    def seed_info(self, epoch: int = 0, steps: int = 2) -> dict:
        m = mixtures_per_batch(self.config)
        span = self.steps_per_epoch * self.world_size * m
        return {"kind": "onthefly",
                "formula": "seed = train_base + epoch * epoch_span + (step * world_size + rank) * M + j, j < M "
                           "(M = mixtures per batch = ceil(batch_size / excerpts_per_mixture)); excerpt starts "
                           "from numpy.random.default_rng([seed_config, seed]); loader worker w renders steps "
                           "w, w + W, ...",
                "mixtures_per_batch": m, "excerpts_per_mixture": self.config.excerpts_per_mixture,
                "train_base": self.config.seed + self.config.valid_size, "epoch_span": span,
                "batch_size": self.config.batch_size, "rank": self.rank, "world_size": self.world_size,
                "loader_workers": self.config.loader_workers, "steps_per_epoch": self.steps_per_epoch,
                "valid_seeds": onthefly_valid_seeds(self.config)[self.rank::self.world_size],
                "first_seeds": [s for k in range(min(steps, self.steps_per_epoch)) for s in self.seeds(epoch, k)],
                "recipe_hash": self.spec.recipe_hash, "augment": self.augment}


class ParquetSource(Source):
    """Rows of a generated dataset from this rank's Ray Data shard, cut into random excerpts."""

    kind = "parquet"

    def __init__(self, *args, shard=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.shard = shard
        self.native_len = int(self.spec.num_samples)
        self.seq_len = min(self.seq_len, int(self.native_len * self.sample_rate // self.spec.sample_rate))
        rows = len(self.spec.train_seeds) // self.world_size
        if rows < 1:
            raise DataError(f"{storage.redact(self.spec.uri)}: {len(self.spec.train_seeds)} training mixtures "
                            f"cannot feed {self.world_size} workers")
        self.per_row = max(1, int(round((self.config.samples_per_epoch or rows * self.world_size)
                                        / (rows * self.world_size))))
        # batches per epoch: the equal split gives every rank ``rows`` rows
        self.steps_per_epoch = int(math.ceil(rows * self.per_row / self.config.batch_size))

    def _decode(self, data, n: int, c: int) -> np.ndarray:
        return mixtures.decode_audio_column(data, self.spec.audio_format, n, c)

    def _cut(self, rng: np.random.Generator, mix: np.ndarray, stems: dict, sr: int):
        """One random excerpt (one draw) of the mixture and of every stem: ``(samples, channels)`` arrays."""
        seq_native = int(math.ceil(self.seq_len * sr / self.sample_rate))
        room = mix.shape[0] - seq_native
        start = int(rng.integers(0, room + 1)) if room > 0 else 0

        def cut(audio):
            return excerpt(to_channels(audio, self.channels)[start:], 0, self.seq_len, sr, self.sample_rate)

        return cut(mix), {lab: cut(a) for lab, a in stems.items()}

    def epoch_batches(self, epoch: int) -> Iterator:
        import torch

        rng = np.random.default_rng([self.config.seed, int(epoch), self.rank])
        buf_m: list = []
        buf_s: list = []
        emitted = 0

        def emit():
            mix, tgt = self._assemble(buf_m, buf_s, epoch, emitted)
            return torch.from_numpy(mix), torch.from_numpy(tgt)

        for batch in self.shard.iter_batches(batch_size=self.config.batch_size, batch_format="numpy",
                                             local_shuffle_buffer_size=max(2 * self.config.batch_size, 16),
                                             local_shuffle_seed=int(self.config.seed * 1000 + epoch * 16 + self.rank)):
            for i in range(len(batch["seed"])):
                n, c, sr = int(batch["num_samples"][i]), int(batch["channels"][i]), int(batch["sample_rate"][i])
                mix = self._decode(batch["mixture"][i], n, c)
                stems = {lab: self._decode(batch[f"stem_{lab}"][i], n, c) for lab in self.stem_labels}
                for _ in range(self.per_row):
                    m, parts = self._cut(rng, mix, stems, sr)
                    buf_m.append(m)
                    buf_s.append(parts)
                    if len(buf_m) == self.config.batch_size:
                        if emitted < self.steps_per_epoch:
                            yield emit()
                        emitted += 1
                        buf_m, buf_s = [], []
        if buf_m and emitted < self.steps_per_epoch:
            yield emit()
            emitted += 1
        if emitted < self.steps_per_epoch:  # keep DDP in step: every rank runs the same number of batches
            raise DataError(f"{storage.redact(self.spec.uri)}: rank {self.rank} got {emitted} batches, "
                            f"expected {self.steps_per_epoch}")

    def _load_seed(self, seed: int):
        """Mixture ``seed`` and its target (see :meth:`Source._target`), whole, at the training rate."""
        m = mixtures.load_mixture(self.spec.uri, int(seed))
        wanted = [self.target] if self.outputs is None else self.outputs
        mix, stems = m.mixture, {lab: m.stems[lab] for lab in wanted if lab in m.stems}
        if m.sample_rate != self.sample_rate:
            from ..audio import resample

            mix = resample(mix, m.sample_rate, self.sample_rate)
            stems = {lab: resample(a, m.sample_rate, self.sample_rate) for lab, a in stems.items()}
        mix = to_channels(mix, self.channels)
        return mix, self._target({lab: to_channels(a, self.channels) for lab, a in stems.items()}, mix)

    def stats_batches(self, n: int) -> Iterator:
        import torch

        seeds = self.spec.train_seeds
        count = min(len(seeds), n * self.config.batch_size * self.world_size)
        if count == 0:
            return
        picks = [seeds[int(i)] for i in np.linspace(0, len(seeds) - 1, count).round().astype(int)]
        mine = picks[self.rank::self.world_size]
        rng = np.random.default_rng([self.config.seed, 99, self.rank])
        for i in range(0, len(mine), self.config.batch_size):
            mixes = []
            for seed in mine[i:i + self.config.batch_size]:
                mix, _ = self._load_seed(seed)
                room = mix.shape[0] - self.seq_len
                start = int(rng.integers(0, room + 1)) if room > 0 else 0
                mixes.append(fit_length(mix[start:], self.seq_len).T)
            yield torch.from_numpy(np.ascontiguousarray(np.stack(mixes), dtype=np.float32))

    def _load_valid(self):
        return [self._crop_valid(*self._load_seed(s)) for s in self.spec.valid_seeds[self.rank::self.world_size]]

    def seed_info(self, epoch: int = 0, steps: int = 2) -> dict:
        return {"kind": "parquet", "rng": "numpy.random.default_rng([seed, epoch, rank]) for excerpt starts; "
                                          "Ray Data local shuffle seeded seed*1000 + epoch*16 + rank",
                "seed": self.config.seed, "rank": self.rank, "world_size": self.world_size,
                "steps_per_epoch": self.steps_per_epoch, "excerpts_per_row": self.per_row, "augment": self.augment,
                "valid_seeds": list(self.spec.valid_seeds[self.rank::self.world_size])}


def open_source(spec: DataSpec, config: TrainConfig, target: Optional[str], rank: int, world_size: int,
                sample_rate: int, channels: int, shard=None, outputs: Optional[list] = None) -> Source:
    """This rank's :class:`Source` (``shard``: the Ray Data shard, parquet only; ``outputs``: a
    multi-source model's targets, whose stems are then the target, ``target`` None)."""
    args = (spec, config, target, rank, world_size, sample_rate, channels)
    if spec.kind == "parquet":
        if shard is None:
            raise DataError("parquet training data needs the Ray Data shard (ray.train.get_dataset_shard)")
        return ParquetSource(*args, shard=shard, outputs=outputs)
    if spec.kind == "onthefly":
        return OnTheFlySource(*args, outputs=outputs)
    return StemLibrarySource(*args, outputs=outputs)


def channels_first(target: np.ndarray) -> np.ndarray:
    """A target ``(samples, channels)`` -> ``(channels, samples)``; ``(outputs, samples, channels)`` ->
    ``(outputs, channels, samples)``."""
    return target.T if target.ndim == 2 else target.transpose(0, 2, 1)


__all__ = ["Source", "StemLibrarySource", "OnTheFlySource", "ParquetSource", "open_source", "channels_first",
           "ONTHEFLY_CACHE_BYTES"]
