"""The registry of model families: entries checked against their constructors, build_model, the one name list."""

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sepcluster.errors import ConfigError
from sepcluster.models import OpenUnmix, UNet, bundle
from sepcluster.models.registry import ModelFamily, build_model, families, get_family, model_names, register


def test_every_option_is_a_constructor_parameter_of_the_same_type():
    assert model_names() == tuple(f.name for f in families()) == ("umx", "unet")
    for family in families():
        params = inspect.signature(family.load().__init__).parameters
        for name, default in family.options.items():
            assert name in params, (family.name, name)
            assert family.option_kind(name) == type(default).__name__, (family.name, name)
        # the training defaults build a model
        model = build_model(family.name, n_fft=256, sample_rate=16000, nb_channels=2, **family.options)
        assert model.name == family.name
        assert {k: v for k, v in model.hparams().items() if k in family.options} == dict(family.options)


def test_entries_say_what_they_estimate():
    assert get_family("umx").load() is OpenUnmix and get_family("unet").load() is UNet
    for family in families():
        assert family.multi_source is False and "magnitude" in family.estimates
        model = build_model(family.name, n_fft=256, sample_rate=16000, nb_channels=2).eval()
        mag = torch.rand(2, 2, 129, 16)
        assert model(mag).shape == mag.shape  # a per-target magnitude estimate


def test_names_are_case_insensitive_and_unknown_names_are_config_errors():
    assert get_family(" UMX ").name == "umx"
    with pytest.raises(ConfigError) as err:
        get_family("htdemucs")
    assert err.value.field == "model" and "umx, unet" in str(err.value)


def test_build_model_checks_arguments_against_the_constructor():
    with pytest.raises(ConfigError) as err:
        build_model("unet", hidden_size=16)  # an umx option
    assert err.value.field == "model.hidden_size" and "'unet'" in str(err.value)
    with pytest.raises(ConfigError, match="model.nb_bins"):
        build_model("umx", n_fft=512, nb_bins=100)
    m = build_model("unet", n_fft=512, sample_rate=16000, bandwidth=4000, base_channels=2, depth=1)
    assert (m.nb_output_bins, m.nb_bins) == (257, 129)


def test_complete_options_fills_defaults_and_checks_ranges():
    umx = get_family("umx")
    assert umx.complete_options({"hidden_size": 32}) == {"hidden_size": 32, "nb_layers": 3, "unidirectional": False}
    assert umx.complete_options({"hidden_size": 15, "unidirectional": True})["hidden_size"] == 15
    for options, field in (({"hidden_size": 15}, "hidden_size"), ({"nb_layers": 17}, "nb_layers"),
                           ({"depth": 2}, "depth")):
        with pytest.raises(ConfigError) as err:
            umx.complete_options(options)
        assert err.value.field == field
    with pytest.raises(ConfigError) as err:
        get_family("unet").complete_options({"depth": 9})
    assert err.value.field == "depth" and "1..8" in str(err.value)


def test_a_family_is_checked_against_its_constructor_and_registered_once():
    bad = ModelFamily("umx_typo", "sepcluster.models.umx:OpenUnmix", multi_source=False, estimates="x",
                      options={"hiden_size": 8})
    with pytest.raises(TypeError, match="hiden_size"):
        bad.load()
    with pytest.raises(ValueError, match="already registered"):
        register(ModelFamily("umx", "sepcluster.models.umx:OpenUnmix", multi_source=False, estimates="x"))


def test_bundles_take_their_model_names_from_the_registry(tmp_path):
    meta = bundle.BundleMeta(model="transformer", n_fft=256, n_hop=64)
    with pytest.raises(ConfigError, match="choose from umx, unet"):
        bundle.save_bundle(str(tmp_path / "b"), {"vocals": build_model("umx", n_fft=256, hidden_size=8)}, meta)


def test_the_registry_imports_without_torch():
    code = ("import sys; from sepcluster.models.registry import model_names; "
            "print(model_names(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip() == "('umx', 'unet') False"
