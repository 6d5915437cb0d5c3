"""Training checkpoints: TrainState files (state.pt + meta.json, format 1), verification, newest, resume checks."""

from __future__ import annotations

import hashlib
import io
import json
import math

import pytest
import torch

from sepcluster.errors import ConfigError
from sepcluster.train.checkpoint import (CHECKPOINT_FILE, CHECKPOINT_FORMAT, CHECKPOINT_META, TrainState,
                                         check_compatible, is_done, verified_checkpoint_meta)
from sepcluster.train.config import TrainConfig
from sepcluster.train.epoch import cpu_state, make_model, make_optimizer

# the keys of format 1, in their order (state.pt; meta.json adds state_bytes and state_sha256)
STATE_KEYS = ["format", "target", "epoch", "finished", "stop_reason", "model_name", "hparams", "model_kwargs",
              "architecture", "signal", "model_state", "best_model_state", "best_loss", "best_epoch", "bad_epochs",
              "optimizer", "scheduler", "scaler", "input_mean", "input_scale", "history", "attempts", "config", "data"]
META_KEYS = ["format", "target", "epoch", "finished", "stop_reason", "best_loss", "best_epoch", "model_name",
             "hparams", "architecture", "signal", "attempts", "metrics", "state_bytes", "state_sha256"]


def _state(epoch: int = 3, **kw) -> TrainState:
    cfg = TrainConfig.from_dict({"hidden_size": 8, "nb_layers": 1, "n_fft": 256, "n_hop": 64})
    model = make_model(cfg, 2, 16000)
    optimizer, scheduler = make_optimizer(model, cfg)
    values = dict(target="vocals", epoch=epoch, model_name="umx", hparams=model.hparams(),
                  model_kwargs=cfg.model_kwargs(2, 16000), architecture=cfg.architecture(),
                  signal={"sample_rate": 16000, "nb_channels": 2}, model_state=cpu_state(model),
                  best_model_state=cpu_state(model), best_loss=0.25, best_epoch=2, bad_epochs=1,
                  optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                  input_mean=torch.zeros(4), input_scale=torch.ones(4),
                  history=[{"epoch": e, "valid_loss": 1.0 / e} for e in range(1, epoch + 1)],
                  attempts=[{"start_epoch": 1, "pids": [11, 12]}], config=cfg.to_dict(), data={"kind": "stems"})
    values.update(kw)
    return TrainState(**values)


def test_files_are_format_1(tmp_path):
    state = _state()
    state.write(str(tmp_path))
    data = (tmp_path / CHECKPOINT_FILE).read_bytes()
    saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    assert isinstance(saved, dict) and list(saved) == STATE_KEYS
    assert saved["format"] == CHECKPOINT_FORMAT == "sepcluster-train-checkpoint/1"
    meta = json.loads((tmp_path / CHECKPOINT_META).read_text())
    assert list(meta) == META_KEYS
    assert meta["state_bytes"] == len(data) and meta["state_sha256"] == hashlib.sha256(data).hexdigest()
    assert (meta["epoch"], meta["best_loss"], meta["hparams"]["hidden_size"]) == (3, 0.25, 8)
    assert verified_checkpoint_meta(str(tmp_path)) == meta


def test_round_trip_and_a_plain_dict_written_before_trainstate_reads(tmp_path):
    state = _state()
    (tmp_path / "a").mkdir()
    state.write(str(tmp_path / "a"))
    back = TrainState.read(str(tmp_path / "a"))
    assert back.meta() == state.meta() and back.history == state.history and back.attempts == state.attempts
    for key, value in state.model_state.items():
        assert torch.equal(back.model_state[key], value)
    # a format-1 state.pt is a plain dict: one without the optional keys (history, attempts, scaler) reads too
    old = {k: v for k, v in state.to_dict().items() if k not in ("history", "attempts", "scaler")}
    (tmp_path / "b").mkdir()
    torch.save(old, tmp_path / "b" / CHECKPOINT_FILE)
    back = TrainState.read(str(tmp_path / "b"))
    assert back.history == [] and back.attempts == [] and back.scaler is None and back.epoch == 3
    assert back.optimizer["param_groups"][0]["lr"] == state.optimizer["param_groups"][0]["lr"]


def test_newest_skips_cut_off_copies(tmp_path):
    run = tmp_path / "run-vocals"
    for epoch in (1, 2, 3):
        folder = run / f"checkpoint_epoch{epoch:05d}_20250101-000000"
        folder.mkdir(parents=True)
        _state(epoch).write(str(folder))
    (run / "not_a_checkpoint").mkdir()
    newest = TrainState.newest(str(run))
    assert newest["meta"]["epoch"] == 3 and newest["uri"].endswith("checkpoint_epoch00003_20250101-000000")
    cut = run / "checkpoint_epoch00003_20250101-000000" / CHECKPOINT_FILE
    cut.write_bytes(cut.read_bytes()[:1000])  # a copy cut off by a kill
    assert verified_checkpoint_meta(str(cut.parent)) is None
    assert TrainState.newest(str(run))["meta"]["epoch"] == 2
    assert TrainState.newest(str(tmp_path / "missing")) is None


def test_is_done():
    assert not is_done({"epoch": 3, "finished": False}, 5)
    assert is_done({"epoch": 5, "finished": True, "stop_reason": "reached epochs=5"}, 5)
    assert not is_done({"epoch": 5, "finished": True, "stop_reason": "reached epochs=5"}, 8)  # extended
    assert is_done({"epoch": 4, "finished": True, "stop_reason": "early stopping: no better ..."}, 8)
    assert is_done(_state(epoch=6).meta(), 6)


def test_check_compatible_names_the_mismatch():
    meta = _state().meta()
    check_compatible(meta, meta["architecture"], meta["signal"], "vocals", "ckpt")
    with pytest.raises(ConfigError) as err:
        check_compatible(meta, dict(meta["architecture"], hidden_size=16), meta["signal"], "vocals", "ckpt")
    assert err.value.field == "hidden_size" and "different architecture" in str(err.value)
    with pytest.raises(ConfigError) as err:
        check_compatible(meta, meta["architecture"], {"sample_rate": 22050}, "vocals", "ckpt")
    assert err.value.field == "sample_rate"
    with pytest.raises(ConfigError, match="trains target 'vocals', not 'drums'"):
        check_compatible(meta, meta["architecture"], meta["signal"], "drums", "ckpt")
    with pytest.raises(ConfigError, match="not a sepcluster training checkpoint"):
        check_compatible(dict(meta, format="x"), meta["architecture"], meta["signal"], "vocals", "ckpt")


def test_a_fresh_state_has_no_best_loss_yet():
    state = TrainState(target="bass")
    assert state.epoch == 0 and math.isinf(state.best_loss) and state.format == CHECKPOINT_FORMAT
    assert list(state.to_dict()) == STATE_KEYS
