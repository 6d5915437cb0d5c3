"""Separating a track of any length with a waveform estimator: the streaming engine of demucs and RoFormers.

The track streams through, block by block, never whole:

    decode blocks (soundfile / ffmpeg)  ->  channel layout  ->  soxr stream to the model rate
    -> each model's chunk scheme (:mod:`sepcluster.separate.overlap`: demucs' ``apply_model``,
    MSST's ``demix``) cuts chunks as soon as their samples have arrived -> the model, in
    batches of ``batch_chunks`` chunks of equal length -> overlap-add in the reference's order
    -> the samples no later chunk can change -> a bag's per-source weights -> the targets (and
    the residual) -> soxr stream back to the input rate -> stems written block by block.

The chunking is the reference's, not ``chunk_seconds`` / ``overlap_seconds`` (ignored here), so
the output equals the reference's inference on the whole track (to float rounding: bit for bit
on the CPU with the reference's batch composition, for HTDemucs about 1e-7 as its self-attention
takes the SDPA path; see the tests for the tolerances).

Peak memory is set by the segment length and ``batch_chunks``, not by the track: each chunk
scheme holds about a segment of input and of overlap-add, MSST's one flush of outputs, a bag
the outputs of its faster models until the slowest catches up, and the residual the mixture
over the same span. :attr:`TrackStats.held_samples` reports the peak (in time samples).
Estimators with ``keep_heap`` (demucs on the CPU) have glibc keep freed memory
(:func:`sepcluster.memory.keep_freed_memory`: 10-20 % less CPU time for HTDemucs, whose chunks
page-fault their activations in anew otherwise); a published-size RoFormer does not (its
fragmented heap would double the peak RSS, 2.2 -> 4.7 GB).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from sepcluster.errors import ConfigError

from .chunking import StreamResampler
from .estimator_base import WAVEFORM
from .overlap import SampleBuffer
from .stages import BlockEngine, ChannelLayout, StemOutput

__all__ = ["WaveformEngine"]


@dataclass
class _Track:
    """The state of one track going through :meth:`WaveformEngine.run`."""

    layout: ChannelLayout
    sr_model: int
    sr_out: int
    resample_in: StreamResampler
    chunkers: list
    output: StemOutput
    out_frames: Optional[int]
    mixture: Optional[SampleBuffer]  # model-rate mixture kept for the residual
    pending: list = field(default_factory=list)  # per model: jobs waiting for a batch
    ready: list = field(default_factory=list)  # per model: finished outputs not yet combined
    frames_in: int = 0
    emitted: int = 0  # model-rate samples handed to the output
    chunks: int = 0
    held_peak: int = 0

    @property
    def frames(self) -> int:
        return self.frames_in if self.out_frames is None else int(self.out_frames)

    def held(self) -> int:
        held = sum(c.held() for c in self.chunkers)
        held += sum(j.input.shape[-1] for jobs in self.pending for j in jobs)
        held += sum(y.shape[-1] for parts in self.ready for y in parts)
        return held + (self.mixture.buf.shape[0] if self.mixture is not None else 0)


class WaveformEngine(BlockEngine):
    """Runs a waveform estimator (:mod:`sepcluster.separate.waveform_estimators`) over a track in the
    reference's chunks (see the module docstring).

    ``batch_chunks``: chunks per model call (None: the estimator's ``batch_size``);
    ``chunk_seconds`` / ``overlap_seconds`` are accepted for the entry points' sake and ignored;
    ``downmix`` averages tracks of more than two channels to mono (otherwise they are refused).
    ``device`` is the estimator's (set when it was made); the engine's own work is on the CPU.
    """

    def __init__(self, estimator, device="cpu", chunk_seconds=None, overlap_seconds=None,
                 batch_chunks: Optional[int] = None, downmix: bool = False):
        domain = getattr(estimator, "domain", None)
        if domain != WAVEFORM:
            raise ConfigError("estimator", f"{type(estimator).__name__} works on {domain!r} chunks; the waveform "
                                           f"engine runs {WAVEFORM} estimators")
        self.estimator = estimator
        self.batch_chunks = max(1, int(batch_chunks or getattr(estimator, "batch_size", 1) or 1))
        self.downmix = bool(downmix)

    def _keeps_heap(self) -> bool:
        return bool(getattr(self.estimator, "keep_heap", False))

    def _open(self, reader, sink, mix_channels, where, out_rate, out_frames) -> _Track:
        est = self.estimator
        sr_in = int(reader.sample_rate)
        layout = ChannelLayout.plan(int(reader.channels), mix_channels, 0, est.nb_channels, self.downmix, where)
        sr_model = int(est.sample_rate or sr_in)
        sr_out = int(out_rate or sr_in)
        chunkers = est.chunkers(layout.source)
        return _Track(layout=layout, sr_model=sr_model, sr_out=sr_out,
                      resample_in=StreamResampler(sr_in, sr_model, layout.source), chunkers=chunkers,
                      output=StemOutput(est.outputs, layout.source, sr_model, sr_out, sink), out_frames=out_frames,
                      mixture=SampleBuffer(layout.source) if getattr(est, "needs_mixture", False) else None,
                      pending=[[] for _ in chunkers], ready=[[] for _ in chunkers])

    def _feed(self, track: _Track, x: np.ndarray, last: bool = False) -> None:
        """Add model-rate samples ``(n, source channels)``; run the chunks they complete, emit what is final."""
        if track.mixture is not None:
            track.mixture.append(x)
        for i, chunker in enumerate(track.chunkers):
            if x.shape[0]:
                chunker.push(x)
            if last:
                chunker.close()
            track.pending[i].extend(chunker.jobs())
            track.held_peak = max(track.held_peak, track.held())
            while track.pending[i] and (last or len(track.pending[i]) >= self.batch_chunks):
                self._run_batch(track, i)
            track.ready[i].append(chunker.pop())
        track.held_peak = max(track.held_peak, track.held())
        self._emit(track, last)

    def _finish(self, track: _Track) -> None:
        """End of the input: flush the resampler, close the chunk schemes, run and emit the rest."""
        self._feed(track, track.resample_in(np.zeros((0, track.layout.source), np.float32), last=True), last=True)

    def _run_batch(self, track: _Track, index: int) -> None:
        """Run the first pending chunks of model ``index`` (up to ``batch_chunks`` of equal length)."""
        pending = track.pending[index]
        n = 1
        while n < min(self.batch_chunks, len(pending)) and pending[n].input.shape == pending[0].input.shape:
            n += 1
        jobs, track.pending[index] = pending[:n], pending[n:]
        x = torch.from_numpy(np.stack([j.input for j in jobs]))  # (batch, source channels, samples)
        X, _ = track.layout.to_model(x)
        Y = track.layout.from_model(self.estimator.separate_chunks(index, X), len(jobs))
        for job, y in zip(jobs, Y):
            track.chunkers[index].put(job, y)
        track.chunks += len(jobs)

    def _emit(self, track: _Track, last: bool) -> None:
        """Combine the models' common finished samples, select the outputs, hand them on."""
        parts = [torch.cat(r, dim=-1) if len(r) > 1 else r[0] for r in track.ready]
        n = min(p.shape[-1] for p in parts)
        track.ready = [[p[..., n:]] for p in parts]
        if n == 0 and not last:
            return
        y = self.estimator.combine([p[..., :n] for p in parts])
        mix = None
        if track.mixture is not None:
            mix = torch.from_numpy(track.mixture.take(track.emitted, track.emitted + n))
            track.mixture.drop_before(track.emitted + n)
        track.emitted += n
        track.output.emit(self.estimator.select(y, mix), track.frames, last=last)
