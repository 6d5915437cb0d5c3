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

Decoding (``open_reader``): :class:`BlockReader` yields ``float32 (frames, channels)``
blocks (soundfile for wav/flac/ogg/aiff, an ``ffmpeg`` pipe for mp3/m4a/aac/mp4), so a track
of any length decodes in bounded memory; every error names the input.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from sepcluster import audio, storage
from sepcluster.errors import AudioError, DataError

REFERENCE_NAMES = ("vocals", "drums", "bass", "other")
MANIFEST_SUFFIXES = (".parquet", ".csv")
_URI_COLUMNS = ("uri", "path", "source", "source_uri", "file")
_STEM_MP4 = ".stem.mp4"
RESERVED_NAMES = {"catalog.parquet", "catalog", "summary.json"}
DEFAULT_BLOCK_FRAMES = 1 << 17


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


# ---------------------------------------------------------------------------------------
# block decoding


class BlockReader:
    """Decode one audio stream in blocks: iterate for ``float32 (frames, channels)`` arrays.

    Attributes ``sample_rate``, ``channels`` and ``frames`` (an estimate for ffmpeg inputs;
    ``frames_read`` is exact after iteration). Use as a context manager (remote inputs are
    downloaded to a temporary file, removed on exit). Raises AudioError naming the input
    when it is missing, empty, undecodable or holds NaN/inf samples.
    """

    def __init__(self, uri: str, stream: int = 0, block_frames: int = DEFAULT_BLOCK_FRAMES):
        self.uri = uri
        self.stream = int(stream)
        self.block_frames = int(block_frames)
        self.where = storage.redact(uri) + (f" (stream {stream})" if stream else "")
        self._stack = ExitStack()
        self._sf = None
        self._proc = None
        self._stderr = None
        self.frames_read = 0
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise

    def _open(self) -> None:
        try:
            path = self._stack.enter_context(storage.local_copy(self.uri))
        except FileNotFoundError as exc:
            raise AudioError(f"{self.where}: no such file") from exc
        except OSError as exc:
            raise AudioError(f"{self.where}: cannot be read ({exc})") from exc
        if not is_audio(self.uri):
            raise AudioError(f"{self.where}: unsupported audio format '{os.path.splitext(self.uri)[1] or '(none)'}'")
        if os.path.getsize(path) == 0:
            raise AudioError(f"{self.where}: the file is empty")
        self._path = path
        if _lower(self.uri).endswith(tuple(audio.FFMPEG_SUFFIXES)):
            info = audio.audio_info(self.uri if not storage.is_remote(self.uri) else path, stream=self.stream)
            if info.sample_rate <= 0 or info.channels <= 0:
                raise AudioError(f"{self.where}: stream {self.stream} has no sample rate or channels")
            self.sample_rate, self.channels, self.frames = info.sample_rate, info.channels, info.frames
            exe = shutil.which("ffmpeg")
            if not exe:
                raise AudioError("ffmpeg is not installed: it is needed for mp3/m4a/mp4 inputs")
            self._stderr = self._stack.enter_context(tempfile.TemporaryFile())
            self._proc = subprocess.Popen(
                [exe, "-nostdin", "-v", "error", "-i", path, "-map", f"0:a:{self.stream}", "-f", "f32le",
                 "-acodec", "pcm_f32le", "-ac", str(self.channels), "-"],
                stdout=subprocess.PIPE, stderr=self._stderr)
            self._stack.callback(self._close_proc)
        else:
            if self.stream:
                raise AudioError(f"{self.where}: only stream 0 exists in a {os.path.splitext(self.uri)[1]} file")
            import soundfile as sf

            try:
                handle = sf.SoundFile(path)
            except Exception as exc:  # noqa: BLE001 - libsndfile errors
                raise AudioError(f"{self.where}: not a readable audio file ({exc})") from exc
            self._sf = self._stack.enter_context(handle)
            self.sample_rate, self.channels = int(handle.samplerate), int(handle.channels)
            self.frames = int(handle.frames)
            if self.frames <= 0:
                raise AudioError(f"{self.where}: the file holds no samples")

    def _close_proc(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    @property
    def duration(self) -> float:
        return self.frames / float(self.sample_rate) if self.sample_rate else 0.0

    def __enter__(self) -> "BlockReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def _check(self, block: np.ndarray) -> np.ndarray:
        if not np.isfinite(block).all():
            raise AudioError(f"{self.where}: the audio holds NaN or infinite samples "
                             f"(near {self.frames_read / self.sample_rate:.1f} s)")
        self.frames_read += block.shape[0]
        return block

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._sf is not None:
            while True:
                try:
                    block = self._sf.read(self.block_frames, dtype="float32", always_2d=True)
                except Exception as exc:  # noqa: BLE001
                    raise AudioError(f"{self.where}: decoding failed after {self.frames_read} frames ({exc})") from exc
                if block.shape[0] == 0:
                    break
                yield self._check(np.ascontiguousarray(block))
        else:
            nbytes = self.block_frames * self.channels * 4
            out = self._proc.stdout
            while True:
                data = out.read(nbytes)
                if not data:
                    break
                usable = len(data) - len(data) % (self.channels * 4)
                block = np.frombuffer(data[:usable], dtype="<f4").reshape(-1, self.channels)
                yield self._check(np.array(block, dtype=np.float32))
            code = self._proc.wait()
            if code != 0:
                self._stderr.seek(0)
                msg = self._stderr.read().decode(errors="replace").strip()[:300]
                raise AudioError(f"{self.where}: ffmpeg cannot decode it: {msg or f'exit code {code}'}")
        if self.frames_read == 0:
            raise AudioError(f"{self.where}: the file holds no samples")


def open_reader(uri: str, stream: int = 0, block_frames: int = DEFAULT_BLOCK_FRAMES) -> BlockReader:
    """A :class:`BlockReader` for ``uri`` (``stream`` for multi-stream files)."""
    return BlockReader(uri, stream=stream, block_frames=block_frames)


class ArrayReader:
    """A :class:`BlockReader` look-alike over an in-memory ``(frames, channels)`` array."""

    def __init__(self, audio_array: np.ndarray, sample_rate: int, block_frames: int = DEFAULT_BLOCK_FRAMES,
                 where: str = "audio"):
        arr = np.asarray(audio_array, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise AudioError(f"{where}: audio must be (samples, channels), got shape {arr.shape}")
        if arr.shape[0] == 0:
            raise AudioError(f"{where}: the audio holds no samples")
        if not np.isfinite(arr).all():
            raise AudioError(f"{where}: the audio holds NaN or infinite samples")
        self.array = arr
        self.sample_rate = int(sample_rate)
        self.channels = int(arr.shape[1])
        self.frames = int(arr.shape[0])
        self.frames_read = 0
        self.block_frames = int(block_frames)
        self.where = where

    @property
    def duration(self) -> float:
        return self.frames / float(self.sample_rate)

    def __enter__(self) -> "ArrayReader":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, self.frames, self.block_frames):
            block = self.array[start:start + self.block_frames]
            self.frames_read += block.shape[0]
            yield block


def zip_blocks(main, others: list) -> Iterator[np.ndarray]:
    """Blocks of ``main`` with the channels of each reader in ``others`` appended (same
    rate required); the others are cut or zero-padded to the length of ``main``."""
    its = [iter(o) for o in others]
    pending = [np.zeros((0, o.channels), np.float32) for o in others]
    done = [False] * len(others)
    for block in main:
        n = block.shape[0]
        parts = [block]
        for i, it in enumerate(its):
            buf = pending[i]
            while buf.shape[0] < n and not done[i]:
                try:
                    buf = np.concatenate([buf, next(it)])
                except StopIteration:
                    done[i] = True
            if buf.shape[0] < n:
                buf = np.concatenate([buf, np.zeros((n - buf.shape[0], others[i].channels), np.float32)])
            parts.append(buf[:n])
            pending[i] = buf[n:]
        yield np.concatenate(parts, axis=1) if len(parts) > 1 else block
