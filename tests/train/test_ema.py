"""EMA of the weights: demucs' unbiased average, swapped in for validation and the best weights, carried by
checkpoints so a resumed run continues it exactly."""

from __future__ import annotations

import torch

from sepcluster.models.losses import get_loss
from sepcluster.models.stft import ISTFT, STFT
from sepcluster.train.checkpoint import TrainState
from sepcluster.train.config import TrainConfig
from sepcluster.train.ema import EMA, averaged, make_ema
from sepcluster.train.epoch import cpu_state, make_model, make_optimizer, make_precision, train_epoch, validate
from sepcluster.train.loop import snapshot
from tests.train.conftest import RATE, TINY

CPU = torch.device("cpu")


def _data(n=3):
    gen = torch.Generator().manual_seed(5)
    batches = [(torch.randn(4, 2, 4096, generator=gen) * 0.3, torch.randn(4, 2, 4096, generator=gen) * 0.1)
               for _ in range(n)]
    valid = [(torch.randn(1, 2, 8192, generator=gen) * 0.3, torch.randn(1, 2, 8192, generator=gen) * 0.1)]
    return batches, valid


def test_the_average_is_demucs_unbiased_ema():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    snapshots, count, expected = [], 0.0, None
    for step in range(4):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        ema.update()
        count = count * 0.9 + 1
        w = 1 / count
        live = model.weight.detach().clone()
        expected = live if expected is None else (1 - w) * expected + w * live
        snapshots.append(live)
    torch.testing.assert_close(ema.average["weight"], expected)
    assert not torch.equal(ema.average["weight"], model.weight)
    with ema.applied() as m:
        torch.testing.assert_close(m.weight, expected)  # the average inside
    assert torch.equal(model.weight, snapshots[-1])  # the live weights after


def test_ema_changes_what_is_validated_and_kept():
    cfg = TrainConfig.from_dict(dict(TINY, lr=0.05))
    batches, valid = _data()
    stft, istft, loss = STFT(cfg.n_fft, cfg.n_hop), ISTFT(cfg.n_fft, cfg.n_hop), get_loss("mse")
    torch.manual_seed(0)
    model = make_model(cfg, 2, RATE)
    optimizer, _ = make_optimizer(model, cfg)
    ema = make_ema(model, 0.99)
    assert make_ema(model, 0.0) is None
    train_epoch(model, batches, stft, istft, loss, optimizer, CPU, make_precision(cfg, CPU), 5.0, ema=ema)
    assert ema.count > 2.9  # one update per step
    live = validate(model, valid, stft, istft, loss, CPU)
    with averaged(model, ema) as m:
        averaged_figures = validate(m, valid, stft, istft, loss, CPU)
        kept = cpu_state(m)
    assert averaged_figures["loss_sum"] != live["loss_sum"]
    for key, value in ema.average.items():
        assert torch.equal(kept[key], value)
    with averaged(model, None) as m:
        assert m is model


def test_a_checkpoint_carries_the_average_and_a_resume_continues_it(tmp_path):
    cfg = TrainConfig.from_dict(dict(TINY, ema_decay=0.9))
    batches, _ = _data(4)
    stft, istft, loss = STFT(cfg.n_fft, cfg.n_hop), ISTFT(cfg.n_fft, cfg.n_hop), get_loss("mse")

    def start(seed, state=None):
        torch.manual_seed(seed)
        model = make_model(cfg, 2, RATE)
        optimizer, scheduler = make_optimizer(model, cfg)
        if state is not None:
            model.load_state_dict(state.model_state)
            optimizer.load_state_dict(state.optimizer)
        return model, optimizer, scheduler, make_ema(model, cfg.ema_decay, state.ema_state if state else None)

    straight, opt, _, ema = start(0)
    for half in (batches[:2], batches[2:]):
        train_epoch(straight, half, stft, istft, loss, opt, CPU, None, 5.0, ema=ema)

    first, opt1, sched1, ema1 = start(0)
    train_epoch(first, batches[:2], stft, istft, loss, opt1, CPU, None, 5.0, ema=ema1)
    state = snapshot(TrainState(target="vocals"), first, opt1, sched1, make_precision(cfg, CPU), ema1)
    state.write(str(tmp_path))
    read = TrainState.read(str(tmp_path))
    assert read.ema_state["count"] == ema1.count and list(read.to_dict())[-1] == "ema_state"
    second, opt2, _, ema2 = start(99, read)
    train_epoch(second, batches[2:], stft, istft, loss, opt2, CPU, None, 5.0, ema=ema2)
    for key, value in ema.average.items():
        torch.testing.assert_close(ema2.average[key], value, rtol=0, atol=1e-7)
    assert "ema_state" not in TrainState(target="vocals").to_dict()  # format 1 keys when there is no EMA
