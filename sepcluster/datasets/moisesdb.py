"""MoisesDB: ``<root>/<provider>/<uuid>/data.json`` track folders, stems made of several source files.

The layout, as the ``moisesdb`` package reads it (github.com/moises-ai/moises-db, ``moisesdb/track.py``,
``moisesdb/dataset.py``): ``<root>/<provider>/<uuid>/`` holds ``data.json``::

    {"song": ..., "artist": ..., "genre": ...,
     "stems": [{"id": ..., "stemName": "vocals",
                "tracks": [{"id": "<file id>", "trackType": "lead_female_singer",
                            "extension": "wav", "has_bleed": false}, ...]}, ...]}

and the audio of each source file at ``<uuid>/<stemName>/<file id>.<extension>``. Stem names are
the package's taxonomy keys (``vocals``, ``bass``, ``drums``, ``other``, ``guitar``,
``other_plucked``, ``percussion``, ``piano``, ``other_keys``, ``bowed_strings``, ``wind``); a
stem with several source files (lead and backing vocals, kick and snare, ...) is their sum. A
root may also be one provider folder (``<root>/<uuid>/data.json``).

A **label map** says which stems make each target: ``{target: [entry, ...]}`` where an entry is a
stem name (``vocals``), a stem and track type (``vocals/background_vocals``) or ``"*"`` (every
stem no other target names). A source file goes to the target with its most specific entry
(``stem/type`` before ``stem`` before ``*``); files no target takes are left out. The default,
:data:`MUSDB_MAP`, is the package's ``mix_4_stems``: vocals, drums, bass, and everything else as
``other``. Names are compared in lower case with spaces as ``_``. A map can be given as a YAML
file of that mapping (:func:`load_label_map`).

Reading sums each target's files (float32 ``(samples, channels)``, stereo at least): a mono file
is repeated on both channels (as the package's ``load_audio`` does; on every channel of a wider
file), files of another sample rate are resampled to the
first file's (soxr HQ), shorter files are padded with zeros to the longest (the package trims to
the shortest instead; MoisesDB's files of one track have one length). A target whose stems the
track lacks is silence of the track's length. A source file listed in ``data.json`` but absent
raises :class:`~sepcluster.errors.DataError` naming the file.

Tracks are named by their folder (the uuid), which is what estimates folders use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .. import storage
from ..errors import ConfigError, DataError

DATA_FILE = "data.json"
REST = "*"
MUSDB_MAP: dict[str, tuple[str, ...]] = {"vocals": ("vocals",), "drums": ("drums",), "bass": ("bass",),
                                          "other": (REST,)}


def norm(name: str) -> str:
    """A stem or track-type name as compared: lower case, spaces as ``_``."""
    return str(name).strip().lower().replace(" ", "_")


@dataclass(frozen=True)
class SourceFile:
    """One audio file of a stem: ``uri``, its ``stem`` and ``track_type`` (normalised names), ``has_bleed``."""

    uri: str
    stem: str
    track_type: str
    has_bleed: bool = False


@dataclass
class MoisesTrack:
    """One MoisesDB track: ``name`` (its uuid folder), ``provider``, ``folder``, metadata, its source files."""

    name: str
    provider: str
    folder: str
    song: str = ""
    artist: str = ""
    genre: str = ""
    files: list = field(default_factory=list)  # SourceFile, in data.json order

    def stems(self) -> list[str]:
        """The stem names of the track, in data.json order."""
        return list(dict.fromkeys(f.stem for f in self.files))


# --------------------------------------------------------------------------------- label maps

def check_label_map(mapping: Mapping, where: str = "label map") -> dict[str, tuple[str, ...]]:
    """Validate ``{target: [entries]}`` (a string entry counts as a list of one); returns it normalised.

    ConfigError(``label_map``) for an empty map, a target without entries, an entry given to two
    targets or more than one ``"*"``.
    """
    if not isinstance(mapping, Mapping) or not mapping:
        raise ConfigError("label_map", f"{where}: expected a mapping target -> list of MoisesDB stems, got "
                                       f"{type(mapping).__name__}")
    out: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for target, entries in mapping.items():
        entries = [entries] if isinstance(entries, str) else list(entries or [])
        if not entries:
            raise ConfigError("label_map", f"{where}: target '{target}' names no stems")
        names = []
        for e in entries:
            key = REST if str(e).strip() == REST else "/".join(norm(p) for p in str(e).split("/", 1))
            if key in owner:
                raise ConfigError("label_map", f"{where}: '{e}' is given to both '{owner[key]}' and '{target}'")
            owner[key] = str(target)
            names.append(key)
        out[str(target)] = tuple(names)
    return out


def load_label_map(label_map=None) -> dict[str, tuple[str, ...]]:
    """The label map: :data:`MUSDB_MAP` for None, a mapping as given, or a YAML file's mapping (URI)."""
    if label_map is None:
        return dict(MUSDB_MAP)
    if isinstance(label_map, Mapping):
        return check_label_map(label_map)
    from ..config import load_yaml

    return check_label_map(load_yaml(str(label_map)), where=storage.redact(str(label_map)))


def assign(track: MoisesTrack, label_map: Mapping[str, tuple[str, ...]]) -> dict[str, list[str]]:
    """``{target: [file URIs]}`` of a track under a (checked) label map; every target of the map is a
    key (an empty list: the track has none of its stems)."""
    exact, by_stem, rest = {}, {}, None
    for target, entries in label_map.items():
        for e in entries:
            if e == REST:
                rest = target
            elif "/" in e:
                exact[e] = target
            else:
                by_stem[e] = target
    out: dict[str, list[str]] = {t: [] for t in label_map}
    for f in track.files:
        target = exact.get(f"{f.stem}/{f.track_type}") or by_stem.get(f.stem) or rest
        if target is not None:
            out[target].append(f.uri)
    return out


# ------------------------------------------------------------------------------------ listing

def _track_folders(root: str) -> list[tuple[str, str]]:
    """``(provider, folder)`` of every folder holding ``data.json`` one or two levels below ``root``."""
    out = []
    for d in storage.list_dirs(root):
        if storage.exists(storage.join(d, DATA_FILE)):
            out.append((storage.basename(root), d))  # root is one provider's folder
            continue
        for t in storage.list_dirs(d):
            if storage.exists(storage.join(t, DATA_FILE)):
                out.append((storage.basename(d), t))
    return out


def is_moisesdb_root(root: str) -> bool:
    """Whether ``root`` holds MoisesDB track folders (``<provider>/<uuid>/data.json`` or ``<uuid>/data.json``)."""
    if not storage.isdir(root):
        return False
    for d in storage.list_dirs(root)[:5]:  # a few folders decide: MoisesDB roots hold nothing else
        if storage.exists(storage.join(d, DATA_FILE)):
            return True
        for t in storage.list_dirs(d)[:3]:
            if storage.exists(storage.join(t, DATA_FILE)):
                return True
    return False


def read_track(folder: str, provider: str = "") -> MoisesTrack:
    """Parse ``folder/data.json``; DataError names the file when it is not MoisesDB's format."""
    uri = storage.join(folder, DATA_FILE)
    where = storage.redact(uri)
    try:
        meta = json.loads(storage.read_text(uri))
    except FileNotFoundError as exc:
        raise DataError(f"{where}: not found") from exc
    except ValueError as exc:
        raise DataError(f"{where}: not valid JSON ({exc})") from exc
    stems = meta.get("stems") if isinstance(meta, dict) else None
    if not isinstance(stems, list):
        raise DataError(f"{where}: no 'stems' list (MoisesDB's data.json has stems: [{{stemName, tracks}}])")
    track = MoisesTrack(name=storage.basename(folder), provider=provider, folder=folder,
                        song=str(meta.get("song", "")), artist=str(meta.get("artist", "")),
                        genre=str(meta.get("genre", "")))
    for stem in stems:
        name = stem.get("stemName") if isinstance(stem, dict) else None
        if not name or not isinstance(stem.get("tracks", []), list):
            raise DataError(f"{where}: a stem without stemName or tracks list ({str(stem)[:80]})")
        for t in stem.get("tracks", []):
            if not isinstance(t, dict) or not t.get("id") or not t.get("extension"):
                raise DataError(f"{where}: stem '{name}' has a track without id or extension ({str(t)[:80]})")
            path = storage.join(folder, str(name), f"{t['id']}.{str(t['extension']).lstrip('.')}")
            track.files.append(SourceFile(path, norm(name), norm(t.get("trackType", "")), bool(t.get("has_bleed"))))
    return track


def list_moisesdb(root: str) -> list[MoisesTrack]:
    """Every track of a MoisesDB root, sorted by name; DataError when there is none."""
    tracks = [read_track(folder, provider) for provider, folder in _track_folders(root)]
    if not tracks:
        raise DataError(f"{storage.redact(root)}: no MoisesDB tracks (<provider>/<uuid>/{DATA_FILE})")
    names = [t.name for t in tracks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{storage.redact(root)}: track folder '{dup[0]}' appears under two providers")
    return sorted(tracks, key=lambda t: t.name)


# ------------------------------------------------------------------------------------ reading

def _read_files(uris: list[str], track: str, target: str) -> list[tuple[np.ndarray, int]]:
    from ..audio import read_audio

    out = []
    for uri in uris:
        if not storage.exists(uri):
            raise DataError(f"MoisesDB track '{track}': the {target} source file {storage.redact(uri)} is missing "
                            f"(listed in {DATA_FILE})")
        out.append(read_audio(uri))
    return out


def sum_sources(audios: list[tuple[np.ndarray, int]], channels: int, rate: int, what: str = "a target"
                ) -> np.ndarray:
    """The sum of ``(audio (samples, channels), rate)`` pairs as float32 ``(samples, channels)`` at ``rate``:
    mono repeated on ``channels``, other rates resampled, shorter padded with zeros. ``what`` names
    the sum in errors."""
    from ..audio import resample

    parts = []
    for audio, sr in audios:
        a = np.asarray(audio, dtype=np.float32)
        if sr != rate:
            a = resample(a, sr, rate)
        if a.shape[1] != channels:
            if a.shape[1] != 1:
                raise DataError(f"{what}: a source file has {a.shape[1]} channels where the track has {channels}")
            a = np.repeat(a, channels, axis=1)
        parts.append(a)
    n = max(p.shape[0] for p in parts)
    out = np.zeros((n, channels), dtype=np.float32)
    for p in parts:
        out[: p.shape[0]] += p
    return out


def read_targets(files: Mapping[str, list[str]], track: str = "track") -> tuple[dict[str, np.ndarray], int]:
    """Read and sum the files of each target (``{target: [URIs]}``, :func:`assign`):
    ``({target: float32 (samples, channels)}, sample_rate)``; targets without files are silence."""
    read = {t: _read_files(list(u), track, t) for t, u in files.items()}
    every = [x for parts in read.values() for x in parts]
    if not every:
        raise DataError(f"MoisesDB track '{track}': no source file for any of the targets {', '.join(files)}")
    rate = int(every[0][1])
    channels = max(2, *(a.shape[1] for a, _ in every))
    out = {t: sum_sources(parts, channels, rate, f"MoisesDB track '{track}' target '{t}'")
           for t, parts in read.items() if parts}
    n = max(a.shape[0] for a in out.values())
    for t, parts in read.items():
        if not parts:
            out[t] = np.zeros((n, channels), dtype=np.float32)
    return out, rate


def read_track_targets(track: MoisesTrack, label_map=None) -> tuple[dict[str, np.ndarray], int]:
    """:func:`read_targets` of a track under a label map (default :data:`MUSDB_MAP`; a mapping or a YAML URI)."""
    return read_targets(assign(track, load_label_map(label_map)), track.name)


__all__ = ["DATA_FILE", "MUSDB_MAP", "MoisesTrack", "SourceFile", "assign", "check_label_map",
           "is_moisesdb_root", "list_moisesdb", "load_label_map", "read_targets", "read_track", "read_track_targets",
           "sum_sources"]
