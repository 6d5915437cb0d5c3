"""MUSDB18 and MUSDB18-HQ roots.

* MUSDB18: ``<root>/<subset>/<track>.stem.mp4`` (Native Instruments stem files: stream 0 the
  mixture, then drums, bass, other, vocals);
* MUSDB18-HQ: ``<root>/<subset>/<track>/{mixture,vocals,drums,bass,other}.wav`` (track folders,
  :mod:`sepcluster.datasets.folders`).

Subsets are ``train`` and ``test``. Stem files are decoded as musdb decodes them (stempeg, 16-bit
PCM), so references equal what museval's own tools read.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from .. import storage
from ..errors import DataError
from . import MUSDB_SOURCES
from .folders import STEM_MP4_SUFFIX, TrackFiles, read_track_folder, stem_mp4_streams

SUBSETS = ("train", "test")


def is_musdb_root(root: str) -> bool:
    """Whether ``root`` looks like a MUSDB root (it holds a ``test`` or ``train`` folder)."""
    return any(storage.isdir(storage.join(root, s)) for s in SUBSETS)


def default_subset(root: str) -> str:
    """``test`` when the root has it, else ``train``."""
    return "test" if storage.isdir(storage.join(root, "test")) else "train"


def list_subset(root: str, subset: str, is_wav: Optional[bool] = None) -> list:
    """The tracks of one subset of a MUSDB root, as :class:`~sepcluster.datasets.folders.TrackFiles`.

    ``is_wav``: True for MUSDB18-HQ track folders only, False for ``.stem.mp4`` files only,
    None for whatever the folder holds (stem files first). A track's ``stems`` are the MUSDB
    sources present; ``mixture`` is the stem file's stream 0 or the folder's ``mixture`` file
    (None when the folder has none). Raises DataError when the subset folder is missing.
    """
    folder = storage.join(root, subset)
    if not storage.isdir(folder):
        raise DataError(f"{storage.redact(root)}: no '{subset}' subset folder (expected {storage.redact(folder)} "
                        f"holding MUSDB track folders or .stem.mp4 files)")
    tracks = []
    if is_wav is not True:
        for f in storage.list_files(folder, suffixes=(STEM_MP4_SUFFIX,), recursive=False):
            name = storage.basename(f)[: -len(STEM_MP4_SUFFIX)]
            tracks.append(TrackFiles(name=name, mixture=(f, 0), stems=stem_mp4_streams(f), subset=subset))
    if is_wav is not False:
        for d in storage.list_dirs(folder):
            track = read_track_folder(d)
            track.stems = {s: track.stems[s] for s in MUSDB_SOURCES if s in track.stems}
            track.subset = subset
            if track.stems or track.mixture:
                tracks.append(track)
    return tracks


def list_musdb(root: str, subsets: Iterable[str], is_wav: Optional[bool] = None) -> list:
    """The tracks of ``subsets`` (e.g. ``["test"]``) of a MUSDB root; DataError when there are none."""
    subsets = list(subsets)
    if not subsets:
        raise DataError(f"{storage.redact(root)}: no subset given (use train, test or both)")
    tracks = [t for s in subsets for t in list_subset(root, s, is_wav)]
    if not tracks:
        kind = {True: "WAV track folders", False: ".stem.mp4 files"}.get(is_wav, "tracks")
        raise DataError(f"{storage.redact(root)}: no MUSDB {kind} in subset {','.join(subsets)}"
                        f"{'; pass --is-wav for MUSDB18-HQ' if is_wav is False else ''}")
    return tracks


def read_stem_mp4(uri: str, stream: int) -> tuple:
    """One stream of a ``.stem.mp4`` as musdb decodes it: ``(float32 (samples, channels), rate)``
    (stempeg, 16-bit PCM: exact in float32). DataError names the file and stream."""
    import stempeg

    with storage.local_copy(uri) as path:
        try:
            audio, rate = stempeg.read_stems(path, stem_id=int(stream), ffmpeg_format="s16le")
        except Exception as exc:  # stempeg raises assorted errors
            raise DataError(f"{storage.redact(uri)}: cannot decode stem stream {stream}: {exc}") from exc
    return np.asarray(audio, dtype=np.float32), int(rate)
