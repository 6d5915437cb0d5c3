"""What to separate: listing the inputs, naming the outputs, and decoding in blocks.

Sources (``list_inputs``):

- a folder (local or ``s3://`` prefix), searched recursively for audio files
  (``sepcluster.audio.AUDIO_SUFFIXES``). A folder that holds ``mixture.<ext>`` is a
  MUSDB18-HQ track: only the mixture is separated (the track is named after the folder) and
  its ``vocals/drums/bass/other`` siblings are the reference stems (used by ``--oracle``).
  A ``<name>.stem.mp4`` is a Native Instruments stem file: stream 0 is separated, streams
  1-4 (drums, bass, other, vocals) are the references.
- a Parquet or CSV manifest with a column ``uri`` (or ``path``, ``source``, ``source_uri``,
  ``file``) and optional ``name`` and ``stream`` columns; relative paths are relative to the
  manifest's folder. Rows whose format is unsupported are kept (they become error rows).
- a MUSDB root with ``subset`` (``train``, ``test`` or ``train,test``): ``<root>/<subset>/``
  holding track folders (MUSDB18-HQ) or ``*.stem.mp4`` files (MUSDB18).
- a single audio file.

Decoding in blocks is :mod:`sepcluster.audiostream`.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Optional

from sepcluster import audio, storage
from sepcluster.errors import DataError

REFERENCE_NAMES = ("vocals", "drums", "bass", "other")
MANIFEST_SUFFIXES = (".parquet", ".csv")
_URI_COLUMNS = ("uri", "path", "source", "source_uri", "file")
_STEM_MP4 = ".stem.mp4"
RESERVED_NAMES = {"catalog.parquet", "catalog", "summary.json"}


@dataclass
class TrackInput:
    """One track to separate.

    ``source_uri``/``stream``: the mixture (``stream`` picks an audio stream of a multi-stream
    file). ``name``: the raw track name (made safe by :func:`safe_name`). ``references``:
    reference stem name -> ``(uri, stream)`` (MUSDB layouts). ``error``: a problem found while
    listing (e.g. an unsupported format); such a track becomes an error row.
    """

    source_uri: str
    name: str
    stream: int = 0
    references: dict = field(default_factory=dict)
    subset: Optional[str] = None
    error: Optional[str] = None

    @property
    def key(self) -> str:
        """Identity of the input in the catalog (``uri`` or ``uri#stream``)."""
        return source_key(self.source_uri, self.stream)


def source_key(uri: str, stream: int = 0) -> str:
    return f"{uri}#{int(stream)}" if int(stream) else str(uri)


def _lower(uri: str) -> str:
    return storage.basename(uri).lower()


def is_stem_mp4(uri: str) -> bool:
    return _lower(uri).endswith(_STEM_MP4)


def is_audio(uri: str) -> bool:
    return _lower(uri).endswith(tuple(audio.AUDIO_SUFFIXES))


def _stem_of(uri: str) -> str:
    base = storage.basename(uri)
    if base.lower().endswith(_STEM_MP4):
        return base[: -len(_STEM_MP4)]
    root, _ext = os.path.splitext(base)
    return root or base


def raw_track_name(uri: str) -> str:
    """The track name of an input: the folder of a ``mixture.<ext>``, the name of a
    ``.stem.mp4`` without that suffix, otherwise the file name without its extension."""
    stem = _stem_of(uri)
    if stem.lower() == "mixture":
        return storage.basename(storage.parent(uri)) or stem
    return stem


def _stem_mp4_references(uri: str) -> dict:
    return {name: (uri, audio.STEM_MP4_STREAMS.index(name)) for name in REFERENCE_NAMES}


def _folder_track(mixture_uri: str, siblings: dict) -> TrackInput:
    refs = {}
    for name in REFERENCE_NAMES:
        if name in siblings:
            refs[name] = (siblings[name], 0)
    return TrackInput(source_uri=mixture_uri, name=raw_track_name(mixture_uri), references=refs)


def _from_files(files: list) -> list:
    """Group listed audio files into tracks (MUSDB-HQ folders, stem files, plain files)."""
    by_folder: dict = {}
    for f in files:
        by_folder.setdefault(storage.parent(f), []).append(f)
    tracks = []
    for folder in sorted(by_folder):
        members = by_folder[folder]
        stems = {}
        for f in members:
            s = _stem_of(f).lower()
            if s in REFERENCE_NAMES + ("mixture", "accompaniment", "linear_mixture") and not is_stem_mp4(f):
                stems.setdefault(s, f)
        mixture = stems.get("mixture")
        for f in members:
            s = _stem_of(f).lower()
            if mixture is not None and not is_stem_mp4(f) and s in stems and stems[s] == f:
                if f == mixture:
                    tracks.append(_folder_track(f, stems))
                continue  # a reference stem of a MUSDB-HQ track folder, not an input
            if is_stem_mp4(f):
                tracks.append(TrackInput(source_uri=f, name=raw_track_name(f), references=_stem_mp4_references(f)))
            else:
                tracks.append(TrackInput(source_uri=f, name=raw_track_name(f)))
    return tracks


def _read_manifest(uri: str) -> list:
    import csv
    import io

    where = storage.redact(uri)
    try:
        if _lower(uri).endswith(".parquet"):
            table = storage.read_parquet(uri)
            columns, rows = table.column_names, table.to_pylist()
        else:  # every CSV field is text (a name like "007" stays "007")
            reader = csv.DictReader(io.StringIO(storage.read_text(uri)))
            rows = [{k: (v if v != "" else None) for k, v in r.items()} for r in reader]
            columns = list(reader.fieldnames or [])
    except FileNotFoundError as exc:
        raise DataError(f"{where}: manifest not found") from exc
    except Exception as exc:  # noqa: BLE001 - any parse problem is a bad manifest
        raise DataError(f"{where}: cannot read the manifest ({type(exc).__name__}: {exc})") from exc
    cols = {c.lower(): c for c in columns}
    uri_col = next((cols[c] for c in _URI_COLUMNS if c in cols), None)
    if uri_col is None:
        raise DataError(f"{where}: the manifest needs a column named one of {', '.join(_URI_COLUMNS)} "
                        f"(has {', '.join(columns) or 'none'})")
    base = storage.parent(uri)
    name_col = cols.get("name") or cols.get("track")
    stream_col = cols.get("stream")
    tracks = []
    for i, row in enumerate(rows):
        value = row.get(uri_col)
        if value is None or not str(value).strip():
            tracks.append(TrackInput(source_uri=f"{uri}#row{i}", name=f"row{i}",
                                     error=f"{where}: row {i} has an empty '{uri_col}'"))
            continue
        src = str(value).strip()
        if not (storage.is_remote(src) or src.startswith("file://") or os.path.isabs(src)):
            src = storage.join(base, src)
        stream = 0
        if stream_col and row.get(stream_col) not in (None, ""):
            try:
                stream = int(row[stream_col])
            except (TypeError, ValueError):
                tracks.append(TrackInput(source_uri=src, name=raw_track_name(src),
                                         error=f"{where}: row {i}: stream {row[stream_col]!r} is not an integer"))
                continue
        name = str(row[name_col]).strip() if name_col and row.get(name_col) not in (None, "") else raw_track_name(src)
        if not is_audio(src):
            tracks.append(TrackInput(source_uri=src, name=name, stream=stream,
                                     error=f"{storage.redact(src)}: unsupported audio format "
                                           f"'{os.path.splitext(src)[1] or '(none)'}' (supported: "
                                           f"{', '.join(audio.AUDIO_SUFFIXES)})"))
            continue
        refs = _stem_mp4_references(src) if is_stem_mp4(src) and stream == 0 else {}
        tracks.append(TrackInput(source_uri=src, name=name, stream=stream, references=refs))
    return tracks


def _musdb_root(root: str, subset: str) -> list:
    subsets = [s.strip() for s in str(subset).split(",") if s.strip()]
    if not subsets:
        raise DataError(f"{storage.redact(root)}: --subset is empty (use train, test or train,test)")
    tracks = []
    for s in subsets:
        folder = storage.join(root, s)
        if not storage.isdir(folder):
            raise DataError(f"{storage.redact(root)}: no '{s}' subset folder (expected {storage.redact(folder)} "
                            f"holding MUSDB track folders or .stem.mp4 files)")
        found = _from_files(storage.list_files(folder, suffixes=audio.AUDIO_SUFFIXES, recursive=True))
        found = [t for t in found if t.references or is_stem_mp4(t.source_uri)]
        for t in found:
            t.subset = s
        tracks.extend(found)
    if not tracks:
        raise DataError(f"{storage.redact(root)}: no MUSDB tracks in subset {subset}")
    return tracks


def list_inputs(src: str, subset: Optional[str] = None) -> list:
    """List the tracks of ``src`` (see the module docstring) as :class:`TrackInput`, sorted by
    source. Raises DataError/StorageError naming ``src`` when it is missing or holds nothing."""
    where = storage.redact(src)
    if subset:
        return _musdb_root(src, subset)
    if not storage.exists(src):
        raise DataError(f"{where}: input not found")
    if storage.isdir(src):
        files = storage.list_files(src, suffixes=audio.AUDIO_SUFFIXES, recursive=True)
        tracks = _from_files(files)
        if not tracks:
            raise DataError(f"{where}: no audio files ({', '.join(audio.AUDIO_SUFFIXES)}) in this folder")
        return sorted(tracks, key=lambda t: t.key)
    if _lower(src).endswith(MANIFEST_SUFFIXES):
        tracks, seen = [], set()
        for t in _read_manifest(src):  # a source listed twice is separated once
            if t.key not in seen:
                seen.add(t.key)
                tracks.append(t)
        if not tracks:
            raise DataError(f"{where}: the manifest lists no inputs")
        return tracks
    if is_stem_mp4(src):
        return [TrackInput(source_uri=src, name=raw_track_name(src), references=_stem_mp4_references(src))]
    if _stem_of(src).lower() == "mixture":  # one MUSDB-HQ track: its references are the siblings
        siblings = storage.list_files(storage.parent(src), suffixes=audio.AUDIO_SUFFIXES, recursive=False)
        return [t for t in _from_files(siblings) if t.source_uri == src]
    if not is_audio(src):
        raise DataError(f"{where}: unsupported input (a folder, an s3:// prefix, a .parquet/.csv manifest, "
                        f"a MUSDB root with --subset, or an audio file)")
    return [TrackInput(source_uri=src, name=raw_track_name(src))]


# ---------------------------------------------------------------------------------------
# output names

_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")


def safe_name(raw: str, max_bytes: int = 160) -> str:
    """A single, safe path component for a track name: Unicode kept (NFC), path separators
    and control characters replaced by ``_``, leading dots/spaces and trailing dots/spaces
    removed (so ``..`` and hidden names cannot appear), at most ``max_bytes`` UTF-8 bytes."""
    name = unicodedata.normalize("NFC", str(raw))
    name = _UNSAFE.sub("_", name)
    name = name.strip().lstrip(".").strip().rstrip(". ")
    encoded = name.encode("utf-8")
    if len(encoded) > max_bytes:
        name = encoded[:max_bytes].decode("utf-8", errors="ignore").rstrip(". ")
    if not name or set(name) <= {"_", "."}:
        name = "track" if not name else name
    if name.casefold() in RESERVED_NAMES:
        name = f"{name}_"
    return name


def assign_names(tracks: list, taken: Optional[dict] = None) -> dict:
    """Output folder names for ``tracks``: ``{track.key: name}``.

    ``taken`` maps keys already in the catalog to their names; those keep their name. New
    tracks get :func:`safe_name` of their raw name; a name already used (compared
    case-insensitively) gets `` [<8 hex of the source>]`` appended, then a counter.
    """
    taken = dict(taken or {})
    names: dict = {}
    used = {v.casefold() for v in taken.values()}
    for t in tracks:
        if t.key in taken:
            names[t.key] = taken[t.key]
    for t in tracks:
        if t.key in names:
            continue
        base = safe_name(t.name)
        name = base
        if name.casefold() in used:
            digest = hashlib.sha1(t.key.encode("utf-8")).hexdigest()[:8]
            name = f"{base} [{digest}]"
            n = 2
            while name.casefold() in used:
                name = f"{base} [{digest}-{n}]"
                n += 1
        used.add(name.casefold())
        names[t.key] = name
    return names
