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
are ``(1, channels, samples)`` pairs. :func:`open_source` gives a rank its source.
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
from .data import DEFAULT_ONTHEFLY_SAMPLES, DataSpec, mixtures_per_batch, onthefly_seeds, onthefly_valid_seeds
from .stem_reader import AudioReader, excerpt, fit_length, local_copy_of_library, to_channels

ONTHEFLY_CACHE_BYTES = 256 << 20  # each worker's Scaper source cache (whole library only when it fits)


class Source:
    """One rank's view of the training data for one target.

    ``steps_per_epoch``: batches per epoch (the same on every rank, as DDP needs).
    ``epoch_batches(epoch)`` yields ``(mixture, target)`` float32 tensors
    ``(batch, channels, samples)``; ``stats_batches(n)`` yields mixture tensors for the input
    statistics; ``valid_items()`` returns this rank's validation pairs ``(1, channels, samples)``.
    """

    kind = "base"

    def __init__(self, spec: DataSpec, config: TrainConfig, target: str, rank: int, world_size: int,
                 sample_rate: int, channels: int):
        self.spec = spec
        self.config = config
        self.target = target
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.seq_len = int(round(config.seq_dur * self.sample_rate))
        self._valid: Optional[list] = None
        self.steps_per_epoch = 1

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
                              torch.from_numpy(np.ascontiguousarray(tgt.T[None], dtype=np.float32))))
            self._valid = items
        return self._valid

    def _crop_valid(self, mix: np.ndarray, tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.config.valid_seq_dur is not None:
            n = int(round(self.config.valid_seq_dur * self.sample_rate))
            mix, tgt = mix[:n], tgt[:n]
        return mix, tgt

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

    def _augment(self, rng: np.random.Generator, audio: np.ndarray) -> np.ndarray:
        cfg = self.config
        audio = audio * np.float32(rng.uniform(cfg.gain_min, cfg.gain_max))
        if cfg.channel_swap and audio.shape[1] == 2 and rng.random() < 0.5:
            audio = audio[:, ::-1]
        return audio

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One training example ``(samples, channels)`` mixture and target."""
        cfg = self.config
        mix = np.zeros((self.seq_len, self.channels), dtype=np.float32)
        tgt = np.zeros_like(mix)
        if cfg.random_track_mix:
            picks = {}
            for lab, songs in self.train_by_label.items():
                song = songs[int(rng.integers(len(songs)))]
                path = self.files[lab][song]
                picks[lab] = (path, self._random_start(rng, path))
        else:
            songs = self.train_by_label[self.target]
            song = songs[int(rng.integers(len(songs)))]
            start = self._random_start(rng, self.files[self.target][song])
            picks = {lab: (self.files[lab][song], start) for lab in self.labels if song in self.files[lab]}
        for lab, (path, start) in picks.items():
            audio = self._augment(rng, self.reader.window(path, start, self.seq_len))
            mix += audio
            if lab == self.target:
                tgt = np.ascontiguousarray(audio)
        return mix, tgt

    def batch(self, epoch: int, step: int):
        rng = np.random.default_rng([self.config.seed, int(epoch), self.rank, int(step)])
        pairs = [self.sample(rng) for _ in range(self.config.batch_size)]
        mix = np.stack([p[0].T for p in pairs]).astype(np.float32, copy=False)
        tgt = np.stack([p[1].T for p in pairs]).astype(np.float32, copy=False)
        return np.ascontiguousarray(mix), np.ascontiguousarray(tgt)

    def _load_valid(self):
        out = []
        for song in self.spec.valid_songs[self.rank::self.world_size]:
            stems = {lab: self.reader.full(files[song]) for lab, files in self.files.items() if song in files}
            length = max(a.shape[0] for a in stems.values())
            mix = np.zeros((length, self.channels), dtype=np.float32)
            for a in stems.values():
                mix += fit_length(a, length)
            tgt = fit_length(stems[self.target], length) if self.target in stems else np.zeros_like(mix)
            out.append(self._crop_valid(mix, tgt))
        return out

    def seed_info(self, epoch: int = 0, steps: int = 2) -> dict:
        return {"kind": "stems", "rng": "numpy.random.default_rng([seed, epoch, rank, step])",
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

    def render(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Mixture and target ``(samples, channels)`` of mixture ``seed``, at the training rate."""
        from ..audio import resample

        res = self._setup().render(int(seed))
        mix, tgt = res.mixture, res.stems[self.target]
        if self.spec.sample_rate != self.sample_rate:
            mix = resample(mix, self.spec.sample_rate, self.sample_rate)
            tgt = resample(tgt, self.spec.sample_rate, self.sample_rate)
        return to_channels(mix, self.channels), to_channels(tgt, self.channels)

    def seeds(self, epoch: int, step: int) -> list[int]:
        return onthefly_seeds(self.config, epoch, step, self.rank, self.world_size, self.steps_per_epoch)

    def batch(self, epoch: int, step: int):
        """Render this batch's mixtures; each gives ``excerpts_per_mixture`` random excerpts."""
        mixes, tgts = [], []
        for seed in self.seeds(epoch, step):
            mix, tgt = self.render(seed)
            rng = np.random.default_rng([self.config.seed, seed])
            room = mix.shape[0] - self.seq_len
            for _ in range(self.config.excerpts_per_mixture):
                start = int(rng.integers(0, room + 1)) if room > 0 else 0
                mixes.append(fit_length(mix[start:], self.seq_len).T)
                tgts.append(fit_length(tgt[start:], self.seq_len).T)
        n = self.config.batch_size
        return (np.ascontiguousarray(np.stack(mixes[:n]), dtype=np.float32),
                np.ascontiguousarray(np.stack(tgts[:n]), dtype=np.float32))

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
                "recipe_hash": self.spec.recipe_hash}


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

    def _cut(self, rng: np.random.Generator, mix: np.ndarray, tgt: np.ndarray, sr: int):
        seq_native = int(math.ceil(self.seq_len * sr / self.sample_rate))
        room = mix.shape[0] - seq_native
        start = int(rng.integers(0, room + 1)) if room > 0 else 0
        m = excerpt(to_channels(mix, self.channels)[start:], 0, self.seq_len, sr, self.sample_rate)
        t = excerpt(to_channels(tgt, self.channels)[start:], 0, self.seq_len, sr, self.sample_rate)
        return m.T, t.T

    def epoch_batches(self, epoch: int) -> Iterator:
        import torch

        rng = np.random.default_rng([self.config.seed, int(epoch), self.rank])
        buf_m: list = []
        buf_t: list = []
        col = f"stem_{self.target}"
        emitted = 0
        for batch in self.shard.iter_batches(batch_size=self.config.batch_size, batch_format="numpy",
                                             local_shuffle_buffer_size=max(2 * self.config.batch_size, 16),
                                             local_shuffle_seed=int(self.config.seed * 1000 + epoch * 16 + self.rank)):
            for i in range(len(batch["seed"])):
                n, c, sr = int(batch["num_samples"][i]), int(batch["channels"][i]), int(batch["sample_rate"][i])
                mix = self._decode(batch["mixture"][i], n, c)
                tgt = self._decode(batch[col][i], n, c)
                for _ in range(self.per_row):
                    m, t = self._cut(rng, mix, tgt, sr)
                    buf_m.append(m)
                    buf_t.append(t)
                    if len(buf_m) == self.config.batch_size:
                        if emitted < self.steps_per_epoch:
                            yield (torch.from_numpy(np.ascontiguousarray(np.stack(buf_m), dtype=np.float32)),
                                   torch.from_numpy(np.ascontiguousarray(np.stack(buf_t), dtype=np.float32)))
                        emitted += 1
                        buf_m, buf_t = [], []
        if buf_m and emitted < self.steps_per_epoch:
            yield (torch.from_numpy(np.ascontiguousarray(np.stack(buf_m), dtype=np.float32)),
                   torch.from_numpy(np.ascontiguousarray(np.stack(buf_t), dtype=np.float32)))
            emitted += 1
        if emitted < self.steps_per_epoch:  # keep DDP in step: every rank runs the same number of batches
            raise DataError(f"{storage.redact(self.spec.uri)}: rank {self.rank} got {emitted} batches, "
                            f"expected {self.steps_per_epoch}")

    def _load_seed(self, seed: int):
        m = mixtures.load_mixture(self.spec.uri, int(seed))
        mix, tgt = m.mixture, m.stems[self.target]
        if m.sample_rate != self.sample_rate:
            from ..audio import resample

            mix, tgt = resample(mix, m.sample_rate, self.sample_rate), resample(tgt, m.sample_rate, self.sample_rate)
        return to_channels(mix, self.channels), to_channels(tgt, self.channels)

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
                "steps_per_epoch": self.steps_per_epoch, "excerpts_per_row": self.per_row,
                "valid_seeds": list(self.spec.valid_seeds[self.rank::self.world_size])}


def open_source(spec: DataSpec, config: TrainConfig, target: str, rank: int, world_size: int,
                sample_rate: int, channels: int, shard=None) -> Source:
    """This rank's :class:`Source` (``shard``: the Ray Data shard, parquet only)."""
    args = (spec, config, target, rank, world_size, sample_rate, channels)
    if spec.kind == "parquet":
        if shard is None:
            raise DataError("parquet training data needs the Ray Data shard (ray.train.get_dataset_shard)")
        return ParquetSource(*args, shard=shard)
    if spec.kind == "onthefly":
        return OnTheFlySource(*args)
    return StemLibrarySource(*args)


__all__ = ["Source", "StemLibrarySource", "OnTheFlySource", "ParquetSource", "open_source", "ONTHEFLY_CACHE_BYTES"]
