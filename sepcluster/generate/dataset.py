"""Writing the mixture dataset: shards row group by row group, ``_dataset.json``, ``_manifest.json``.

The layout, its Parquet schema and the audio coding are :mod:`sepcluster.datasets.mixtures`
(readers use that module); this module is the generate job's writer side.
"""

from __future__ import annotations

import contextlib
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import storage
from ..datasets.mixtures import (DATASET_FILE, EVENT_PARAMS, FORMAT_VERSION, MANIFEST_FILE, audio_columns,
                                 dataset_info, encode_audio_column, schema)
from .mixing import MixResult
from .recipe import Recipe, parse_recipe


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
        self.schema = schema(recipe.labels).with_metadata(file_metadata(recipe, audio_format, first, last))
        self.rows = 0
        self._stack = contextlib.ExitStack()
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> "ShardWriter":
        tmp = self._stack.enter_context(storage.atomic_output(self.uri, suffix=".parquet"))
        audio = set(audio_columns(self.recipe.labels))
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


def write_manifest(uri: str, shards: list[dict], info: dict) -> None:
    doc = {"complete": True, "recipe_hash": info["recipe_hash"], "base_seed": info["base_seed"],
           "num_mixtures": info["num_mixtures"],
           "shards": [{k: s[k] for k in ("name", "first_seed", "last_seed", "num_mixtures")} for s in shards]}
    storage.write_text(storage.join(uri, MANIFEST_FILE), json.dumps(doc, indent=2) + "\n")
