"""The mixture dataset layout (written by ``sepcluster generate``): one folder (local or ``s3://``) of Parquet shards, addressed by seed.

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

This module reads the layout (and defines its schema and audio coding); the generate job
writes it (:mod:`sepcluster.generate.dataset`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..errors import ConfigError, DataError

FORMAT_VERSION = 1
AUDIO_FORMATS = ("float32", "flac16", "flac24")
DATASET_FILE = "_dataset.json"
MANIFEST_FILE = "_manifest.json"
# per-label event parameters stored in the columns ``<label>_<param>``
EVENT_PARAMS = ("source_file", "source_time", "event_time", "event_duration", "snr", "pitch_shift", "time_stretch")
FLOAT_PARAMS = EVENT_PARAMS[1:]
_SHARD_RE = re.compile(r"^shard-(\d{10})-(\d{10})\.parquet$")


def is_mixture_dataset(uri: str) -> bool:
    """Whether ``uri`` is a mixture dataset folder (it holds ``_dataset.json``)."""
    return storage.isdir(uri) and storage.exists(storage.join(uri, DATASET_FILE))


def track_name(seed: int) -> str:
    """The track name of mixture ``seed`` when a dataset is read as a catalog of tracks."""
    return f"seed-{int(seed):010d}"


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


# --------------------------------------------------------------------------- schema

def schema(labels) -> pa.Schema:
    """The Parquet schema of a dataset of the stem ``labels`` (see the module docstring)."""
    fields = [
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("coherent", pa.bool_(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("channels", pa.int32(), nullable=False),
        pa.field("num_samples", pa.int64(), nullable=False),
        pa.field("jams", pa.string(), nullable=False),
        pa.field("mixture", pa.binary(), nullable=False),
    ]
    fields += [pa.field(f"stem_{label}", pa.binary(), nullable=False) for label in labels]
    for label in labels:
        fields.append(pa.field(f"{label}_source_file", pa.string(), nullable=False))
        for p in FLOAT_PARAMS:
            fields.append(pa.field(f"{label}_{p}", pa.float64(), nullable=p in ("pitch_shift", "time_stretch")))
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError("labels", f"labels give clashing dataset columns: {', '.join(dup)}")
    return pa.schema(fields)


def audio_columns(labels) -> list[str]:
    """The binary audio columns: the mixture, then one per label."""
    return ["mixture"] + [f"stem_{label}" for label in labels]


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
