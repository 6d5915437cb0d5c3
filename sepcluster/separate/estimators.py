"""Estimators: what the separation engine runs on each chunk of a track.

An :class:`Estimator` maps a chunk of the mixture (and, for oracles, of the reference stems)
to one estimate per output. Every estimator states:

- ``domain``: what its chunks are, ``"spectrogram"`` or ``"waveform"``; the engine cuts,
  transforms and cross-fades the chunks accordingly;
- ``sample_rate``: the rate it works at (None: the input's own rate; the engine resamples
  with soxr to it and the stems back);
- ``nb_channels``: the channels it needs (None: any; a mono track feeds a stereo model
  duplicated, a stereo track feeds a mono model one channel at a time);
- ``references``: names of the reference signals streamed beside the mixture (oracles);
- ``outputs``: the output names, in the order of its output's second dimension;
- ``bundle_id``: what the catalog records as the separator.

Spectrogram estimators (:class:`SpectrogramEstimator`, the two here) also give ``n_fft`` and
``n_hop`` (the engine's STFT framing) and
``separate_chunks(X (batch, channels, bins, frames) complex, refs (batch, references,
channels, bins, frames) complex or None) -> (batch, outputs, channels, bins, frames)``
complex:

- :class:`ModelEstimator`: a separator bundle's per-target magnitude models, then the
  multichannel Wiener filter (:mod:`sepcluster.separate.wiener`);
- :class:`IRMEstimator`: ideal ratio masks from the reference stems
  (:class:`sepcluster.separate.oracle.IdealRatioMask` makes one).

Waveform estimators (:mod:`sepcluster.separate.waveform_estimators`: demucs models and bags,
BS-/Mel-Band RoFormers) derive from ``WaveformEstimator`` (``domain = "waveform"``) and run in
:class:`~sepcluster.separate.waveform.WaveformEngine`. Their chunking is the reference's own
(demucs' ``apply_model``, MSST's ``demix``), so instead of a chunk length and a cross-fade they
provide, besides the shared attributes above:

- ``sources``: every output of the model, in order (``outputs`` are the selected ``targets``
  plus the residual);
- ``batch_size``: chunks per model call (the engine's ``batch_chunks`` overrides it);
- ``chunkers(channels) -> list``: for one track, one chunk scheme per model (a bag has
  several), objects of :mod:`sepcluster.separate.overlap` that cut the chunks as samples
  arrive and overlap-add the outputs exactly as the reference does;
- ``separate_chunks(index, x (batch, channels, samples) float32) -> (batch, sources,
  channels, samples)`` float32 on the CPU: model ``index`` on a batch of chunks (device
  placement and autocast inside);
- ``combine(parts) -> (sources, channels, n)``: the models' overlap-added outputs
  ``[(sources, channels, n)]`` into one estimate (a bag's per-source weights);
- ``select(y (sources, channels, n), mixture (channels, n) or None) -> (outputs, channels,
  n)``: the targets, and ``mixture - sum(targets)`` as ``"accompaniment"`` with
  ``residual`` (``needs_mixture`` tells the engine to keep the mixture for it).

The engine's input and output stages (channel layout, soxr streams, stem sinks:
:mod:`~sepcluster.separate.stages`) do not depend on the domain.

:func:`make_estimator` turns what a user gives (a separator bundle, a loaded demucs model or
bag, a loaded RoFormer, an object with an ``estimator(targets=, residual=, eps=)`` method
such as the IRM oracle, or an estimator) into an estimator.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Optional, Protocol, runtime_checkable

import torch

from sepcluster import storage
from sepcluster.datasets import MUSDB_SOURCES as REFERENCE_NAMES
from sepcluster.errors import ConfigError

from .estimator_base import DOMAINS, RESIDUAL_NAME, SPECTROGRAM, WAVEFORM, Estimator, target_list
from .wiener import softmask_estimates, wiener

__all__ = ["DOMAINS", "RESIDUAL_NAME", "SPECTROGRAM", "WAVEFORM", "Estimator", "EstimatorSource", "IRMEstimator",
           "ModelEstimator", "SpectrogramEstimator", "make_estimator"]


class SpectrogramEstimator(Estimator):
    """An estimator on STFT chunks of ``n_fft`` / ``n_hop`` (periodic Hann window).

    ``separate_chunks(X (batch, channels, bins, frames) complex, refs (batch, references,
    channels, bins, frames) complex or None)`` -> ``(batch, outputs, channels, bins, frames)``
    complex.
    """

    domain = SPECTROGRAM
    n_fft: int = 4096
    n_hop: int = 1024

    @abstractmethod
    def separate_chunks(self, X: torch.Tensor, refs: Optional[torch.Tensor]) -> torch.Tensor:
        """The source STFTs of a batch of mixture STFT chunks (shapes in the class docstring)."""


class ModelEstimator(SpectrogramEstimator):
    """A separator bundle's target models followed by the multichannel Wiener filter.

    ``separate_chunks(X (batch, channels, bins, frames) complex, None)`` ->
    ``(batch, targets [+ residual], channels, bins, frames)`` complex.
    """

    def __init__(self, bundle, targets=None, niter: int = 1, softmask: bool = False, residual: bool = False,
                 eps: Optional[float] = 1e-10, double: bool = False, device="cpu",
                 residual_name: str = RESIDUAL_NAME):
        meta = bundle.meta
        self.bundle = bundle
        targets = target_list(targets)
        if targets is None:
            targets = list(bundle.models)
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


class IRMEstimator(SpectrogramEstimator):
    """Ideal ratio masks ``|S_j|^p / (eps + sum_k |S_k|^p)`` from the four reference stems.

    ``separate_chunks(X (batch, channels, bins, frames), refs (batch, 4, channels, bins,
    frames))`` -> ``(batch, targets [+ residual], channels, bins, frames)`` complex.
    """

    def __init__(self, targets=None, residual: bool = False, power: float = 1.0, eps: Optional[float] = 1e-10,
                 n_fft: int = 4096, n_hop: int = 1024, name: str = "irm"):
        targets = target_list(targets)
        if targets is None:
            targets = list(REFERENCE_NAMES)
        unknown = [t for t in targets if t not in REFERENCE_NAMES]
        if unknown:
            raise ConfigError("targets", f"the oracle knows {', '.join(REFERENCE_NAMES)}, not '{unknown[0]}'")
        self.targets = list(targets)
        self.index = [REFERENCE_NAMES.index(t) for t in self.targets]
        self.residual = bool(residual)
        self.power = float(power)
        self.eps = 1e-10 if eps is None else float(eps)
        self.sample_rate = None
        self.n_fft, self.n_hop = int(n_fft), int(n_hop)
        self.nb_channels = None
        self.references = tuple(REFERENCE_NAMES)
        self.outputs = tuple(self.targets + ([RESIDUAL_NAME] if residual else []))
        self.bundle_id = f"oracle:{name}"

    @torch.inference_mode()
    def separate_chunks(self, X: torch.Tensor, refs: Optional[torch.Tensor]) -> torch.Tensor:
        if refs is None:
            raise ConfigError("oracle", "the IRM oracle needs the reference stems")
        V = refs.abs()
        if self.power != 1.0:
            V = V ** self.power
        Y = softmask_estimates(V, X, self.eps)[:, self.index]
        if self.residual:
            Y = torch.cat([Y, (X - Y.sum(dim=1)).unsqueeze(1)], dim=1)
        return Y


@runtime_checkable
class EstimatorSource(Protocol):
    """Something that makes its own estimator, e.g. the IRM oracle."""

    def estimator(self, targets=None, residual: bool = False, eps: Optional[float] = 1e-10) -> Estimator:
        ...


def make_estimator(separator, targets=None, niter: int = 1, softmask: bool = False, residual: bool = False,
                   eps: Optional[float] = 1e-10, double: bool = False, device="cpu", precision: str = "fp32",
                   batch_size: Optional[int] = None, workers: Optional[int] = None) -> Estimator:
    """An :class:`Estimator` for ``separator``.

    separator: an Estimator (returned as is), an :class:`EstimatorSource` (its
    ``estimator(targets=, residual=, eps=)``, e.g. an
    :class:`~sepcluster.separate.oracle.IdealRatioMask`), a separator bundle (a
    :class:`ModelEstimator` with the Wiener filter options ``niter``, ``softmask``, ``eps``,
    ``double`` on ``device``), a :class:`~sepcluster.models.demucs.DemucsModel` or a
    :class:`~sepcluster.models.roformer.RoformerModel` (a waveform estimator on ``device`` with
    autocast ``precision`` "fp32"/"bf16"/"fp16" (fp16 on CUDA only), ``batch_size`` chunks per model call,
    ``workers`` chunks at once on the CPU; defaults in :mod:`sepcluster.separate.waveform_estimators`).
    ``targets``: list or
    comma-separated names (default: all); ``residual`` adds ``"accompaniment"`` (the mixture
    minus the targets).
    """
    from .waveform_estimators import waveform_estimator

    if isinstance(separator, Estimator):
        return separator
    if isinstance(separator, EstimatorSource):
        return separator.estimator(targets=targets, residual=residual, eps=eps)
    if hasattr(separator, "estimate_magnitudes") and hasattr(separator, "meta"):
        return ModelEstimator(separator, targets=targets, niter=niter, softmask=softmask, residual=residual,
                              eps=eps, double=double, device=device)
    found = waveform_estimator(separator, targets=targets, residual=residual, device=device, precision=precision,
                               batch_size=batch_size, workers=workers)
    if found is not None:
        return found
    raise ConfigError("separator", f"expected a separator bundle or an oracle, got {type(separator).__name__} "
                                   f"(or a loaded demucs model / bag or RoFormer)")
