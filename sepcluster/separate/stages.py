"""The input and output stages the chunked engines share, whatever the estimator's domain.

- :class:`ChannelLayout`: how a track's channels (mixture, reference stems, optional downmix)
  feed the estimator's channels and come back;
- :class:`StemOutput`: model-rate stems -> soxr stream back to the input rate -> the sink;
- :class:`BlockEngine`: the block loop both engines run;
- :class:`TrackStats`: what a run learnt about a track;
- :func:`output_subtype`: the soundfile subtype of an output format.

:class:`~sepcluster.separate.engine.ChunkedEngine` (spectrogram estimators) and
:class:`~sepcluster.separate.waveform.WaveformEngine` (waveform estimators) run between them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from sepcluster.errors import AudioError, ConfigError
from sepcluster.memory import keep_freed_memory

from .chunking import StreamResampler

__all__ = ["BlockEngine", "ChannelLayout", "StemOutput", "TrackStats", "output_subtype"]

_SUBTYPES = {("wav", 16): "PCM_16", ("wav", 24): "PCM_24", ("wav", 32): "FLOAT",
             ("flac", 16): "PCM_16", ("flac", 24): "PCM_24",
             ("aiff", 16): "PCM_16", ("aiff", 24): "PCM_24", ("aiff", 32): "FLOAT",
             ("ogg", 16): "VORBIS", ("ogg", 24): "VORBIS", ("ogg", 32): "VORBIS"}


def output_subtype(format: str, bits: int) -> str:
    """soundfile subtype for an output ``format`` (wav/flac/aiff/ogg) and ``bits``."""
    key = (str(format).lower(), int(bits))
    if key not in _SUBTYPES:
        raise ConfigError("format/bits", f"{format} with {bits} bits is not supported "
                                         f"(wav: 16/24/32, flac: 16/24, aiff: 16/24/32, ogg)")
    return _SUBTYPES[key]


@dataclass
class TrackStats:
    """What an engine's ``run`` learnt about a track.

    ``chunks``: chunks processed (every model's, for a bag); ``held_samples``: the most time
    samples the waveform engine's buffers held at once (input buffers, overlap-add
    accumulators, outputs waiting for a later chunk, the mixture kept for the residual;
    0 for the spectrogram engine), what bounds its memory whatever the track's length.
    """

    sample_rate: int
    channels: int
    frames: int
    model_rate: int
    chunks: int
    downmixed: bool
    seconds: float
    held_samples: int = 0
    peaks: dict = field(default_factory=dict)  # output -> (peak, what was done) of outputs above +-1

    @property
    def duration(self) -> float:
        return self.frames / float(self.sample_rate) if self.sample_rate else 0.0


@dataclass(frozen=True)
class ChannelLayout:
    """How a track's channels feed the estimator.

    ``channels``: the mixture's; ``references``: reference signals streamed beside it (each
    with the mixture's channels); ``source``: channels after the optional downmix (the stems
    get these); ``model``: the estimator's. ``mode``: ``same``; ``dup`` (a mono track, a
    multichannel model: the channel duplicated, the estimates averaged back); ``fold`` (a mono
    model: each channel a batch item).
    """

    channels: int
    references: int
    downmixed: bool
    model: int
    mode: str

    @classmethod
    def plan(cls, total_channels: int, mix_channels: Optional[int], references: int, nb_channels: Optional[int],
             downmix: bool, where: str) -> "ChannelLayout":
        """The layout of a reader with ``total_channels`` (mixture then references); raises
        AudioError naming ``where`` when the channels do not fit."""
        c_in = int(mix_channels or total_channels // (1 + references))
        if c_in * (1 + references) != total_channels:
            raise AudioError(f"{where}: the reference stems do not have the mixture's {c_in} channels")
        if c_in > 2 and not downmix:
            raise AudioError(f"{where}: {c_in} channels is not supported (mono or stereo only; "
                             f"pass --downmix to average the channels to mono)")
        c_src = 1 if c_in > 2 else c_in
        c_model = nb_channels or c_src
        if c_model == c_src:
            mode = "same"
        elif c_src == 1:
            mode = "dup"
        elif c_model == 1:
            mode = "fold"
        else:
            raise AudioError(f"{where}: {c_src} channels cannot feed a {c_model}-channel model")
        return cls(channels=c_in, references=references, downmixed=c_in > 2, model=c_model, mode=mode)

    @property
    def source(self) -> int:
        return 1 if self.downmixed else self.channels

    @property
    def signals(self) -> int:
        return 1 + self.references

    def downmix(self, block: np.ndarray) -> np.ndarray:
        """``float32 (n, signals * channels)`` -> ``(n, signals * source)``: each signal averaged
        to mono when downmixed."""
        if not self.downmixed:
            return block
        c = self.channels
        return np.concatenate([block[:, i * c:(i + 1) * c].mean(axis=1, keepdims=True) for i in range(self.signals)],
                              axis=1)

    def to_model(self, spec: torch.Tensor) -> tuple:
        """``spec (batch, signals * source, ...)`` -> the estimator's ``X (batch', model, ...)`` and
        ``refs (batch', references, model, ...)`` (None without references); ``...`` is
        ``(bins, frames)`` for spectrogram chunks."""
        B, tail = spec.shape[0], spec.shape[2:]
        spec = spec.reshape(B, self.signals, self.source, *tail)
        X = spec[:, 0]
        refs = spec[:, 1:] if self.references else None
        if self.mode == "dup":
            X = X.expand(B, self.model, *tail)
            refs = refs.expand(B, self.references, self.model, *tail) if refs is not None else None
        elif self.mode == "fold":
            X = X.reshape(B * self.source, 1, *tail)
            if refs is not None:
                refs = refs.transpose(1, 2).reshape(B * self.source, self.references, 1, *tail)
        return X.contiguous(), refs.contiguous() if refs is not None else None

    def from_model(self, Y: torch.Tensor, batch: int) -> torch.Tensor:
        """The estimator's ``(batch', outputs, model, ...)`` -> ``(batch, outputs, source, ...)``."""
        if self.mode == "dup":
            return Y.mean(dim=2, keepdim=True)
        if self.mode == "fold":
            return Y.reshape(batch, self.source, Y.shape[1], *Y.shape[3:]).transpose(1, 2)
        return Y


class StemOutput:
    """The engine's last stage: model-rate stems -> soxr stream to ``sr_out`` -> ``sink``.

    ``emit(samples (outputs, channels, n), frames, last)`` hands ``sink`` the block
    ``{output name: float32 (samples, channels)}``, cut to ``frames`` samples in all (the
    track's length) and, with ``last``, zero-padded up to it.
    """

    def __init__(self, outputs, channels: int, sr_model: int, sr_out: int, sink: Callable[[dict], None]):
        self.outputs = list(outputs)
        self.channels = int(channels)
        self.resample = StreamResampler(sr_model, sr_out, len(self.outputs) * self.channels)
        self.sink = sink
        self.written = 0

    def emit(self, samples: torch.Tensor, frames: int, last: bool = False) -> None:
        n, c = len(self.outputs), self.channels
        arr = samples.detach().to("cpu", torch.float32).numpy()
        arr = self.resample(np.ascontiguousarray(arr.reshape(n * c, -1).T), last=last)
        remaining = frames - self.written
        if last and arr.shape[0] < remaining:
            arr = np.concatenate([arr, np.zeros((remaining - arr.shape[0], arr.shape[1]), np.float32)])
        arr = arr[:max(0, remaining)]
        if arr.shape[0] == 0:
            return
        self.written += arr.shape[0]
        self.sink({name: arr[:, j * c:(j + 1) * c] for j, name in enumerate(self.outputs)})


class BlockEngine:
    """What both engines share: read a track block by block, feed it, finish, report.

    Subclasses give ``_open(reader, sink, mix_channels, where, out_rate, out_frames)`` (a track
    state with ``frames_in``, ``layout``, ``resample_in``, ``sr_out``, ``sr_model``, ``frames``,
    ``chunks`` and optionally ``held_peak``), ``_feed(track, x)``, ``_finish(track)`` and
    ``_keeps_heap()`` (whether freed buffers should stay in the heap: they are reused).
    """

    def run(self, reader, sink: Callable[[dict], None], *, mix_channels: Optional[int] = None, where: str = "audio",
            out_rate: Optional[int] = None, out_frames: Optional[int] = None) -> TrackStats:
        """Separate the blocks of ``reader`` and hand the stems to ``sink``.

        reader: iterable of ``float32 (frames, channels)`` blocks with ``sample_rate`` and
        ``channels`` attributes; the first ``mix_channels`` channels are the mixture, the rest the
        estimator's references (same channel count each; waveform estimators take none). sink:
        called with ``{output name: float32 (frames, channels)}`` blocks at the input rate
        (``out_rate`` when given: the reader is then already at the model rate), in order, whose
        lengths add up to the input's length (``out_frames`` when given). ``where`` names the input
        in errors.
        """
        t_start = time.perf_counter()
        if self._keeps_heap():
            keep_freed_memory()  # buffers are reused instead of page-faulted in anew
        track = self._open(reader, sink, mix_channels, where, out_rate, out_frames)
        for block in reader:
            track.frames_in += block.shape[0]
            self._feed(track, track.resample_in(track.layout.downmix(block)))
        if track.frames_in == 0:
            raise AudioError(f"{where}: the audio holds no samples")
        self._finish(track)
        return TrackStats(sample_rate=track.sr_out, channels=track.layout.channels, frames=track.frames,
                          model_rate=track.sr_model, chunks=track.chunks, downmixed=track.layout.downmixed,
                          seconds=time.perf_counter() - t_start, held_samples=getattr(track, "held_peak", 0))

