"""Stem libraries: the multitrack collections that mixtures are made from and models train on.

Two layouts:

* Scaper's (what ``sepcluster stems`` writes and ``generate`` mixes from)::

      STEMS/foreground/<label>/<song>.<ext>   all stems of one song share the file name
      STEMS/background/                       empty (Scaper needs the folder)
      STEMS/library.json                      how the library was made

* track folders (MUSDB18-HQ's, or any multitrack export): ``DIR[/train]/<song>/<label>.<ext>``
  (a ``mixture`` file is skipped).

:func:`index_library` indexes Scaper's layout for Scaper (a local folder: an ``s3://`` library
is synced to a local cache first); :func:`index_stems` maps either layout to
``{label: {song: URI}}`` for training; :func:`list_library` / :func:`validate_library` check a
library's labels.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass

from .. import storage
from ..audio import AUDIO_SUFFIXES, SOUNDFILE_SUFFIXES
from ..errors import ConfigError, DataError
from . import MUSDB_SOURCES
from .folders import list_track_folders

LIBRARY_FILE = "library.json"
# what Scaper can read (it opens sources with soundfile)
SOURCE_SUFFIXES = SOUNDFILE_SUFFIXES


def is_library(uri: str) -> bool:
    """Whether ``uri`` is a folder in Scaper's layout (it holds ``foreground/``)."""
    return storage.isdir(uri) and storage.isdir(storage.join(uri, "foreground"))


@dataclass(frozen=True)
class StemLibrary:
    """The index of a stem library: its local folders and ``{label: sorted file names}``."""

    root: str            # local folder holding foreground/ (and background/)
    fg_path: str
    bg_path: str
    files: dict          # label -> tuple of file names (sorted like Scaper's glob)
    durations: dict      # "label/name" -> seconds
    decoded_bytes: int = 0  # all indexed files decoded as float32
    total_frames: int = 0   # sample frames over all indexed files

    def source_path(self, label: str, name: str) -> str:
        return os.path.join(self.fg_path, label, name)

    def source_paths(self) -> list[str]:
        """Every indexed source file, label by label."""
        return [self.source_path(label, name) for label, names in self.files.items() for name in names]


def _cache_dir_for(uri: str) -> str:
    digest = hashlib.sha256(storage.redact(uri).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), "sepcluster-stems", digest)


def local_library_root(stems_dir: str) -> str:
    """A local folder with the library: the folder itself, or a synced cache of an ``s3://`` URI.

    The cache path depends only on the URI, so the JAMS written on every node name the same files.
    """
    if not storage.is_remote(stems_dir):
        return storage.absolute(str(stems_dir))
    root = _cache_dir_for(stems_dir)
    fg_uri = storage.join(stems_dir, "foreground")
    try:
        files = storage.list_files(fg_uri, suffixes=SOURCE_SUFFIXES)
    except FileNotFoundError as exc:
        raise DataError(f"{storage.redact(fg_uri)}: not found; a stem library needs foreground/<label>/<song>.wav") \
            from exc
    prefix = fg_uri[len("s3://"):].rstrip("/") + "/"
    for uri in files:
        rel = uri[len("s3://"):][len(prefix):]
        dest = os.path.join(root, "foreground", *rel.split("/"))
        if os.path.exists(dest):
            continue
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = f"{dest}.part-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(storage.read_bytes(uri))
        os.replace(tmp, dest)
    os.makedirs(os.path.join(root, "background"), exist_ok=True)
    return root


def index_library(stems_dir: str, labels: tuple[str, ...] | list[str] | None = None) -> StemLibrary:
    """Index ``stems_dir`` (local or ``s3://``) for ``labels``; DataError/ConfigError name the problem."""
    root = local_library_root(stems_dir)
    fg = os.path.join(root, "foreground")
    if not os.path.isdir(fg):
        if not os.path.exists(root):
            raise DataError(f"{storage.redact(stems_dir)}: the stem library folder does not exist")
        raise DataError(f"{storage.redact(stems_dir)}: has no foreground/ folder; a stem library needs "
                        f"foreground/<label>/<song>.wav (make one with `sepcluster stems prepare` or `stems synth`)")
    bg = os.path.join(root, "background")
    if not os.path.isdir(bg):
        bg = fg  # no background events are used; Scaper only needs an existing folder
    present = sorted(d for d in os.listdir(fg) if os.path.isdir(os.path.join(fg, d)) and not d.startswith("."))
    files = {}
    durations = {}
    decoded = frames = 0
    import soundfile

    for label in (labels if labels is not None else present):
        folder = os.path.join(fg, label)
        if not os.path.isdir(folder):
            raise ConfigError("labels", f"label '{label}' has no folder {folder} "
                                        f"(labels in this library: {', '.join(present) or 'none'})")
        # exactly what Scaper's choose [] picks from: sorted(glob(folder/*)), files only
        names = sorted(n for n in os.listdir(folder)
                       if not n.startswith(".") and os.path.isfile(os.path.join(folder, n)))
        if not names:
            raise ConfigError("labels", f"label '{label}' has no files in {folder}")
        for name in names:
            path = os.path.join(folder, name)
            if not name.lower().endswith(SOURCE_SUFFIXES):
                raise ConfigError("labels", f"label '{label}': {path} is not an audio file Scaper can read "
                                            f"({', '.join(SOURCE_SUFFIXES)}); remove it from the library")
            try:
                info = soundfile.info(path)
            except Exception as exc:
                raise DataError(f"{path}: not a readable audio file ({exc})") from exc
            if info.frames <= 0:
                raise DataError(f"{path}: holds no samples")
            durations[f"{label}/{name}"] = float(info.duration)
            decoded += int(info.frames) * int(info.channels) * 4
            frames += int(info.frames)
        files[label] = tuple(names)
    return StemLibrary(root=root, fg_path=fg, bg_path=bg, files=files, durations=durations, decoded_bytes=decoded,
                       total_frames=frames)


def list_library(stems_dir: str) -> dict[str, list[str]]:
    """Map each label folder under ``stems_dir/foreground`` to its sorted audio file names.

    Raises DataError naming the folder when ``stems_dir/foreground`` does not exist.
    """
    fg = storage.join(stems_dir, "foreground")
    if not storage.isdir(fg):
        if not storage.exists(stems_dir):
            raise DataError(f"{storage.redact(stems_dir)}: the stem library folder does not exist")
        raise DataError(f"{storage.redact(fg)}: not found; a stem library needs foreground/<label>/<song>.wav "
                        f"(make one with `sepcluster stems prepare` or `sepcluster stems synth`)")
    out: dict[str, list[str]] = {}
    for folder in storage.list_dirs(fg):
        label = storage.basename(folder)
        files = storage.list_files(folder, suffixes=AUDIO_SUFFIXES, recursive=False)
        out[label] = sorted(storage.basename(f) for f in files)
    return out


def validate_library(stems_dir: str, labels=MUSDB_SOURCES) -> dict[str, list[str]]:
    """Check that every label in ``labels`` has a non-empty folder; return ``{label: files}``.

    Raises ConfigError(``labels``) when a label has no folder under ``stems_dir/foreground``,
    DataError when its folder holds no audio files; both name the label and the folder.
    """
    labels = list(labels)
    if not labels:
        raise ConfigError("labels", "is empty: name at least one label")
    found = list_library(stems_dir)
    fg = storage.join(stems_dir, "foreground")
    out = {}
    for label in labels:
        folder = storage.join(fg, str(label))
        if label not in found:
            have = ", ".join(sorted(found)) or "none"
            raise ConfigError("labels", f"label '{label}' has no folder {storage.redact(folder)} "
                                        f"(labels in this library: {have})")
        if not found[label]:
            raise DataError(f"{storage.redact(folder)}: label '{label}' has no audio files")
        out[label] = found[label]
    return out


def track_folder_stems(uri: str) -> dict:
    """Track folders ``DIR[/train]/<song>/<label>.<ext>`` as ``{label: {song: uri}}`` (may be empty)."""
    root = uri
    if storage.isdir(storage.join(uri, "train")):
        root = storage.join(uri, "train")
    out: dict = {}
    for track in list_track_folders(root):
        for label, (f, _stream) in track.stems.items():
            out.setdefault(label, {})[track.name] = f
    return out


def index_stems(uri: str) -> dict:
    """``{label: {song: file URI}}`` of a stem library (songs are file names without suffix)."""
    where = storage.redact(uri)
    if is_library(uri):
        fg = storage.join(uri, "foreground")
        out: dict = {}
        for folder in storage.list_dirs(fg):
            label = storage.basename(folder)
            files = storage.list_files(folder, suffixes=AUDIO_SUFFIXES, recursive=False)
            if files:
                out[label] = {os.path.splitext(storage.basename(f))[0]: f for f in files}
    else:
        out = track_folder_stems(uri)
    if not out:
        raise DataError(f"{where}: the stem library is empty (no audio files under foreground/<label>/ "
                        f"or <song>/<label>.wav)")
    return out
