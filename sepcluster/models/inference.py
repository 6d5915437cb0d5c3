"""A trained separator as one callable: a waveform in, every output's waveform out (the MLflow pyfunc's body).

:func:`load_separator` takes what ``sepcluster train`` writes (and ``sepcluster separate --model``
reads): a demucs ``.th`` (or a bag YAML), an MSST RoFormer ``.ckpt`` with its YAML beside it, or a
separator bundle folder. The :class:`Separator` maps a float32 waveform ``(samples, channels)`` at
the model's sample rate to ``{output: (samples, channels)}``:

* waveform models run over the whole signal in chunks of their own length (demucs: its segment;
  RoFormer: the config's ``chunk_size``), cross-faded (:func:`~sepcluster.models.multisource.chunked_forward`);
  a bag of demucs models averages its models with the bag's weights;
* a bundle's mask estimators take the mixture's magnitude and keep its phase (no Wiener filter).

This is a plain reference separation for a logged model; the separate job's engine
(``sepcluster separate``) is the one for catalogs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from sepcluster.errors import AudioError


@dataclass
class Separator:
    """``__call__(audio (samples, channels) float32) -> {output: (samples, channels) float32}``."""

    kind: str
    outputs: list
    sample_rate: int
    channels: int
    run: Callable[[torch.Tensor], torch.Tensor]  # (1, channels, samples) -> (1, outputs, channels, samples)

    @torch.no_grad()
    def __call__(self, audio: np.ndarray) -> dict:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[:, None]
        if audio.ndim != 2 or audio.shape[1] != self.channels:
            raise AudioError(f"the {self.kind} separator takes (samples, {self.channels}) audio, got shape "
                             f"{tuple(audio.shape)}")
        x = torch.from_numpy(np.ascontiguousarray(audio.T))[None]
        y = self.run(x)[0].float().numpy()  # (outputs, channels, samples)
        return {name: np.ascontiguousarray(y[k].T) for k, name in enumerate(self.outputs)}


def _demucs(path: str) -> Separator:
    from .demucs import load_demucs
    from .multisource import chunked_forward

    loaded = load_demucs(path)
    weights = torch.tensor(loaded.weights, dtype=torch.float32)  # (models, sources)

    def run(x):
        total = None
        for i, model in enumerate(loaded.models):
            y = chunked_forward(model, x, loaded.segment_length(i)) * weights[i][None, :, None, None]
            total = y if total is None else total + y
        return total / weights.sum(0)[None, :, None, None]

    return Separator("demucs", list(loaded.sources), int(loaded.samplerate), int(loaded.audio_channels), run)


def _roformer(path: str, config) -> Separator:
    from .multisource import chunked_forward
    from .roformer import load_roformer

    loaded = load_roformer(path, config=config)
    return Separator(loaded.model_type, list(loaded.instruments), int(loaded.sample_rate), int(loaded.channels),
                     lambda x: chunked_forward(loaded.model, x, loaded.chunk_size))


def _bundle(path: str) -> Separator:
    from .bundle import load_bundle

    bundle = load_bundle(path)
    stft, istft = bundle.stft(), bundle.istft()

    def run(x):
        spec = stft(x)
        mag = spec.abs()
        phase = spec / mag.clamp_min(1e-8)
        estimates = bundle.estimate_magnitudes(mag)
        return torch.stack([istft(m * phase, length=x.shape[-1]) for m in estimates.values()], dim=1)

    channels = int(bundle.meta.nb_channels or 2)
    return Separator("bundle", list(bundle.targets), int(round(float(bundle.meta.sample_rate))), channels, run)


def load_separator(path: str) -> Separator:
    """The :class:`Separator` of the model files at ``path`` (see the module docstring); the kind is
    read from the files (:func:`sepcluster.models.foreign.detect_model`)."""
    from .foreign import detect_model

    found = detect_model(str(path))
    if found.kind == "demucs":
        return _demucs(found.path)
    if found.kind in ("bundle", "umx"):
        return _bundle(found.path)
    return _roformer(found.path, found.config)


__all__ = ["Separator", "load_separator"]
