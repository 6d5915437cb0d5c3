"""Manifests: a Parquet or CSV table listing audio files, one track per row.

Columns: the URI in ``uri`` (or ``path``, ``source``, ``source_uri``, ``file``; case-insensitive),
optionally ``name`` (or ``track``) and ``stream`` (an audio stream of a multi-stream file).
Relative paths are relative to the manifest's folder. Every CSV field is text (a name like
``007`` stays ``007``). Rows that cannot be used (empty URI, a stream that is not an integer,
an unsupported format) are kept as tracks with an ``error``, so they become error rows.
"""

from __future__ import annotations

import csv
import io
import os

from .. import storage
from ..audio import AUDIO_SUFFIXES
from ..errors import DataError
from .folders import TrackFiles, is_audio, is_stem_mp4, lower_name, stem_mp4_streams, track_name_of

MANIFEST_SUFFIXES = (".parquet", ".csv")
URI_COLUMNS = ("uri", "path", "source", "source_uri", "file")


def is_manifest(uri: str) -> bool:
    return lower_name(uri).endswith(MANIFEST_SUFFIXES)


def _read_table(uri: str) -> tuple:
    where = storage.redact(uri)
    try:
        if lower_name(uri).endswith(".parquet"):
            table = storage.read_parquet(uri)
            return table.column_names, table.to_pylist()
        reader = csv.DictReader(io.StringIO(storage.read_text(uri)))
        rows = [{k: (v if v != "" else None) for k, v in r.items()} for r in reader]
        return list(reader.fieldnames or []), rows
    except FileNotFoundError as exc:
        raise DataError(f"{where}: manifest not found") from exc
    except Exception as exc:  # noqa: BLE001 - any parse problem is a bad manifest
        raise DataError(f"{where}: cannot read the manifest ({type(exc).__name__}: {exc})") from exc


def _row_track(uri: str, i: int, row: dict, uri_col: str, name_col, stream_col) -> TrackFiles:
    where = storage.redact(uri)
    value = row.get(uri_col)
    if value is None or not str(value).strip():
        return TrackFiles(name=f"row{i}", mixture=(f"{uri}#row{i}", 0), error=f"{where}: row {i} has an empty '{uri_col}'")
    src = str(value).strip()
    if not (storage.is_remote(src) or src.startswith("file://") or os.path.isabs(src)):
        src = storage.join(storage.parent(uri), src)
    stream = 0
    if stream_col and row.get(stream_col) not in (None, ""):
        try:
            stream = int(row[stream_col])
        except (TypeError, ValueError):
            return TrackFiles(name=track_name_of(src), mixture=(src, 0),
                              error=f"{where}: row {i}: stream {row[stream_col]!r} is not an integer")
    name = str(row[name_col]).strip() if name_col and row.get(name_col) not in (None, "") else track_name_of(src)
    if not is_audio(src):
        return TrackFiles(name=name, mixture=(src, stream),
                          error=f"{storage.redact(src)}: unsupported audio format '{os.path.splitext(src)[1] or '(none)'}' "
                                f"(supported: {', '.join(AUDIO_SUFFIXES)})")
    refs = stem_mp4_streams(src) if is_stem_mp4(src) and stream == 0 else {}
    return TrackFiles(name=name, mixture=(src, stream), stems=refs)


def read_manifest(uri: str) -> list:
    """The tracks a manifest lists, in row order, as :class:`~sepcluster.datasets.folders.TrackFiles`
    (``mixture`` is the listed file and stream). DataError names the manifest when it is missing,
    unreadable or has no URI column."""
    columns, rows = _read_table(uri)
    cols = {c.lower(): c for c in columns}
    uri_col = next((cols[c] for c in URI_COLUMNS if c in cols), None)
    if uri_col is None:
        raise DataError(f"{storage.redact(uri)}: the manifest needs a column named one of {', '.join(URI_COLUMNS)} "
                        f"(has {', '.join(columns) or 'none'})")
    name_col = cols.get("name") or cols.get("track")
    stream_col = cols.get("stream")
    return [_row_track(uri, i, row, uri_col, name_col, stream_col) for i, row in enumerate(rows)]
