"""Training data: three sources behind one interface.

1. ``parquet``: a dataset folder written by ``sepcluster generate`` (``_dataset.json`` +
   ``shard-*.parquet``). Training rows are read with Ray Data and split across workers
   (``ray.train.get_dataset_shard("train")``); each row gives random ``seq_dur`` excerpts
   cut on the worker. The last ``valid_fraction`` of the seeds are the validation set (full
   mixtures, read with :func:`sepcluster.generate.dataset.load_mixture`).
2. ``onthefly``: each worker renders Scaper mixtures from the recipe in memory (never
   touching disk) with :func:`sepcluster.generate.mixing.make_mixture`. Seeds form disjoint
   streams: batch ``k`` of epoch ``e`` on rank ``r`` holds the mixtures with seeds
   ``train_base + e * epoch_span + (k * world + r) * M + j``, ``j < M`` (``M`` mixtures per
   batch: ``ceil(batch_size / excerpts_per_mixture)``; each mixture gives that many random
   excerpts), and DataLoader worker ``w`` renders the batches ``k = w (mod loader_workers)``. So no two
   ranks, loader workers or epochs share a seed, and any batch can be re-made from
   ``(epoch, rank, k)``. Validation: seeds ``seed .. seed + valid_size - 1``;
   ``train_base = seed + valid_size``.
3. ``stems``: a stem library (``DIR/foreground/<label>/<song>.wav`` as written by
   ``sepcluster stems``, or MUSDB18-HQ-style ``DIR[/train]/<song>/<label>.wav``), sampled as
   Open-Unmix does: for every label a random training song and a random ``seq_dur`` window,
   a random gain in ``[gain_min, gain_max]`` and a random channel swap, summed into the
   mixture; a fixed validation split of full songs. Batch ``k`` of epoch ``e`` on rank ``r``
   draws from ``numpy.random.default_rng([seed, e, r, k])``: independent per rank, batch
   and (through ``k``) loader worker, and reproducible.

The driver calls :func:`resolve_data` (checks everything, raises before any worker starts);
each worker calls :func:`open_source` and gets a :class:`Source`. Batches are torch tensors
``(batch, channels, samples)`` (mixture, target); validation items are
``(1, channels, samples)`` pairs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional
from urllib.parse import urlparse

import numpy as np

from .. import storage
from ..errors import ConfigError, DataError
from .config import TrainConfig

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aif", ".aiff", ".mp3", ".m4a")
DATASET_FILE = "_dataset.json"
RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
MAX_SEED = 2 ** 32 - 1
DEFAULT_ONTHEFLY_SAMPLES = 256


# ----------------------------------------------------------------------------- the data spec

@dataclass
class DataSpec:
    """What the driver found at the data URI (picklable; travels to the workers).

    kind: ``parquet`` | ``onthefly`` | ``stems``. ``sample_rate``/``channels``: the data's
    own. ``labels``: the targets the data can train. The remaining fields are per kind.
    """

    kind: str
    uri: str
    sample_rate: int
    channels: int
    labels: list
    recipe_hash: Optional[str] = None
    # parquet
    shards: list = field(default_factory=list)
    audio_format: str = "float32"
    num_samples: int = 0
    train_seeds: list = field(default_factory=list)
    valid_seeds: list = field(default_factory=list)
    # onthefly
    recipe_json: Optional[str] = None
    recipe_yaml: Optional[str] = None
    stems_dir: Optional[str] = None
    # stems: label -> {song: file URI}
    library: dict = field(default_factory=dict)
    train_songs: list = field(default_factory=list)
    valid_songs: list = field(default_factory=list)

    def describe(self) -> dict:
        """A short, loggable summary (no per-file lists)."""
        d = {"kind": self.kind, "uri": storage.redact(self.uri), "sample_rate": self.sample_rate,
             "channels": self.channels, "labels": ",".join(self.labels), "recipe_hash": self.recipe_hash}
        if self.kind == "parquet":
            d.update(shards=len(self.shards), train_mixtures=len(self.train_seeds),
                     valid_mixtures=len(self.valid_seeds), audio_format=self.audio_format,
                     mixture_samples=self.num_samples)
        elif self.kind == "onthefly":
            d.update(stems=storage.redact(self.stems_dir or ""))
        else:
            d.update(train_songs=len(self.train_songs), valid_songs=",".join(self.valid_songs))
        return d

    def to_dict(self) -> dict:
        return asdict(self)


def _recipe_module():
    from ..generate import recipe as recipe_mod

    return recipe_mod


def _is_dataset(uri: str) -> bool:
    return storage.isdir(uri) and storage.exists(storage.join(uri, DATASET_FILE))


def _is_library(uri: str) -> bool:
    return storage.isdir(uri) and storage.isdir(storage.join(uri, "foreground"))


def detect_kind(uri: str, source: str = "auto") -> str:
    """The data source kind at ``uri`` (``source`` forces it); DataError when unknown."""
    where = storage.redact(uri)
    if not storage.exists(uri):
        raise DataError(f"{where}: training data not found (no such file or folder)")
    if source != "auto":
        return source
    if _is_dataset(uri):
        return "parquet"
    if _is_library(uri):
        return "stems"
    if not storage.isdir(uri) and str(uri).lower().endswith(RECIPE_SUFFIXES):
        return "onthefly"
    if storage.isdir(uri) and _track_folders(uri):
        return "stems"
    raise DataError(f"{where}: not training data: expected a generated dataset folder ({DATASET_FILE} + "
                    f"shard-*.parquet), a stem library (foreground/<label>/<song>.wav or <song>/<label>.wav) "
                    f"or a recipe YAML file (on-the-fly mixing)")


def resolve_data(uri: str, config: TrainConfig, targets: list[str]) -> DataSpec:
    """Inspect the data at ``uri`` on the driver and check it can train ``targets``.

    Raises DataError (missing, empty, unreadable) or ConfigError (a target that is not in
    the data, a split that leaves nothing to train on) naming the URI and the problem.
    """
    kind = detect_kind(uri, config.source)
    if kind == "parquet":
        spec = _resolve_parquet(uri, config)
    elif kind == "onthefly":
        spec = _resolve_onthefly(uri, config)
    else:
        spec = _resolve_stems(uri, config)
    for t in targets:
        if t not in spec.labels:
            raise ConfigError("targets", f"target '{t}' is not in the training data {storage.redact(uri)} "
                                         f"(its labels: {', '.join(spec.labels) or 'none'})")
    if kind == "stems":
        for t in targets:
            if not any(s in spec.library.get(t, {}) for s in spec.train_songs):
                raise DataError(f"{storage.redact(uri)}: no training song has a '{t}' stem "
                                f"(validation songs: {', '.join(spec.valid_songs)})")
    return spec


# ----------------------------------------------------------------------------- parquet

def _resolve_parquet(uri: str, config: TrainConfig) -> DataSpec:
    from ..generate import dataset as gds

    where = storage.redact(uri)
    info = gds.dataset_info(uri)
    shards = gds.read_manifest(uri)
    if not shards:
        raise DataError(f"{where}: the dataset is empty (no committed shard-*.parquet files)")
    seeds = sorted(gds.read_seeds(uri))
    if not seeds:
        raise DataError(f"{where}: the dataset is empty (its shards hold no mixtures)")
    n_valid = 0
    if config.valid_fraction > 0:
        n_valid = max(1, int(round(config.valid_fraction * len(seeds))))
    if len(seeds) - n_valid < 1:
        raise ConfigError("valid_fraction", f"{config.valid_fraction} leaves no training mixtures in {where} "
                                            f"({len(seeds)} mixtures)")
    labels = [str(x) for x in info.get("labels") or info.get("recipe", {}).get("labels", [])]
    return DataSpec(kind="parquet", uri=str(uri), sample_rate=int(info["sample_rate"]),
                    channels=int(info["channels"]), labels=labels, recipe_hash=info.get("recipe_hash"),
                    shards=[s["uri"] for s in shards], audio_format=str(info.get("audio_format", "float32")),
                    num_samples=int(info.get("num_samples") or 0),
                    train_seeds=seeds[: len(seeds) - n_valid], valid_seeds=seeds[len(seeds) - n_valid:],
                    recipe_json=json.dumps(info.get("recipe")), recipe_yaml=info.get("recipe_yaml"),
                    stems_dir=info.get("stems"))


TRAIN_COLUMNS = ("seed", "num_samples", "channels", "sample_rate", "mixture")
BLOCK_BYTES = 128 << 20


def parquet_row_groups(spec: DataSpec, target: str, block_bytes: int = BLOCK_BYTES) -> tuple[list[dict], int]:
    """Read tasks for the training rows and their total size.

    Returns ``([{"shard": uri, "row_groups": [i, ...]}], bytes)``. Row groups whose seeds are
    all validation seeds are skipped (only the Parquet footers are read); one task covers
    consecutive row groups of one shard up to about ``block_bytes`` of the columns training
    reads (few, large blocks: Ray Data's per-task cost dominates small ones).
    """
    import pyarrow.parquet as pq

    cut = min(spec.valid_seeds) if spec.valid_seeds else None
    wanted = set(TRAIN_COLUMNS) | {f"stem_{target}"}
    items: list[dict] = []
    total = 0
    for uri in spec.shards:
        fs, path = storage.resolve(uri)
        try:
            with fs.open_input_file(path) as f:
                md = pq.ParquetFile(f).metadata
        except Exception as exc:
            raise DataError(f"{storage.redact(uri)}: cannot read the shard ({storage.redact(str(exc))})") from exc
        names = md.schema.to_arrow_schema().names
        col = names.index("seed")
        groups: list[int] = []
        size = 0
        for rg in range(md.num_row_groups):
            meta = md.row_group(rg)
            stats = meta.column(col).statistics
            if cut is not None and stats is not None and stats.has_min_max and stats.min >= cut:
                continue
            nbytes = sum(meta.column(i).total_uncompressed_size for i in range(meta.num_columns)
                         if names[i] in wanted)
            if groups and size + nbytes > block_bytes:
                items.append({"shard": uri, "row_groups": groups})
                groups, size = [], 0
            groups.append(rg)
            size += nbytes
            total += nbytes
        if groups:
            items.append({"shard": uri, "row_groups": groups})
    return items, total


class _ReadRowGroups:
    """Ray Data ``map_batches`` function (pyarrow): the training rows of some row groups."""

    def __init__(self, columns: list[str], cut: Optional[int]):
        self.columns = columns
        self.cut = cut

    def __call__(self, batch):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        tables = []
        for shard, groups in zip(batch.column("shard").to_pylist(), batch.column("row_groups").to_pylist()):
            fs, path = storage.resolve(shard)
            with fs.open_input_file(path) as f:
                table = pq.ParquetFile(f).read_row_groups([int(i) for i in groups], columns=self.columns)
            if self.cut is not None:
                table = table.filter(pc.less(table["seed"], self.cut))
            tables.append(table)
        return pa.concat_tables(tables)


def parquet_datasets(spec: DataSpec, target: str, cache: Optional[bool] = None) -> dict:
    """Ray Data datasets for a parquet spec: ``{"train": ds}`` (training rows, needed columns only).

    The dataset is built from the row groups' addresses and read by a ``map_batches`` that
    reserves no CPU: reading only moves bytes (decoding and cutting happen on the train
    workers), so train workers may hold every CPU of the cluster without starving the reads.
    ``cache``: materialise the rows in the object store once instead of re-reading them
    every epoch (None: when they take at most a quarter of the cluster's object store).
    """
    import ray
    import ray.data

    columns = list(TRAIN_COLUMNS) + [f"stem_{target}"]
    items, total = parquet_row_groups(spec, target)
    if not items:
        raise DataError(f"{storage.redact(spec.uri)}: no training rows (every mixture is in the validation split)")
    cut = min(spec.valid_seeds) if spec.valid_seeds else None
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds.context.enable_progress_bars = False
    ds = ds.map_batches(_ReadRowGroups(columns, cut), batch_size=1, batch_format="pyarrow", num_cpus=0)
    if cache is None:
        store = float(ray.cluster_resources().get("object_store_memory", 0))
        cache = total <= 0.25 * store
    log.info("parquet training data: %d read tasks, %.0f MB of columns%s", len(items), total / 1e6,
             ", cached in the object store" if cache else "")
    if cache:
        ds = ds.materialize()
    return {"train": ds}


# ----------------------------------------------------------------------------- on the fly

def _resolve_onthefly(uri: str, config: TrainConfig) -> DataSpec:
    rmod = _recipe_module()
    stems_dir = config.stems
    recipe_hash_source = None
    if _is_dataset(uri):
        from ..generate import dataset as gds

        info = gds.dataset_info(uri)
        recipe = gds.dataset_recipe(uri)
        stems_dir = stems_dir or info.get("stems")
        recipe_hash_source = "dataset"
    else:
        recipe = rmod.load_recipe(str(uri))
    if not stems_dir:
        raise ConfigError("stems", f"on-the-fly mixing of the recipe {storage.redact(uri)} needs the stem library "
                                   f"(set stems: DIR)")
    library = rmod.index_library(stems_dir, recipe.labels)
    for warning in rmod.validate_recipe(recipe, library):
        log.warning("recipe: %s", warning)
    seconds = recipe.samples() / recipe.sample_rate
    if seconds <= 0:
        raise ConfigError("duration", f"the recipe {storage.redact(uri)} makes empty mixtures")
    log.debug("on-the-fly data from %s (%s)", storage.redact(uri), recipe_hash_source or "recipe file")
    return DataSpec(kind="onthefly", uri=str(uri), sample_rate=int(recipe.sample_rate), channels=int(recipe.channels),
                    labels=list(recipe.labels), recipe_hash=recipe.hash, recipe_json=recipe.to_json(),
                    recipe_yaml=recipe.to_yaml(), stems_dir=str(stems_dir), num_samples=int(recipe.samples()))


def mixtures_per_batch(config: TrainConfig) -> int:
    """Mixtures rendered per on-the-fly batch: ``ceil(batch_size / excerpts_per_mixture)``."""
    return -(-config.batch_size // config.excerpts_per_mixture)


def onthefly_seeds(config: TrainConfig, epoch: int, step: int, rank: int, world_size: int,
                   steps_per_epoch: int) -> list[int]:
    """Seeds of the mixtures of batch ``step`` of ``epoch`` on ``rank`` (see the module docstring)."""
    m = mixtures_per_batch(config)
    span = steps_per_epoch * world_size * m
    base = config.seed + config.valid_size + epoch * span + (step * world_size + rank) * m
    return [base + b for b in range(m)]


def onthefly_valid_seeds(config: TrainConfig) -> list[int]:
    return [config.seed + j for j in range(config.valid_size)]


# ----------------------------------------------------------------------------- stem library

def _track_folders(uri: str) -> dict:
    """MUSDB18-HQ-style ``DIR[/train]/<song>/<label>.wav``: ``{label: {song: uri}}`` (may be empty)."""
    root = uri
    if storage.isdir(storage.join(uri, "train")):
        root = storage.join(uri, "train")
    out: dict = {}
    for song_dir in storage.list_dirs(root):
        song = storage.basename(song_dir)
        for f in storage.list_files(song_dir, suffixes=AUDIO_SUFFIXES, recursive=False):
            label = os.path.splitext(storage.basename(f))[0]
            if label == "mixture":
                continue
            out.setdefault(label, {})[song] = f
    return out


def index_stems(uri: str) -> dict:
    """``{label: {song: file URI}}`` of a stem library (songs are file names without suffix)."""
    where = storage.redact(uri)
    if _is_library(uri):
        fg = storage.join(uri, "foreground")
        out: dict = {}
        for folder in storage.list_dirs(fg):
            label = storage.basename(folder)
            files = storage.list_files(folder, suffixes=AUDIO_SUFFIXES, recursive=False)
            if files:
                out[label] = {os.path.splitext(storage.basename(f))[0]: f for f in files}
    else:
        out = _track_folders(uri)
    if not out:
        raise DataError(f"{where}: the stem library is empty (no audio files under foreground/<label>/ "
                        f"or <song>/<label>.wav)")
    return out


def split_songs(songs: list[str], config: TrainConfig) -> tuple[list[str], list[str]]:
    """``(train, valid)`` song names: ``valid_songs`` when given, else a seeded
    ``valid_fraction`` of the songs (at least one when the fraction is > 0)."""
    songs = sorted(songs)
    if config.valid_songs:
        missing = [s for s in config.valid_songs if s not in songs]
        if missing:
            raise ConfigError("valid_songs", f"song '{missing[0]}' is not in the stem library "
                                             f"(songs: {', '.join(songs[:10])}{' ...' if len(songs) > 10 else ''})")
        valid = sorted(set(config.valid_songs))
    elif config.valid_fraction > 0:
        n = max(1, int(round(config.valid_fraction * len(songs))))
        rng = np.random.default_rng([config.seed, 7])
        valid = sorted(str(s) for s in rng.choice(songs, size=min(n, len(songs)), replace=False))
    else:
        valid = []
    train = [s for s in songs if s not in valid]
    if not train:
        raise ConfigError("valid_fraction" if not config.valid_songs else "valid_songs",
                          f"the validation split takes all {len(songs)} songs: nothing left to train on")
    return train, valid


def _resolve_stems(uri: str, config: TrainConfig) -> DataSpec:
    from ..audio import audio_info

    library = index_stems(uri)
    songs = sorted({s for files in library.values() for s in files})
    train, valid = split_songs(songs, config)
    first = next(iter(next(iter(library.values())).values()))
    try:
        info = audio_info(first)
    except Exception as exc:
        raise DataError(f"{storage.redact(first)}: cannot read the stem ({exc})") from exc
    if info.frames <= 0:
        raise DataError(f"{storage.redact(first)}: the stem holds no samples")
    return DataSpec(kind="stems", uri=str(uri), sample_rate=int(info.sample_rate), channels=int(info.channels),
                    labels=sorted(library), library=library, train_songs=train, valid_songs=valid)


# ----------------------------------------------------------------------------- audio helpers

def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """``(samples, c)`` -> ``(samples, channels)``: mono is repeated, stereo averaged to mono."""
    if audio.shape[1] == channels:
        return audio
    if audio.shape[1] == 1:
        return np.repeat(audio, channels, axis=1)
    if channels == 1:
        return audio.mean(axis=1, keepdims=True)
    return audio[:, :channels]


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad ``(samples, channels)`` to ``length`` samples."""
    if audio.shape[0] >= length:
        return audio[:length]
    return np.pad(audio, ((0, length - audio.shape[0]), (0, 0)))


def excerpt(audio: np.ndarray, start: int, length: int, sr_in: int, sr_out: int) -> np.ndarray:
    """``length`` samples at ``sr_out`` from ``audio`` (at ``sr_in``) starting at output sample ``start``."""
    if sr_in == sr_out:
        return fit_length(audio[start:start + length], length)
    from ..audio import resample

    a = int(math.floor(start * sr_in / sr_out))
    n = int(math.ceil(length * sr_in / sr_out)) + 16
    return fit_length(resample(np.ascontiguousarray(audio[a:a + n]), sr_in, sr_out), length)


class AudioReader:
    """Reads stems at one sample rate and channel count; keeps decoded files in an LRU cache.

    Arrays are float32 ``(samples, channels)``. With ``cache=False``, and for files larger
    than a quarter of ``max_bytes``, windows are read from the file (soundfile formats)
    instead of decoding and caching the whole file.
    """

    def __init__(self, sample_rate: int, channels: int, max_bytes: int = 1 << 30, cache: bool = True):
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.max_bytes = int(max_bytes)
        self.cache = bool(cache)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._info: dict[str, tuple[int, int]] = {}

    def _native(self, path: str) -> tuple[int, int]:
        if path not in self._info:
            from ..audio import audio_info

            info = audio_info(path)
            self._info[path] = (int(info.frames), int(info.sample_rate))
        return self._info[path]

    def length(self, path: str) -> int:
        """Samples of ``path`` at the reader's rate."""
        frames, sr = self._native(path)
        return int(frames * self.sample_rate // sr) if sr != self.sample_rate else frames

    def full(self, path: str) -> np.ndarray:
        """The whole file, ``(samples, channels)`` at the reader's rate (cached when it fits)."""
        cached = self._cache.get(path)
        if cached is not None:
            self._cache.move_to_end(path)
            return cached
        from ..audio import read_audio

        audio, _ = read_audio(path, sample_rate=self.sample_rate)
        audio = np.ascontiguousarray(to_channels(audio, self.channels), dtype=np.float32)
        if self.cache and audio.nbytes <= self.max_bytes // 4:
            self._cache[path] = audio
            self._bytes += audio.nbytes
            while self._bytes > self.max_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._bytes -= old.nbytes
        return audio

    def window(self, path: str, start: int, length: int) -> np.ndarray:
        """``length`` samples from ``start`` (reader's rate), zero-padded past the end."""
        frames, sr = self._native(path)
        nbytes = frames * self.channels * 4
        if path in self._cache or (self.cache and nbytes <= self.max_bytes // 4) or not path.lower().endswith(
                (".wav", ".flac", ".ogg", ".aif", ".aiff")):
            return fit_length(self.full(path)[start:start + length], length)
        import soundfile as sf

        a = int(math.floor(start * sr / self.sample_rate))
        n = int(math.ceil(length * sr / self.sample_rate)) + 16
        audio, _ = sf.read(path, start=a, stop=min(frames, a + n), dtype="float32", always_2d=True)
        audio = to_channels(audio, self.channels)
        if sr != self.sample_rate:
            from ..audio import resample

            audio = resample(audio, sr, self.sample_rate)
        return fit_length(np.ascontiguousarray(audio, dtype=np.float32), length)


def _local_copy_of_library(library: dict) -> dict:
    """Map every ``s3://`` file of ``{label: {song: uri}}`` to a local cached copy."""
    out: dict = {}
    cache = os.path.join(tempfile.gettempdir(), "sepcluster-train-stems")
    for label, files in library.items():
        out[label] = {}
        for song, uri in files.items():
            if not storage.is_remote(uri):
                out[label][song] = urlparse(uri).path if str(uri).startswith("file://") else uri
                continue
            digest = hashlib.sha256(storage.redact(uri).encode()).hexdigest()[:20]
            dest = os.path.join(cache, digest + os.path.splitext(uri)[1])
            if not os.path.exists(dest):
                os.makedirs(cache, exist_ok=True)
                tmp = f"{dest}.part-{os.getpid()}"
                with open(tmp, "wb") as f:
                    f.write(storage.read_bytes(uri))
                os.replace(tmp, dest)
            out[label][song] = dest
    return out


# ----------------------------------------------------------------------------- worker side

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
        self.files = _local_copy_of_library(self.spec.library)
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
        self._recipe = None
        self._library = None

    def _setup(self):
        if self._recipe is None:
            logging.getLogger("sox").setLevel(logging.ERROR)
            from ..generate import mixing
            from ..generate.recipe import index_library, parse_recipe

            self._recipe = parse_recipe(json.loads(self.spec.recipe_json), source_yaml=self.spec.recipe_yaml)
            self._library = index_library(self.spec.stems_dir, self._recipe.labels)
            mixing.install_library_cache(self._recipe, self._library, 256 << 20)

    def render(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Mixture and target ``(samples, channels)`` of mixture ``seed``, at the training rate."""
        from ..audio import resample
        from ..generate.mixing import make_mixture

        self._setup()
        res = make_mixture(self._recipe, self._library, int(seed))
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
        from ..generate.dataset import decode_audio_column

        return decode_audio_column(data, self.spec.audio_format, n, c)

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
        from ..generate.dataset import load_mixture

        m = load_mixture(self.spec.uri, int(seed))
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


__all__ = [
    "DataSpec", "resolve_data", "detect_kind", "parquet_datasets", "index_stems", "split_songs", "open_source",
    "Source", "StemLibrarySource", "OnTheFlySource", "ParquetSource", "AudioReader", "onthefly_seeds",
    "mixtures_per_batch",
    "onthefly_valid_seeds", "to_channels", "fit_length", "excerpt",
]
