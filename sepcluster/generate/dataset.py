"""The generated dataset: one folder (local or ``s3://``) of Parquet shards, addressed by seed.

Layout of ``OUT``::

    OUT/_dataset.json                       written first: recipe, hash, seeds, shard size, format
    OUT/shard-<first>-<last>.parquet        one per contiguous seed range (10-digit, zero padded)
    OUT/_manifest.json                      written last, when every seed is committed

Every file is written atomically (:mod:`sepcluster.storage`): a shard is either absent or whole,
and a shard that exists is committed. Mixture ``i`` of the dataset has seed
``base_seed + i``; each seed is in exactly one shard.

Parquet schema (one row per mixture, one row group per mixture, rows in seed order):

=============================  ===========  ====================================================
column                         type         meaning
=============================  ===========  ====================================================
``seed``                       int64        Scaper random seed of the mixture
``coherent``                   bool         coherent (one song, aligned) or incoherent mixing
``sample_rate``                int32        Hz
``channels``                   int32        audio channels
``num_samples``                int64        samples per channel of every audio column
``jams``                       string       Scaper's JAMS annotation (JSON text)
``mixture``                    binary       mixture audio, see *Audio* below
``stem_<label>``               binary       audio of each label's stem (they sum to the mixture)
``<label>_source_file``        string       ``<label>/<song file>`` inside ``foreground/``
``<label>_source_time``        float64      seconds into the source file
``<label>_event_time``         float64      seconds into the mixture
``<label>_event_duration``     float64      seconds (before time stretching)
``<label>_snr``                float64      dB relative to ``ref_db``
``<label>_pitch_shift``        float64      semitones; null when the recipe has none
``<label>_time_stretch``       float64      factor; null when the recipe has none
=============================  ===========  ====================================================

Audio: ``float32`` (default) is the raw little-endian float32 bytes of the ``(num_samples,
channels)`` array in row-major (C) order, i.e. ``np.frombuffer(b, "<f4").reshape(num_samples,
channels)``: exactly the rendered audio rounded to float32. ``flac16`` / ``flac24`` are a FLAC
file (:func:`sepcluster.audio.encode_audio`) of the same array at 16 or 24 bits (lossless for
that bit depth; samples are clipped to [-1, 1]).

File metadata (schema key/values, every shard): ``sepcluster.recipe`` (canonical JSON),
``sepcluster.recipe_yaml``, ``sepcluster.recipe_hash`` (sha256 of the canonical JSON),
``sepcluster.audio_format``, ``sepcluster.labels`` (JSON list), ``sepcluster.sample_rate``,
``sepcluster.channels``, ``sepcluster.first_seed``, ``sepcluster.last_seed``,
``sepcluster.format_version``.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..errors import ConfigError, DataError
from .mixing import EVENT_PARAMS, MixResult
from .recipe import Recipe, parse_recipe

FORMAT_VERSION = 1
AUDIO_FORMATS = ("float32", "flac16", "flac24")
DATASET_FILE = "_dataset.json"
MANIFEST_FILE = "_manifest.json"
MAX_SEED = 2 ** 32 - 1  # numpy RandomState seeds
_SHARD_RE = re.compile(r"^shard-(\d{10})-(\d{10})\.parquet$")
_FLOAT_PARAMS = ("source_time", "event_time", "event_duration", "snr", "pitch_shift", "time_stretch")


@dataclass
class Mixture:
    """One mixture read back from a dataset.

    mixture: float32 ``(samples, channels)``; stems: ``{label: float32 (samples, channels)}``
    in recipe label order; jams: JAMS JSON text; events: ``{label: {param: value}}``.
    """

    mixture: np.ndarray
    stems: dict[str, np.ndarray]
    jams: str
    coherent: bool
    sample_rate: int
    seed: int = -1
    events: dict[str, dict] = field(default_factory=dict)


def shard_name(first: int, last: int) -> str:
    """File name of the shard holding seeds ``first..last`` (inclusive)."""
    return f"shard-{int(first):010d}-{int(last):010d}.parquet"


def parse_shard_name(name: str) -> tuple[int, int] | None:
    """``(first, last)`` from a shard file name, or None for other files."""
    m = _SHARD_RE.match(storage.basename(name))
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_audio_format(audio_format: str) -> str:
    if audio_format not in AUDIO_FORMATS:
        raise ConfigError("audio_format", f"must be one of {', '.join(AUDIO_FORMATS)}, got {audio_format!r}")
    return audio_format


# --------------------------------------------------------------------------- audio coding

def encode_audio_column(audio: np.ndarray, sample_rate: int, audio_format: str) -> bytes | memoryview:
    """Bytes of a ``(samples, channels)`` array in the dataset's sample format.

    float32: a flat byte view of the (little-endian, C-ordered) array itself, not a copy.
    """
    if audio_format == "float32":
        return memoryview(np.ascontiguousarray(audio, dtype="<f4")).cast("B")
    from ..audio import encode_audio

    return encode_audio(np.asarray(audio, dtype=np.float32), sample_rate, format="flac",
                        bits=16 if audio_format == "flac16" else 24)


def decode_audio_column(data: bytes, audio_format: str, num_samples: int, channels: int) -> np.ndarray:
    """float32 ``(num_samples, channels)`` from the bytes of one audio cell."""
    if audio_format == "float32":
        arr = np.frombuffer(data, dtype="<f4")
        if arr.size != num_samples * channels:
            raise DataError(f"audio cell holds {arr.size} values, expected {num_samples} x {channels}")
        return arr.reshape(num_samples, channels).astype(np.float32, copy=True)
    from ..audio import decode_audio

    audio, _ = decode_audio(data)
    return np.ascontiguousarray(audio, dtype=np.float32)


def roundtrip(audio: np.ndarray, sample_rate: int, audio_format: str) -> np.ndarray:
    """What a dataset stores for ``audio``, decoded (for comparisons with regenerated audio)."""
    a = np.asarray(audio, dtype=np.float32)
    return decode_audio_column(encode_audio_column(a, sample_rate, audio_format), audio_format,
                               a.shape[0], a.shape[1])


# --------------------------------------------------------------------------- schema / rows

def schema(recipe: Recipe) -> pa.Schema:
    """The Parquet schema of a dataset made with ``recipe`` (see the module docstring)."""
    fields = [
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("coherent", pa.bool_(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("channels", pa.int32(), nullable=False),
        pa.field("num_samples", pa.int64(), nullable=False),
        pa.field("jams", pa.string(), nullable=False),
        pa.field("mixture", pa.binary(), nullable=False),
    ]
    fields += [pa.field(f"stem_{label}", pa.binary(), nullable=False) for label in recipe.labels]
    for label in recipe.labels:
        fields.append(pa.field(f"{label}_source_file", pa.string(), nullable=False))
        for p in _FLOAT_PARAMS:
            fields.append(pa.field(f"{label}_{p}", pa.float64(), nullable=p in ("pitch_shift", "time_stretch")))
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError("labels", f"labels give clashing dataset columns: {', '.join(dup)}")
    return pa.schema(fields)


def audio_columns(recipe: Recipe) -> list[str]:
    return ["mixture"] + [f"stem_{label}" for label in recipe.labels]


def file_metadata(recipe: Recipe, audio_format: str, first: int, last: int) -> dict[str, str]:
    return {
        "sepcluster.format_version": str(FORMAT_VERSION),
        "sepcluster.recipe": recipe.to_json(),
        "sepcluster.recipe_yaml": recipe.to_yaml(),
        "sepcluster.recipe_hash": recipe.hash,
        "sepcluster.audio_format": audio_format,
        "sepcluster.labels": json.dumps(list(recipe.labels)),
        "sepcluster.sample_rate": str(recipe.sample_rate),
        "sepcluster.channels": str(recipe.channels),
        "sepcluster.first_seed": str(int(first)),
        "sepcluster.last_seed": str(int(last)),
    }


def mixture_record(result: MixResult, recipe: Recipe, audio_format: str) -> dict:
    """One dataset row (column -> value) for a rendered mixture."""
    n, c = result.mixture.shape
    row = {"seed": int(result.seed), "coherent": bool(result.coherent), "sample_rate": int(recipe.sample_rate),
           "channels": int(c), "num_samples": int(n), "jams": result.jams,
           "mixture": encode_audio_column(result.mixture, recipe.sample_rate, audio_format)}
    for label in recipe.labels:
        row[f"stem_{label}"] = encode_audio_column(result.stems[label], recipe.sample_rate, audio_format)
    for label in recipe.labels:
        ev = result.events[label]
        for p in EVENT_PARAMS:
            row[f"{label}_{p}"] = ev[p]
    return row


class ShardWriter:
    """Write one shard row group by row group; the file appears (atomically) on a clean exit.

    Use as a context manager: leaving it with an exception writes nothing.
    """

    def __init__(self, uri: str, recipe: Recipe, audio_format: str, first: int, last: int):
        self.uri = uri
        self.recipe = recipe
        self.audio_format = audio_format
        self.schema = schema(recipe).with_metadata(file_metadata(recipe, audio_format, first, last))
        self.rows = 0
        self._stack = contextlib.ExitStack()
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> "ShardWriter":
        tmp = self._stack.enter_context(storage.atomic_output(self.uri, suffix=".parquet"))
        audio = set(audio_columns(self.recipe))
        others = [f.name for f in self.schema if f.name not in audio]
        # Audio is stored uncompressed: zstd saves ~16% of float32 audio but costs about a
        # third of the CPU time of rendering a mixture; FLAC cells are compressed already.
        compression = {name: ("none" if name in audio else "zstd") for name in self.schema.names}
        self._writer = pq.ParquetWriter(tmp, self.schema, compression=compression, use_dictionary=others,
                                        write_statistics=["seed"])
        return self

    def write(self, result: MixResult) -> None:
        row = mixture_record(result, self.recipe, self.audio_format)
        arrays = []
        for f in self.schema:
            value = row[f.name]
            if f.type == pa.binary():
                # one cell without copying the audio bytes again
                data = pa.py_buffer(value)
                offsets = pa.py_buffer(np.array([0, len(value)], dtype=np.int32))
                arrays.append(pa.Array.from_buffers(pa.binary(), 1, [None, offsets, data]))
            else:
                arrays.append(pa.array([value], type=f.type))
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema), row_group_size=1)
        self.rows += 1

    def __exit__(self, exc_type, exc, tb):
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            # on an exception, atomic_output removes the temporary file and writes nothing
            return self._stack.__exit__(exc_type, exc, tb)


# --------------------------------------------------------------------------- dataset files

def dataset_info(uri: str) -> dict:
    """The ``_dataset.json`` of a dataset folder; DataError when it is missing or unreadable."""
    path = storage.join(uri, DATASET_FILE)
    try:
        text = storage.read_text(path)
    except FileNotFoundError as exc:
        raise DataError(f"{storage.redact(uri)}: not a sepcluster dataset ({DATASET_FILE} is missing)") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{storage.redact(path)}: not valid JSON ({exc})") from exc


def write_dataset_info(uri: str, info: dict) -> None:
    storage.write_text(storage.join(uri, DATASET_FILE), json.dumps(info, indent=2, sort_keys=True) + "\n")


def new_dataset_info(recipe: Recipe, num_mixtures: int, base_seed: int, shard_size: int, audio_format: str,
                     stems_dir: str) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "generator": "sepcluster.generate",
        "recipe": recipe.to_dict(),
        "recipe_yaml": recipe.to_yaml(),
        "recipe_hash": recipe.hash,
        "num_mixtures": int(num_mixtures),
        "base_seed": int(base_seed),
        "shard_size": int(shard_size),
        "audio_format": audio_format,
        "labels": list(recipe.labels),
        "sample_rate": recipe.sample_rate,
        "channels": recipe.channels,
        "num_samples": recipe.samples(),
        "stems": storage.redact(str(stems_dir)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def dataset_recipe(uri: str) -> Recipe:
    """The :class:`Recipe` a dataset was generated with (from ``_dataset.json``)."""
    info = dataset_info(uri)
    return parse_recipe(info["recipe"], source_yaml=info.get("recipe_yaml"))


def read_manifest(uri: str) -> list[dict]:
    """The committed shards of a dataset, sorted by first seed.

    Each item: ``{"uri", "name", "first_seed", "last_seed", "num_mixtures"}``. A shard is
    committed when its file exists (files are written atomically). Shards outside the
    dataset's seed range are ignored.
    """
    info = dataset_info(uri)
    lo = int(info["base_seed"])
    hi = lo + int(info["num_mixtures"]) - 1
    out = []
    try:
        files = storage.list_files(uri, suffixes=(".parquet",), recursive=False)
    except FileNotFoundError:
        files = []
    for f in files:
        rng = parse_shard_name(f)
        if rng is None or rng[0] < lo or rng[1] > hi or rng[0] > rng[1]:
            continue
        out.append({"uri": f, "name": storage.basename(f), "first_seed": rng[0], "last_seed": rng[1],
                    "num_mixtures": rng[1] - rng[0] + 1})
    out.sort(key=lambda s: (s["first_seed"], s["last_seed"]))
    return out


def committed_seeds(uri: str) -> set[int]:
    """Seeds held by committed shards."""
    seeds: set[int] = set()
    for shard in read_manifest(uri):
        seeds.update(range(shard["first_seed"], shard["last_seed"] + 1))
    return seeds


def write_manifest(uri: str, shards: list[dict], info: dict) -> None:
    doc = {"complete": True, "recipe_hash": info["recipe_hash"], "base_seed": info["base_seed"],
           "num_mixtures": info["num_mixtures"],
           "shards": [{k: s[k] for k in ("name", "first_seed", "last_seed", "num_mixtures")} for s in shards]}
    storage.write_text(storage.join(uri, MANIFEST_FILE), json.dumps(doc, indent=2) + "\n")


# --------------------------------------------------------------------------- reading

def _open_parquet(uri: str) -> pq.ParquetFile:
    fs, path = storage.resolve(uri)
    try:
        return pq.ParquetFile(fs.open_input_file(path))
    except FileNotFoundError as exc:
        raise DataError(f"{storage.redact(uri)}: shard file is missing") from exc
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{storage.redact(uri)}: cannot read the shard ({storage.redact(str(exc))})") from exc


def _row_to_mixture(row: dict, labels: list[str], audio_format: str) -> Mixture:
    n, c = int(row["num_samples"]), int(row["channels"])
    mix = decode_audio_column(row["mixture"], audio_format, n, c)
    stems = {label: decode_audio_column(row[f"stem_{label}"], audio_format, n, c) for label in labels}
    events = {label: {p: row.get(f"{label}_{p}") for p in EVENT_PARAMS} for label in labels}
    return Mixture(mixture=mix, stems=stems, jams=row["jams"], coherent=bool(row["coherent"]),
                   sample_rate=int(row["sample_rate"]), seed=int(row["seed"]), events=events)


def _file_format(pf: pq.ParquetFile) -> tuple[list[str], str]:
    meta = {k.decode(): v.decode() for k, v in (pf.schema_arrow.metadata or {}).items()}
    try:
        return json.loads(meta["sepcluster.labels"]), meta["sepcluster.audio_format"]
    except KeyError as exc:
        raise DataError(f"shard has no sepcluster metadata ({exc})") from exc


def load_mixture(uri: str, seed: int) -> Mixture:
    """Read mixture ``seed`` from the dataset at ``uri`` (local or ``s3://``).

    Returns :class:`Mixture` (float32 ``(samples, channels)`` arrays). Raises DataError naming
    the dataset and seed when no committed shard holds it.
    """
    seed = int(seed)
    for shard in read_manifest(uri):
        if shard["first_seed"] <= seed <= shard["last_seed"]:
            pf = _open_parquet(shard["uri"])
            labels, fmt = _file_format(pf)
            md = pf.metadata
            seed_col = pf.schema_arrow.get_field_index("seed")
            for rg in range(md.num_row_groups):
                stats = md.row_group(rg).column(seed_col).statistics
                if stats is not None and stats.has_min_max and not (stats.min <= seed <= stats.max):
                    continue
                table = pf.read_row_group(rg)
                for row in table.to_pylist():
                    if int(row["seed"]) == seed:
                        return _row_to_mixture(row, labels, fmt)
            raise DataError(f"{storage.redact(shard['uri'])}: seed {seed} is missing from its shard")
    info = dataset_info(uri)
    lo, n = int(info["base_seed"]), int(info["num_mixtures"])
    if not lo <= seed < lo + n:
        raise DataError(f"{storage.redact(uri)}: seed {seed} is outside the dataset (seeds {lo}..{lo + n - 1})")
    raise DataError(f"{storage.redact(uri)}: seed {seed} is not generated yet (rerun `sepcluster generate` "
                    f"with the same arguments to finish the dataset)")


def iter_mixtures(uri: str) -> Iterator[Mixture]:
    """Every committed mixture of the dataset at ``uri``, in seed order (one row group at a time)."""
    for shard in read_manifest(uri):
        pf = _open_parquet(shard["uri"])
        labels, fmt = _file_format(pf)
        for rg in range(pf.metadata.num_row_groups):
            for row in pf.read_row_group(rg).to_pylist():
                yield _row_to_mixture(row, labels, fmt)


def read_seeds(uri: str) -> list[int]:
    """The seed column of every committed shard (in seed order), without reading audio."""
    seeds: list[int] = []
    for shard in read_manifest(uri):
        pf = _open_parquet(shard["uri"])
        seeds.extend(int(s) for s in pf.read(columns=["seed"]).column("seed").to_pylist())
    return seeds
