"""Training data on the driver: what the data URI holds, checked before any worker starts.

Three kinds of training data (the workers read them through :mod:`sepcluster.train.sources`):

1. ``parquet``: a mixture dataset written by ``sepcluster generate``
   (:mod:`sepcluster.datasets.mixtures`). Training rows are read with Ray Data
   (:func:`parquet_datasets`) and split across workers; the last ``valid_fraction`` of the seeds
   are the validation set.
2. ``onthefly``: a recipe YAML (or a dataset's recipe) and its stem library; the workers render
   Scaper mixtures in memory in disjoint seed streams (:func:`onthefly_seeds`).
3. ``stems``: a stem library (:mod:`sepcluster.datasets.library`, either layout), mixed
   Open-Unmix style with a seeded split of validation songs (:func:`split_songs`).

:func:`resolve_data` inspects the URI and returns a :class:`DataSpec` (picklable; it travels to
the workers) or raises ConfigError / DataError naming the URI and the problem.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from .. import storage
from ..datasets import mixtures
from ..datasets.library import index_library, index_stems, is_library, track_folder_stems
from ..errors import ConfigError, DataError
from .config import TrainConfig

log = logging.getLogger(__name__)

RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
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


def detect_kind(uri: str, source: str = "auto") -> str:
    """The data source kind at ``uri`` (``source`` forces it); DataError when unknown."""
    where = storage.redact(uri)
    if not storage.exists(uri):
        raise DataError(f"{where}: training data not found (no such file or folder)")
    if source != "auto":
        return source
    if mixtures.is_mixture_dataset(uri):
        return "parquet"
    if is_library(uri):
        return "stems"
    if not storage.isdir(uri) and str(uri).lower().endswith(RECIPE_SUFFIXES):
        return "onthefly"
    if storage.isdir(uri) and track_folder_stems(uri):
        return "stems"
    raise DataError(f"{where}: not training data: expected a generated dataset folder ({mixtures.DATASET_FILE} + "
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
    where = storage.redact(uri)
    info = mixtures.dataset_info(uri)
    shards = mixtures.read_manifest(uri)
    if not shards:
        raise DataError(f"{where}: the dataset is empty (no committed shard-*.parquet files)")
    seeds = sorted(mixtures.read_seeds(uri))
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


def _stem_columns(target) -> list[str]:
    """``stem_<label>`` columns of one target name or a list of stem labels."""
    labels = [target] if isinstance(target, str) else list(target)
    return [f"stem_{lab}" for lab in labels]


def needed_stems(spec: DataSpec, config: TrainConfig, target: Optional[str], outputs: Optional[list]) -> list[str]:
    """The stem labels a worker reads: every label of the data when a generated dataset or on-the-fly
    mixtures are augmented (the mixture is rebuilt from its stems), else the outputs of a multi-source
    model or the one target."""
    from .augment import wants_augment

    if wants_augment(config, spec.kind) and spec.kind != "stems":
        return list(spec.labels)
    return list(outputs) if outputs else [target]


def parquet_row_groups(spec: DataSpec, target, block_bytes: int = BLOCK_BYTES) -> tuple[list[dict], int]:
    """Read tasks for the training rows and their total size (``target``: a target name, or the list
    of stem labels whose columns are read).

    Returns ``([{"shard": uri, "row_groups": [i, ...]}], bytes)``. Row groups whose seeds are
    all validation seeds are skipped (only the Parquet footers are read); one task covers
    consecutive row groups of one shard up to about ``block_bytes`` of the columns training
    reads (few, large blocks: Ray Data's per-task cost dominates small ones).
    """
    import pyarrow.parquet as pq

    cut = min(spec.valid_seeds) if spec.valid_seeds else None
    wanted = set(TRAIN_COLUMNS) | set(_stem_columns(target))
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


def parquet_datasets(spec: DataSpec, target, cache: Optional[bool] = None) -> dict:
    """Ray Data datasets for a parquet spec: ``{"train": ds}`` (training rows, needed columns only:
    ``target`` is a target name or the list of stem labels to read, see :func:`needed_stems`).

    The dataset is built from the row groups' addresses and read by a ``map_batches`` that
    reserves no CPU: reading only moves bytes (decoding and cutting happen on the train
    workers), so train workers may hold every CPU of the cluster without starving the reads.
    ``cache``: materialise the rows in the object store once instead of re-reading them
    every epoch (None: when they take at most a quarter of the cluster's object store).
    """
    import ray
    import ray.data

    columns = list(TRAIN_COLUMNS) + _stem_columns(target)
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
    from ..generate import dataset_recipe, load_recipe, validate_recipe

    stems_dir = config.stems
    recipe_hash_source = None
    if mixtures.is_mixture_dataset(uri):
        info = mixtures.dataset_info(uri)
        recipe = dataset_recipe(uri)
        stems_dir = stems_dir or info.get("stems")
        recipe_hash_source = "dataset"
    else:
        recipe = load_recipe(str(uri))
    if not stems_dir:
        raise ConfigError("stems", f"on-the-fly mixing of the recipe {storage.redact(uri)} needs the stem library "
                                   f"(set stems: DIR)")
    library = index_library(stems_dir, recipe.labels)
    for warning in validate_recipe(recipe, library):
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


__all__ = [
    "DataSpec", "resolve_data", "detect_kind", "parquet_datasets", "parquet_row_groups", "split_songs", "needed_stems",
    "mixtures_per_batch", "onthefly_seeds", "onthefly_valid_seeds", "DEFAULT_ONTHEFLY_SAMPLES",
]
