"""Small random-weight models saved exactly as the reference projects save them (test helpers).

- demucs: ``demucs.states.serialize_model`` (half-precision state, training args through omegaconf)
  then ``torch.save`` (``<name>.th``) or ``demucs.states.save_with_checksum`` (``<sig>-<sha256[:8]>.th``);
  the HuggingFace layout demucs 4.1.0 reads (``demucs.hf.load_safetensors_model``): tensors plus
  ``klass``/``args``/``kwargs`` JSON metadata.
- Music-Source-Separation-Training: ``torch.save(model.state_dict(), "<name>.ckpt")`` and a YAML
  config with ``!!python/tuple`` lists, ``audio:``, ``model:``, ``training:``, ``inference:``.
  The weights come from the ``bs-roformer`` 0.4.1 classes; MSST's Mel-Band RoFormer has no empty
  slot for a missing linear transformer, so its ``layers.<i>.<j>`` keys are the package's
  ``layers.<i>.<j+1>`` (:func:`mel_keys_to_msst`).
"""

from __future__ import annotations

import json
import warnings
from fractions import Fraction
from pathlib import Path

import torch

SOURCES4 = ["drums", "bass", "other", "vocals"]
SOURCES6 = ["drums", "bass", "other", "vocals", "guitar", "piano"]
HOP = 64  # small STFT for the RoFormers: n_fft 256 -> 129 bins
BS_BANDS = (2,) * 8 + (4,) * 8 + (81,)


def small_demucs(kind: str = "htdemucs", sources=SOURCES4, seed: int = 0):
    """A small random-weight demucs model (builds in well under a second)."""
    from demucs.demucs import Demucs
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    if kind == "htdemucs":
        return HTDemucs(sources=list(sources), channels=8, depth=3, nfft=512, t_layers=1, bottom_channels=0,
                        t_hidden_scale=1.0, segment=Fraction(6, 5))
    if kind == "hdemucs":
        return HDemucs(sources=list(sources), channels=4, depth=4, nfft=1024, segment=2)
    return Demucs(sources=list(sources), channels=4, depth=4, segment=2)


def demucs_package(model) -> dict:
    """``demucs.states.serialize_model`` of ``model`` (what demucs' training writes)."""
    from demucs.states import serialize_model
    from omegaconf import OmegaConf

    return serialize_model(model, OmegaConf.create({"seed": 0, "dset": {"segment": 11}}))


def save_demucs(model, path: Path) -> Path:
    torch.save(demucs_package(model), path)
    return path


def save_demucs_with_checksum(model, folder: Path, sig: str) -> Path:
    """``demucs.states.save_with_checksum``: writes ``<sig>-<sha256 prefix>.th``; returns its path."""
    from demucs.states import save_with_checksum

    save_with_checksum(demucs_package(model), folder / f"{sig}.th")
    return next(folder.glob(f"{sig}-*.th"))


def save_demucs_safetensors(model, path: Path) -> Path:
    """The HuggingFace layout of demucs 4.1.0 (fractions as ``{"_type": "fraction", ...}``)."""
    from safetensors.torch import save_file

    def encode(value):
        if isinstance(value, Fraction):
            return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
        if isinstance(value, dict):
            return {k: encode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [encode(v) for v in value]
        return value

    args, kwargs = model._init_args_kwargs
    klass = f"{type(model).__module__}.{type(model).__name__}"
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"klass": klass, "args": json.dumps(encode(list(args))),
                                         "kwargs": json.dumps(encode(kwargs))})
    return path


def bs_options(**extra) -> dict:
    opts = dict(dim=16, depth=1, stereo=True, num_stems=1, time_transformer_depth=1, freq_transformer_depth=1,
                freqs_per_bands=BS_BANDS, dim_head=8, heads=2, attn_dropout=0.1, ff_dropout=0.1, flash_attn=True,
                dim_freqs_in=129, stft_n_fft=256, stft_hop_length=HOP, stft_win_length=256, stft_normalized=False,
                mask_estimator_depth=2, multi_stft_resolution_loss_weight=1.0,
                multi_stft_resolutions_window_sizes=(256, 128), multi_stft_hop_size=32,
                multi_stft_normalized=False)
    opts.update(extra)
    return opts


def mel_options(**extra) -> dict:
    opts = dict(dim=16, depth=1, stereo=True, num_stems=1, time_transformer_depth=1, freq_transformer_depth=1,
                num_bands=8, dim_head=8, heads=2, attn_dropout=0.0, ff_dropout=0.0, flash_attn=True,
                dim_freqs_in=129, sample_rate=44100, stft_n_fft=256, stft_hop_length=HOP, stft_win_length=256,
                stft_normalized=False, mask_estimator_depth=2, multi_stft_resolution_loss_weight=1.0,
                multi_stft_resolutions_window_sizes=(256, 128), multi_stft_hop_size=32, multi_stft_normalized=False)
    opts.update(extra)
    return opts


def package_roformer(model_type: str, options: dict, seed: int = 0):
    """The ``bs-roformer`` 0.4.1 model of these options, random weights, eval mode (the reference)."""
    from bs_roformer import BSRoformer, MelBandRoformer

    torch.manual_seed(seed)
    opts = {k: v for k, v in options.items() if k not in ("zero_dc", "mlp_expansion_factor", "skip_connection",
                                                          "use_torch_checkpoint", "sage_attention")}
    dim = opts.pop("dim")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if model_type == "bs_roformer":
            opts.pop("linear_transformer_depth", None)
            model = BSRoformer(dim, **opts)
        else:
            opts.setdefault("linear_transformer_depth", 0)
            model = MelBandRoformer(dim, **opts)
    for p in model.parameters():  # break the symmetric init (ones/zeros) so every weight matters
        p.data.add_(0.05 * torch.randn_like(p))
    return model.eval()


def mel_keys_to_msst(state: dict) -> dict:
    """bs-roformer 0.4.1 Mel-Band keys without a linear transformer -> MSST's (``layers.i.j+1`` -> ``layers.i.j``)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "layers":
            parts[2] = str(int(parts[2]) - 1)
        out[".".join(parts)] = value
    return out


def msst_yaml(options: dict, *, instruments=("vocals", "other"), target="vocals", chunk_size=HOP * 100,
              num_overlap=2, batch_size=2, model_type=None, extra_model: str = "") -> str:
    """An MSST config; tuples written as ``!!python/tuple`` as MSST's configs do."""
    lines = []
    if model_type:
        lines.append(f"model_type: {model_type}")
    lines += ["audio:", f"  chunk_size: {chunk_size}", "  num_channels: 2", "  sample_rate: 44100", "model:"]
    for key, value in options.items():
        if isinstance(value, tuple):
            lines.append(f"  {key}: !!python/tuple")
            lines += [f"  - {v}" for v in value]
        else:
            lines.append(f"  {key}: {json.dumps(value)}")
    lines.append(extra_model) if extra_model else None
    lines += ["training:", "  instruments:"] + [f"  - {i}" for i in instruments]
    lines += [f"  target_instrument: {target if target else 'null'}", "  use_amp: true",
              "inference:", f"  batch_size: {batch_size}", f"  num_overlap: {num_overlap}"]
    return "\n".join(lines) + "\n"


def save_msst(kind: str, folder: Path, name: str = "model", seed: int = 0, options=None, **yaml_kw):
    """Write ``<name>.ckpt`` (state dict, MSST's keys) and ``<name>.yaml``; returns (ckpt, yaml, reference)."""
    options = options if options is not None else (bs_options() if kind == "bs_roformer" else mel_options())
    reference = package_roformer(kind, options, seed)
    state = reference.state_dict()
    if kind == "mel_band_roformer" and not options.get("linear_transformer_depth"):
        state = mel_keys_to_msst(state)
    ckpt, config = folder / f"{name}.ckpt", folder / f"{name}.yaml"
    torch.save(state, ckpt)
    config.write_text(msst_yaml(options, **yaml_kw))
    return ckpt, config, reference
