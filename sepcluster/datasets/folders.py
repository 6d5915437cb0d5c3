"""Folders of audio: track folders ``<root>/<track>/<target>.<ext>`` and catalog folders.

* a **track folder** holds one track's stems, one file per target named after it
  (``vocals.wav``, ``drums.flac``, ...) and optionally the mixture (``mixture.<ext>``, any case).
  Separated stems (``<out>/<track>/<target>.wav``, the musdb estimates layout), MUSDB18-HQ tracks,
  evaluation references and multitrack exports all use it;
* a **catalog folder** is any folder of audio files, searched recursively: each file is a
  track, except that a track folder holding a mixture is one track (its mixture, with its stems
  as references) and a Native Instruments ``.stem.mp4`` is one track (stream 0, with streams
  1-4 as references).

Suffixes: :data:`sepcluster.audio.AUDIO_SUFFIXES` everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from .. import storage
from ..audio import AUDIO_SUFFIXES, STEM_MP4_STREAMS
from ..errors import DataError
from . import DERIVED_TARGETS, MUSDB_SOURCES

STEM_MP4_SUFFIX = ".stem.mp4"
MIXTURE_NAME = "mixture"


@dataclass
class TrackFiles:
    """Where one track's audio is.

    ``name``: the raw track name. ``mixture``: ``(uri, stream)`` or None. ``stems``:
    ``{target: (uri, stream)}`` (references, or separated stems). ``subset``: the MUSDB subset
    when the track came from a MUSDB root. ``error``: a problem found while listing (the track
    becomes an error row).
    """

    name: str
    mixture: Optional[tuple] = None
    stems: dict = field(default_factory=dict)
    subset: Optional[str] = None
    folder: str = ""
    error: Optional[str] = None


def lower_name(uri: str) -> str:
    return storage.basename(uri).lower()


def is_stem_mp4(uri: str) -> bool:
    """Whether ``uri`` is a Native Instruments stem file (``.stem.mp4``)."""
    return lower_name(uri).endswith(STEM_MP4_SUFFIX)


def is_audio(uri: str) -> bool:
    """Whether ``uri`` has one of :data:`sepcluster.audio.AUDIO_SUFFIXES`."""
    return lower_name(uri).endswith(tuple(AUDIO_SUFFIXES))


def file_stem(uri: str) -> str:
    """The file name without its extension (``x.stem.mp4`` -> ``x``)."""
    base = storage.basename(uri)
    if base.lower().endswith(STEM_MP4_SUFFIX):
        return base[: -len(STEM_MP4_SUFFIX)]
    root, _ext = os.path.splitext(base)
    return root or base


def track_name_of(uri: str) -> str:
    """The track name of an input file: the folder of a ``mixture.<ext>``, the name of a
    ``.stem.mp4`` without that suffix, otherwise the file name without its extension."""
    stem = file_stem(uri)
    if stem.lower() == MIXTURE_NAME:
        return storage.basename(storage.parent(uri)) or stem
    return stem


def stem_mp4_streams(uri: str, names=MUSDB_SOURCES) -> dict:
    """``{source: (uri, stream)}`` of a ``.stem.mp4`` (stream 0 is the mixture)."""
    return {name: (uri, STEM_MP4_STREAMS.index(name)) for name in names}


def read_track_folder(folder: str, files: Optional[list] = None) -> TrackFiles:
    """The stems and mixture of one track folder (``files``: its audio files, when listed already).

    A target is the file name without its extension; ``mixture`` (any case) is the mixture.
    Two files for one target (``vocals.wav`` and ``vocals.flac``) raise DataError naming the
    folder. ``.stem.mp4`` files are not stems of a track folder and are ignored here.
    """
    if files is None:
        files = storage.list_files(folder, suffixes=AUDIO_SUFFIXES, recursive=False)
    track = TrackFiles(name=storage.basename(folder), folder=folder)
    for f in files:
        if is_stem_mp4(f):
            continue
        target = file_stem(f)
        if target.lower() == MIXTURE_NAME:
            track.mixture = (f, 0)
            continue
        if target in track.stems:
            raise DataError(f"{storage.redact(folder)}: two files for '{target}' "
                            f"({storage.basename(track.stems[target][0])}, {storage.basename(f)})")
        track.stems[target] = (f, 0)
    return track


def list_track_folders(root: str) -> list:
    """:class:`TrackFiles` of every subfolder of ``root`` that holds stems (sorted by name)."""
    out = []
    for d in storage.list_dirs(root):
        track = read_track_folder(d)
        if track.stems:
            out.append(track)
    return out


def group_audio_files(files: list) -> list:
    """Tracks of a catalog folder from its (recursively listed) audio files.

    A folder holding a ``mixture.<ext>`` and stems named after MUSDB's sources is one track:
    the mixture with its stems as references (the other files of that folder are not inputs).
    A ``.stem.mp4`` is one track with its streams as references. Every other file is a track.
    """
    by_folder: dict = {}
    for f in files:
        by_folder.setdefault(storage.parent(f), []).append(f)
    known = MUSDB_SOURCES + (MIXTURE_NAME,) + DERIVED_TARGETS
    tracks = []
    for folder in sorted(by_folder):
        members = by_folder[folder]
        named = {}
        for f in members:
            s = file_stem(f).lower()
            if s in known and not is_stem_mp4(f):
                named.setdefault(s, f)
        mixture = named.get(MIXTURE_NAME)
        for f in members:
            s = file_stem(f).lower()
            if mixture is not None and not is_stem_mp4(f) and named.get(s) == f:
                if f == mixture:
                    refs = {name: (named[name], 0) for name in MUSDB_SOURCES if name in named}
                    tracks.append(TrackFiles(name=track_name_of(f), mixture=(f, 0), stems=refs, folder=folder))
                continue  # a reference stem of a track folder, not an input
            if is_stem_mp4(f):
                tracks.append(TrackFiles(name=track_name_of(f), mixture=(f, 0), stems=stem_mp4_streams(f)))
            else:
                tracks.append(TrackFiles(name=track_name_of(f), mixture=(f, 0)))
    return tracks


def list_catalog(root: str) -> list:
    """Tracks of a catalog folder (local or ``s3://`` prefix), see :func:`group_audio_files`."""
    files = storage.list_files(root, suffixes=AUDIO_SUFFIXES, recursive=True)
    tracks = group_audio_files(files)
    if not tracks:
        raise DataError(f"{storage.redact(root)}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder")
    return tracks


def track_of_mixture_file(uri: str) -> list:
    """The track of a single ``mixture.<ext>`` file: its siblings are its references."""
    siblings = storage.list_files(storage.parent(uri), suffixes=AUDIO_SUFFIXES, recursive=False)
    return [t for t in group_audio_files(siblings) if t.mixture and t.mixture[0] == uri]
