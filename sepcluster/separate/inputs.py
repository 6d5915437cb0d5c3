"""What to separate: the tracks of an input (through :mod:`sepcluster.datasets`) and their output names.

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
- a MUSDB root with ``subsets`` (``["test"]``, ``["train", "test"]``): ``<root>/<subset>/``
  holding track folders (MUSDB18-HQ) or ``*.stem.mp4`` files (MUSDB18).
- a single audio file.

Decoding in blocks is :mod:`sepcluster.audiostream`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Optional

from sepcluster import storage
from sepcluster.datasets import folders, manifest, musdb
from sepcluster.errors import DataError

log = logging.getLogger(__name__)

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

    @classmethod
    def from_files(cls, track: folders.TrackFiles) -> "TrackInput":
        """The input for a listed track: its mixture, with its stems as references."""
        uri, stream = track.mixture
        return cls(source_uri=uri, name=track.name, stream=int(stream), references=dict(track.stems),
                   subset=track.subset, error=track.error)


def source_key(uri: str, stream: int = 0) -> str:
    return f"{uri}#{int(stream)}" if int(stream) else str(uri)


raw_track_name = folders.track_name_of


def _musdb_inputs(root: str, subsets: Iterable[str]) -> list:
    """MUSDB tracks that have a mixture to separate (stem files, or track folders with a mixture)."""
    tracks = [TrackInput.from_files(t) for t in musdb.list_musdb(root, subsets) if t.mixture]
    if not tracks:
        raise DataError(f"{storage.redact(root)}: no MUSDB tracks in subset {','.join(subsets)}")
    return tracks


def _manifest_inputs(src: str) -> list:
    tracks, seen = [], set()
    for i, t in enumerate(map(TrackInput.from_files, manifest.read_manifest(src))):
        if t.key in seen:  # a source listed twice is separated once
            log.warning("%s: row %d lists %s again; it is separated once", storage.redact(src), i,
                        storage.redact(t.key))
            continue
        seen.add(t.key)
        tracks.append(t)
    if not tracks:
        raise DataError(f"{storage.redact(src)}: the manifest lists no inputs")
    return tracks


def list_inputs(src: str, subsets: Optional[Iterable[str]] = None) -> list:
    """List the tracks of ``src`` (see the module docstring) as :class:`TrackInput`, sorted by
    source. ``subsets``: read ``src`` as a MUSDB root. Raises DataError/StorageError naming
    ``src`` when it is missing or holds nothing."""
    where = storage.redact(src)
    if subsets:
        return _musdb_inputs(src, list(subsets))
    if not storage.exists(src):
        raise DataError(f"{where}: input not found")
    if storage.isdir(src):
        return sorted(map(TrackInput.from_files, folders.list_catalog(src)), key=lambda t: t.key)
    if manifest.is_manifest(src):
        return _manifest_inputs(src)
    if folders.is_stem_mp4(src):
        return [TrackInput(source_uri=src, name=raw_track_name(src), references=folders.stem_mp4_streams(src))]
    if folders.file_stem(src).lower() == folders.MIXTURE_NAME:  # one MUSDB-HQ track: its siblings are references
        return [TrackInput.from_files(t) for t in folders.track_of_mixture_file(src)]
    if not folders.is_audio(src):
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
