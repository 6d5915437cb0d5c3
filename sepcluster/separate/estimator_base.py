"""What every estimator states (the contract is described in :mod:`sepcluster.separate.estimators`).

Kept apart so that the spectrogram estimators (:mod:`~sepcluster.separate.estimators`) and the
waveform estimators (:mod:`~sepcluster.separate.waveform_estimators`) share it without
importing each other's modules in a circle.
"""

from __future__ import annotations

from abc import ABC
from typing import Optional

SPECTROGRAM = "spectrogram"
WAVEFORM = "waveform"
DOMAINS = (SPECTROGRAM, WAVEFORM)
RESIDUAL_NAME = "accompaniment"


class Estimator(ABC):
    """What every estimator states (see :mod:`sepcluster.separate.estimators` for each attribute)."""

    domain: str = ""
    sample_rate: Optional[int] = None
    nb_channels: Optional[int] = None
    references: tuple = ()
    outputs: tuple = ()
    bundle_id: str = ""


def target_list(targets) -> Optional[list]:
    """``targets`` as a list (a comma-separated string is split), or None for "all"."""
    if isinstance(targets, str):
        return [t.strip() for t in targets.split(",") if t.strip()]
    return None if targets is None else list(targets)
