"""Exponential moving average (EMA) of a model's weights, as demucs trains with it.

After every optimizer step the average moves towards the live weights:
``average = (1 - w) * average + w * live`` with demucs' unbiased weight ``w = 1 / count`` and
``count = count * decay + 1`` (so the first steps are not dominated by the initial weights; ``w``
tends to ``1 - decay``). Floating-point entries of the state dict are averaged; the others (step
counters, integer buffers) follow the live model. :meth:`EMA.applied` swaps the averaged weights in
for validation, keeping the best weights and exporting, and the live ones back for training.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import nn


class EMA:
    """The moving average of ``model``'s state dict (tensors on the model's device)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.model = model
        self.decay = float(decay)
        self.count = 0.0
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self) -> None:
        """Move the average one step towards the live weights (call after ``optimizer.step()``)."""
        self.count = self.count * self.decay + 1.0
        w = 1.0 / self.count
        for key, live in self.model.state_dict().items():
            avg = self.average[key]
            if avg.dtype.is_floating_point:
                avg.mul_(1.0 - w).add_(live.detach().to(avg.dtype), alpha=w)
            else:
                avg.copy_(live)

    def state_dict(self) -> dict:
        """``{"decay", "count", "average": {name: CPU tensor}}`` (for a checkpoint)."""
        return {"decay": self.decay, "count": self.count,
                "average": {k: v.detach().cpu().clone() for k, v in self.average.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` of an earlier run."""
        self.count = float(state["count"])
        for key, value in state["average"].items():
            self.average[key].copy_(value)

    @contextlib.contextmanager
    def applied(self) -> Iterator[nn.Module]:
        """The model holding the averaged weights inside the block, its live weights again after it."""
        live = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.average)
        try:
            yield self.model
        finally:
            self.model.load_state_dict(live)


def make_ema(model: nn.Module, decay: float, state: Optional[dict] = None) -> Optional[EMA]:
    """An :class:`EMA` of ``model`` (None for ``decay`` 0), continued from a checkpoint's ``state``
    when given (a checkpoint without one starts the average at the model's weights)."""
    if not decay:
        return None
    ema = EMA(model, decay)
    if state:
        ema.load_state_dict(state)
    return ema


@contextlib.contextmanager
def averaged(model: nn.Module, ema: Optional[EMA]) -> Iterator[nn.Module]:
    """``model`` with the EMA weights inside the block (the live weights without an EMA)."""
    if ema is None:
        yield model
        return
    with ema.applied() as m:
        yield m


__all__ = ["EMA", "make_ema", "averaged"]
