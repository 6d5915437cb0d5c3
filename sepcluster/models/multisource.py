"""The multi-source waveform families as sepcluster trains them: HTDemucs, BS-RoFormer, Mel-Band RoFormer.

Each maps a mixture ``(batch, channels, samples)`` to all its sources at once,
``(batch, sources, channels, samples)``; ``model.sources`` names the outputs in order.

* ``htdemucs``: ``demucs.htdemucs.HTDemucs`` itself (demucs 4.1.0), so a trained model is a
  ``.th`` package that ``demucs.states.load_model`` and :func:`sepcluster.models.demucs.load_demucs`
  read. :func:`htdemucs_signal` gives the arguments the training run fixes (``sources``,
  ``audio_channels``, ``samplerate``, ``segment``: the training excerpt as a ``Fraction`` of seconds).
* ``bs_roformer`` / ``mel_roformer``: :class:`BSRoformerNet` / :class:`MelRoformerNet`, the
  Music-Source-Separation-Training (MSST) classes of :mod:`sepcluster.models.roformer_nets` with
  their constructor options written out (so the registry checks a config against them) and
  nothing added to the state dict: a trained model is MSST's ``.ckpt`` (a state dict) plus a YAML
  whose ``model:`` section is :attr:`msst_options`. ``freqs_per_bands: null`` derives MSST's
  band layout for any ``stft_n_fft`` (:func:`roformer_bands`); ``dim_freqs_in`` follows
  ``stft_n_fft``; ``num_stems``, ``stereo`` (and the Mel-Band ``sample_rate``) come from the run
  (:func:`roformer_signal`).

:func:`chunked_forward` runs any of them over signals longer than a training excerpt (HTDemucs in
eval mode refuses longer inputs) with overlapping, cross-faded chunks.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Optional

import torch
from torch import Tensor

from sepcluster.errors import ConfigError

from .roformer_nets import MSSTBSRoformer, MSSTMelBandRoformer

# MSST's band split for stft_n_fft 2048 (1025 bins): bands of 2, 4, 12, 24, 48, 128 and 129 bins
MSST_BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)


def roformer_bands(bins: int) -> tuple:
    """MSST's band layout scaled to ``bins`` frequency bins: the band edges of :data:`MSST_BANDS` as
    fractions of its 1025 bins, rounded, without empty bands. ``roformer_bands(1025) == MSST_BANDS``."""
    if bins < 1:
        raise ConfigError("stft_n_fft", f"gives {bins} bins; needs at least 1")
    total = sum(MSST_BANDS)
    edges, cum = [0], 0
    for width in MSST_BANDS:
        cum += width
        edge = int(round(cum * bins / total))
        if edge > edges[-1]:
            edges.append(edge)
    return tuple(b - a for a, b in zip(edges, edges[1:]))


class BSRoformerNet(MSSTBSRoformer):
    """BS-RoFormer (MSST's constructor and forward) with its options written out; see the module docstring.

    ``(batch, channels, samples) -> (batch, num_stems, channels, samples)``.
    """

    def __init__(self, dim: int = 512, *, depth: int = 12, stereo: bool = True, num_stems: int = 1,
                 time_transformer_depth: int = 1, freq_transformer_depth: int = 1, linear_transformer_depth: int = 0,
                 freqs_per_bands: Optional[tuple] = None, dim_head: int = 64, heads: int = 8,
                 attn_dropout: float = 0.1, ff_dropout: float = 0.1, flash_attn: bool = True,
                 stft_n_fft: int = 2048, stft_hop_length: int = 441, stft_win_length: int = 2048,
                 stft_normalized: bool = False, zero_dc: bool = True, mask_estimator_depth: int = 2,
                 mlp_expansion_factor: int = 4, skip_connection: bool = False):
        bins = int(stft_n_fft) // 2 + 1
        bands = tuple(int(b) for b in freqs_per_bands) if freqs_per_bands is not None else roformer_bands(bins)
        options = dict(depth=depth, stereo=bool(stereo), num_stems=num_stems,
                       time_transformer_depth=time_transformer_depth, freq_transformer_depth=freq_transformer_depth,
                       linear_transformer_depth=linear_transformer_depth, freqs_per_bands=bands, dim_head=dim_head,
                       heads=heads, attn_dropout=attn_dropout, ff_dropout=ff_dropout, flash_attn=flash_attn,
                       dim_freqs_in=bins, stft_n_fft=stft_n_fft, stft_hop_length=stft_hop_length,
                       stft_win_length=stft_win_length, stft_normalized=stft_normalized, zero_dc=zero_dc,
                       mask_estimator_depth=mask_estimator_depth, mlp_expansion_factor=mlp_expansion_factor,
                       skip_connection=skip_connection)
        super().__init__(dim, **options)
        self.msst_options = {"dim": dim, **options}


class MelRoformerNet(MSSTMelBandRoformer):
    """Mel-Band RoFormer (MSST's constructor and forward) with its options written out; see the module docstring.

    ``(batch, channels, samples) -> (batch, num_stems, channels, samples)``.
    """

    def __init__(self, dim: int = 384, *, depth: int = 6, stereo: bool = True, num_stems: int = 1,
                 time_transformer_depth: int = 1, freq_transformer_depth: int = 1, linear_transformer_depth: int = 0,
                 num_bands: int = 60, dim_head: int = 64, heads: int = 8, attn_dropout: float = 0.0,
                 ff_dropout: float = 0.0, flash_attn: bool = True, sample_rate: int = 44100, stft_n_fft: int = 2048,
                 stft_hop_length: int = 441, stft_win_length: int = 2048, stft_normalized: bool = False,
                 zero_dc: bool = True, mask_estimator_depth: int = 2, mlp_expansion_factor: int = 4,
                 skip_connection: bool = False):
        options = dict(depth=depth, stereo=bool(stereo), num_stems=num_stems,
                       time_transformer_depth=time_transformer_depth, freq_transformer_depth=freq_transformer_depth,
                       linear_transformer_depth=linear_transformer_depth, num_bands=num_bands, dim_head=dim_head,
                       heads=heads, attn_dropout=attn_dropout, ff_dropout=ff_dropout, flash_attn=flash_attn,
                       dim_freqs_in=int(stft_n_fft) // 2 + 1, sample_rate=int(sample_rate), stft_n_fft=stft_n_fft,
                       stft_hop_length=stft_hop_length, stft_win_length=stft_win_length,
                       stft_normalized=stft_normalized, zero_dc=zero_dc, mask_estimator_depth=mask_estimator_depth,
                       mlp_expansion_factor=mlp_expansion_factor, skip_connection=skip_connection)
        super().__init__(dim, **options)
        self.msst_options = {"dim": dim, **options}


# ----------------------------------------------------------------------------- derived arguments

def _stereo(nb_channels: int) -> bool:
    if nb_channels not in (1, 2):
        raise ConfigError("nb_channels", f"RoFormers take mono or stereo audio, got {nb_channels} channels")
    return nb_channels == 2


def htdemucs_signal(*, sources: list, nb_channels: int, sample_rate: float, segment=None) -> dict:
    """HTDemucs' arguments fixed by the run: ``sources``, ``audio_channels``, ``samplerate`` and, when
    given, ``segment`` (seconds; a float is made a ``Fraction`` of whole samples, as demucs saves it)."""
    rate = int(round(sample_rate))
    out = {"sources": list(sources), "audio_channels": int(nb_channels), "samplerate": rate}
    if segment is not None:
        out["segment"] = segment if isinstance(segment, Fraction) else Fraction(int(round(float(segment) * rate)), rate)
    return out


def roformer_signal(*, sources: list, nb_channels: int, sample_rate: float, segment=None) -> dict:
    """BS-RoFormer's arguments fixed by the run: ``num_stems`` (one per source) and ``stereo``."""
    return {"num_stems": len(sources), "stereo": _stereo(nb_channels)}


def mel_roformer_signal(*, sources: list, nb_channels: int, sample_rate: float, segment=None) -> dict:
    """Mel-Band RoFormer's arguments fixed by the run: ``num_stems``, ``stereo`` and ``sample_rate``."""
    return {**roformer_signal(sources=sources, nb_channels=nb_channels, sample_rate=sample_rate),
            "sample_rate": int(round(sample_rate))}


# ----------------------------------------------------------------------------- inference on long signals

def _fade(length: int, device, dtype) -> Tensor:
    """Triangular cross-fade weights ``(length,)`` (demucs' ``apply_model`` window), never zero."""
    half = torch.arange(1, length // 2 + 1, device=device, dtype=dtype)
    rest = torch.arange(length - length // 2, 0, -1, device=device, dtype=dtype)
    return torch.cat([half, rest])


def chunked_forward(model, mix: Tensor, chunk: int, overlap: float = 0.25, batch_size: int = 4) -> Tensor:
    """``model`` over ``mix (batch, channels, samples)`` in chunks of ``chunk`` samples.

    Chunks start every ``chunk * (1 - overlap)`` samples; each output chunk is weighted by a
    triangular window and the overlaps are normalised (signals up to one chunk long run in one
    piece). Chunks run ``batch_size`` at a time. Returns ``(batch, sources, channels, samples)``.
    Call under ``torch.no_grad()`` for inference; the model's train/eval mode is the caller's.
    """
    batch, channels, length = mix.shape
    chunk = int(chunk)
    if length <= chunk:
        return model(mix)
    step = max(1, int(chunk * (1 - overlap)))
    starts = list(range(0, length - chunk + step, step))
    pieces = []
    for s in starts:
        piece = mix[..., s:s + chunk]
        if piece.shape[-1] < chunk:
            piece = torch.nn.functional.pad(piece, (0, chunk - piece.shape[-1]))
        pieces.append(piece)
    stacked = torch.cat(pieces)  # (len(starts) * batch, channels, chunk), chunk-major
    outs = torch.cat([model(stacked[i:i + batch_size * batch]) for i in range(0, stacked.shape[0], batch_size * batch)])
    sources = outs.shape[1]
    outs = outs.reshape(len(starts), batch, sources, channels, chunk)
    weight = _fade(chunk, mix.device, outs.dtype)
    total = torch.zeros(batch, sources, channels, starts[-1] + chunk, device=mix.device, dtype=outs.dtype)
    norm = torch.zeros(starts[-1] + chunk, device=mix.device, dtype=outs.dtype)
    for k, s in enumerate(starts):
        total[..., s:s + chunk] += outs[k] * weight
        norm[s:s + chunk] += weight
    return (total / norm)[..., :length]


def model_sources(model) -> list:
    """The output names of a multi-source model, in order."""
    sources = getattr(model, "sources", None)
    if not sources:
        raise ConfigError("model", f"{type(model).__name__} does not name its sources")
    return list(sources)


__all__ = ["BSRoformerNet", "MelRoformerNet", "MSST_BANDS", "roformer_bands", "htdemucs_signal", "roformer_signal",
           "mel_roformer_signal", "chunked_forward", "model_sources"]
