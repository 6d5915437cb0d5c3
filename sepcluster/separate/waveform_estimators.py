"""Waveform estimators: demucs models and bags, BS-/Mel-Band RoFormers, chunked as their references chunk.

The contract of a waveform estimator is in :mod:`sepcluster.separate.estimators`; the engine
that runs it is :class:`~sepcluster.separate.waveform.WaveformEngine`.

- :class:`DemucsEstimator` (a :class:`~sepcluster.models.demucs.DemucsModel`): demucs 4.1.0
  ``apply_model(model, mix, shifts=0, split=True, overlap=0.25)``; each model of a bag with its
  own segment (after the bag's override), the bag's per-source weights combined as
  ``BagOfModels`` does. Not the ``demucs`` command's whole-track normalisation
  (``demucs.api.Separator``): the output equals ``apply_model`` itself.
- :class:`RoformerEstimator` (a :class:`~sepcluster.models.roformer.RoformerModel`): MSST's
  ``demix`` with the config's ``chunk_size``, ``num_overlap`` and ``inference.batch_size``;
  outputs are ``[target_instrument]`` when the config sets one, else ``training.instruments``.
  A config with ``inference.normalize: true`` (whole-track statistics) is refused.

Both: ``targets`` selects outputs (default all, in the model's order), ``residual`` adds
``"accompaniment"`` = mixture minus the selected targets; ``device``; ``precision`` ("fp32",
"bf16", "fp16") is autocast: bf16 on CUDA and the CPU, fp16 on CUDA only (:func:`check_precision`);
on CUDA "fp32" also turns TF32 off, so results follow the CPU's to float rounding. On a CPU with
bf16 instructions (AVX512-BF16, AMX) bf16 is the faster choice: on 2 Zen 4 cores, HTDemucs 1.59x and
a published-size BS-RoFormer 1.54x faster than fp32, stems 47.0 / 38.3 dB SDR from the fp32 ones on
the MUSDB sample (random weights; ``bench/separate_gpu.py --device cpu``); CPUs have no fp16
arithmetic (about 25x slower than fp32 there), so fp16 is refused on them.

Batching: ``batch_size`` chunks per model call; on the CPU ``workers`` of them run at once, each
in its own thread with ``torch.get_num_threads() // workers`` intra-op threads (on 2 cores, two
HTDemucs chunks on one thread each beat one chunk on two threads by 1.3-1.8x:
``bench/separate.py``). Defaults: CPU ``batch_size = workers``, ``workers = min(2, torch
threads)`` for demucs and 1 for a RoFormer (its large matrix products use the threads well, and
a published-size chunk needs about 1.2 GB of activations); CUDA one worker, ``batch_size`` 4 for
demucs and the config's ``inference.batch_size`` for a RoFormer. Other
batches than the reference's change results by float rounding only (about 1e-7); with
``workers=1, batch_size=1`` (demucs) / the config's batch size (RoFormer) they are the
reference's bit for bit on the CPU, except that HTDemucs' self-attention runs through
``scaled_dot_product_attention`` on the CPU (:func:`_mha_via_sdpa`: 1.2x faster, about 1e-7 apart).
``bundle_id``: ``<kind>:<sha256 of the weight files (and config / bag weights), 16 hex>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from abc import abstractmethod
from typing import Optional

import torch

from sepcluster import storage
from sepcluster.errors import ConfigError
from sepcluster.threads import run_in_threads

from .estimator_base import RESIDUAL_NAME, WAVEFORM, Estimator, target_list
from .overlap import DemucsChunker, MSSTChunker

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
log = logging.getLogger(__name__)
DEMUCS_OVERLAP = 0.25  # apply_model's default, as the demucs command runs it


def check_precision(precision: str, device) -> None:
    """ConfigError naming ``precision`` unless it is one of :data:`PRECISIONS` and runs on ``device``
    (fp16 on CUDA only); a warning where bf16 would run on a CPU without bf16 instructions (slower than fp32)."""
    if precision not in PRECISIONS:
        raise ConfigError("precision", f"'{precision}' is not one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if kind == "cuda":
        return
    if precision == "fp16":
        raise ConfigError("precision", f"fp16 autocast runs on CUDA only, not on {kind}: use bf16 on the CPU "
                                       f"(CPUs have no fp16 arithmetic; it measured 25x slower than fp32)")
    if precision == "bf16" and not _cpu_has_bf16():
        log.warning("precision bf16 on a CPU without bf16 instructions (AVX512-BF16 or AMX): it will run "
                    "slower than fp32")


def _cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (a private torch call; True where it is missing)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def weights_digest(uris, extra: str = "") -> str:
    """sha256 (hex) of the bytes of ``uris`` in order, then ``extra``: a stable id of a model's weights."""
    digest = hashlib.sha256()
    for uri in uris:
        with storage.local_copy(str(uri)) as path, open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    digest.update(extra.encode())
    return digest.hexdigest()


class WaveformEstimator(Estimator):
    """A multi-source waveform model run in its reference's chunks (see the module docstring).

    Subclasses set ``sources``, ``sample_rate``, ``nb_channels``, ``bundle_id`` and ``self.models``
    (the ``nn.Module`` s, each ``(batch, channels, samples) -> (batch, sources, channels, samples)``)
    and provide :meth:`chunkers`.
    """

    domain = WAVEFORM
    keep_heap = False  # have glibc keep freed memory while this estimator runs on the CPU (see waveform.py)

    def __init__(self, sources, targets=None, residual: bool = False, device="cpu", precision: str = "fp32",
                 batch_size: Optional[int] = None, workers: Optional[int] = None, what: str = "the model",
                 cuda_batch: int = 1, cpu_workers: int = 2):
        self.sources = tuple(sources)
        chosen = target_list(targets) or list(self.sources)
        unknown = [t for t in chosen if t not in self.sources]
        if unknown:
            raise ConfigError("targets", f"'{unknown[0]}' is not an output of {what} (has {', '.join(self.sources)})")
        if residual and RESIDUAL_NAME in chosen:
            raise ConfigError("residual", f"the residual output '{RESIDUAL_NAME}' is also a model output")
        check_precision(precision, device)
        self.targets = list(chosen)
        self.index = [self.sources.index(t) for t in self.targets]
        self.residual = self.needs_mixture = bool(residual)
        self.outputs = tuple(self.targets + ([RESIDUAL_NAME] if residual else []))
        self.device = torch.device(device)
        self.precision = precision
        cpu = self.device.type == "cpu"
        self.workers = max(1, int(workers or (min(cpu_workers, torch.get_num_threads()) if cpu else 1)))
        self.batch_size = max(1, int(batch_size or (self.workers if cpu else cuda_batch)))
        self.models: list = []

    @abstractmethod
    def chunkers(self, channels: int) -> list:
        """Fresh chunk schemes for one track (:mod:`sepcluster.separate.overlap`), one per model."""

    def _precision(self):
        """Autocast for bf16/fp16 on the estimator's device; for fp32 strict fp32 (no TF32) on CUDA, nothing
        on the CPU."""
        dtype = PRECISIONS[self.precision]
        if dtype is not None:
            return torch.autocast(self.device.type, dtype=dtype)
        return _no_tf32() if self.device.type == "cuda" else contextlib.nullcontext()

    def _run(self, model, x: torch.Tensor) -> torch.Tensor:
        attention = _mha_via_sdpa() if self.device.type == "cpu" else contextlib.nullcontext()
        with torch.inference_mode(), self._precision(), attention:
            y = model(x.to(self.device))
        return y.to("cpu", torch.float32)

    def separate_chunks(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Model ``index`` on chunks ``x (batch, channels, samples)`` -> ``(batch, sources, channels, samples)``
        float32 on the CPU."""
        model = self.models[index]
        if self.workers == 1 or self.device.type != "cpu" or x.shape[0] == 1:
            return self._run(model, x)
        return _in_threads([lambda part=part: self._run(model, part) for part in x.tensor_split(self.workers)])

    def combine(self, parts: list) -> torch.Tensor:
        """The models' outputs ``[(sources, channels, n)]`` as one ``(sources, channels, n)``."""
        return parts[0]

    def select(self, y: torch.Tensor, mixture: Optional[torch.Tensor]) -> torch.Tensor:
        """``y (sources, channels, n)`` -> ``(outputs, channels, n)``: the targets, then with ``residual``
        ``mixture (channels, n)`` minus their sum."""
        out = y if self.index == list(range(len(self.sources))) else y[self.index]
        if self.residual:
            out = torch.cat([out, (mixture - out.sum(dim=0))[None]])
        return out


@contextlib.contextmanager
def _no_tf32():
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


_fastpath_lock = threading.Lock()
_fastpath_users = [0, True]  # model calls inside _mha_via_sdpa, the setting before the first


@contextlib.contextmanager
def _mha_via_sdpa():
    """``nn.MultiheadAttention`` without its inference "fast path" (``torch._native_multi_head_attention``)
    while any model call is inside: on the CPU that path computes self-attention with explicit
    ``bmm`` + softmax, the regular path with ``scaled_dot_product_attention`` (flash attention for the
    CPU). HTDemucs' self-attention layers, 7.8 s chunk, 2 threads: 1.94-2.04 s -> 1.62-1.78 s per
    forward, outputs equal to 9e-8 (torch 2.13). The setting is process-wide: counted, restored after the
    last call."""
    with _fastpath_lock:
        if _fastpath_users[0] == 0:
            _fastpath_users[1] = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
        _fastpath_users[0] += 1
    try:
        yield
    finally:
        with _fastpath_lock:
            _fastpath_users[0] -= 1
            if _fastpath_users[0] == 0:
                torch.backends.mha.set_fastpath_enabled(_fastpath_users[1])


def _in_threads(calls: list) -> torch.Tensor:
    """Run ``calls`` at once, each in a thread with its share of the intra-op threads; outputs concatenated."""
    threads_before = torch.get_num_threads()
    share = max(1, threads_before // len(calls))

    def with_share(call):
        torch.set_num_threads(share)
        return call()

    try:
        return torch.cat(run_in_threads([lambda call=call: with_share(call) for call in calls]))
    finally:
        torch.set_num_threads(threads_before)  # the setting is partly process-wide: restore it


class DemucsEstimator(WaveformEstimator):
    """A demucs model or bag (:class:`~sepcluster.models.demucs.DemucsModel`), as ``apply_model`` runs it."""

    def __init__(self, model, targets=None, residual: bool = False, device="cpu", precision: str = "fp32",
                 batch_size: Optional[int] = None, workers: Optional[int] = None):
        super().__init__(model.sources, targets, residual, device, precision, batch_size, workers,
                         what=f"demucs model {storage.redact(str(model.files[0]))}", cuda_batch=4)
        self.model = model
        self.sample_rate = int(model.samplerate)
        self.nb_channels = int(model.audio_channels)
        self.models = [m.to(self.device).eval() for m in model.models]
        self.keep_heap = self.device.type == "cpu"
        self.totals = [sum(w[k] for w in model.weights) for k in range(len(self.sources))]
        extra = repr((model.weights, [str(s) for s in model.segments]))
        self.bundle_id = f"demucs:{weights_digest(model.files, extra)[:16]}"

    def chunkers(self, channels: int) -> list:
        return [DemucsChunker(self.model.segment_length(i), lambda n, i=i: self.model.chunk_input_length(i, n),
                              len(self.sources), channels, overlap=DEMUCS_OVERLAP)
                for i in range(len(self.models))]

    def combine(self, parts: list) -> torch.Tensor:
        """A bag's ``sum_i w_ik * y_ik / sum_i w_ik`` per source ``k``, in ``BagOfModels``' order of
        operations (``apply_model``, demucs/apply.py:201-229); a single model as it is."""
        if not self.model.is_bag:
            return parts[0]
        estimate = None
        for y, weights in zip(parts, self.model.weights):
            y = y.clone()
            for k, w in enumerate(weights):
                y[k] *= w
            estimate = y if estimate is None else estimate.add_(y)
        for k, total in enumerate(self.totals):
            estimate[k] /= total
        return estimate


class RoformerEstimator(WaveformEstimator):
    """A BS-/Mel-Band RoFormer (:class:`~sepcluster.models.roformer.RoformerModel`), as MSST's ``demix``
    runs it. ``batch_size`` batches the model calls (defaults: module docstring); the fade windows
    follow the config's ``inference.batch_size`` whatever it is."""

    def __init__(self, model, targets=None, residual: bool = False, device="cpu", precision: str = "fp32",
                 batch_size: Optional[int] = None, workers: Optional[int] = None):
        where = storage.redact(str(model.config_path))
        if model.normalize:
            raise ConfigError(f"{where}: inference.normalize", "true needs whole-track statistics, which the "
                                                               "streaming engine does not compute (set it to false)")
        super().__init__(model.instruments, targets, residual, device, precision, batch_size, workers,
                         what=f"RoFormer {where}", cuda_batch=model.batch_size, cpu_workers=1)
        self.model = model
        self.sample_rate = int(model.sample_rate)
        self.nb_channels = int(model.channels)
        self.models = [model.model.to(self.device).eval()]
        self.bundle_id = f"{model.model_type}:{weights_digest([model.checkpoint, model.config_path])[:16]}"

    def chunkers(self, channels: int) -> list:
        m = self.model
        return [MSSTChunker(m.chunk_size, m.num_overlap, m.batch_size, len(self.sources), channels)]


def waveform_estimator(separator, targets=None, residual: bool = False, device="cpu", precision: str = "fp32",
                       batch_size: Optional[int] = None, workers: Optional[int] = None) -> Optional[WaveformEstimator]:
    """The waveform estimator of a loaded :class:`~sepcluster.models.demucs.DemucsModel` or
    :class:`~sepcluster.models.roformer.RoformerModel` (options and defaults: module docstring); None
    for anything else."""
    from sepcluster.models.demucs import DemucsModel
    from sepcluster.models.roformer import RoformerModel

    if isinstance(separator, DemucsModel):
        return DemucsEstimator(separator, targets=targets, residual=residual, device=device, precision=precision,
                               batch_size=batch_size, workers=workers)
    if isinstance(separator, RoformerModel):
        return RoformerEstimator(separator, targets=targets, residual=residual, device=device, precision=precision,
                                 batch_size=batch_size, workers=workers)
    return None
