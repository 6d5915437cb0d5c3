"""Official Open-Unmix weights: ``<target>.pth`` state dicts (or torch-hub ``<target>-<hash>.pth``),
optionally with ``separator.json`` and ``<target>.json``, as the openunmix package saves them.

The architecture (channels, hidden size, layers, bins, max_bin) is read from the state dict's
shapes; STFT and sample rate from the JSON files, else from Open-Unmix 1.0's extra entries in
the weights, else 44.1 kHz with hop ``n_fft // 4``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from torch import Tensor

from sepcluster import storage
from sepcluster.errors import DataError

_HUB_FILE = re.compile(r"^(?P<target>.+?)(?:-(?P<digest>[0-9a-fA-F]{8,64}))?\.pth$")


def read_json(uri: str) -> Any:
    """A JSON file; DataError names the file when it is not valid JSON or UTF-8."""
    try:
        return json.loads(storage.read_text(uri))
    except json.JSONDecodeError as exc:
        raise DataError(f"{storage.redact(uri)}: invalid JSON ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{storage.redact(uri)}: not UTF-8 text ({exc})") from exc


# Open-Unmix 1.0 models held their STFT and sample rate; the released weights (which 1.3
# still downloads) carry these entries, which 1.3 skips with strict=False. We drop exactly these.
_LEGACY_UMX_KEY = re.compile(r"^(?:stft\.window|transform\.0\.window|sample_rate)$")


def strip_legacy_umx_keys(state: Mapping[str, Tensor]) -> tuple:
    """Split Open-Unmix 1.0 extras (``stft.window``, ``transform.0.window``, ``sample_rate``) off
    a state dict. Returns ``(state without them, {"n_fft": int, "sample_rate": float} found)``."""
    clean = {k: v for k, v in state.items() if not _LEGACY_UMX_KEY.match(k)}
    found: dict = {}
    window = state.get("stft.window", state.get("transform.0.window"))
    if window is not None and window.dim() == 1:
        found["n_fft"] = int(window.shape[0])
    rate = state.get("sample_rate")
    if rate is not None and rate.numel() == 1:
        found["sample_rate"] = float(rate.item())
    return clean, found


_UMX_KEYS = ("fc1.weight", "fc3.weight", "input_mean", "output_scale", "lstm.weight_ih_l0")


def infer_umx_hparams(state: Mapping[str, Tensor], where: str = "state dict") -> dict:
    """Open-Unmix constructor arguments read from a state dict's shapes.

    Returns ``{"nb_bins", "nb_channels", "hidden_size", "nb_layers", "unidirectional", "max_bin"}``;
    raises DataError naming ``where`` when the state dict is not Open-Unmix shaped.
    """
    missing = [k for k in _UMX_KEYS if k not in state]
    if missing:
        raise DataError(f"{where}: not an Open-Unmix state dict (missing key '{missing[0]}')")
    max_bin = int(state["input_mean"].shape[0])
    nb_bins = int(state["output_scale"].shape[0])
    hidden, in_features = (int(s) for s in state["fc1.weight"].shape)
    if max_bin == 0 or in_features % max_bin:
        raise DataError(f"{where}: key 'fc1.weight' has shape {tuple(state['fc1.weight'].shape)}, not a "
                        f"multiple of input_mean's {max_bin} bins")
    nb_channels = in_features // max_bin
    layers = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"lstm\.weight_ih_l(\d+)", k)))
    unidirectional = not any(k.endswith("_reverse") for k in state if k.startswith("lstm."))
    return {"nb_bins": nb_bins, "nb_channels": nb_channels, "hidden_size": hidden,
            "nb_layers": len(layers), "unidirectional": unidirectional, "max_bin": max_bin}


def official_files(uri: str) -> dict:
    """``{target: URI}`` of the official Open-Unmix weights files (``vocals.pth``, ``vocals-<hash>.pth``) in ``uri``."""
    files = storage.list_files(uri, suffixes=(".pth",), recursive=False)
    found: dict = {}
    for f in files:
        name = storage.basename(f)
        m = _HUB_FILE.match(name)
        if not m:
            continue
        target = m.group("target")
        if target in found:
            raise DataError(f"{storage.redact(uri)}: two weights files for target '{target}': "
                            f"{storage.basename(found[target])} and {name}")
        found[target] = f
    return found


def official_file(uri: str) -> dict:
    """``{target: URI}`` of one official Open-Unmix weights file (``vocals.pth`` or ``vocals-<hash>.pth``)."""
    m = _HUB_FILE.match(storage.basename(uri))
    if not m:
        raise DataError(f"{storage.redact(uri)}: not an Open-Unmix weights file name (<target>.pth or "
                        f"<target>-<hash>.pth)")
    return {m.group("target"): uri}


def official_meta(uri: str, files: dict, states: dict, legacy: dict) -> dict:
    """The ``BundleMeta`` fields of an official Open-Unmix folder: shapes from the state dicts; STFT and
    sample rate from ``separator.json`` / ``<target>.json`` when present, else from the
    Open-Unmix 1.0 entries of the weights (``legacy``), else 44.1 kHz, hop ``n_fft // 4``."""
    sep: dict = {}
    sep_uri = storage.join(uri, "separator.json")
    if storage.exists(sep_uri):
        loaded = read_json(sep_uri)
        if isinstance(loaded, dict):
            sep = loaded
    target_args: dict = {}
    for target in states:
        t_uri = storage.join(uri, f"{target}.json")
        if storage.exists(t_uri):
            loaded = read_json(t_uri)
            if isinstance(loaded, dict):
                args = loaded.get("args", loaded)
                if isinstance(args, dict):
                    target_args[target] = args

    hparams = {t: infer_umx_hparams(s, storage.redact(files[t])) for t, s in states.items()}
    first_t = next(iter(hparams))
    first = hparams[first_t]
    nb_bins = first["nb_bins"]
    # STFT settings are shared by all targets: take them from the first <target>.json present
    args0 = target_args.get(first_t) or next(iter(target_args.values()), {})
    n_fft = int(sep.get("nfft", args0.get("nfft", legacy.get("n_fft", (nb_bins - 1) * 2))))
    n_hop = int(sep.get("nhop", args0.get("nhop", n_fft // 4)))
    rate = float(sep.get("sample_rate", sep.get("rate", args0.get("sample_rate", args0.get(
        "rate", legacy.get("sample_rate", 44100.0))))))
    bandwidth = args0.get("bandwidth")
    nb_bins_fft = n_fft // 2 + 1
    target_kwargs = {}
    for t, hp in hparams.items():
        if hp["nb_bins"] != nb_bins_fft:
            raise DataError(f"{storage.redact(files[t])}: has {hp['nb_bins']} output bins but the folder's "
                            f"n_fft={n_fft} gives {nb_bins_fft}")
        if hp != first:
            target_kwargs[t] = {k: v for k, v in hp.items() if first.get(k) != v}
    extra = {"openunmix": {"separator": sep, "args": target_args}} if (sep or target_args) else {}
    return dict(model="umx", targets=list(states), sample_rate=rate, n_fft=n_fft, n_hop=n_hop,
                bandwidth=float(bandwidth) if bandwidth is not None else None, source="openunmix",
                target_kwargs=target_kwargs, model_kwargs=dict(first), nb_channels=first["nb_channels"],
                max_bin=first["max_bin"], hidden_size=first["hidden_size"], nb_layers=first["nb_layers"], extra=extra)
