"""Streaming audio reads: decode a file (or an array) block by block, in bounded memory.

:class:`BlockReader` yields ``float32 (frames, channels)`` blocks (soundfile for
wav/flac/ogg/aiff, an ``ffmpeg`` pipe for mp3/m4a/aac/mp4 and the streams of a
``.stem.mp4``), so a track of any length decodes in bounded memory; every error names the
input. :class:`ArrayReader` gives the same interface over an in-memory array, and
:class:`ZippedReader` appends the channels of other readers (reference stems) to a main one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import ExitStack
from typing import Iterator

import numpy as np

from . import audio, storage
from .errors import AudioError

DEFAULT_BLOCK_FRAMES = 1 << 17


def _lower(uri: str) -> str:
    return storage.basename(uri).lower()


def is_audio(uri: str) -> bool:
    """Whether ``uri`` has one of :data:`sepcluster.audio.AUDIO_SUFFIXES`."""
    return _lower(uri).endswith(tuple(audio.AUDIO_SUFFIXES))


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
                msg = audio.tool_error(self._stderr.read())
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


class ZippedReader:
    """Blocks of ``main`` with the channels of ``others`` appended (see :func:`zip_blocks`);
    every reader must have the main reader's sample rate (AudioError otherwise)."""

    def __init__(self, main, others: list):
        self.main, self.others = main, list(others)
        for o in self.others:
            if int(o.sample_rate) != int(main.sample_rate):
                raise AudioError(f"{o.where}: sample rate {o.sample_rate} differs from the mixture's "
                                 f"{main.sample_rate}")
        self.sample_rate = main.sample_rate
        self.channels = main.channels + sum(o.channels for o in self.others)

    def __iter__(self):
        return zip_blocks(self.main, self.others)
