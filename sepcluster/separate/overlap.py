"""The waveform chunk schemes of the chunked engine: demucs' ``apply_model`` and MSST's ``demix``, streamed.

A *chunker* plans the chunks of one model over one track and overlap-adds the model's outputs,
fed the track in blocks, never whole. Its cycle (driven by
:class:`~sepcluster.separate.waveform.WaveformEngine`):

    push(x (n, channels))  ->  jobs(): the chunks whose samples have all arrived, as
    :class:`ChunkJob` s (input ``float32 (channels, samples)``)  ->  the model runs them
    ->  put(job, y (sources, channels, samples)) in job order  ->  pop(): the output samples
    ``(sources, channels, n)`` no later chunk can change.  close() at the end of the track.

Both schemes reproduce their reference's arithmetic operation for operation (same chunk
contents, same ``+=`` order, one division), so on the same device and batch composition the
result is bit-identical to the reference:

- :class:`DemucsChunker`: demucs 4.1.0 ``apply_model(shifts=0, split=True, overlap,
  transition_power=1)`` (``demucs/apply.py:233-323``): offsets ``k * stride``, ``stride =
  int((1 - overlap) * segment_length)``; a chunk of ``n = min(L - offset, segment_length)``
  samples is fed as ``TensorChunk.padded(V(n))`` (``V``: :func:`sepcluster.models.demucs.
  chunk_input_length`; the padding takes the track's own samples around the chunk and zeros
  beyond the track), the output is centre-trimmed back to ``n`` and added with the first ``n``
  weights of the triangle; ``out / sum_weight`` at the end.
- :class:`MSSTChunker`: Music-Source-Separation-Training ``demix`` (generic mode,
  ``utils/model_utils.py``): the track reflect-padded by ``border = chunk_size - step`` at both
  ends when it is longer than ``2 * border`` (decided once that many samples arrived, or at the
  end); chunks every ``step = chunk_size // num_overlap``, a short chunk right-padded to
  ``chunk_size`` by reflection when longer than ``chunk_size // 2``, else by zeros; the fade
  window of each *flush* of ``flush_size`` (the config's ``inference.batch_size``) chunks loses
  its fade-in when the flush ends at chunk 0, else its fade-out when it holds the last chunk
  (so a flush's outputs are held until it is known whether a later chunk exists);
  ``result / counter`` with NaN -> 0; the border cut off.

Memory: each chunker holds its input from the next chunk's padded start on (about one
segment), the overlap-add accumulator over one segment, and for MSST one flush of outputs.
:meth:`held` reports the time samples it holds (the engine's bound on memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import torch


class SampleBuffer:
    """Samples ``start .. start + len - 1`` of a signal: ``float32 (n, channels)``; ``length`` received."""

    def __init__(self, channels: int):
        self.channels = int(channels)
        self.buf = np.zeros((0, self.channels), np.float32)
        self.start = 0

    @property
    def length(self) -> int:
        return self.start + self.buf.shape[0]

    def append(self, x: np.ndarray) -> None:
        if x.shape[0]:
            self.buf = np.concatenate([self.buf, np.asarray(x, np.float32)])

    def take(self, lo: int, hi: int, total: Optional[int] = None) -> np.ndarray:
        """Samples ``lo .. hi-1`` as ``float32 (channels, hi - lo)``; those before 0 or from ``total``
        (the signal's length, when known) on are zeros. Raises when a needed sample was dropped."""
        end = self.length if total is None else min(total, self.length)
        a, b = max(lo, 0), min(hi, end)
        if a < self.start or (total is None and hi > self.length):
            raise AssertionError(f"samples {lo}..{hi} are not held ({self.start}..{self.length})")
        out = np.zeros((self.channels, hi - lo), np.float32)
        if b > a:
            out[:, a - lo:b - lo] = self.buf[a - self.start:b - self.start].T
        return out

    def drop_before(self, pos: int) -> None:
        drop = min(pos, self.length) - self.start
        if drop > 0:
            self.buf = self.buf[drop:]
            self.start += drop


class OverlapAdd:
    """``sum_k w_k * y_k`` and ``sum_k w_k`` over positions, added in order; emits their quotient.

    ``add(offset, y (sources, channels, n), w (n,))`` adds ``y * w`` (the references' ``+=``);
    :meth:`take` returns ``sum / weight`` of positions ``start .. upto-1`` (``nan_to_zero``:
    0/0 -> 0, as MSST's ``np.nan_to_num``) and forgets them.
    """

    def __init__(self, sources: int, channels: int, nan_to_zero: bool = False):
        self.acc = torch.zeros(sources, channels, 0)
        self.weight = torch.zeros(0)
        self.start = 0
        self.nan_to_zero = nan_to_zero

    @property
    def held(self) -> int:
        return self.weight.shape[0]

    def add(self, offset: int, y: torch.Tensor, w: torch.Tensor) -> None:
        n = y.shape[-1]
        a = offset - self.start
        if a < 0:
            raise AssertionError(f"position {offset} was already emitted (next {self.start})")
        grow = a + n - self.weight.shape[0]
        if grow > 0:
            self.acc = torch.cat([self.acc, self.acc.new_zeros(*self.acc.shape[:2], grow)], dim=-1)
            self.weight = torch.cat([self.weight, self.weight.new_zeros(grow)])
        self.acc[..., a:a + n] += y * w
        self.weight[a:a + n] += w

    def take(self, upto: int) -> torch.Tensor:
        """``(sources, channels, upto - start)``: the finished positions (zeros past the last chunk)."""
        m = max(0, upto - self.start)
        if m > self.weight.shape[0]:
            grow = m - self.weight.shape[0]
            self.acc = torch.cat([self.acc, self.acc.new_zeros(*self.acc.shape[:2], grow)], dim=-1)
            self.weight = torch.cat([self.weight, self.weight.new_zeros(grow)])
        out = self.acc[..., :m] / self.weight[:m]
        if self.nan_to_zero:
            out = torch.nan_to_num(out, nan=0.0)
        self.acc, self.weight = self.acc[..., m:].clone(), self.weight[m:].clone()
        self.start += m
        return out


@dataclass
class ChunkJob:
    """One chunk: ``input float32 (channels, samples)``; its output covers ``offset .. offset+length-1``."""

    index: int
    offset: int
    length: int
    input: np.ndarray


class _Chunker:
    """What both schemes share: the input buffer, the accumulator, in-order results.

    ``hop``: the distance between chunk starts; positions before ``added * hop`` get no more
    additions once ``added`` chunks are in the accumulator (all positions once every chunk is).
    """

    hop: int = 1

    def __init__(self, sources: int, channels: int, nan_to_zero: bool):
        self.signal = SampleBuffer(channels)
        self.ola = OverlapAdd(sources, channels, nan_to_zero)
        self.total: Optional[int] = None  # the (padded) signal's length, known at close
        self.next_cut = 0  # index of the next chunk to cut
        self.next_put = 0  # index of the next chunk whose output is expected
        self.added = 0  # chunks in the accumulator
        self.done = False  # every chunk is cut

    def push(self, x: np.ndarray) -> None:
        self.signal.append(x)

    def close(self) -> None:
        self.total = self.signal.length

    def _cut(self) -> None:
        """Count a chunk as cut; every chunk is once the next would start past the end."""
        self.next_cut += 1
        if self.total is not None and self.next_cut * self.hop >= self.total:
            self.done = True

    def _expect(self, job: ChunkJob) -> None:
        if job.index != self.next_put:
            raise AssertionError(f"chunk {job.index} came back out of order (expected {self.next_put})")
        self.next_put += 1

    @property
    def finished(self) -> bool:
        """Every chunk is in the accumulator."""
        return self.done and self.added == self.next_cut

    def _take(self) -> tuple:
        """``(first position, samples (sources, channels, n))`` that no later chunk touches."""
        lo = self.ola.start
        upto = self.total if self.finished else self.added * self.hop
        return lo, self.ola.take(max(upto, lo))

    def pop(self) -> torch.Tensor:
        """``(sources, channels, n)``: the next output samples of the track that no later chunk changes."""
        return self._take()[1]

    def held(self) -> int:
        """Time samples held: the input buffer and the accumulator (plus held outputs, MSST)."""
        return self.signal.buf.shape[0] + self.ola.held


class DemucsChunker(_Chunker):
    """demucs ``apply_model(shifts=0, split=True, overlap, transition_power)`` for one model (module docstring).

    ``segment_length``: ``int(samplerate * segment)``; ``input_length(n)``: the padded input length
    for a chunk of ``n`` samples (:func:`sepcluster.models.demucs.chunk_input_length`).
    """

    def __init__(self, segment_length: int, input_length: Callable[[int], int], sources: int, channels: int,
                 overlap: float = 0.25, transition_power: float = 1.0):
        super().__init__(sources, channels, nan_to_zero=False)
        self.segment_length = int(segment_length)
        self.hop = int((1 - overlap) * self.segment_length)  # apply_model's stride
        if self.hop <= 0:
            raise ValueError(f"overlap {overlap} leaves no stride for a segment of {segment_length} samples")
        self.input_length = input_length
        seg = self.segment_length
        weight = torch.cat([torch.arange(1, seg // 2 + 1), torch.arange(seg - seg // 2, 0, -1)])
        self.weight = (weight / weight.max()) ** transition_power  # demucs/apply.py:271-276
        self.full_input = int(input_length(seg))
        self.margin = self.full_input  # left context a chunk may need: (V(n) - n) // 2 <= V(seg)

    def close(self) -> None:
        super().close()
        self.done = self.next_cut * self.hop >= self.total

    def jobs(self) -> Iterator[ChunkJob]:
        """The chunks whose samples (with TensorChunk.padded's context) have all arrived."""
        while not self.done:
            offset = self.next_cut * self.hop
            n = self.segment_length if self.total is None else min(self.total - offset, self.segment_length)
            v = self.full_input if n == self.segment_length else int(self.input_length(n))
            lo = offset - (v - n) // 2
            if self.total is None and lo + v > self.signal.length:
                return  # the right context has not arrived yet
            job = ChunkJob(self.next_cut, offset, n, self.signal.take(lo, lo + v, self.total))
            self._cut()
            self.signal.drop_before(self.next_cut * self.hop - self.margin)
            yield job

    def put(self, job: ChunkJob, y: torch.Tensor) -> None:
        """Add the model's output ``(sources, channels, V(n))`` of ``job``, centre-trimmed to ``n``."""
        self._expect(job)
        delta = y.shape[-1] - job.length
        self.ola.add(job.offset, y[..., delta // 2:delta // 2 + job.length], self.weight[:job.length])
        self.added += 1


def msst_window(chunk_size: int, fade_size: int) -> torch.Tensor:
    """MSST's ``_getWindowingArray``: ones with linear fades of ``fade_size`` at both ends, ``(chunk_size,)``."""
    if fade_size <= 0:
        return torch.ones(chunk_size)
    window = torch.ones(chunk_size)
    window[-fade_size:] = torch.linspace(1, 0, fade_size)
    window[:fade_size] = torch.linspace(0, 1, fade_size)
    return window


class MSSTChunker(_Chunker):
    """MSST ``demix`` (generic mode) for one model (module docstring).

    ``flush_size``: the config's ``inference.batch_size``, which sets the fade windows whatever
    batches the model actually runs. Positions here are in the border-padded signal.
    """

    def __init__(self, chunk_size: int, num_overlap: int, flush_size: int, sources: int, channels: int):
        super().__init__(sources, channels, nan_to_zero=True)
        self.chunk_size = int(chunk_size)
        self.hop = self.chunk_size // int(num_overlap)  # MSST's step
        if self.hop <= 0:
            raise ValueError(f"num_overlap {num_overlap} is larger than chunk_size {chunk_size}")
        self.fade_size = self.chunk_size // 10
        self.border = self.chunk_size - self.hop
        self.flush_size = max(1, int(flush_size))
        self.window = msst_window(self.chunk_size, self.fade_size)
        self.padded: Optional[bool] = None if self.border > 0 else False
        self.head: list = []  # the first input, until the padding is decided
        self.received = 0  # input samples so far
        self.flush: list = []  # (job, output) of the current flush, until its window is known

    # --- input: the border-padded signal

    def push(self, x: np.ndarray) -> None:
        self.received += x.shape[0]
        if self.padded is not None:
            self.signal.append(x)
            return
        self.head.append(np.asarray(x, np.float32))
        if self.received > 2 * self.border:  # demix pads only a track longer than 2 * border
            self._start(True)

    def _start(self, padded: bool) -> None:
        x = np.concatenate(self.head) if self.head else np.zeros((0, self.signal.channels), np.float32)
        self.head = []
        self.padded = padded
        if padded:  # F.pad(mode="reflect"): x[border], ..., x[1] before x[0]
            self.signal.append(np.ascontiguousarray(x[1:self.border + 1][::-1]))
        self.signal.append(x)

    def close(self) -> None:
        if self.padded is None:
            self._start(self.received > 2 * self.border)
        if self.padded:  # x[L-2], ..., x[L-1-border] after x[L-1]
            last = self.signal.length
            tail = self.signal.take(last - self.border - 1, last - 1)
            self.signal.append(np.ascontiguousarray(tail[:, ::-1].T))
        super().close()
        self.done = self.next_cut * self.hop >= self.total

    # --- chunks

    def jobs(self) -> Iterator[ChunkJob]:
        """The chunks whose samples have all arrived, right-padded to ``chunk_size`` as demix pads them."""
        while not self.done and self.padded is not None:
            start = self.next_cut * self.hop
            if self.total is None and start + self.chunk_size > self.signal.length:
                return
            n = self.chunk_size if self.total is None else min(self.chunk_size, self.total - start)
            part = self.signal.take(start, start + n, self.total)
            if n < self.chunk_size:
                mode = "reflect" if n > self.chunk_size // 2 else "constant"
                part = np.pad(part, ((0, 0), (0, self.chunk_size - n)), mode=mode)
            job = ChunkJob(self.next_cut, start, n, part)
            self._cut()
            # keep what the next chunk needs, and the end reflection's source x[L-1-border ..]
            self.signal.drop_before(min(self.next_cut * self.hop, self.signal.length - self.border - 1))
            yield job

    def put(self, job: ChunkJob, y: torch.Tensor) -> None:
        """Hold the output ``(sources, channels, chunk_size)`` of ``job`` until its flush's window is known."""
        self._expect(job)
        self.flush.append((job, y[..., :job.length]))
        self._settle()

    def _settle(self) -> None:
        """Add the held flush once it is complete and it is known whether it is the last one."""
        if not self.flush:
            return
        first = self.flush[0][0].index
        after = (first // self.flush_size + 1) * self.flush_size  # index after the flush's last chunk
        if self.total is not None:
            chunks = -(-self.total // self.hop)
            after = min(after, chunks)
            last = after == chunks
        else:  # the padded length is at least the samples held plus the end border
            if after * self.hop >= self.signal.length + (self.border if self.padded else 0):
                return  # unknown yet whether a chunk follows this flush
            last = False
        if first + len(self.flush) < after:
            return
        window = self.window.clone()
        if after == 1 and self.fade_size > 0:  # the flush ends at the first chunk: no fade-in
            window[:self.fade_size] = 1
        elif last and self.fade_size > 0:  # the last flush: no fade-out
            window[-self.fade_size:] = 1
        for job, y in self.flush:
            self.ola.add(job.offset, y, window[:job.length])
        self.added += len(self.flush)
        self.flush = []

    def pop(self) -> torch.Tensor:
        """``(sources, channels, n)``: the next finished samples of the track (the borders cut off)."""
        self._settle()
        lo, out = self._take()
        if not self.padded:
            return out
        end = self.total - self.border if self.total is not None else lo + out.shape[-1]
        a = min(max(self.border - lo, 0), out.shape[-1])
        b = max(a, min(out.shape[-1], end - lo))
        return out[..., a:b]

    def held(self) -> int:
        held = super().held() + sum(y.shape[-1] for _, y in self.flush)
        return held + sum(h.shape[0] for h in self.head)
