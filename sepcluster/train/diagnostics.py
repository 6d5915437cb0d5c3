"""What the model does, every few epochs: a spectrogram PNG and FLAC excerpts of a validation item.

Every ``diagnostics_every`` epochs (and at the last epoch) rank 0 takes the first
``diagnostics_seconds`` of its first validation item, separates it with the weights being validated
(the EMA's when on) and logs into the run's ``diagnostics/epoch<NNNNN>/`` artifacts:

* ``spectrograms.png``: log-magnitude spectrograms (dB) of the mixture, then one row per output:
  the reference and the estimate side by side, on one colour scale;
* ``mixture.flac``, ``<output>.reference.flac``, ``<output>.estimate.flac``: the excerpt's audio
  (16-bit FLAC at the training rate).

Arrays are float32 ``(channels, samples)`` (one item of a batch).
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional

import numpy as np

from .config import TrainConfig


def diagnostics_due(config: TrainConfig, epoch: int, finished: bool) -> bool:
    """Whether ``epoch`` logs diagnostics: every ``diagnostics_every`` epochs and at the last one."""
    every = config.diagnostics_every
    return every > 0 and (epoch % every == 0 or finished)


def _log_spectrogram(audio: np.ndarray, n_fft: int = 1024) -> np.ndarray:
    """dB magnitude ``(bins, frames)`` of the channel mean of ``audio (channels, samples)``."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(audio.mean(axis=0), dtype=np.float32))
    n_fft = int(min(n_fft, max(16, 2 ** int(np.log2(max(x.numel(), 32))) // 2)))
    spec = torch.stft(x, n_fft=n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft), return_complex=True)
    return (20 * torch.log10(spec.abs() + 1e-6)).numpy()


def write_spectrograms(path: str, mixture: np.ndarray, references: dict, estimates: dict, sample_rate: int) -> None:
    """The PNG of the module docstring: ``mixture (channels, samples)``, ``references`` / ``estimates``
    ``{output: (channels, samples)}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(estimates)
    specs = {"mixture": _log_spectrogram(mixture)}
    for name in names:
        specs[f"{name} reference"] = _log_spectrogram(references[name])
        specs[f"{name} estimate"] = _log_spectrogram(estimates[name])
    top = max(float(s.max()) for s in specs.values())
    fig, axes = plt.subplots(1 + len(names), 2, figsize=(10, 2.2 * (1 + len(names))), squeeze=False)
    extent = (0, mixture.shape[-1] / sample_rate, 0, sample_rate / 2000)
    panels = [("mixture", axes[0][0])] + [(f"{n} {kind}", axes[i + 1][j]) for i, n in enumerate(names)
                                          for j, kind in enumerate(("reference", "estimate"))]
    for title, ax in panels:
        image = ax.imshow(specs[title], origin="lower", aspect="auto", extent=extent, vmin=top - 80, vmax=top,
                          cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("kHz", fontsize=8)
    axes[0][1].axis("off")
    fig.colorbar(image, ax=axes[0][1], label="dB")
    axes[-1][0].set_xlabel("s")
    axes[-1][1].set_xlabel("s")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_diagnostics(folder: str, mixture: np.ndarray, references: dict, estimates: dict, sample_rate: int) -> list:
    """Write the PNG and the FLAC files into the local ``folder``; returns their paths."""
    from ..audio import write_audio

    paths = [os.path.join(folder, "spectrograms.png")]
    write_spectrograms(paths[0], mixture, references, estimates, sample_rate)
    audio = {"mixture": mixture, **{f"{n}.reference": references[n] for n in estimates},
             **{f"{n}.estimate": estimates[n] for n in estimates}}
    for name, wave in audio.items():
        path = os.path.join(folder, f"{name}.flac")
        clipped = np.clip(np.ascontiguousarray(wave.T, dtype=np.float32), -1.0, 1.0)
        write_audio(path, clipped, int(sample_rate), format="flac")
        paths.append(path)
    return paths


def log_diagnostics(logger, model, item: Optional[tuple], outputs: list, epoch: int, config: TrainConfig,
                    sample_rate: int, stft, istft, chunk: Optional[int]) -> Optional[str]:
    """Separate the excerpt of ``item`` (``(mixture (1, c, t), target)``) and log the files to ``logger``
    (a :class:`sepcluster.tracking.RunLogger`) under ``diagnostics/epoch<NNNNN>``; returns that path
    (None without an item)."""
    from .epoch import estimate_waveforms

    if item is None:
        return None
    length = int(round(config.diagnostics_seconds * sample_rate))
    device = next(model.parameters()).device
    mix, tgt = item[0][..., :length], item[1][..., :length]
    est = estimate_waveforms(model, mix.to(device), stft, istft, chunk).cpu()
    if tgt.dim() == 3:  # one target: (1, c, t)
        tgt, est = tgt[:, None], est[:, None]
    references = {name: tgt[0, k].numpy() for k, name in enumerate(outputs)}
    estimates = {name: est[0, k].numpy() for k, name in enumerate(outputs)}
    where = f"diagnostics/epoch{epoch:05d}"
    with tempfile.TemporaryDirectory(prefix="sepcluster-diag-") as folder:
        write_diagnostics(folder, mix[0].numpy(), references, estimates, sample_rate)
        logger.artifacts(folder, where)
    return where


__all__ = ["diagnostics_due", "write_spectrograms", "write_diagnostics", "log_diagnostics"]
