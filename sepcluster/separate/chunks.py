"""Separating a track of any length in bounded memory.

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

The estimator protocol (:class:`Estimator`): ``separate_chunks(X, refs)`` maps a batch of
mixture STFT chunks ``(batch, channels, bins, frames)`` (and, for oracles, the reference
STFTs ``(batch, references, channels, bins, frames)``) to source STFTs
``(batch, outputs, channels, bins, frames)``.
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from sepcluster import storage
from sepcluster.audiostream import ArrayReader, ZippedReader, open_reader
from sepcluster.errors import AudioError, ConfigError
from sepcluster.memory import keep_freed_memory

from .wiener import wiener

DEFAULT_CHUNK_SECONDS = 30.0
DEFAULT_OVERLAP_SECONDS = 3.0
RESIDUAL_NAME = "accompaniment"
_ISTFT_FRAMES = 256  # frames per inverse-STFT step (bounds its temporary memory)

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


# ---------------------------------------------------------------------------------------
# estimators


class Estimator:
    """Maps mixture STFT chunks to source STFT chunks (see the module docstring).

    Attributes: ``sample_rate`` (None: work at the input's rate), ``n_fft``, ``n_hop``,
    ``nb_channels`` (channels the estimator needs; None: any), ``references`` (names of the
    reference signals streamed with the mixture, oracles only), ``outputs`` (output names in
    order), ``bundle_id``.
    """

    sample_rate: Optional[int] = None
    n_fft: int = 4096
    n_hop: int = 1024
    nb_channels: Optional[int] = None
    references: tuple = ()
    outputs: tuple = ()
    bundle_id: str = ""

    def separate_chunks(self, X: torch.Tensor, refs: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class ModelEstimator(Estimator):
    """A separator bundle's target models followed by the multichannel Wiener filter.

    ``separate_chunks(X (batch, channels, bins, frames) complex, None)`` ->
    ``(batch, targets [+ residual], channels, bins, frames)`` complex.
    """

    def __init__(self, bundle, targets=None, niter: int = 1, softmask: bool = False, residual: bool = False,
                 eps: Optional[float] = 1e-10, double: bool = False, device="cpu",
                 residual_name: str = RESIDUAL_NAME):
        meta = bundle.meta
        self.bundle = bundle
        if targets is None:
            targets = list(bundle.models)
        elif isinstance(targets, str):
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        missing = [t for t in targets if t not in bundle.models]
        if missing:
            raise ConfigError("targets", f"'{missing[0]}' is not in bundle {storage.redact(bundle.uri)} "
                                         f"(has {', '.join(bundle.models)})")
        if residual and residual_name in targets:
            raise ConfigError("residual", f"the residual output '{residual_name}' is also a model target")
        self.targets = list(targets)
        self.sample_rate = int(round(float(meta.sample_rate)))
        self.n_fft, self.n_hop = int(meta.n_fft), int(meta.n_hop)
        self.nb_channels = int(meta.nb_channels or 2)
        self.niter, self.softmask, self.residual = int(niter), bool(softmask), bool(residual)
        self.eps, self.double = eps, bool(double)
        self.outputs = tuple(self.targets + ([residual_name] if residual else []))
        self.bundle_id = bundle.bundle_id
        self.device = torch.device(device)
        bundle.to(self.device)

    @torch.inference_mode()
    def separate_chunks(self, X: torch.Tensor, refs: Optional[torch.Tensor] = None) -> torch.Tensor:
        mags = self.bundle.estimate_magnitudes(X.abs(), self.targets)
        V = torch.stack([mags[t] for t in self.targets], dim=1).float()
        Y = wiener(V, X, niter=self.niter, softmask=self.softmask, residual=self.residual, eps=self.eps,
                   double=self.double)
        return Y.to(X.dtype)


def make_estimator(separator, targets=None, niter: int = 1, softmask: bool = False, residual: bool = False,
                   eps: Optional[float] = 1e-10, double: bool = False, device="cpu") -> Estimator:
    """An :class:`Estimator` for a separator bundle, an oracle (``sepcluster.separate.oracle``)
    or an Estimator (returned as is)."""
    if isinstance(separator, Estimator):
        return separator
    from .oracle import IdealRatioMask

    if isinstance(separator, IdealRatioMask):
        return separator.estimator(targets=targets, residual=residual, eps=eps)
    if hasattr(separator, "estimate_magnitudes") and hasattr(separator, "meta"):
        return ModelEstimator(separator, targets=targets, niter=niter, softmask=softmask, residual=residual,
                              eps=eps, double=double, device=device)
    raise ConfigError("separator", f"expected a separator bundle or an oracle, got {type(separator).__name__}")


# ---------------------------------------------------------------------------------------
# streaming inverse STFT


class StreamingISTFT:
    """Overlap-add inverse STFT fed frames in order; emits finished samples.

    ``push(Y complex (..., bins, m), t0)`` adds frames ``t0 .. t0+m-1`` and returns the
    samples ``(..., n)`` that no later frame touches; ``finish(length)`` returns the rest up to
    ``length`` samples in total. Same result as ``torch.istft(center=True, length=length)``
    on all the frames at once.
    """

    def __init__(self, n_fft: int, n_hop: int, device="cpu"):
        self.n_fft, self.n_hop = int(n_fft), int(n_hop)
        self.pad = self.n_fft // 2
        self.window = torch.hann_window(self.n_fft, device=device)
        self.acc: Optional[torch.Tensor] = None  # (lead, m) padded coordinates from acc_start
        self.env: Optional[torch.Tensor] = None
        self.acc_start = 0
        self.emitted = self.pad  # padded coordinate of the next sample to emit
        self.next_frame = 0
        self.total = 0  # samples emitted

    def _ola(self, frames: torch.Tensor) -> tuple:
        """Overlap-add of ``irfft(frames) * window``: ``(lead..., length)`` and the summed
        squared window ``(length,)``, ``length = (m - 1) * hop + n_fft``."""
        lead = frames.shape[:-2]
        m = frames.shape[-1]
        # (N, m, n_fft): frames along dim 1 so the inverse FFT runs on contiguous rows
        spec = frames.reshape(-1, frames.shape[-2], m).transpose(1, 2)
        wave = torch.fft.irfft(spec, n=self.n_fft, dim=-1) * self.window
        n = wave.shape[0]
        length = (m - 1) * self.n_hop + self.n_fft
        win2 = self.window ** 2
        if self.n_fft % self.n_hop == 0:
            # hop divides n_fft: sum R shifted copies of the frames' hop-long pieces
            R = self.n_fft // self.n_hop
            out = wave.new_zeros(n, length)
            env = win2.new_zeros(length)
            for r in range(R):
                piece = wave[:, :, r * self.n_hop:(r + 1) * self.n_hop].reshape(n, m * self.n_hop)
                out[:, r * self.n_hop:r * self.n_hop + m * self.n_hop] += piece
                env[r * self.n_hop:r * self.n_hop + m * self.n_hop] += \
                    win2[r * self.n_hop:(r + 1) * self.n_hop].repeat(m)
        else:
            out = F.fold(wave.transpose(1, 2), output_size=(1, length), kernel_size=(1, self.n_fft),
                         stride=(1, self.n_hop)).reshape(n, length)
            env = F.fold(win2[None, :, None].expand(1, self.n_fft, m), output_size=(1, length),
                         kernel_size=(1, self.n_fft), stride=(1, self.n_hop)).reshape(length)
        return out.reshape(*lead, length), env

    def _add(self, frames: torch.Tensor, t0: int) -> None:
        if t0 != self.next_frame:
            raise AssertionError(f"frames out of order: got {t0}, expected {self.next_frame}")
        ola, env = self._ola(frames)
        start = t0 * self.n_hop
        end = start + ola.shape[-1]
        if self.acc is None:
            self.acc = ola.new_zeros(*ola.shape[:-1], 0)
            self.env = env.new_zeros(0)
            self.acc_start = start
        cur_end = self.acc_start + self.acc.shape[-1]
        if end > cur_end:
            grow = end - cur_end
            self.acc = torch.cat([self.acc, self.acc.new_zeros(*self.acc.shape[:-1], grow)], dim=-1)
            self.env = torch.cat([self.env, self.env.new_zeros(grow)])
        off = start - self.acc_start
        self.acc[..., off:off + ola.shape[-1]] += ola
        self.env[off:off + ola.shape[-1]] += env
        self.next_frame = t0 + frames.shape[-1]

    def _take(self, upto: int) -> torch.Tensor:
        """Emit padded samples [emitted, upto) and drop them from the accumulator."""
        upto = max(upto, self.emitted)
        a = self.emitted - self.acc_start
        b = upto - self.acc_start
        have = self.acc.shape[-1]
        seg = self.acc[..., a:min(b, have)]
        env = self.env[a:min(b, have)]
        out = torch.where(env > 1e-11, seg / env.clamp_min(1e-11), torch.zeros_like(seg))
        if b > have:  # past the last frame: silence
            out = torch.cat([out, out.new_zeros(*out.shape[:-1], b - have)], dim=-1)
        # drop what was emitted, but nothing a later frame still adds to
        keep = max(0, min(b, have, self.next_frame * self.n_hop - self.acc_start))
        self.acc = self.acc[..., keep:].clone()
        self.env = self.env[keep:].clone()
        self.acc_start += keep
        self.emitted = upto
        self.total += out.shape[-1]
        return out

    def push(self, frames: torch.Tensor, t0: int) -> torch.Tensor:
        parts = []
        m = frames.shape[-1]
        for s in range(0, m, _ISTFT_FRAMES):
            sub = frames[..., s:s + _ISTFT_FRAMES]
            self._add(sub, t0 + s)
            parts.append(self._take((t0 + s + sub.shape[-1]) * self.n_hop))
        return torch.cat(parts, dim=-1)

    def finish(self, length: int) -> torch.Tensor:
        return self._take(self.pad + int(length))


# ---------------------------------------------------------------------------------------
# the chunked engine


@dataclass
class TrackStats:
    """What :func:`run_engine` learnt about a track."""

    sample_rate: int
    channels: int
    frames: int
    model_rate: int
    chunks: int
    downmixed: bool
    seconds: float

    @property
    def duration(self) -> float:
        return self.frames / float(self.sample_rate) if self.sample_rate else 0.0


def _fade(overlap: int, device) -> tuple:
    i = torch.arange(overlap, dtype=torch.float32, device=device)
    w_out = torch.cos(0.5 * math.pi * (i + 0.5) / overlap) ** 2
    return 1.0 - w_out, w_out


class _Resampler:
    """soxr stream (HQ) or identity; ``(n, channels)`` float32 in and out."""

    def __init__(self, sr_in: int, sr_out: int, channels: int):
        self.identity = int(sr_in) == int(sr_out)
        self.channels = channels
        if not self.identity:
            import soxr

            self.stream = soxr.ResampleStream(int(sr_in), int(sr_out), channels, dtype="float32", quality="HQ")

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self.identity:
            return x
        out = self.stream.resample_chunk(np.ascontiguousarray(x, dtype=np.float32), last=last)
        return out.reshape(-1, self.channels)


def run_engine(estimator: Estimator, reader, sink: Callable[[dict], None], *, mix_channels: Optional[int] = None,
               device="cpu", chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS,
               overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, batch_chunks: int = 1,
               downmix: bool = False, where: str = "audio", out_rate: Optional[int] = None,
               out_frames: Optional[int] = None) -> TrackStats:
    """Separate the blocks of ``reader`` chunk by chunk and hand the stems to ``sink``.

    reader: iterable of ``float32 (frames, channels)`` blocks with ``sample_rate`` and
    ``channels`` attributes; the first ``mix_channels`` channels are the mixture, the rest the
    estimator's references (same channel count each). sink: called with
    ``{output name: float32 (frames, channels)}`` blocks at the input rate, in order, whose
    lengths add up to the input's length. ``chunk_seconds=None`` processes the track as one
    chunk. Mono in gives mono out; more than 2 channels raise AudioError unless ``downmix``
    (then the channels are averaged to mono). ``out_rate``/``out_frames``: write the stems at
    this rate and length instead of the reader's (used when the input was resampled to the
    model rate beforehand). Returns :class:`TrackStats`.
    """
    t_start = time.perf_counter()
    device = torch.device(device)
    if device.type == "cpu":
        keep_freed_memory()  # chunk buffers are reused instead of page-faulted in anew
    sr_in = int(reader.sample_rate)
    total_channels = int(reader.channels)
    nref = len(estimator.references)
    c_in = int(mix_channels or total_channels // (1 + nref))
    if c_in * (1 + nref) != total_channels:
        raise AudioError(f"{where}: the reference stems do not have the mixture's {c_in} channels")
    downmixed = False
    if c_in > 2:
        if not downmix:
            raise AudioError(f"{where}: {c_in} channels is not supported (mono or stereo only; "
                             f"pass --downmix to average the channels to mono)")
        downmixed = True
    c_src = 1 if downmixed else c_in
    c_model = estimator.nb_channels or c_src
    if c_model == c_src:
        layout = "same"
    elif c_src == 1:
        layout = "dup"
    elif c_model == 1:
        layout = "fold"
    else:
        raise AudioError(f"{where}: {c_src} channels cannot feed a {c_model}-channel model")
    sr_model = int(estimator.sample_rate or sr_in)
    n_fft, hop = int(estimator.n_fft), int(estimator.n_hop)
    pad = n_fft // 2
    fps = sr_model / hop
    if chunk_seconds is None:
        chunk_frames, overlap_frames = None, 0
    else:
        if chunk_seconds <= 0 or overlap_seconds < 0:
            raise ConfigError("chunk_seconds", f"must be > 0 with overlap >= 0, got {chunk_seconds}, {overlap_seconds}")
        chunk_frames = max(8, int(round(chunk_seconds * fps)))
        overlap_frames = int(round(overlap_seconds * fps))
        if overlap_frames * 2 > chunk_frames:
            raise ConfigError("overlap_seconds", f"must be at most half of chunk_seconds ({chunk_seconds})")
    outputs = list(estimator.outputs)
    n_out = len(outputs)
    c_out = c_src
    nsig = 1 + nref

    from sepcluster.models.stft import STFT

    stft = STFT(n_fft, hop, center=False).to(device)
    istft = StreamingISTFT(n_fft, hop, device=device)
    res_in = _Resampler(sr_in, sr_model, c_src * nsig)
    sr_out = int(out_rate or sr_in)
    res_out = _Resampler(sr_model, sr_out, n_out * c_out)
    w_in = w_out = None
    if overlap_frames:
        w_in, w_out = _fade(overlap_frames, device)

    # padded-signal buffer (model rate): buf[0] is padded coordinate buf_start
    head: list = []
    buf = None
    buf_start = 0
    raw_len = 0  # samples of the (unpadded) model-rate signal received
    frames_in = 0
    out_written = 0
    next_start = 0  # first frame of the next chunk
    chunk_index = 0
    tail = None  # fade-out part of the previous chunk
    pending: list = []  # chunks waiting for a batch: (start, stop, last, segment)
    finished = False

    def to_src_layout(block: np.ndarray) -> np.ndarray:
        if not downmixed:
            return block
        sigs = [block[:, i * c_in:(i + 1) * c_in].mean(axis=1, keepdims=True) for i in range(nsig)]
        return np.concatenate(sigs, axis=1)

    def emit(samples: torch.Tensor, last: bool = False) -> None:
        nonlocal out_written
        # samples: (outputs, channels, n) at the model rate -> (n, outputs * channels)
        arr = samples.detach().to("cpu", torch.float32).numpy()
        arr = np.ascontiguousarray(arr.reshape(n_out * c_out, -1).T)
        arr = res_out(arr, last=last)
        remaining = (frames_in if out_frames is None else int(out_frames)) - out_written
        if last and arr.shape[0] < remaining:
            arr = np.concatenate([arr, np.zeros((remaining - arr.shape[0], arr.shape[1]), np.float32)])
        arr = arr[:max(0, remaining)]
        if arr.shape[0] == 0:
            return
        out_written += arr.shape[0]
        sink({name: arr[:, j * c_out:(j + 1) * c_out] for j, name in enumerate(outputs)})

    def process(group: list) -> None:
        nonlocal tail, chunk_index
        # group chunks of equal length into batches
        results = {}
        by_len: dict = {}
        for idx, (a, b, last, seg) in enumerate(group):
            by_len.setdefault(seg.shape[0], []).append(idx)
        for _length, idxs in by_len.items():
            segs = torch.from_numpy(np.stack([group[i][3].T for i in idxs])).to(device)  # (B, ch, len)
            with torch.inference_mode():
                spec = stft(segs)  # (B, c_src * nsig, F, n)
                B, _, nbins, n = spec.shape
                spec = spec.reshape(B, nsig, c_src, nbins, n)
                X = spec[:, 0]
                refs = spec[:, 1:] if nref else None
                if layout == "dup":
                    X = X.expand(B, c_model, nbins, n)
                    refs = refs.expand(B, nref, c_model, nbins, n) if refs is not None else None
                elif layout == "fold":
                    X = X.reshape(B * c_src, 1, nbins, n)
                    if refs is not None:
                        refs = refs.permute(0, 2, 1, 3, 4).reshape(B * c_src, nref, 1, nbins, n)
                Y = estimator.separate_chunks(X.contiguous(), refs.contiguous() if refs is not None else None)
                if layout == "dup":
                    Y = Y.mean(dim=2, keepdim=True)
                elif layout == "fold":
                    Y = Y.reshape(B, c_src, n_out, nbins, n).permute(0, 2, 1, 3, 4)
            for j, i in enumerate(idxs):
                results[i] = Y[j]
        for idx, (a, b, last, _seg) in enumerate(group):
            Y = results[idx]  # (outputs, channels, F, n)
            with torch.inference_mode():
                if chunk_index > 0 and overlap_frames:
                    Y = Y.clone()
                    Y[..., :overlap_frames] = tail + Y[..., :overlap_frames] * w_in
                if not last and overlap_frames:
                    tail = Y[..., -overlap_frames:] * w_out
                    final = Y[..., :-overlap_frames]
                else:
                    final = Y
                samples = istft.push(final, a)
            chunk_index += 1
            if samples.shape[-1]:
                emit(samples)

    def take_segment(a: int, b: int) -> np.ndarray:
        lo = a * hop - buf_start
        hi = (b - 1) * hop + n_fft - buf_start
        return np.array(buf[lo:hi])

    def schedule(eos: bool) -> None:
        nonlocal next_start, buf, buf_start, finished
        while not finished:
            a = next_start
            if eos:
                total_frames = raw_len // hop + 1
                n_chunk = chunk_frames or total_frames
                b = min(a + n_chunk, total_frames)
                last = a + n_chunk >= total_frames
            else:
                if chunk_frames is None:
                    return
                b = a + chunk_frames
                if raw_len < max(b * hop, (b - 1) * hop + n_fft - pad):
                    return
                last = False
            pending.append((a, b, last, take_segment(a, b)))
            if last:
                finished = True
            else:
                next_start = b - overlap_frames
                drop = next_start * hop - buf_start
                if drop > 0:
                    buf = buf[drop:]
                    buf_start += drop
            if len(pending) >= max(1, int(batch_chunks)) or finished:
                group = list(pending)
                pending.clear()
                process(group)

    def feed(x: np.ndarray) -> None:
        nonlocal buf, raw_len
        if x.shape[0] == 0:
            return
        if buf is None:
            head.append(x)
            got = sum(h.shape[0] for h in head)
            if got <= pad:
                return
            x = np.concatenate(head)
            head.clear()
            front = x[1:pad + 1][::-1]
            buf = np.concatenate([front, x])
            raw_len = x.shape[0]
        else:
            buf = np.concatenate([buf, x])
            raw_len += x.shape[0]
        schedule(eos=False)

    for block in reader:
        frames_in += block.shape[0]
        feed(res_in(to_src_layout(block)))
    if frames_in == 0:
        raise AudioError(f"{where}: the audio holds no samples")
    feed(res_in(np.zeros((0, c_src * nsig), np.float32), last=True))
    if buf is None:  # shorter than n_fft // 2 at the model rate: zero-pad to the minimum
        x = np.concatenate(head) if head else np.zeros((0, c_src * nsig), np.float32)
        x = np.concatenate([x, np.zeros((pad + 1 - x.shape[0], x.shape[1]), np.float32)])
        head.clear()
        buf = np.concatenate([x[1:pad + 1][::-1], x])
        raw_len = x.shape[0]
    end_tail = buf[-pad - 1:-1][::-1]
    buf = np.concatenate([buf, end_tail])
    schedule(eos=True)
    if pending:
        group = list(pending)
        pending.clear()
        process(group)
    with torch.inference_mode():
        rest = istft.finish(raw_len)
    emit(rest, last=True)
    return TrackStats(sample_rate=sr_out, channels=c_in, frames=frames_in if out_frames is None else int(out_frames),
                      model_rate=sr_model,
                      chunks=chunk_index, downmixed=downmixed, seconds=time.perf_counter() - t_start)


# ---------------------------------------------------------------------------------------
# public entry points


def _collect(outputs: list) -> tuple:
    parts: dict = {name: [] for name in outputs}

    def sink(blocks: dict) -> None:
        for name, block in blocks.items():
            parts[name].append(block)

    return parts, sink


def separate_track(separator, audio: np.ndarray, sample_rate: int, targets=None, niter: int = 1,
                   softmask: bool = False, residual: bool = False, device="cpu", *, downmix: bool = False,
                   chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS,
                   overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, batch_chunks: int = 1,
                   eps: Optional[float] = 1e-10, double: bool = False) -> dict:
    """Separate one in-memory track.

    separator: a :class:`~sepcluster.models.bundle.SeparatorBundle`, an
    :class:`~sepcluster.separate.oracle.IdealRatioMask` holding the reference stems, or an
    :class:`Estimator`. audio: ``float32 (samples, channels)`` (or ``(samples,)``) at
    ``sample_rate``; it is resampled (soxr HQ) to the model's rate and the stems back.
    Returns ``{output: float32 (samples, channels)}`` with the input's length, rate and channel
    count (mono in, mono out; > 2 channels need ``downmix`` and give mono). ``targets``: the
    bundle targets to use (default all); ``residual`` adds ``"accompaniment"`` (mixture minus
    the targets). Chunking: see the module docstring (``chunk_seconds=None``: one chunk).
    """
    est = make_estimator(separator, targets=targets, niter=niter, softmask=softmask, residual=residual, eps=eps,
                         double=double, device=device)
    reader = ArrayReader(audio, sample_rate)
    readers = []
    if est.references:
        from .oracle import IdealRatioMask

        if not isinstance(separator, IdealRatioMask) or not separator.references:
            raise ConfigError("separator", "an oracle needs its reference stems for an in-memory track")
        for name in est.references:
            ref = separator.references[name]
            readers.append(ArrayReader(ref, sample_rate, where=f"reference '{name}'"))
            if readers[-1].channels != reader.channels:
                raise AudioError(f"reference '{name}' has {readers[-1].channels} channels, the mixture "
                                 f"{reader.channels}")
    source = ZippedReader(reader, readers) if readers else reader
    parts, sink = _collect(list(est.outputs))
    run_engine(est, source, sink, mix_channels=reader.channels, device=device, chunk_seconds=chunk_seconds,
               overlap_seconds=overlap_seconds, batch_chunks=batch_chunks, downmix=downmix)
    return {name: np.concatenate(blocks) if blocks else np.zeros((0, 1), np.float32)
            for name, blocks in parts.items()}


def write_stems(estimator: Estimator, source, outputs: dict, *, mix_channels: Optional[int] = None,
                format: str = "wav", bits: int = 16, device="cpu",
                chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS,
                overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, batch_chunks: int = 1,
                downmix: bool = False, where: str = "audio", out_rate: Optional[int] = None,
                out_frames: Optional[int] = None) -> TrackStats:
    """Run :func:`run_engine` on ``source`` and write each output stem block by block to a
    temporary file that becomes ``outputs[name]`` (a URI) only when the whole track
    succeeded: on any error nothing is written."""
    import soundfile as sf

    fmt = str(format).lower()
    subtype = output_subtype(fmt, bits)
    clip = subtype.startswith("PCM")
    missing = [o for o in estimator.outputs if o not in outputs]
    if missing:
        raise ConfigError("outputs", f"no output URI for '{missing[0]}'")
    rate = int(out_rate or source.sample_rate)
    with ExitStack() as stack:
        writers: dict = {}

        def sink(blocks: dict) -> None:
            for name, block in blocks.items():
                w = writers.get(name)
                if w is None:
                    tmp = stack.enter_context(storage.atomic_output(outputs[name], suffix=f".{fmt}"))
                    w = stack.enter_context(sf.SoundFile(tmp, "w", samplerate=rate, channels=block.shape[1],
                                                         subtype=subtype,
                                                         format="AIFF" if fmt == "aiff" else fmt.upper()))
                    writers[name] = w
                w.write(np.clip(block, -1.0, 1.0) if clip else block)

        stats = run_engine(estimator, source, sink, mix_channels=mix_channels, device=device,
                           chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds, batch_chunks=batch_chunks,
                           downmix=downmix, where=where, out_rate=out_rate, out_frames=out_frames)
        # leaving the ExitStack closes each writer, then moves its temporary file into place
    return stats


def separate_file(estimator: Estimator, source_uri: str, outputs: dict, *, stream: int = 0,
                  references: Optional[dict] = None, format: str = "wav", bits: int = 16, device="cpu",
                  chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS,
                  overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, batch_chunks: int = 1,
                  downmix: bool = False, block_frames: int = 1 << 17) -> TrackStats:
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
                           batch_chunks=batch_chunks, downmix=downmix, where=where)
