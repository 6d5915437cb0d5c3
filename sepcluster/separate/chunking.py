"""The streaming pieces of the chunked engine (:mod:`sepcluster.separate.engine`).

- :class:`StreamResampler`: soxr's stream resampler (HQ), or the identity at equal rates;
  ``float32 (samples, channels)`` blocks in and out.
- :class:`PaddedSignal`: the model-rate signal as ``torch.stft(center=True)`` sees it, reflect-
  padded by ``n_fft // 2`` at both ends, held only from the first sample a later chunk needs.
- :class:`ChunkScheduler`: cuts :class:`Chunk` s of ``chunk_frames`` STFT frames that overlap by
  ``overlap_frames`` out of the padded signal, on frame boundaries, as soon as their samples
  have arrived.
- :class:`CrossFade`: complementary raised-cosine weights (sum 1) over the overlapping frames
  of consecutive chunks' estimates.
- :func:`chunk_frames`: chunk and overlap lengths in frames from seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch

from sepcluster.errors import ConfigError


def chunk_frames(chunk_seconds: Optional[float], overlap_seconds: float, frames_per_second: float) -> tuple:
    """``(chunk_frames, overlap_frames)`` for chunks of ``chunk_seconds`` overlapping by
    ``overlap_seconds`` (``chunk_seconds=None``: ``(None, 0)``, the whole track in one chunk)."""
    if chunk_seconds is None:
        return None, 0
    if chunk_seconds <= 0 or overlap_seconds < 0:
        raise ConfigError("chunk_seconds", f"must be > 0 with overlap >= 0, got {chunk_seconds}, {overlap_seconds}")
    chunk = max(8, int(round(chunk_seconds * frames_per_second)))
    overlap = int(round(overlap_seconds * frames_per_second))
    if overlap * 2 > chunk:
        raise ConfigError("overlap_seconds", f"must be at most half of chunk_seconds ({chunk_seconds})")
    return chunk, overlap


class StreamResampler:
    """soxr stream (HQ) or identity: ``float32 (samples, channels)`` in and out."""

    def __init__(self, sr_in: int, sr_out: int, channels: int):
        self.identity = int(sr_in) == int(sr_out)
        self.channels = channels
        if not self.identity:
            import soxr

            self.stream = soxr.ResampleStream(int(sr_in), int(sr_out), channels, dtype="float32", quality="HQ")

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next block ``x``; ``last=True`` flushes the stream."""
        if self.identity:
            return x
        out = self.stream.resample_chunk(np.ascontiguousarray(x, dtype=np.float32), last=last)
        return out.reshape(-1, self.channels)


class PaddedSignal:
    """The reflect-padded signal of ``center=True`` (``pad`` samples mirrored at both ends).

    Samples are addressed in padded coordinates (the first original sample is at ``pad``);
    ``buf[0]`` is padded sample ``start``. ``length``: original samples received so far.
    """

    def __init__(self, pad: int, channels: int):
        self.pad, self.channels = int(pad), int(channels)
        self.head: list = []  # the first blocks, until more than ``pad`` samples have come
        self.buf: Optional[np.ndarray] = None
        self.start = 0
        self.length = 0

    def append(self, x: np.ndarray) -> bool:
        """Add ``float32 (samples, channels)``; True when the buffer grew (chunks may be ready)."""
        if x.shape[0] == 0:
            return False
        if self.buf is None:
            self.head.append(x)
            if sum(h.shape[0] for h in self.head) <= self.pad:
                return False
            x = np.concatenate(self.head)
            self.head.clear()
            self._begin(x)
        else:
            self.buf = np.concatenate([self.buf, x])
            self.length += x.shape[0]
        return True

    def _begin(self, x: np.ndarray) -> None:
        self.buf = np.concatenate([x[1:self.pad + 1][::-1], x])
        self.length = x.shape[0]

    def close(self) -> None:
        """End of the signal: mirror its end (a signal of ``pad`` samples or fewer is first
        zero-padded to ``pad + 1``, the shortest ``center=True`` accepts)."""
        if self.buf is None:
            x = np.concatenate(self.head) if self.head else np.zeros((0, self.channels), np.float32)
            x = np.concatenate([x, np.zeros((self.pad + 1 - x.shape[0], x.shape[1]), np.float32)])
            self.head.clear()
            self._begin(x)
        end_tail = self.buf[-self.pad - 1:-1][::-1]
        self.buf = np.concatenate([self.buf, end_tail])

    def segment(self, lo: int, hi: int) -> np.ndarray:
        """A copy of padded samples ``lo .. hi-1``: ``float32 (hi - lo, channels)``."""
        return np.array(self.buf[lo - self.start:hi - self.start])

    def drop_before(self, pos: int) -> None:
        """Forget the padded samples before ``pos``."""
        drop = pos - self.start
        if drop > 0:
            self.buf = self.buf[drop:]
            self.start += drop


@dataclass
class Chunk:
    """STFT frames ``start .. stop-1`` of the track and their padded samples
    ``segment float32 ((stop - start - 1) * hop + n_fft, channels)``; ``last``: the track's end."""

    start: int
    stop: int
    last: bool
    segment: np.ndarray


class ChunkScheduler:
    """Cuts chunks of ``chunk_frames`` frames (None: one chunk) that overlap by ``overlap_frames``.

    :meth:`cut` yields every chunk whose samples are all in the :class:`PaddedSignal` and
    drops the samples no later chunk needs; with ``eos=True`` (the signal is closed) it also
    yields the final, shorter chunk.
    """

    def __init__(self, n_fft: int, hop: int, chunk_frames: Optional[int], overlap_frames: int):
        self.n_fft, self.hop = int(n_fft), int(hop)
        self.chunk_frames, self.overlap_frames = chunk_frames, int(overlap_frames)
        self.next_start = 0  # first frame of the next chunk
        self.finished = False

    def _span(self, length: int, eos: bool) -> Optional[tuple]:
        """``(start, stop, last)`` of the next chunk, or None while its samples are missing."""
        a = self.next_start
        if eos:
            total_frames = length // self.hop + 1
            n_chunk = self.chunk_frames or total_frames
            return a, min(a + n_chunk, total_frames), a + n_chunk >= total_frames
        if self.chunk_frames is None:
            return None
        b = a + self.chunk_frames
        if length < max(b * self.hop, (b - 1) * self.hop + self.n_fft - self.n_fft // 2):
            return None
        return a, b, False

    def cut(self, signal: PaddedSignal, eos: bool = False) -> Iterator[Chunk]:
        """The chunks ready in ``signal``, in order (see the class docstring)."""
        while not self.finished:
            span = self._span(signal.length, eos)
            if span is None:
                return
            a, b, last = span
            chunk = Chunk(a, b, last, signal.segment(a * self.hop, (b - 1) * self.hop + self.n_fft))
            if last:
                self.finished = True
            else:
                self.next_start = b - self.overlap_frames
                signal.drop_before(self.next_start * self.hop)
            yield chunk


class CrossFade:
    """Cross-fades consecutive chunks' estimates ``(..., bins, frames)`` over ``overlap`` frames.

    :meth:`apply` adds the previous chunk's faded-out tail to the faded-in head of this one,
    keeps this chunk's own tail (faded out) for the next, and returns the finished frames.
    """

    def __init__(self, overlap: int, device="cpu"):
        self.overlap = int(overlap)
        self.tail: Optional[torch.Tensor] = None
        self.w_in = self.w_out = None
        if self.overlap:
            i = torch.arange(self.overlap, dtype=torch.float32, device=device)
            self.w_out = torch.cos(0.5 * math.pi * (i + 0.5) / self.overlap) ** 2
            self.w_in = 1.0 - self.w_out

    def apply(self, Y: torch.Tensor, first: bool, last: bool) -> torch.Tensor:
        """The frames of chunk ``Y`` that no later chunk changes (all of them when ``last``)."""
        ov = self.overlap
        if not ov:
            return Y
        if not first:
            Y = Y.clone()
            Y[..., :ov] = self.tail + Y[..., :ov] * self.w_in
        if last:
            return Y
        self.tail = Y[..., -ov:] * self.w_out
        return Y[..., :-ov]
