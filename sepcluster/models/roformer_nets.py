"""BS-RoFormer and Mel-Band RoFormer as Music-Source-Separation-Training (MSST) builds and runs them.

The layers come from the ``bs-roformer`` package, version 0.4.1 (lucidrains): its ``Attention``
(with per-head gates), ``FeedForward``, ``Transformer``, ``LinearAttention``, ``BandSplit`` and
``MaskEstimator`` have the parameter names of MSST's copies (``models/bs_roformer/*.py``), so MSST
checkpoints load into them unchanged. Later package versions (0.5.0 on) add value-residual and
hyper-connection parameters that MSST checkpoints lack, so they cannot load them.

Two things of the package's top-level classes differ from MSST and are done here:

- the constructor: MSST's options ``linear_transformer_depth`` (default 0; the package's Mel-Band
  class defaults to 1 and keeps an empty slot in ``layers``, which shifts the keys),
  ``mlp_expansion_factor``, ``skip_connection``, ``zero_dc`` (default True),
  ``use_torch_checkpoint`` (training only, ignored), ``sage_attention`` (a kernel choice; exact
  attention is used), ``use_pope`` (refused: PoPE checkpoints need other layers);
- the forward pass: MSST zeroes the DC bin of the masked spectrogram before the inverse STFT when
  ``zero_dc`` is set, gives the inverse STFT the input length, and adds the outputs of all earlier
  blocks before each block when ``skip_connection`` is set. Here the inverse STFT always gets the
  input length (MSST's Mel-Band class only with ``match_input_audio_length``; the samples are the
  same, MSST's output is just cut to whole hops without it).

Both classes map ``(batch, channels, samples)`` to ``(batch, num_stems, channels, samples)`` (always
4-D, also for one stem; MSST's Mel-Band class squeezes a single stem).
"""

from __future__ import annotations

import warnings

import torch
from einops import pack, rearrange, repeat, unpack
from torch import nn

from sepcluster.errors import ConfigError

# Constructor options of MSST's classes (models/bs_roformer/bs_roformer.py, mel_band_roformer.py).
COMMON_OPTIONS = (
    "dim", "depth", "stereo", "num_stems", "time_transformer_depth", "freq_transformer_depth",
    "linear_transformer_depth", "dim_head", "heads", "attn_dropout", "ff_dropout", "flash_attn", "dim_freqs_in",
    "stft_n_fft", "stft_hop_length", "stft_win_length", "stft_normalized", "zero_dc", "mask_estimator_depth",
    "multi_stft_resolution_loss_weight", "multi_stft_resolutions_window_sizes", "multi_stft_hop_size",
    "multi_stft_normalized", "mlp_expansion_factor", "use_torch_checkpoint", "skip_connection", "use_pope",
    "sage_attention",
)
BS_OPTIONS = COMMON_OPTIONS + ("freqs_per_bands",)
MEL_OPTIONS = COMMON_OPTIONS + ("num_bands", "sample_rate", "match_input_audio_length")
_TUPLES = ("freqs_per_bands", "multi_stft_resolutions_window_sizes")
_OURS = ("linear_transformer_depth", "zero_dc", "mlp_expansion_factor", "use_torch_checkpoint",
         "skip_connection", "use_pope", "sage_attention", "match_input_audio_length")


def _split_options(kwargs: dict, defaults: dict) -> tuple[dict, dict]:
    """(options handled here, options for the package constructor); lists become tuples."""
    if kwargs.get("use_pope"):
        raise ConfigError("model.use_pope", "PoPE RoFormers are not supported (set use_pope: false)")
    ours = {**defaults, **{k: kwargs[k] for k in _OURS if k in kwargs}}
    package = {k: (tuple(v) if k in _TUPLES and isinstance(v, list) else v)
               for k, v in kwargs.items() if k not in _OURS}
    return ours, package


def _rebuild_mask_estimators(model: nn.Module, estimator: type, dim: int, depth: int, factor: int) -> None:
    model.mask_estimators = nn.ModuleList(
        estimator(dim=dim, dim_inputs=model.band_split.dim_inputs, depth=depth, mlp_expansion_factor=factor)
        for _ in range(model.num_stems))


def _all_sdpa_backends(model: nn.Module) -> None:
    """Let torch pick any attention kernel on CUDA (the package fixes them when the model is built)."""
    for module in model.modules():
        if type(module).__name__ == "Attend" and getattr(module, "flash", False):
            module.cuda_config = type(module.cpu_config)(True, True, True)


def _axial(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The transformer blocks of MSST's forward; ``x`` is ``(batch, frames, bands, dim)``."""
    outputs = []
    for block in model.layers:
        if len(block) == 3:
            linear, time_transformer, freq_transformer = block
            x, ps = pack([x], "b * d")
            x = linear(x)
            x, = unpack(x, ps, "b * d")
        else:
            time_transformer, freq_transformer = block
        if model.skip_connection:
            for previous in outputs:
                x = x + previous
        x = rearrange(x, "b t f d -> b f t d")
        x, ps = pack([x], "* t d")
        x = time_transformer(x)
        x, = unpack(x, ps, "* t d")
        x = rearrange(x, "b f t d -> b t f d")
        x, ps = pack([x], "* f d")
        x = freq_transformer(x)
        x, = unpack(x, ps, "* f d")
        if model.skip_connection:
            outputs.append(x)
    return x


def _stft(model: nn.Module, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(window, spectrogram (batch, bins * channels, frames, 2))``, channels interleaved per bin."""
    if audio.ndim == 2:
        audio = audio[:, None]
    batch, channels, _ = audio.shape
    if channels != model.audio_channels:
        raise ValueError(f"the model takes {model.audio_channels} channel(s), got {channels}")
    window = model.stft_window_fn(device=audio.device)
    spec = torch.stft(audio.reshape(batch * channels, -1), **model.stft_kwargs, window=window, return_complex=True)
    spec = torch.view_as_real(spec).reshape(batch, channels, *spec.shape[1:], 2)
    return window, rearrange(spec, "b s f t c -> b (f s) t c")


def _istft(model: nn.Module, spec: torch.Tensor, window: torch.Tensor, length: int) -> torch.Tensor:
    """``spec`` complex ``(batch, stems, bins * channels, frames)`` -> ``(batch, stems, channels, length)``."""
    batch, stems = spec.shape[:2]
    spec = rearrange(spec, "b n (f s) t -> (b n s) f t", s=model.audio_channels)
    if model.zero_dc:
        spec = spec.index_fill(1, torch.tensor(0, device=spec.device), 0.0)
    audio = torch.istft(spec, **model.stft_kwargs, window=window, return_complex=False, length=length)
    return rearrange(audio, "(b n s) t -> b n s t", b=batch, n=stems, s=model.audio_channels)


# bs-roformer 0.4.1's attention enters torch.backends.cuda.sdp_kernel() on every forward pass, which
# torch 2.13 deprecates with a FutureWarning per call (also on the CPU): nothing a user can act on
warnings.filterwarnings("ignore", message=r".*torch\.backends\.cuda\.sdp_kernel\(\) is deprecated",
                        category=FutureWarning)


def _package_classes():
    from bs_roformer import bs_roformer, mel_band_roformer

    return bs_roformer, mel_band_roformer


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package's STFT probe warns about its missing window
        return fn(*args, **kwargs)


class MSSTBSRoformer(_package_classes()[0].BSRoformer):
    """BS-RoFormer with MSST's constructor options and forward pass (see the module docstring)."""

    def __init__(self, dim, **kwargs):
        bs, mel = _package_classes()
        ours, package = _split_options(kwargs, {"linear_transformer_depth": 0, "zero_dc": True,
                                                "mlp_expansion_factor": 4, "skip_connection": False})
        _quiet(super().__init__, dim, **package)
        self.zero_dc = bool(ours["zero_dc"])
        self.skip_connection = bool(ours["skip_connection"])
        if ours["linear_transformer_depth"] > 0:
            for block in self.layers:
                block.insert(0, mel.Transformer(
                    dim=dim, depth=ours["linear_transformer_depth"], dim_head=package.get("dim_head", 64),
                    heads=package.get("heads", 8), attn_dropout=package.get("attn_dropout", 0.0),
                    ff_dropout=package.get("ff_dropout", 0.0), flash_attn=package.get("flash_attn", True),
                    norm_output=False, linear_attn=True))
        if ours["mlp_expansion_factor"] != 4:
            _rebuild_mask_estimators(self, bs.MaskEstimator, dim, package.get("mask_estimator_depth", 2),
                                     ours["mlp_expansion_factor"])
        _all_sdpa_backends(self)

    def forward(self, raw_audio: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, samples)`` -> ``(batch, num_stems, channels, samples)``."""
        length = raw_audio.shape[-1]
        window, spec = _stft(self, raw_audio)
        x = rearrange(spec, "b f t c -> b t (f c)")
        x = self.final_norm(_axial(self, self.band_split(x)))
        mask = torch.stack([fn(x) for fn in self.mask_estimators], dim=1)
        mask = rearrange(mask, "b n t (f c) -> b n f t c", c=2)
        spec = torch.view_as_complex(rearrange(spec, "b f t c -> b 1 f t c")) * torch.view_as_complex(mask)
        return _istft(self, spec, window, length)


class MSSTMelBandRoformer(_package_classes()[1].MelBandRoformer):
    """Mel-Band RoFormer with MSST's constructor options and forward pass (see the module docstring)."""

    def __init__(self, dim, **kwargs):
        _, mel = _package_classes()
        ours, package = _split_options(kwargs, {"linear_transformer_depth": 0, "zero_dc": True,
                                                "mlp_expansion_factor": 4, "skip_connection": False})
        _quiet(super().__init__, dim, linear_transformer_depth=ours["linear_transformer_depth"], **package)
        # the package keeps None where there is no linear transformer: MSST's keys have no such slot
        self.layers = nn.ModuleList(nn.ModuleList(m for m in block if m is not None) for block in self.layers)
        self.zero_dc = bool(ours["zero_dc"])
        self.skip_connection = bool(ours["skip_connection"])
        if ours["mlp_expansion_factor"] != 4:
            _rebuild_mask_estimators(self, mel.MaskEstimator, dim, package.get("mask_estimator_depth", 1),
                                     ours["mlp_expansion_factor"])
        _all_sdpa_backends(self)

    def forward(self, raw_audio: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, samples)`` -> ``(batch, num_stems, channels, samples)``."""
        length = raw_audio.shape[-1]
        window, spec = _stft(self, raw_audio)
        batch, channels = spec.shape[0], self.audio_channels
        x = spec[torch.arange(batch, device=spec.device)[..., None], self.freq_indices]
        x = rearrange(x, "b f t c -> b t (f c)")
        x = _axial(self, self.band_split(x))
        masks = torch.stack([fn(x) for fn in self.mask_estimators], dim=1)
        masks = rearrange(masks, "b n t (f c) -> b n f t c", c=2)
        spec = torch.view_as_complex(rearrange(spec, "b f t c -> b 1 f t c"))
        masks = torch.view_as_complex(masks).type(spec.dtype)
        stems = masks.shape[1]
        # average the masks of the bands that overlap on a frequency (MSST: scatter_add, then divide)
        index = repeat(self.freq_indices, "f -> b n f t", b=batch, n=stems, t=spec.shape[-1])
        summed = torch.zeros_like(repeat(spec, "b 1 ... -> b n ...", n=stems)).scatter_add_(2, index, masks)
        denom = repeat(self.num_bands_per_freq, "f -> (f r) 1", r=channels)
        spec = spec * (summed / denom.clamp(min=1e-8))
        return _istft(self, spec, window, length)


ARCHITECTURES = {"bs_roformer": (MSSTBSRoformer, BS_OPTIONS), "mel_band_roformer": (MSSTMelBandRoformer, MEL_OPTIONS)}
