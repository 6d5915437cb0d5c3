"""Turn multitrack collections into Scaper's stem-library layout.

Output layout (what Scaper reads): ``out_dir/foreground/<label>/<song>.wav`` and an empty
``out_dir/background/``; all stems of one song share the file name ``<song>.wav`` (which is
what makes coherent mixing possible), plus ``out_dir/library.json`` describing the source.

* :func:`prepare_musdb`: a MUSDB18 root through the ``musdb`` package: ``root/<subset>/
  *.stem.mp4`` (decoded by ffmpeg via stempeg) or, with ``is_wav``, the MUSDB18-HQ layout
  ``root/<subset>/<track>/{vocals,drums,bass,other}.wav``.
* :func:`prepare_folders`: any ``root/<song>/<label>.wav`` tree (labels are the file names
  found; ``mixture.wav`` is skipped).
* :func:`prepare_moisesdb`: a MoisesDB root (``<provider>/<uuid>/data.json``,
  :mod:`sepcluster.datasets.moisesdb`): each label is the sum of the source files a label map
  gives it (MUSDB's vocals, drums, bass and other by default, or a YAML mapping); a label the
  song lacks is written as silence, so that every song has every label. A track with a source
  file listed but missing is skipped with a warning naming the file (``library.json``
  ``skipped``).

Audio is ``float32 (samples, channels)`` in memory and written with
:func:`sepcluster.audio.write_audio` (atomic), so ``out_dir`` may be local, ``file://`` or
``s3://``.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import numpy as np

from .. import storage
from ..errors import AudioError, ConfigError, DataError, SepclusterError
from ..datasets import MUSDB_SOURCES, moisesdb
from ..datasets.folders import read_track_folder
from ..datasets.library import LIBRARY_FILE

log = logging.getLogger(__name__)

MUSDB_SUBSETS = ("train", "test")
MUSDB_SPLITS = ("train", "valid")
_UNSAFE = ("/", "\\", "\0", ":", "*", "?", '"', "<", ">", "|")


def safe_name(name: str) -> str:
    """A song name usable as a file name everywhere: no path separators or control
    characters, no leading dots, not empty (spaces and ``-`` are kept)."""
    out = "".join("_" if (c in _UNSAFE or ord(c) < 32) else c for c in str(name))
    out = out.strip().lstrip(".").strip()
    return out or "track"


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="track", file=sys.stderr, mininterval=1.0, dynamic_ncols=True,
                disable=os.environ.get("SEPCLUSTER_NO_PROGRESS") == "1")


def _make_layout(out_dir: str, labels) -> tuple[str, str]:
    fg = storage.join(out_dir, "foreground")
    bg = storage.join(out_dir, "background")
    if not storage.is_remote(out_dir):  # S3 has no empty folders; Scaper only reads local ones
        storage.makedirs(bg)
        for label in labels:
            storage.makedirs(storage.join(fg, label))
    return fg, bg


def _unique(name: str, used: set[str]) -> str:
    base, k = name, 2
    while name in used:
        name = f"{base} ({k})"
        k += 1
    used.add(name)
    return name


def _write_song(fg: str, song: str, stems: dict[str, np.ndarray], rate: int, bits: int, source: str) -> float:
    """Write one song's stems (padded to a common length); return its duration in seconds."""
    from ..audio import write_audio

    lengths = {label: a.shape[0] for label, a in stems.items()}
    longest = max(lengths.values())
    if min(lengths.values()) != longest:
        log.warning("%s: stems differ in length %s; padding with silence to %d samples",
                    source, lengths, longest)
    for label, audio in stems.items():
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[:, None]
        if audio.shape[0] < longest:
            audio = np.pad(audio, ((0, longest - audio.shape[0]), (0, 0)))
        if not np.all(np.isfinite(audio)):
            raise AudioError(f"{source}: the {label} stem holds NaN or infinite samples")
        write_audio(storage.join(fg, label, song + ".wav"), audio, rate, format="wav", bits=bits)
    return longest / float(rate)


def _write_info(out_dir: str, info: dict) -> None:
    storage.write_text(storage.join(out_dir, LIBRARY_FILE), json.dumps(info, indent=2) + "\n")


def prepare_musdb(root: str, out_dir: str, subset: str = "train", is_wav: bool = False, split: str | None = None,
                  labels=MUSDB_SOURCES, bits: int = 16) -> dict:
    """Write the stems of a MUSDB18 subset as a Scaper stem library.

    ``root`` (local) holds ``<subset>/*.stem.mp4`` (``is_wav=False``, decoded with ffmpeg
    through musdb/stempeg) or ``<subset>/<track>/<label>.wav`` (``is_wav=True``, the HQ
    layout). ``split`` (``"train"``/``"valid"``, only with ``subset="train"``) applies musdb's
    validation split. Writes ``out_dir/foreground/<label>/<track>.wav`` (``(samples,
    channels)`` PCM, ``bits`` 16/24 or 32 float) for each of ``labels`` and an empty
    ``out_dir/background/``. Returns the description also written to ``library.json``.
    Raises DataError when the root or subset folder is missing or holds no tracks, and
    AudioError naming the track when a track cannot be decoded.
    """
    if subset not in MUSDB_SUBSETS:
        raise ConfigError("subset", f"must be one of {', '.join(MUSDB_SUBSETS)}, got {subset!r}")
    if split is not None and split not in MUSDB_SPLITS:
        raise ConfigError("split", f"must be one of {', '.join(MUSDB_SPLITS)} or empty, got {split!r}")
    if split is not None and subset != "train":
        raise ConfigError("split", f"only applies to subset 'train', not {subset!r}")
    labels = list(labels)
    unknown = [lb for lb in labels if lb not in MUSDB_SOURCES]
    if unknown or not labels:
        raise ConfigError("labels", f"MUSDB18 has the stems {', '.join(MUSDB_SOURCES)}; got {labels!r}")
    if storage.is_remote(root) or str(root).startswith("file://"):
        if storage.is_remote(root):
            raise ConfigError("musdb", f"{storage.redact(root)}: the MUSDB18 root must be a local folder")
        root = storage.resolve(root)[1]
    root = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(root):
        raise DataError(f"{root}: the MUSDB18 root does not exist or is not a folder")
    subset_dir = os.path.join(root, subset)
    layout = (f"{subset}/<track>/{{vocals,drums,bass,other}}.wav" if is_wav else f"{subset}/*.stem.mp4")
    if not os.path.isdir(subset_dir):
        hint = ""
        if not is_wav and any(f.endswith(".stem.mp4") for f in os.listdir(root)):
            hint = f"; the .stem.mp4 files found directly in {root} belong in {subset_dir}"
        raise DataError(f"{root}: no '{subset}' folder; a MUSDB18 root holds {layout}{hint}")

    import musdb

    try:
        db = musdb.DB(root=root, subsets=subset, is_wav=is_wav, split=split)
    except SepclusterError:
        raise
    except Exception as exc:  # musdb/stempeg raise plain exceptions (ffprobe missing, bad file)
        raise DataError(f"{root}: musdb cannot read the {subset} subset ({type(exc).__name__}: {exc})") from exc
    if len(db.tracks) == 0:
        raise DataError(f"{subset_dir}: no MUSDB18 tracks found (expected {layout}"
                        f"{'' if is_wav else '; use --is-wav for the HQ WAV layout'})")

    fg, _ = _make_layout(out_dir, labels)
    used: set[str] = set()
    tracks = []
    with _progress(len(db.tracks), f"prepare musdb {subset}") as bar:
        for track in db.tracks:
            missing = [lb for lb in labels if lb not in (track.sources or {})]
            if missing:
                raise DataError(f"{track.path}: track '{track.name}' has no {', '.join(missing)} stem")
            try:
                if is_wav:
                    stems = {lb: track.sources[lb].audio for lb in labels}
                else:  # one ffmpeg pass for all streams: (streams, samples, channels)
                    all_streams = track.stems
                    stems = {lb: all_streams[track.sources[lb].stem_id] for lb in labels}
                rate = int(track.rate)
            except SepclusterError:
                raise
            except Exception as exc:
                raise AudioError(f"{track.path}: cannot decode track '{track.name}' "
                                 f"({type(exc).__name__}: {exc})") from exc
            song = _unique(safe_name(track.name), used)
            seconds = _write_song(fg, song, stems, rate, bits, track.path)
            tracks.append({"name": song + ".wav", "source": track.name, "seconds": round(seconds, 3),
                           "sample_rate": rate})
            bar.update(1)
    info = {"generator": "sepcluster.stems.prepare", "source": "musdb", "root": root, "subset": subset,
            "split": split, "is_wav": bool(is_wav), "labels": labels, "songs": len(tracks), "tracks": tracks}
    _write_info(out_dir, info)
    log.info("prepared %d MUSDB18 %s tracks into %s", len(tracks), subset, storage.redact(out_dir))
    return info


def prepare_folders(root: str, out_dir: str, labels=None, bits: int = 16) -> dict:
    """Write a ``root/<song>/<label>.wav`` tree as a Scaper stem library.

    Labels are the audio file names found (:func:`sepcluster.datasets.folders.read_track_folder`)
    except ``mixture``; pass ``labels`` to keep only those (each song must then have all of them).
    Stems of one song must share a sample rate; shorter ones are padded with silence to the
    longest. ``root`` and ``out_dir`` may be local paths or URIs. Writes
    ``out_dir/foreground/<label>/<song>.wav`` (``(samples, channels)``), an empty
    ``out_dir/background/`` and ``library.json``; returns the description. Raises DataError
    naming the folder when ``root`` is missing or holds no song folders with stems.
    """
    from ..audio import read_audio

    if not storage.isdir(root):
        raise DataError(f"{storage.redact(root)}: the folder of songs does not exist or is not a folder")
    wanted = list(labels) if labels is not None else None
    if wanted is not None and not wanted:
        raise ConfigError("labels", "is empty: name at least one label or leave it out")
    songs: list[tuple[str, dict[str, str]]] = []
    for folder in storage.list_dirs(root):
        found = {label: ref[0] for label, ref in read_track_folder(folder).stems.items()}
        if wanted is not None:
            missing = [lb for lb in wanted if lb not in found]
            if missing and found:
                raise DataError(f"{storage.redact(folder)}: no stem for label(s) {', '.join(missing)}")
            found = {lb: found[lb] for lb in wanted if lb in found}
        if found:
            songs.append((storage.basename(folder), found))
    if not songs:
        raise DataError(f"{storage.redact(root)}: no song folders with stems found (expected "
                        f"{storage.redact(root)}/<song>/<label>.wav)")
    all_labels = sorted({lb for _, found in songs for lb in found})
    fg, _ = _make_layout(out_dir, all_labels)
    used: set[str] = set()
    tracks = []
    with _progress(len(songs), "prepare folders") as bar:
        for name, found in songs:
            stems, rates = {}, {}
            for label, uri in found.items():
                stems[label], rates[label] = read_audio(uri)
            if len(set(rates.values())) > 1:
                raise DataError(f"{storage.redact(storage.join(root, name))}: stems have different sample rates "
                                f"{rates}; resample them to one rate first")
            rate = next(iter(rates.values()))
            song = _unique(safe_name(name), used)
            seconds = _write_song(fg, song, stems, rate, bits, storage.redact(storage.join(root, name)))
            tracks.append({"name": song + ".wav", "source": name, "labels": sorted(found),
                           "seconds": round(seconds, 3), "sample_rate": rate})
            bar.update(1)
    info = {"generator": "sepcluster.stems.prepare", "source": "folders", "root": storage.redact(root),
            "labels": all_labels, "songs": len(tracks), "tracks": tracks}
    _write_info(out_dir, info)
    log.info("prepared %d songs (%s) into %s", len(tracks), ", ".join(all_labels), storage.redact(out_dir))
    return info


def _moises_song(track, used: set[str]) -> str:
    name = f"{track.artist} - {track.song}" if track.artist and track.song else (track.song or track.name)
    return _unique(safe_name(name), used)


def prepare_moisesdb(root: str, out_dir: str, label_map=None, labels=None, bits: int = 16) -> dict:
    """Write a MoisesDB root as a Scaper stem library (module docstring).

    ``label_map``: a mapping target -> MoisesDB stems or a YAML URI (default MUSDB's four
    targets, :data:`sepcluster.datasets.moisesdb.MUSDB_MAP`); ``labels``: keep only these targets.
    Writes ``out_dir/foreground/<label>/<song>.wav`` (``(samples, channels)`` PCM; songs named
    ``<artist> - <song>``), an empty ``background/`` and ``library.json`` (each song's uuid, silent
    labels, and the skipped tracks with their error). Returns that description. Raises DataError
    when the root holds no MoisesDB track or no track could be prepared.
    """
    mapping = moisesdb.load_label_map(label_map)
    if labels is not None:
        unknown = [lb for lb in labels if lb not in mapping]
        if unknown or not labels:
            raise ConfigError("labels", f"{unknown or labels}: not targets of the label map ({', '.join(mapping)})")
        mapping = {lb: mapping[lb] for lb in labels}
    tracks = moisesdb.list_moisesdb(root)
    fg, _ = _make_layout(out_dir, list(mapping))
    used: set[str] = set()
    done, skipped = [], []
    with _progress(len(tracks), "prepare moisesdb") as bar:
        for track in tracks:
            files = moisesdb.assign(track, mapping)
            try:
                stems, rate = moisesdb.read_targets(files, track=track.name)
            except SepclusterError as exc:
                log.warning("skipped MoisesDB track %s: %s", track.name, exc)
                skipped.append({"track": track.name, "error": str(exc)})
                bar.update(1)
                continue
            song = _moises_song(track, used)
            seconds = _write_song(fg, song, stems, rate, bits, storage.redact(track.folder))
            done.append({"name": song + ".wav", "source": track.name, "provider": track.provider,
                         "silent": sorted(t for t, f in files.items() if not f), "seconds": round(seconds, 3),
                         "sample_rate": rate})
            bar.update(1)
    if not done:
        raise DataError(f"{storage.redact(root)}: no MoisesDB track could be prepared ({skipped[0]['error']})")
    info = {"generator": "sepcluster.stems.prepare", "source": "moisesdb", "root": storage.redact(root),
            "label_map": {k: list(v) for k, v in mapping.items()}, "labels": list(mapping), "songs": len(done),
            "tracks": done, "skipped": skipped}
    _write_info(out_dir, info)
    log.info("prepared %d MoisesDB tracks (%d skipped) into %s", len(done), len(skipped), storage.redact(out_dir))
    return info
