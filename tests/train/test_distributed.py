"""Collectives of the training workers: one process, and two processes in a real gloo group (no Ray)."""

from __future__ import annotations

import json
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sepcluster.models.stft import STFT
from sepcluster.train import distributed
from sepcluster.train.epoch import finish_statistics, input_statistics

CPU = torch.device("cpu")


def _batches(rank: int, world: int) -> list:
    """Rank ``rank``'s share of 4 fixed mixture batches (batch, channels, samples)."""
    gen = torch.Generator().manual_seed(7)
    every = [torch.randn(2, 2, 2048, generator=gen) * (i + 1) for i in range(4)]
    return every[rank::world]


def test_one_process_gets_its_own_values():
    assert not distributed.several_ranks()
    assert distributed.all_reduce([1.5, 2], CPU) == [1.5, 2.0]
    assert distributed.gather({"a": 1}) == [{"a": 1}]
    distributed.barrier()  # no group: returns at once
    stats = distributed.all_reduce_stats({"sum": None, "sumsq": None, "count": 0}, CPU, 3)
    assert stats["count"] == 0.0 and torch.equal(stats["sum"], torch.zeros(3, dtype=torch.float64))


def _worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        stft = STFT(256, 64)
        stats = input_statistics(_batches(rank, world), stft, CPU)
        mean, scale = finish_statistics(distributed.all_reduce_stats(stats, CPU, stft.nb_bins))
        # rank 1 saw no batch for these statistics: its sums are None
        none_on_1 = input_statistics(_batches(0, 1)[:1] if rank == 0 else [], stft, CPU)
        partial = distributed.all_reduce_stats(none_on_1, CPU, stft.nb_bins)
        distributed.barrier()
        result = {"several": distributed.several_ranks(),
                  "sums": distributed.all_reduce([rank + 1.0, 10.0 * rank], CPU),
                  "gather": distributed.gather({"rank": rank}), "mean": mean.tolist(), "scale": scale.tolist(),
                  "partial_count": partial["count"], "partial_sum": partial["sum"].tolist()}
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_reduce_and_gather_like_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    stft = STFT(256, 64)
    mean, scale = finish_statistics(input_statistics(_batches(0, 1), stft, CPU))
    alone = input_statistics(_batches(0, 1)[:1], stft, CPU)
    for r in ranks:
        assert r["several"] is True
        assert r["sums"] == [3.0, 10.0]
        assert r["gather"] == [{"rank": 0}, {"rank": 1}]
        # input statistics summed over two ranks' halves = one process over all batches
        assert torch.allclose(torch.tensor(r["mean"]), mean, rtol=1e-5, atol=1e-7)
        assert torch.allclose(torch.tensor(r["scale"]), scale, rtol=1e-5, atol=1e-7)
        assert r["partial_count"] == alone["count"]
        assert torch.allclose(torch.tensor(r["partial_sum"], dtype=torch.float64), alone["sum"])
