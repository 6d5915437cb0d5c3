"""Oracle separation: ideal ratio masks computed from the reference stems.

``--oracle irm`` runs the whole pipeline without a model on MUSDB-layout inputs (a folder
``<track>/{mixture,vocals,drums,bass,other}.<ext>``, a ``.stem.mp4``, or a MUSDB root with
``--subset``): each source's estimate is the mixture STFT times
``|S_j|^p / (eps + sum_k |S_k|^p)`` over the four reference stems (``p = 1``: "IRM1",
magnitude ratio masks, the default; ``irm2``: ``p = 2``, power ratio masks), per channel,
STFT 4096 / hop 1024 at the input's own rate. No EM iterations (``niter`` and ``softmask``
do not apply). ``residual`` adds ``accompaniment`` = mixture minus the requested targets.
This is the upper bound the evaluate job compares models with (SiSEC 2018's IRM1/IRM2).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from sepcluster.datasets import MUSDB_SOURCES as REFERENCE_NAMES
from sepcluster.errors import ConfigError

from .estimators import IRMEstimator

ORACLES = {"irm": 1.0, "irm1": 1.0, "irm2": 2.0}


class IdealRatioMask:
    """The IRM oracle. ``references``: reference name -> ``float32 (samples, channels)``
    arrays, needed only by :func:`sepcluster.separate.engine.separate_track` (the pipeline
    streams the stems from files). ``power``: 1 (IRM1) or 2 (IRM2). :meth:`estimator` makes
    the :class:`~sepcluster.separate.estimators.IRMEstimator` the engine runs."""

    name = "irm"

    def __init__(self, references: Optional[dict] = None, power: float = 1.0, n_fft: int = 4096,
                 n_hop: int = 1024):
        self.references = {k: np.asarray(v, dtype=np.float32) for k, v in (references or {}).items()}
        missing = [r for r in REFERENCE_NAMES if self.references and r not in self.references]
        if missing:
            raise ConfigError("references", f"the IRM oracle needs the stems {', '.join(REFERENCE_NAMES)}; "
                                            f"'{missing[0]}' is missing")
        self.power = float(power)
        self.n_fft, self.n_hop = int(n_fft), int(n_hop)

    @classmethod
    def from_name(cls, name: str) -> "IdealRatioMask":
        key = str(name).strip().lower()
        if key not in ORACLES:
            raise ConfigError("oracle", f"unknown oracle '{name}' (choose from {', '.join(ORACLES)})")
        oracle = cls(power=ORACLES[key])
        oracle.name = key
        return oracle

    def estimator(self, targets=None, residual: bool = False, eps: Optional[float] = 1e-10) -> IRMEstimator:
        """The spectrogram estimator of this oracle for ``targets`` (default: the four stems)."""
        return IRMEstimator(targets=targets, residual=residual, power=self.power, eps=eps, n_fft=self.n_fft,
                            n_hop=self.n_hop, name=self.name)
