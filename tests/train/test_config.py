"""The training config: field checks, the model's own options (registry), the recorded flat form, CLI flags."""

from __future__ import annotations

import argparse

import pytest
import yaml

from sepcluster.errors import ConfigError
from sepcluster.train.config import TrainConfig, config_options, load_train_config
from tests.train.conftest import TINY


def test_defaults_follow_open_unmix():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.weight_decay, cfg.lr_decay_gamma) == (1e-3, 1e-5, 0.3)
    assert (cfg.n_fft, cfg.n_hop, cfg.bandwidth, cfg.seq_dur, cfg.batch_size) == (4096, 1024, 16000.0, 6.0, 16)
    assert (cfg.gain_min, cfg.gain_max) == (0.25, 1.25)


@pytest.mark.parametrize("field,value", [("lr", -1), ("lr", 0), ("batch_size", 0), ("epochs", 0),
                                         ("lr_decay_gamma", 1.5), ("n_hop", 10000), ("seq_dur", 0),
                                         ("model", "transformer"), ("loss", "hinge"), ("precision", "fp8"),
                                         ("valid_fraction", 1.0), ("gain_max", 0.1), ("clip_grad_norm", -2),
                                         ("hidden_size", 15)])
def test_out_of_range_values_name_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({field: value})
    assert err.value.field == field


def test_strings_from_the_command_line_are_coerced():
    cfg = TrainConfig.from_dict({"lr": "3e-4", "epochs": "7", "channel_swap": "false", "bandwidth": "null",
                                 "valid_songs": "song001,song002"})
    assert cfg.lr == 3e-4 and cfg.epochs == 7 and cfg.channel_swap is False and cfg.bandwidth is None
    assert cfg.valid_songs == ["song001", "song002"]
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"epochs": "many"})
    assert err.value.field == "epochs"


def test_yaml_file_errors_name_file_and_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.01\nbatch_size: -4\n")
    with pytest.raises(ConfigError) as err:
        load_train_config(str(path))
    assert str(path) in str(err.value) and "batch_size" in str(err.value)
    path.write_text("learning_rate: 0.01\n")
    with pytest.raises(ConfigError, match="learning_rate: unknown training option"):
        load_train_config(str(path))
    path.write_text("lr: 0.01\n")
    assert load_train_config(str(path), epochs=3, lr=None).lr == 0.01


def test_demo_config_is_valid():
    from importlib import resources

    text = resources.files("sepcluster.train").joinpath("demo.yaml")
    cfg = load_train_config(str(text))
    assert cfg.model == "umx" and cfg.model_options["hidden_size"] <= 64




# ----------------------------------------------------------------------------- model options

# the keys of the recorded config dict (checkpoints, bundles, MLflow params, default run names), in order
RECORDED_KEYS = [
    "model", "hidden_size", "nb_layers", "unidirectional", "base_channels", "depth", "sample_rate", "nb_channels",
    "n_fft", "n_hop", "bandwidth", "source", "stems", "seq_dur", "batch_size", "samples_per_epoch",
    "samples_per_track", "valid_fraction", "valid_songs", "valid_size", "excerpts_per_mixture", "valid_seq_dur",
    "gain_min", "gain_max", "channel_swap", "random_track_mix", "loader_workers", "cache_dataset", "seed",
    "stats_batches", "epochs", "lr", "weight_decay", "lr_decay_patience", "lr_decay_gamma", "patience",
    "clip_grad_norm", "loss", "precision", "max_failures", "num_to_keep", "cpus_per_worker"]


def test_flat_yaml_puts_the_model_options_apart(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": "umx", "hidden_size": 32, "nb_layers": 1, "lr": 0.01}))
    cfg = load_train_config(str(path))
    assert cfg.model_options == {"hidden_size": 32, "nb_layers": 1, "unidirectional": False}
    assert not hasattr(cfg, "hidden_size") and cfg.lr == 0.01
    unet = TrainConfig.from_dict({"model": "unet", "depth": "3"})
    assert unet.model_options == {"base_channels": 16, "depth": 3}
    assert TrainConfig().model_options == {"hidden_size": 512, "nb_layers": 3, "unidirectional": False}


def test_a_key_of_no_field_and_no_option_of_the_model_is_refused(tmp_path):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"model": "unet", "hidden_size": 32})
    assert err.value.field == "hidden_size" and "for model 'unet'" in str(err.value)
    path = tmp_path / "c.yaml"
    path.write_text("model: umx\ndepth: 6\n")
    with pytest.raises(ConfigError) as err:
        load_train_config(str(path))
    assert err.value.field == f"{path}: depth"
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"model_options": {"hiden_size": 3}})
    assert err.value.field == "hiden_size"
    with pytest.raises(ConfigError) as err:
        TrainConfig(model_options={"depth": 2}).validate()
    assert err.value.field == "depth" and "not an option of model 'umx'" in str(err.value)


def test_to_dict_is_the_recorded_flat_form_and_reads_back():
    umx = TrainConfig.from_dict(dict(TINY))
    recorded = umx.to_dict()
    assert list(recorded) == RECORDED_KEYS
    # the other family's options at their defaults, as always recorded
    assert (recorded["hidden_size"], recorded["base_channels"], recorded["depth"]) == (16, 16, 4)
    assert TrainConfig.from_dict(recorded) == umx
    unet = TrainConfig.from_dict({"model": "unet", "base_channels": 4, "depth": 2})
    recorded = unet.to_dict()
    assert list(recorded) == RECORDED_KEYS
    assert (recorded["hidden_size"], recorded["nb_layers"], recorded["depth"]) == (512, 3, 2)
    assert TrainConfig.from_dict(recorded) == unet
    assert load_train_config(umx) == umx
    assert load_train_config(umx, model="unet").model_options == {"base_channels": 16, "depth": 4}


def test_architecture_and_model_kwargs_hold_the_family_options():
    umx = TrainConfig.from_dict(dict(TINY))
    assert umx.architecture() == {"model": "umx", "n_fft": 256, "n_hop": 64, "bandwidth": 4000.0, "hidden_size": 16,
                                  "nb_layers": 1, "unidirectional": False}
    unet = TrainConfig.from_dict({"model": "unet", "depth": 2})
    assert unet.model_kwargs(1, 22050) == {"n_fft": 4096, "sample_rate": 22050.0, "bandwidth": 16000.0,
                                           "nb_channels": 1, "base_channels": 16, "depth": 2}


def test_options_are_coerced_by_the_constructor_types():
    cfg = TrainConfig.from_dict({"hidden_size": "15", "unidirectional": "true", "nb-layers": "2"})
    assert cfg.model_options == {"hidden_size": 15, "unidirectional": True, "nb_layers": 2}
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"nb_layers": "1.5"})
    assert err.value.field == "nb_layers" and "integer" in str(err.value)


def test_the_cli_offers_every_option_of_every_family():
    from sepcluster.train.cli import add_arguments

    options = config_options()
    assert {"hidden_size", "nb_layers", "unidirectional", "base_channels", "depth", "lr", "model"} <= set(options)
    assert "model_options" not in options and "unet: default 16" in options["base_channels"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", "d", "--model", "unet", "--depth", "3", "--lr", "0.01"])
    cfg = load_train_config(None, **{k: getattr(args, k) for k in options})
    assert cfg.model == "unet" and cfg.model_options["depth"] == 3 and cfg.lr == 0.01


@pytest.mark.parametrize("name,model", [("demo_htdemucs.yaml", "htdemucs"), ("demo_bs_roformer.yaml", "bs_roformer")])
def test_the_multi_source_demo_configs_are_valid_and_build(name, model):
    from importlib import resources

    from sepcluster.train.epoch import make_model

    cfg = load_train_config(str(resources.files("sepcluster.train").joinpath(name)))
    assert cfg.model == model and cfg.multi_source and cfg.ema_decay > 0 and cfg.augment
    built = make_model(cfg, 2, cfg.sample_rate, ["vocals", "drums", "bass", "other"], cfg.seq_dur)
    assert built.sources == ["vocals", "drums", "bass", "other"]
    assert sum(p.numel() for p in built.parameters()) < 3_000_000  # small enough for the demo's CPUs


def test_multi_source_config_fields():
    cfg = TrainConfig.from_dict({"model": "htdemucs", "channels": 8, "ema_decay": "0.999"})
    assert cfg.loss == "wave_l1" and cfg.ema_decay == 0.999 and cfg.multi_source
    assert TrainConfig.from_dict({"model": "bs_roformer"}).loss == "mrstft"
    assert TrainConfig().loss == "mse" and not TrainConfig().multi_source
    recorded = cfg.to_dict()
    assert recorded["ema_decay"] == 0.999 and "polarity_flip" not in recorded  # later fields: only when set
    assert TrainConfig.from_dict(recorded) == cfg
    assert cfg.model_kwargs(2, 16000, ["a", "b"], 1.5)["sources"] == ["a", "b"]
    for bad, field in (({"model": "htdemucs", "hidden_size": 512}, "hidden_size"),  # umx's default: still refused
                       ({"model": "htdemucs", "samplerate": 8000}, "samplerate"),
                       ({"model": "mel_roformer", "loss": "l1"}, "loss"),
                       ({"ema_decay": 1.0}, "ema_decay"), ({"diagnostics_every": -1}, "diagnostics_every")):
        with pytest.raises(ConfigError) as err:
            TrainConfig.from_dict(bad)
        assert err.value.field == field
    # a 22.05 kHz multi-source run does not trip the per-target bandwidth check
    assert TrainConfig.from_dict({"model": "htdemucs", "sample_rate": 16000}).bandwidth == 16000.0
    assert load_train_config(TrainConfig(), model="bs_roformer").loss == "mrstft"
