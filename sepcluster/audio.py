"""Audio I/O and resampling. Arrays are ``float32 (samples, channels)`` everywhere here.

soundfile reads and writes wav/flac/ogg/aiff; ffmpeg decodes mp3, m4a/aac and the streams
of a Native Instruments ``.stem.mp4`` (stream 0 = mixture, then drums, bass, other, vocals);
soxr resamples. Every read error names the input; every write is atomic.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from . import storage
from .errors import AudioError

SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".aif", ".aiff", ".aifc")
FFMPEG_SUFFIXES = (".mp3", ".m4a", ".aac", ".mp4", ".opus", ".wma")
AUDIO_SUFFIXES = SOUNDFILE_SUFFIXES + FFMPEG_SUFFIXES
STEM_MP4_STREAMS = ("mixture", "drums", "bass", "other", "vocals")

_SUBTYPES = {
    ("wav", 16): "PCM_16", ("wav", 24): "PCM_24", ("wav", 32): "FLOAT",
    ("flac", 16): "PCM_16", ("flac", 24): "PCM_24",
    ("aiff", 16): "PCM_16", ("aiff", 24): "PCM_24", ("aiff", 32): "FLOAT",
    ("ogg", 16): "VORBIS", ("ogg", 24): "VORBIS", ("ogg", 32): "VORBIS",
}


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / float(self.sample_rate) if self.sample_rate else 0.0


def _suffix(uri: str) -> str:
    return os.path.splitext(str(uri))[1].lower()


def _needs_ffmpeg(uri: str) -> bool:
    return _suffix(uri) in FFMPEG_SUFFIXES


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if not exe:
        raise AudioError("ffmpeg is not installed: it is needed for mp3/m4a/mp4 inputs (run `make install`)")
    return exe


_ADDRESS = re.compile(r"\[[\w:. -]*@ ?(?:0x)?[0-9a-fA-F]+\]\s*")


def tool_error(stderr) -> str:
    """ffmpeg's / ffprobe's complaint in one line: the last line that says something, without the
    ``[mov,mp4 @ 0x55d...]`` context prefixes (memory addresses) and the input path it repeats."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else str(stderr or "")
    lines = [_ADDRESS.sub("", line).strip() for line in text.splitlines()]
    lines = [line.split(": ", 1)[1] if line.startswith("/") and ": " in line else line for line in lines]
    lines = [line for line in lines if line]
    return (lines[-1] if lines else "")[:200]


def _ffprobe(path: str, uri: str, stream: int) -> AudioInfo:
    exe = shutil.which("ffprobe")
    if not exe:
        raise AudioError("ffprobe is not installed: it is needed for mp3/m4a/mp4 inputs")
    proc = subprocess.run([exe, "-v", "error", "-select_streams", f"a:{stream}", "-show_streams",
                           "-show_format", "-of", "json", path], capture_output=True, text=True)
    if proc.returncode != 0:
        raise AudioError(f"{storage.redact(uri)}: cannot be decoded ({tool_error(proc.stderr) or 'ffprobe failed'})")
    info = json.loads(proc.stdout or "{}")
    streams = info.get("streams") or []
    if not streams:
        raise AudioError(f"{storage.redact(uri)}: no audio stream {stream}")
    st = streams[0]
    rate = int(st.get("sample_rate", 0))
    channels = int(st.get("channels", 0))
    duration = float(st.get("duration") or info.get("format", {}).get("duration") or 0.0)
    return AudioInfo(rate, channels, int(round(duration * rate)))


def _decode_ffmpeg(path: str, uri: str, stream: int) -> tuple[np.ndarray, int]:
    info = _ffprobe(path, uri, stream)
    if info.sample_rate <= 0 or info.channels <= 0:
        raise AudioError(f"{storage.redact(uri)}: stream {stream} has no sample rate or channels")
    proc = subprocess.run([_ffmpeg(), "-nostdin", "-v", "error", "-i", path, "-map", f"0:a:{stream}",
                           "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(info.channels), "-"],
                          capture_output=True)
    if proc.returncode != 0:
        raise AudioError(f"{storage.redact(uri)}: ffmpeg cannot decode it: {tool_error(proc.stderr) or 'failed'}")
    audio = np.frombuffer(proc.stdout, dtype="<f4").reshape(-1, info.channels)
    return np.array(audio, dtype=np.float32), info.sample_rate


def audio_info(uri: str, stream: int = 0) -> AudioInfo:
    """Sample rate, channels and frames of an audio file without decoding it all."""
    with storage.local_copy(uri) as path:
        if _needs_ffmpeg(uri):
            return _ffprobe(path, uri, stream)
        try:
            info = sf.info(path)
        except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError
            raise AudioError(f"{storage.redact(uri)}: not a readable audio file ({exc})") from exc
        return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def read_audio(uri: str, sample_rate: int | None = None, stream: int = 0) -> tuple[np.ndarray, int]:
    """Decode ``uri`` to ``(float32 (samples, channels), sample_rate)``.

    ``sample_rate`` resamples (soxr HQ) when it differs from the file's rate. ``stream``
    picks an audio stream of a multi-stream file (``.stem.mp4``: 0 mixture, 1 drums,
    2 bass, 3 other, 4 vocals). Raises AudioError naming the file when it cannot be decoded,
    is empty or holds non-finite samples.
    """
    try:
        with storage.local_copy(uri) as path:
            if os.path.getsize(path) == 0:
                raise AudioError(f"{storage.redact(uri)}: the file is empty")
            if _needs_ffmpeg(uri):
                audio, rate = _decode_ffmpeg(path, uri, stream)
            else:
                try:
                    audio, rate = sf.read(path, dtype="float32", always_2d=True)
                except Exception as exc:
                    raise AudioError(f"{storage.redact(uri)}: not a readable audio file ({exc})") from exc
    except FileNotFoundError as exc:
        raise AudioError(f"{storage.redact(uri)}: no such file") from exc
    if audio.shape[0] == 0:
        raise AudioError(f"{storage.redact(uri)}: the file holds no samples")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{storage.redact(uri)}: the audio holds NaN or infinite samples")
    if sample_rate and sample_rate != rate:
        audio = resample(audio, rate, sample_rate)
        rate = sample_rate
    return np.ascontiguousarray(audio, dtype=np.float32), int(rate)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``(samples, channels)`` from ``sr_in`` to ``sr_out`` with soxr (HQ)."""
    if int(sr_in) == int(sr_out):
        return np.asarray(audio, dtype=np.float32)
    out = soxr.resample(np.asarray(audio, dtype=np.float32), int(sr_in), int(sr_out), quality="HQ")
    return np.ascontiguousarray(out.reshape(-1, audio.shape[1]) if out.ndim == 1 else out, dtype=np.float32)


def _subtype(fmt: str, bits: int) -> str:
    key = (fmt, int(bits))
    if key not in _SUBTYPES:
        raise AudioError(f"format {fmt!r} with {bits} bits is not supported "
                         f"(wav: 16/24/32, flac: 16/24, aiff: 16/24/32, ogg)")
    return _SUBTYPES[key]


def _as_2d(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2:
        raise AudioError(f"audio must be (samples, channels), got shape {audio.shape}")
    return audio


def write_audio(uri: str, audio: np.ndarray, sample_rate: int, format: str = "wav", bits: int = 16) -> None:
    """Write ``(samples, channels)`` audio atomically as wav/flac/aiff/ogg."""
    fmt = format.lower()
    subtype = _subtype(fmt, bits)
    audio = _as_2d(audio)
    if subtype.startswith("PCM"):
        audio = np.clip(audio, -1.0, 1.0)
    with storage.atomic_output(uri, suffix=f".{fmt}") as tmp:
        sf.write(tmp, audio, int(sample_rate), subtype=subtype, format=fmt.upper() if fmt != "aiff" else "AIFF")


def encode_audio(audio: np.ndarray, sample_rate: int, format: str = "flac", bits: int = 16) -> bytes:
    """Encode ``(samples, channels)`` audio into bytes (for Parquet columns)."""
    fmt = format.lower()
    subtype = _subtype(fmt, bits)
    audio = _as_2d(audio)
    if subtype.startswith("PCM"):
        audio = np.clip(audio, -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, audio, int(sample_rate), subtype=subtype, format=fmt.upper())
    return buf.getvalue()


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Decode bytes written by :func:`encode_audio` to ``(float32 (samples, channels), rate)``."""
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio, int(rate)
