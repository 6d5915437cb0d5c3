"""Validation of a multi-source model: every source's loss, SI-SDR and global SDR on whole items.

Items are ``(mixture (1, channels, samples), stems (1, sources, channels, samples))``; the model
runs over the whole mixture in training-length chunks with cross-faded overlaps
(:func:`sepcluster.models.multisource.chunked_forward`), since HTDemucs refuses longer inputs in
eval mode. Sums are per process (the caller all-reduces them), as :func:`sepcluster.train.epoch.validate`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


@torch.no_grad()
def validate_sources(model: nn.Module, items: list, loss, device: torch.device, chunk: Optional[int]) -> dict:
    """Sums over ``items``: ``loss_sum``, ``items``, ``sisdr_sum`` / ``sdr_sum`` (each item's mean over the
    sources), ``mix_sisdr_sum`` / ``mix_sdr_sum`` (the mixture as every source's estimate), and
    ``sources``: per source ``[sisdr, sdr, mix_sisdr, mix_sdr]`` sums (a ``(sources, 4)`` list)."""
    from ..models.losses import global_sdr, si_sdr
    from ..models.multisource import chunked_forward

    model.eval()
    out = {"loss_sum": 0.0, "items": 0, "sisdr_sum": 0.0, "mix_sisdr_sum": 0.0, "sdr_sum": 0.0, "mix_sdr_sum": 0.0}
    per_source = None
    for mix, tgt in items:
        mix, tgt = mix.to(device), tgt.to(device)
        est = chunked_forward(model, mix, int(chunk or mix.shape[-1])).float()
        out["loss_sum"] += float(loss(est, tgt))
        out["items"] += 1
        mix_as_est = mix[:, None].expand_as(tgt)
        figures = torch.stack([si_sdr(est[0], tgt[0]), global_sdr(est, tgt)[0],
                               si_sdr(mix_as_est[0], tgt[0]), global_sdr(mix_as_est, tgt)[0]], dim=1).double()
        per_source = figures if per_source is None else per_source + figures
        means = figures.mean(dim=0)
        out["sisdr_sum"] += float(means[0])
        out["sdr_sum"] += float(means[1])
        out["mix_sisdr_sum"] += float(means[2])
        out["mix_sdr_sum"] += float(means[3])
    out["sources"] = per_source.cpu().tolist() if per_source is not None else None
    return out


__all__ = ["validate_sources"]
