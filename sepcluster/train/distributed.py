"""Distribution helpers of the training workers: who this worker is, collectives, and Ray Train's session.

Everything the training loop needs from ``torch.distributed`` and ``ray.train`` goes through
here, so :mod:`sepcluster.train.epoch` stays plain torch and :mod:`sepcluster.train.loop`
reads as the recipe.

* Collectives (:func:`all_reduce`, :func:`all_reduce_stats`, :func:`barrier`, :func:`gather`)
  work in any process: with one process, or without an initialised process group, they return
  the local values (so the same code runs in a test, a notebook or on one worker).
* Ray Train session (:func:`worker_context`, :func:`dataset_shard`, :func:`prepare_model`,
  :func:`restored_checkpoint`, :func:`report`) need to run inside a Ray Train worker.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from torch import nn


@dataclass(frozen=True)
class WorkerContext:
    """This worker's place in the group: ``rank`` (0 = the one that logs and checkpoints),
    ``world_size`` (number of workers) and the ``device`` it trains on."""

    rank: int
    world_size: int
    device: torch.device


# ----------------------------------------------------------------------------- collectives

def several_ranks() -> bool:
    """Whether this process is one of several in an initialised process group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def backend() -> Optional[str]:
    """The process group's backend (``nccl`` on GPUs, ``gloo`` on CPUs), or None without one."""
    import torch.distributed as dist

    return str(dist.get_backend()) if dist.is_available() and dist.is_initialized() else None


def all_reduce(values: list[float], device: torch.device) -> list[float]:
    """Sums of ``values`` over the ranks (float64, element by element); the values themselves on one rank."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if several_ranks():
        dist.all_reduce(t)
    return [float(x) for x in t.cpu()]


def all_reduce_stats(stats: dict, device: torch.device, nb_bins: int) -> dict:
    """Sums over the ranks of :func:`sepcluster.train.epoch.input_statistics` results.

    ``stats``: ``{"sum": (nb_bins,) or None, "sumsq": (nb_bins,) or None, "count": frames}``
    (None: a rank that saw no batch). Returns the same keys, float64 ``(nb_bins,)`` tensors
    on ``device`` and a float count, in one all-reduce.
    """
    import torch.distributed as dist

    zeros = torch.zeros(nb_bins, dtype=torch.float64, device=device)
    s = stats["sum"] if stats["sum"] is not None else zeros
    q = stats["sumsq"] if stats["sumsq"] is not None else zeros.clone()
    count = torch.tensor([float(stats["count"])], dtype=torch.float64, device=device)
    packed = torch.cat([s.to(device), q.to(device), count])
    if several_ranks():
        dist.all_reduce(packed)
    return {"sum": packed[:nb_bins], "sumsq": packed[nb_bins:2 * nb_bins], "count": float(packed[-1])}


def barrier() -> None:
    """Wait for every rank (no-op on one worker)."""
    import torch.distributed as dist

    if several_ranks():
        dist.barrier()


def gather(obj: Any) -> list:
    """``obj`` of every rank, in rank order, on every rank (picklable objects); ``[obj]`` on one rank."""
    import torch.distributed as dist

    if several_ranks():
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


# ----------------------------------------------------------------------------- Ray Train session

def worker_context() -> WorkerContext:
    """Rank, world size and device of this Ray Train worker (``ray.train.get_context``,
    ``ray.train.torch.get_device``). On CPU, torch uses ``OMP_NUM_THREADS`` threads when Ray sets it."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    if isinstance(device, list):
        device = device[0]
    if device.type == "cpu" and os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, int(float(os.environ["OMP_NUM_THREADS"]))))
    return WorkerContext(rank=ctx.get_world_rank(), world_size=ctx.get_world_size(), device=device)


def dataset_shard(name: str):
    """This worker's shard of the Ray Dataset ``name`` given to the trainer (``ray.train.get_dataset_shard``)."""
    import ray.train

    return ray.train.get_dataset_shard(name)


def prepare_model(model: nn.Module) -> nn.Module:
    """``model`` on this worker's device, wrapped in DistributedDataParallel when there are several workers."""
    import ray.train.torch

    return ray.train.torch.prepare_model(model)


@contextlib.contextmanager
def restored_checkpoint() -> Iterator[Optional[str]]:
    """The local folder of the checkpoint Ray Train restored this worker group from (after a
    failure), or None on a first start."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as folder:
        yield folder


def report(metrics: dict, checkpoint_folder: Optional[str], name: str) -> None:
    """``ray.train.report`` of this epoch's ``metrics`` (every rank), with the checkpoint written in
    the local ``checkpoint_folder`` (rank 0; None elsewhere), persisted as ``<run>/<name>``."""
    import ray.train

    checkpoint = ray.train.Checkpoint.from_directory(checkpoint_folder) if checkpoint_folder else None
    ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)


__all__ = ["WorkerContext", "several_ranks", "backend", "all_reduce", "all_reduce_stats", "barrier", "gather",
           "worker_context", "dataset_shard", "prepare_model", "restored_checkpoint", "report"]
