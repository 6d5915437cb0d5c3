"""Separating a track of any length in bounded memory: the chunked, streaming engine.

The track streams through, block by block, never whole:

    decode blocks (soundfile / ffmpeg)  ->  channel layout  ->  soxr stream to the model rate
    -> padded sample buffer -> STFT chunks of ``chunk_seconds`` that overlap by
    ``overlap_seconds`` -> estimator (model + Wiener filter, or the IRM oracle) per chunk
    -> cross-fade of the overlapping frames -> streaming inverse STFT
    -> soxr stream back to the input rate -> stems written block by block.

Exactness of the framing: the buffer holds the *reflect-padded* signal of ``center=True``
(``n_fft // 2`` samples mirrored at both ends), and each chunk is cut on frame boundaries and
transformed with ``center=False``, so a chunk's STFT frames are exactly the frames of the
whole-track STFT. The only differences from processing the whole track at once come from
the estimator seeing a chunk instead of the whole track (the LSTM's context, the Wiener
filter's spatial covariance estimated per chunk); in the overlap the two chunks' complex
STFT estimates are cross-faded with complementary raised-cosine weights (sum 1), so the
result is smooth. The streaming inverse STFT overlap-adds ``irfft(frame) * window`` and
divides by the summed squared window, as ``torch.istft`` does, emitting the samples no later
frame can touch.

Peak memory is set by the chunk length (and ``batch_chunks``), not the track length: the
buffers hold one group of chunks, the cross-fade tail and the inverse STFT's last
``n_fft`` samples.

Pieces: :class:`~sepcluster.separate.stages.ChannelLayout` (mixture, references, downmix, model
channels), :mod:`~sepcluster.separate.chunking` (resampler, padded buffer, chunk scheduler,
cross-fade), :mod:`~sepcluster.separate.istft` (streaming inverse STFT),
:class:`~sepcluster.separate.stages.StemOutput` (back to the input rate, to the sink) and
:class:`ChunkedEngine`, which runs a spectrogram estimator (:mod:`~sepcluster.separate.estimators`)
over them. Waveform estimators (demucs, RoFormers) run in the sibling
:class:`~sepcluster.separate.waveform.WaveformEngine` (their references' own chunking, same input
and output stages); :func:`make_engine` picks the engine of an estimator's domain. The entry
points, for both, are :func:`separate_track` (in memory), :func:`write_stems` (any block reader
to files) and :func:`separate_file` (a file, and for oracles its reference stems, to files).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from sepcluster import storage
from sepcluster.audiostream import ArrayReader, ZippedReader, open_reader
from sepcluster.errors import AudioError, ConfigError

from .chunking import ChunkScheduler, CrossFade, PaddedSignal, StreamResampler, chunk_frames
from .estimators import RESIDUAL_NAME, SPECTROGRAM, WAVEFORM, Estimator, make_estimator
from .istft import StreamingISTFT
from .stages import BlockEngine, ChannelLayout, StemOutput, TrackStats, output_subtype
from .waveform import WaveformEngine

__all__ = ["DEFAULT_CHUNK_SECONDS", "DEFAULT_OVERLAP_SECONDS", "RESIDUAL_NAME", "ChannelLayout", "ChunkedEngine",
           "StemOutput", "TrackStats", "WaveformEngine", "make_engine", "output_subtype", "separate_file",
           "separate_track", "write_stems"]

DEFAULT_CHUNK_SECONDS = 30.0
DEFAULT_OVERLAP_SECONDS = 3.0


@dataclass
class _Track:
    """The state of one track going through :meth:`ChunkedEngine.run`."""

    layout: ChannelLayout
    sr_model: int
    sr_out: int
    resample_in: StreamResampler
    signal: PaddedSignal
    scheduler: ChunkScheduler
    crossfade: CrossFade
    istft: StreamingISTFT
    output: StemOutput
    out_frames: Optional[int]
    frames_in: int = 0  # input samples read
    chunks: int = 0  # chunks processed
    pending: list = field(default_factory=list)  # chunks waiting for a batch

    @property
    def frames(self) -> int:
        """The output's length at the output rate (so far, without ``out_frames``)."""
        return self.frames_in if self.out_frames is None else int(self.out_frames)


class ChunkedEngine(BlockEngine):
    """Runs a spectrogram :class:`~sepcluster.separate.estimators.Estimator` over a track in
    overlapping, cross-faded chunks (see the module docstring).

    ``chunk_seconds`` (None: the whole track in one chunk) and ``overlap_seconds`` are at the
    estimator's rate; ``batch_chunks`` chunks go through the estimator per call; ``downmix``
    averages tracks of more than two channels to mono (otherwise they are refused).
    """

    def __init__(self, estimator: Estimator, device="cpu", chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS,
                 overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, batch_chunks: Optional[int] = 1,
                 downmix: bool = False):
        domain = getattr(estimator, "domain", None)
        if domain != SPECTROGRAM:
            raise ConfigError("estimator", f"{type(estimator).__name__} works on {domain!r} chunks; the chunked "
                                           f"engine runs {SPECTROGRAM} estimators (make_engine picks the engine "
                                           f"of an estimator's domain)")
        from sepcluster.models.stft import STFT

        self.estimator = estimator
        self.device = torch.device(device)
        self.chunk_seconds, self.overlap_seconds = chunk_seconds, overlap_seconds
        self.batch_chunks = max(1, int(batch_chunks or 1))
        self.downmix = bool(downmix)
        self.n_fft, self.hop = int(estimator.n_fft), int(estimator.n_hop)
        self.stft = STFT(self.n_fft, self.hop, center=False).to(self.device)

    def _keeps_heap(self) -> bool:
        return self.device.type == "cpu"

    def _open(self, reader, sink, mix_channels, where, out_rate, out_frames) -> _Track:
        est = self.estimator
        sr_in = int(reader.sample_rate)
        layout = ChannelLayout.plan(int(reader.channels), mix_channels, len(est.references), est.nb_channels,
                                    self.downmix, where)
        sr_model = int(est.sample_rate or sr_in)
        n_chunk, n_overlap = chunk_frames(self.chunk_seconds, self.overlap_seconds, sr_model / self.hop)
        sr_out = int(out_rate or sr_in)
        width = layout.source * layout.signals
        return _Track(layout=layout, sr_model=sr_model, sr_out=sr_out,
                      resample_in=StreamResampler(sr_in, sr_model, width),
                      signal=PaddedSignal(self.n_fft // 2, width),
                      scheduler=ChunkScheduler(self.n_fft, self.hop, n_chunk, n_overlap),
                      crossfade=CrossFade(n_overlap, self.device),
                      istft=StreamingISTFT(self.n_fft, self.hop, device=self.device),
                      output=StemOutput(est.outputs, layout.source, sr_model, sr_out, sink), out_frames=out_frames)

    def _feed(self, track: _Track, x: np.ndarray) -> None:
        """Add model-rate samples ``(n, width)``; process the chunks they complete."""
        if track.signal.append(x):
            self._cut(track, eos=False)

    def _cut(self, track: _Track, eos: bool) -> None:
        for chunk in track.scheduler.cut(track.signal, eos):
            track.pending.append(chunk)
            if len(track.pending) >= self.batch_chunks or track.scheduler.finished:
                self._process(track)

    def _finish(self, track: _Track) -> None:
        """End of the input: flush the resampler, close the padded signal, process the last
        chunks and emit the rest of the inverse STFT."""
        self._feed(track, track.resample_in(np.zeros((0, track.signal.channels), np.float32), last=True))
        track.signal.close()
        self._cut(track, eos=True)
        if track.pending:
            self._process(track)
        with torch.inference_mode():
            rest = track.istft.finish(track.signal.length)
        track.output.emit(rest, track.frames, last=True)

    def _process(self, track: _Track) -> None:
        """Estimate the pending chunks, cross-fade them in order, and emit the samples they finish."""
        group, track.pending = track.pending, []
        for chunk, Y in zip(group, self._estimate(track.layout, group)):
            with torch.inference_mode():
                final = track.crossfade.apply(Y, first=track.chunks == 0, last=chunk.last)
                samples = track.istft.push(final, chunk.start)
            track.chunks += 1
            if samples.shape[-1]:
                track.output.emit(samples, track.frames)

    def _estimate(self, layout: ChannelLayout, group: list) -> list:
        """The estimates ``(outputs, source, bins, frames)`` of ``group``'s chunks, chunks of
        equal length batched into one estimator call."""
        results: list = [None] * len(group)
        by_len: dict = {}
        for i, chunk in enumerate(group):
            by_len.setdefault(chunk.segment.shape[0], []).append(i)
        for idxs in by_len.values():
            segs = torch.from_numpy(np.stack([group[i].segment.T for i in idxs])).to(self.device)  # (B, ch, len)
            with torch.inference_mode():
                spec = self.stft(segs)  # (B, source * signals, bins, frames)
                Y = self.estimator.separate_chunks(*layout.to_model(spec))
                Y = layout.from_model(Y, spec.shape[0])
            for j, i in enumerate(idxs):
                results[i] = Y[j]
        return results


# ---------------------------------------------------------------------------------------
# entry points


def make_engine(estimator: Estimator, device="cpu", chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS,
                overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, batch_chunks: Optional[int] = None,
                downmix: bool = False):
    """The engine of ``estimator``'s domain: a :class:`ChunkedEngine` (spectrogram; ``batch_chunks``
    None: 1) or a :class:`~sepcluster.separate.waveform.WaveformEngine` (waveform: the model's own
    chunking, ``chunk_seconds`` / ``overlap_seconds`` ignored; ``batch_chunks`` None: the
    estimator's ``batch_size``). Both have ``run(reader, sink, ...) -> TrackStats``."""
    cls = WaveformEngine if getattr(estimator, "domain", None) == WAVEFORM else ChunkedEngine
    return cls(estimator, device=device, chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds,
               batch_chunks=batch_chunks, downmix=downmix)


def separate_track(separator, audio: np.ndarray, sample_rate: int, targets=None, niter: int = 1,
                   softmask: bool = False, residual: bool = False, device="cpu", *, downmix: bool = False,
                   chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS,
                   overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, batch_chunks: Optional[int] = None,
                   eps: Optional[float] = 1e-10, double: bool = False, precision: str = "fp32") -> dict:
    """Separate one in-memory track.

    separator: a :class:`~sepcluster.models.bundle.SeparatorBundle`, an
    :class:`~sepcluster.separate.oracle.IdealRatioMask` holding the reference stems, a loaded
    demucs model / bag or RoFormer (:func:`~sepcluster.separate.estimators.make_estimator`, with
    ``precision``), or an :class:`~sepcluster.separate.estimators.Estimator`. audio: ``float32 (samples, channels)``
    (or ``(samples,)``) at ``sample_rate``; it is resampled (soxr HQ) to the model's rate and
    the stems back. Returns ``{output: float32 (samples, channels)}`` with the input's length,
    rate and channel count (mono in, mono out; > 2 channels need ``downmix`` and give mono).
    ``targets``: the bundle targets to use (default all); ``residual`` adds ``"accompaniment"``
    (mixture minus the targets). Chunking: see the module docstring (``chunk_seconds=None``:
    one chunk; waveform models chunk as their reference does, :mod:`~sepcluster.separate.waveform`).
    """
    est = make_estimator(separator, targets=targets, niter=niter, softmask=softmask, residual=residual, eps=eps,
                         double=double, device=device, precision=precision)
    reader = ArrayReader(audio, sample_rate)
    readers = []
    if est.references:
        stems = getattr(separator, "references", None)  # an oracle's reference arrays by name
        if not isinstance(stems, dict) or not stems:
            raise ConfigError("separator", "an oracle needs its reference stems for an in-memory track")
        for name in est.references:
            readers.append(ArrayReader(stems[name], sample_rate, where=f"reference '{name}'"))
            if readers[-1].channels != reader.channels:
                raise AudioError(f"reference '{name}' has {readers[-1].channels} channels, the mixture "
                                 f"{reader.channels}")
    source = ZippedReader(reader, readers) if readers else reader
    parts: dict = {name: [] for name in est.outputs}

    def sink(blocks: dict) -> None:
        for name, block in blocks.items():
            parts[name].append(block)

    engine = make_engine(est, device=device, chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds,
                         batch_chunks=batch_chunks, downmix=downmix)
    engine.run(source, sink, mix_channels=reader.channels)
    return {name: np.concatenate(blocks) if blocks else np.zeros((0, 1), np.float32)
            for name, blocks in parts.items()}


CLIP_MODES = ("clamp", "rescale", "none")


def check_clip(clip: Optional[str], subtype: str) -> str:
    """The clip mode to use: ``clip`` checked against the output ``subtype``; None -> ``clamp`` for
    integer formats, ``none`` for float ones (which hold any level)."""
    integer = not subtype.startswith(("FLOAT", "DOUBLE"))
    if clip is None:
        return "clamp" if integer else "none"
    if clip not in CLIP_MODES:
        raise ConfigError("clip", f"must be one of {', '.join(CLIP_MODES)}, got {clip!r}")
    if clip == "none" and integer:
        raise ConfigError("clip", f"'none' needs a float format ({subtype} cannot hold samples beyond +-1): "
                                  "use --bits 32 with wav/aiff, or --clip clamp|rescale")
    return clip


class _StemFiles:
    """A sink writing each output block by block to a temporary file of ``stack`` that becomes
    ``outputs[name]`` when the stack closes cleanly, and noting each output's peak.

    ``clip``: ``clamp`` clamps samples to +-1, ``none`` writes them as they are (float formats),
    ``rescale`` (demucs' ``--clip-mode rescale``) first writes float32 to a local temporary file,
    then :meth:`finish` scales a stem whose peak is above 1 by ``1 / (1.01 * peak)`` into place."""

    def __init__(self, stack: ExitStack, outputs: dict, fmt: str, subtype: str, rate: int, clip: str = "clamp"):
        self.stack, self.outputs, self.fmt, self.subtype, self.rate = stack, outputs, fmt, subtype, rate
        self.clip = clip
        self.writers: dict = {}
        self.staged: dict = {}  # name -> local float32 file (rescale)
        self.peaks: dict = {}

    def _open_final(self, name: str, channels: int):
        import soundfile as sf

        tmp = self.stack.enter_context(storage.atomic_output(self.outputs[name], suffix=f".{self.fmt}"))
        return self.stack.enter_context(sf.SoundFile(tmp, "w", samplerate=self.rate, channels=channels,
                                                     subtype=self.subtype,
                                                     format="AIFF" if self.fmt == "aiff" else self.fmt.upper()))

    def _open_staged(self, name: str, channels: int):
        import soundfile as sf

        fd, path = tempfile.mkstemp(prefix=".sepcluster-stage-", suffix=".rf64")
        os.close(fd)
        self.stack.callback(_remove_quietly, path)
        self.staged[name] = path
        return sf.SoundFile(path, "w", samplerate=self.rate, channels=channels, subtype="FLOAT", format="RF64")

    def __call__(self, blocks: dict) -> None:
        for name, block in blocks.items():
            w = self.writers.get(name)
            if w is None:
                open_ = self._open_staged if self.clip == "rescale" else self._open_final
                w = self.writers[name] = open_(name, block.shape[1])
            if block.size:
                self.peaks[name] = max(self.peaks.get(name, 0.0), float(np.abs(block).max()))
            w.write(np.clip(block, -1.0, 1.0) if self.clip == "clamp" else block)

    def finish(self, block_frames: int = 1 << 17) -> None:
        """``rescale``: the staged float32 stems, scaled where they peak above 1, into their outputs."""
        import soundfile as sf

        for name, path in self.staged.items():
            self.writers[name].close()
            gain = 1.0 / max(1.01 * self.peaks.get(name, 0.0), 1.0)
            with sf.SoundFile(path) as staged:
                out = self._open_final(name, staged.channels)
                for block in staged.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                    out.write(block * gain if gain != 1.0 else block)

    def notes(self) -> dict:
        """``{output: (peak, what was done)}`` of the outputs that peaked above 1."""
        done = {"clamp": "clamped to +-1", "rescale": "rescaled", "none": "kept (float format)"}[self.clip]
        return {name: (peak, done) for name, peak in self.peaks.items() if peak > 1.0}


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def write_stems(estimator: Estimator, source, outputs: dict, *, mix_channels: Optional[int] = None,
                format: str = "wav", bits: int = 16, device="cpu",
                chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS,
                overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, batch_chunks: Optional[int] = None,
                downmix: bool = False, where: str = "audio", out_rate: Optional[int] = None,
                out_frames: Optional[int] = None, clip: Optional[str] = None) -> TrackStats:
    """Run the engine of the estimator's domain (:func:`make_engine`) on ``source`` and write each
    output stem block by block to a temporary file that becomes ``outputs[name]`` (a URI) only when
    the whole track succeeded: on any error nothing is written. ``clip``: see :class:`_StemFiles`
    and :func:`check_clip`; the stats' ``peaks`` name the outputs that went above 1 and what was done."""
    fmt = str(format).lower()
    subtype = output_subtype(fmt, bits)
    clip = check_clip(clip, subtype)
    missing = [o for o in estimator.outputs if o not in outputs]
    if missing:
        raise ConfigError("outputs", f"no output URI for '{missing[0]}'")
    engine = make_engine(estimator, device=device, chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds,
                         batch_chunks=batch_chunks, downmix=downmix)
    with ExitStack() as stack:
        sink = _StemFiles(stack, outputs, fmt, subtype, int(out_rate or source.sample_rate), clip=clip)
        stats = engine.run(source, sink, mix_channels=mix_channels, where=where, out_rate=out_rate,
                           out_frames=out_frames)
        sink.finish()
        stats.peaks = sink.notes()
        # leaving the ExitStack closes each writer, then moves its temporary file into place
    return stats


def separate_file(estimator: Estimator, source_uri: str, outputs: dict, *, stream: int = 0,
                  references: Optional[dict] = None, format: str = "wav", bits: int = 16, device="cpu",
                  chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS,
                  overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, batch_chunks: Optional[int] = None,
                  downmix: bool = False, block_frames: int = 1 << 17, clip: Optional[str] = None) -> TrackStats:
    """Separate the file ``source_uri`` end to end in bounded memory.

    The input is decoded in blocks, the stems are written block by block to temporary files
    that are moved to ``outputs[name]`` (URIs, local or s3://) only when the whole track
    succeeded; on any error nothing is written. ``references``: reference name ->
    ``(uri, stream)`` for oracles. Returns :class:`TrackStats`; raises AudioError naming the
    input for unreadable, empty, NaN-filled or > 2-channel (without ``downmix``) inputs.
    """
    with ExitStack() as stack:
        reader = stack.enter_context(open_reader(source_uri, stream=stream, block_frames=block_frames))
        where = reader.where
        others = []
        for name in estimator.references:
            if not references or name not in references:
                raise AudioError(f"{where}: the reference stem '{name}' is missing (the oracle needs "
                                 f"{', '.join(estimator.references)} beside the mixture)")
            ref_uri, ref_stream = references[name]
            r = stack.enter_context(open_reader(ref_uri, stream=ref_stream, block_frames=block_frames))
            if r.channels != reader.channels:
                raise AudioError(f"{r.where}: {r.channels} channels, but the mixture {where} has {reader.channels}")
            others.append(r)
        source = ZippedReader(reader, others) if others else reader
        return write_stems(estimator, source, outputs, mix_channels=reader.channels, format=format, bits=bits,
                           device=device, chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds,
                           batch_chunks=batch_chunks, downmix=downmix, where=where, clip=clip)
