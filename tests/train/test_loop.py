"""The recipe's steps without Ray: one process, real model and optimizer, a checkpoint on disk in between.

Resuming (snapshot -> TrainState files -> restore) must continue exactly where an uninterrupted
run would be; epoch bookkeeping (history, stop reasons, early-stopping counters) is checked
epoch by epoch. The Ray Train runs themselves are in test_train_ray.py.
"""

from __future__ import annotations

import torch

from sepcluster.models.losses import get_loss
from sepcluster.models.stft import ISTFT, STFT
from sepcluster.train.checkpoint import TrainState
from sepcluster.train.config import TrainConfig
from sepcluster.train.data import DataSpec
from sepcluster.train.epoch import (EarlyStopping, cpu_state, make_model, make_optimizer, make_precision, train_epoch,
                                    validate)
from sepcluster.train.loop import EpochTotals, WorkerJob, end_epoch, restore, snapshot, summary
from tests.train.conftest import RATE, TINY

CPU = torch.device("cpu")
METRIC_KEYS = ["epoch", "train_loss", "valid_loss", "lr", "epoch_time", "train_time", "samples_per_s", "samples",
               "best_valid_loss", "best_epoch", "bad_epochs", "valid_sisdr", "valid_mix_sisdr",
               "valid_sisdr_improvement"]


def _data():
    gen = torch.Generator().manual_seed(3)
    batches = [(torch.randn(4, 2, 4096, generator=gen) * 0.3, torch.randn(4, 2, 4096, generator=gen) * 0.1)
               for _ in range(3)]
    valid = [(torch.randn(1, 2, 8192, generator=gen) * 0.3, torch.randn(1, 2, 8192, generator=gen) * 0.1)]
    return batches, valid


class _Run:
    """A model, its optimizer and scheduler, and the job description, as train_func builds them."""

    def __init__(self, cfg: TrainConfig, seed: int):
        torch.manual_seed(seed)
        self.cfg = cfg
        self.model = make_model(cfg, 2, RATE)
        self.optimizer, self.scheduler = make_optimizer(self.model, cfg)
        self.precision = make_precision(cfg, CPU)
        spec = DataSpec(kind="stems", uri="/data/lib", sample_rate=RATE, channels=2, labels=["vocals"])
        self.job = WorkerJob(config=cfg, spec=spec, target="vocals", sample_rate=RATE, nb_channels=2,
                             architecture=cfg.architecture(), signal={"sample_rate": RATE, "nb_channels": 2})

    def start(self, state):
        self.state = restore(state, self.job, self.model, self.optimizer, self.scheduler, self.precision)
        self.stopper = EarlyStopping(self.cfg.patience, self.state.best_loss, self.state.bad_epochs)

    def epoch(self, epoch: int, batches, valid) -> dict:
        stft, istft, loss = STFT(self.cfg.n_fft, self.cfg.n_hop), ISTFT(self.cfg.n_fft, self.cfg.n_hop), get_loss("mse")
        torch.manual_seed(epoch)
        tr = train_epoch(self.model, batches, stft, istft, loss, self.optimizer, CPU, self.precision, 5.0)
        va = validate(self.model, valid, stft, istft, loss, CPU)
        totals = EpochTotals.reduce(tr, va, 0.5, CPU)
        self.scheduler.step(totals.valid_loss)
        if self.stopper.step(totals.valid_loss):
            self.state.best_model_state, self.state.best_epoch = cpu_state(self.model), epoch
        return end_epoch(self.state, epoch, totals, self.stopper, self.optimizer.param_groups[0]["lr"], 1.0,
                         self.cfg)


def test_resuming_from_a_checkpoint_continues_exactly(tmp_path):
    cfg = TrainConfig.from_dict(dict(TINY, epochs=3, lr_decay_patience=1, lr_decay_gamma=0.5))
    batches, valid = _data()
    straight = _Run(cfg, seed=0)
    straight.start(None)
    for epoch in (1, 2, 3):
        straight.epoch(epoch, batches, valid)

    first = _Run(cfg, seed=0)
    first.start(None)
    metrics = first.epoch(1, batches, valid)
    assert list(metrics) == METRIC_KEYS and metrics["samples"] == 12
    snapshot(first.state, first.model, first.optimizer, first.scheduler, first.precision).write(str(tmp_path))
    second = _Run(cfg, seed=99)  # other initial weights: all of them must come from the checkpoint
    state = TrainState.read(str(tmp_path))
    second.model.load_state_dict(state.model_state)
    second.start(state)
    for epoch in (2, 3):
        second.epoch(epoch, batches, valid)

    for key, value in straight.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[key], value), key
    assert second.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    assert second.state.history == straight.state.history and second.state.epoch == 3
    assert (second.state.best_epoch, second.state.best_loss) == (straight.state.best_epoch, straight.state.best_loss)
    assert second.state.finished and second.state.stop_reason == "reached epochs=3"
    assert summary(second.state, True, 2)["best_valid_loss"] == straight.state.best_loss


def test_a_resumed_state_is_described_by_the_new_run():
    cfg = TrainConfig.from_dict(dict(TINY, epochs=3))
    run = _Run(cfg, seed=0)
    run.start(None)
    old = snapshot(run.state, run.model, run.optimizer, run.scheduler, run.precision)
    longer = _Run(TrainConfig.from_dict(dict(TINY, epochs=8)), seed=0)
    longer.start(old)
    assert longer.state.config["epochs"] == 8 and old.config["epochs"] == 3
    assert longer.state.model_kwargs == cfg.model_kwargs(2, RATE) and longer.state.data["uri"] == "/data/lib"
    longer.state.history.append({"epoch": 1})
    assert old.history == []  # the restored state does not share its lists with the one read


def test_epoch_bookkeeping_and_early_stopping():
    cfg = TrainConfig.from_dict(dict(TINY, epochs=10, patience=2))
    run = _Run(cfg, seed=0)
    run.start(None)
    stopper = run.stopper
    totals = EpochTotals(train_loss=1.0, valid_loss=0.5, samples=8, train_seconds=2.0, valid_items=0,
                         valid_sisdr_sum=0.0, valid_mix_sisdr_sum=0.0)
    for epoch, loss in ((1, 0.5), (2, 0.7), (3, 0.6)):
        totals.valid_loss = loss
        stopper.step(loss)
        metrics = end_epoch(run.state, epoch, totals, stopper, 1e-3, 3.0, cfg)
    assert "valid_sisdr" not in metrics and metrics["samples_per_s"] == 4.0
    assert run.state.finished and run.state.stop_reason.startswith("early stopping")
    assert (run.state.epoch, run.state.best_loss, run.state.bad_epochs) == (3, 0.5, 2)
    assert [h["bad_epochs"] for h in run.state.history] == [0, 1, 2]
    no_valid = EpochTotals.reduce({"loss_sum": 3.0, "batches": 2, "samples": 8}, {"loss_sum": 0.0, "items": 0,
                                   "sisdr_sum": 0.0, "mix_sisdr_sum": 0.0}, 1.0, CPU)
    assert no_valid.valid_loss == no_valid.train_loss == 1.5
