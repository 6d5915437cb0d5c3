"""The separation catalog: one Parquet row per (track, output stem).

``<out>/catalog.parquet`` is the catalog of everything separated into ``<out>``. While a run
is going, each finished track (done or failed) is recorded at once in its own small file
``<out>/.sepcluster/catalog-parts/<sha1 of the source>.parquet`` (written atomically by the
worker right after the stems), so a run that is killed keeps what it finished; the next run
(or the end of this one) merges the parts into ``catalog.parquet`` (a part replaces every
earlier row of its source) and deletes them.

A track is *done* for a run when the catalog holds a ``done`` row for every output the run
asks for (targets, plus ``accompaniment`` with the residual) made by the same separator
(``bundle_id``) with the same output settings (``settings_id``); everything else is (re)done. Columns: see :data:`SCHEMA`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from typing import Iterable, Optional

import pyarrow as pa

from sepcluster import storage

CATALOG_FILE = "catalog.parquet"
STATE_DIR = ".sepcluster"
PARTS_DIR = f"{STATE_DIR}/catalog-parts"
DONE = "done"
ERROR = "error"

SCHEMA = pa.schema([
    pa.field("track", pa.string()),          # output folder name under <out>
    pa.field("target", pa.string()),         # output stem name
    pa.field("status", pa.string()),         # "done" | "error"
    pa.field("error", pa.string()),          # reason when status == "error"
    pa.field("source_uri", pa.string()),     # the mixture that was separated
    pa.field("stream", pa.int32()),          # audio stream of the source (0 = first / mixture)
    pa.field("subset", pa.string()),         # MUSDB subset when listed from a MUSDB root
    pa.field("output_uri", pa.string()),     # <out>/<track>/<target>.<ext> (null on error)
    pa.field("duration", pa.float64()),      # seconds of audio in the source
    pa.field("sample_rate", pa.int32()),     # of the source (and of the stems)
    pa.field("channels", pa.int32()),        # of the source
    pa.field("output_channels", pa.int32()),  # of the stems (1 after --downmix or for mono)
    pa.field("downmixed", pa.bool_()),
    pa.field("model_sample_rate", pa.int32()),
    pa.field("bundle_id", pa.string()),      # separator bundle id, or oracle:irm
    pa.field("format", pa.string()),
    pa.field("bits", pa.int32()),
    pa.field("seconds", pa.float64()),       # wall seconds spent on the track
    pa.field("finished_at", pa.timestamp("us", tz="UTC")),
    pa.field("worker_max_rss_mb", pa.float64()),  # peak RSS of the worker process so far
    pa.field("model_kind", pa.string()),     # bundle | umx | demucs | bs_roformer | mel_band_roformer | oracle
    pa.field("weights_sha256", pa.string()),  # SHA-256 of the model's weights files (null for an oracle)
    pa.field("settings_id", pa.string()),    # hash of the settings that change the output (format, niter, ...)
    pa.field("peak", pa.float64()),          # the stem's peak |sample| when above 1 (null otherwise)
    pa.field("clipping", pa.string()),      # then what --clip did: clamped to +-1 | rescaled | kept (float format)
    pa.field("worker", pa.string()),         # the process that separated it: <host>:<pid>
    pa.field("device", pa.string()),         # cpu | cuda (GPU <the node's GPU id(s) Ray gave that process>)
])
COLUMNS = SCHEMA.names


def catalog_uri(out: str) -> str:
    return storage.join(out, CATALOG_FILE)


def parts_uri(out: str) -> str:
    return storage.join(out, *PARTS_DIR.split("/"))


def part_uri(out: str, key: str) -> str:
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()
    return storage.join(parts_uri(out), f"{digest}.parquet")


def now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def source_key_of(row: dict) -> str:
    stream = int(row.get("stream") or 0)
    return f"{row['source_uri']}#{stream}" if stream else str(row["source_uri"])


def to_table(rows: Iterable[dict]) -> pa.Table:
    """Rows (dicts with the :data:`SCHEMA` columns; missing ones are null) -> a table."""
    rows = list(rows)
    cols = {}
    for f in SCHEMA:
        values = []
        for r in rows:
            v = r.get(f.name)
            if v is not None and f.name == "error" and v == "":
                v = None
            values.append(v)
        cols[f.name] = pa.array(values, type=f.type)
    return pa.table(cols, schema=SCHEMA)


def _conform(table: pa.Table) -> pa.Table:
    """Cast a table read back to :data:`SCHEMA` (missing columns null, extra dropped)."""
    n = table.num_rows
    cols = {}
    for f in SCHEMA:
        if f.name in table.column_names:
            col = table.column(f.name)
            cols[f.name] = col.cast(f.type) if col.type != f.type else col
        else:
            cols[f.name] = pa.nulls(n, type=f.type)
    return pa.table(cols, schema=SCHEMA)


ATTEMPTS_DIR = f"{STATE_DIR}/attempts"
MAX_ATTEMPTS = 3  # a track whose worker dies this many times is recorded as an error


def attempt_uri(out: str, key: str) -> str:
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()
    return storage.join(out, *ATTEMPTS_DIR.split("/"), digest)


def start_attempt(out: str, key: str) -> int:
    """Count one more attempt at separating ``key`` (a small file under ``<out>/.sepcluster/attempts``);
    returns the attempt number (1 the first time). A worker that dies leaves its count behind, so the
    retry Ray makes after restarting the actor sees it."""
    uri = attempt_uri(out, key)
    try:
        attempt = int(storage.read_text(uri).strip() or 0) + 1
    except (FileNotFoundError, ValueError):
        attempt = 1
    storage.write_text(uri, str(attempt))
    return attempt


def end_attempts(out: str, key: str) -> None:
    """Forget the attempts of ``key`` (its rows are recorded)."""
    try:
        storage.delete(attempt_uri(out, key))
    except Exception:  # noqa: BLE001 - a leftover count only matters if the track is retried
        pass


def write_part(out: str, key: str, rows: list) -> str:
    """Record one track's rows at once (atomic); returns the part's URI."""
    uri = part_uri(out, key)
    storage.write_parquet(to_table(rows), uri)
    return uri


def _read_parts(out: str) -> tuple:
    folder = parts_uri(out)
    if not storage.exists(folder):
        return [], []
    uris = storage.list_files(folder, suffixes=(".parquet",), recursive=False)
    tables = []
    for u in uris:
        try:
            tables.append(_conform(storage.read_parquet(u)))
        except Exception:  # noqa: BLE001 - a torn part (should not happen: writes are atomic)
            continue
    return tables, uris


def read_rows(out: str) -> list:
    """All catalog rows for ``out``: ``catalog.parquet`` merged with pending parts (a part
    replaces the earlier rows of its source). Empty when nothing was separated yet."""
    return merged_table(out)[0].to_pylist()


def merged_table(out: str) -> tuple:
    """``(table, part URIs merged)``: the catalog with the pending parts folded in."""
    base = None
    uri = catalog_uri(out)
    if storage.exists(uri):
        base = _conform(storage.read_parquet(uri))
    tables, uris = _read_parts(out)
    if not tables:
        return (base if base is not None else to_table([])), uris
    # later parts win: order parts by their finished_at
    part_rows: dict = {}
    stamp: dict = {}
    for t in tables:
        rows = t.to_pylist()
        if not rows:
            continue
        key = source_key_of(rows[0])
        when = max((r.get("finished_at") for r in rows if r.get("finished_at") is not None), default=None)
        if key not in part_rows or (when is not None and (stamp[key] is None or when >= stamp[key])):
            part_rows[key] = rows
            stamp[key] = when
    kept = [r for r in (base.to_pylist() if base is not None else []) if source_key_of(r) not in part_rows]
    merged = kept + [r for rows in part_rows.values() for r in rows]
    merged.sort(key=lambda r: (str(r.get("track")), str(r.get("target"))))
    return to_table(merged), uris


def consolidate(out: str, metadata: Optional[dict] = None) -> pa.Table:
    """Merge pending parts into ``<out>/catalog.parquet`` (atomic), then delete the parts."""
    table, uris = merged_table(out)
    if uris or not storage.exists(catalog_uri(out)):
        storage.write_parquet(table, catalog_uri(out), metadata=metadata)
        for u in uris:
            try:
                storage.delete(u)
            except Exception:  # noqa: BLE001 - a leftover part is merged again next time
                pass
        _remove_empty_state(out)
    return table


def _remove_empty_state(out: str) -> None:
    """Remove the (local) parts folder and ``.sepcluster`` once they are empty."""
    if storage.is_remote(out):
        return
    import os

    for folder in (parts_uri(out), storage.join(out, *ATTEMPTS_DIR.split("/")), storage.join(out, STATE_DIR)):
        try:
            os.rmdir(folder)
        except OSError:
            return


def done_keys(rows: list, outputs: Iterable[str], bundle_id: str, settings_id: Optional[str] = None) -> set:
    """Source keys whose every requested output is ``done`` with ``bundle_id`` (and, when given,
    ``settings_id``: the same format, Wiener and chunk settings; see ``separate.pipeline.settings_id``)."""
    wanted = set(outputs)
    have: dict = {}
    for r in rows:
        if r.get("status") != DONE or r.get("bundle_id") != bundle_id:
            continue
        if settings_id is not None and r.get("settings_id") != settings_id:
            continue
        have.setdefault(source_key_of(r), set()).add(r.get("target"))
    return {k for k, got in have.items() if wanted <= got}


def names_in_use(rows: list) -> dict:
    """``{source key: track folder name}`` of the rows already in the catalog."""
    out = {}
    for r in rows:
        if r.get("track"):
            out.setdefault(source_key_of(r), r["track"])
    return out
