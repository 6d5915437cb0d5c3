"""The registry of model families: entries checked against their constructors, build_model, the one name list.

Multi-source families (htdemucs, bs_roformer, mel_roformer) are built small here: their defaults
are the published sizes (tens of millions of parameters).
"""

import inspect
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from sepcluster.errors import ConfigError
from sepcluster.models import OpenUnmix, UNet, bundle
from sepcluster.models.registry import ModelFamily, build_model, families, get_family, model_names, register


PER_TARGET = ("umx", "unet")
MULTI_SOURCE = ("htdemucs", "bs_roformer", "mel_roformer")
SMALL = {"htdemucs": dict(channels=8, depth=2, nfft=256, t_layers=1, t_heads=2),
         "bs_roformer": dict(dim=16, depth=1, heads=2, dim_head=8, stft_n_fft=256, stft_hop_length=64,
                             stft_win_length=256),
         "mel_roformer": dict(dim=16, depth=1, heads=2, dim_head=8, stft_n_fft=256, stft_hop_length=64,
                              stft_win_length=256, num_bands=8)}


def test_every_option_is_a_constructor_parameter_of_the_same_type():
    assert model_names() == tuple(f.name for f in families()) == PER_TARGET + MULTI_SOURCE
    for family in families():
        params = inspect.signature(family.load().__init__).parameters
        for name, default in family.options.items():
            assert name in params, (family.name, name)
            if default is not None:
                assert family.option_kind(name) == type(default).__name__, (family.name, name)
        if family.multi_source:
            assert all(d in params for d in family.derived) and not set(family.derived) & set(family.options)
    for family in (f for f in families() if not f.multi_source):
        params = inspect.signature(family.load().__init__).parameters
        for name, default in family.options.items():
            assert name in params, (family.name, name)
            assert family.option_kind(name) == type(default).__name__, (family.name, name)
        # the training defaults build a model
        model = build_model(family.name, n_fft=256, sample_rate=16000, nb_channels=2, **family.options)
        assert model.name == family.name
        assert {k: v for k, v in model.hparams().items() if k in family.options} == dict(family.options)


def test_multi_source_families_build_for_the_run_and_estimate_every_source():
    from demucs.htdemucs import HTDemucs

    from sepcluster.models.multisource import BSRoformerNet, MelRoformerNet

    assert [get_family(n).load() for n in MULTI_SOURCE] == [HTDemucs, BSRoformerNet, MelRoformerNet]
    mix = torch.randn(2, 2, 8000)
    for name in MULTI_SOURCE:
        family = get_family(name)
        assert family.multi_source and "sources" in family.estimates and family.loss in ("wave_l1", "mrstft")
        model = build_model(name, sources=["vocals", "drums", "bass"], nb_channels=2, sample_rate=16000,
                            segment=0.5, **SMALL[name]).eval()
        assert model.sources == ["vocals", "drums", "bass"]
        with torch.no_grad():
            assert model(mix).shape == (2, 3, 2, 8000)  # (batch, sources, channels, samples)
    ht = build_model("htdemucs", sources=["a"], nb_channels=1, sample_rate=22050, segment=1.5, **SMALL["htdemucs"])
    kwargs = ht._init_args_kwargs[1]
    assert (kwargs["audio_channels"], kwargs["samplerate"], kwargs["segment"]) == (1, 22050, Fraction(33075, 22050))
    mel = build_model("mel_roformer", sources=["a", "b"], nb_channels=1, sample_rate=22050, **SMALL["mel_roformer"])
    assert mel.msst_options["num_stems"] == 2 and mel.msst_options["stereo"] is False
    assert mel.msst_options["sample_rate"] == 22050 and mel.msst_options["dim_freqs_in"] == 129


def test_multi_source_options_are_checked():
    for key in ("sources", "audio_channels", "samplerate", "segment"):  # set by the run
        with pytest.raises(ConfigError, match="set by the training run") as err:
            get_family("htdemucs").complete_options({key: 1})
        assert err.value.field == key
    with pytest.raises(ConfigError, match="set by the training run") as err:
        build_model("bs_roformer", sources=["a"], num_stems=2)
    assert err.value.field == "num_stems"
    with pytest.raises(ConfigError) as err:
        build_model("bs_roformer", sources=["a"], hidden_size=3)
    assert err.value.field == "hidden_size" and "bs_roformer" in str(err.value)
    with pytest.raises(ConfigError) as err:
        get_family("bs_roformer").complete_options({"stft_n_fft": 256, "stft_win_length": 256, "stft_hop_length": 64,
                                                  "freqs_per_bands": [64, 64]})
    assert err.value.field == "freqs_per_bands" and "129 bins" in str(err.value)
    with pytest.raises(ConfigError) as err:
        get_family("htdemucs").complete_options({"channels": 8, "depth": 2, "t_heads": 3})
    assert err.value.field == "t_heads"
    with pytest.raises(ConfigError, match="distinct"):
        build_model("htdemucs", sources=["a", "a"], **SMALL["htdemucs"])


def test_what_a_family_cannot_estimate():
    assert get_family("htdemucs").cannot_estimate("vocals") is None
    assert "sum of stems" in get_family("bs_roformer").cannot_estimate("accompaniment")
    assert get_family("umx").cannot_estimate("accompaniment") is None  # a per-target model learns any target
    assert "input" in get_family("umx").cannot_estimate("mixture")


def test_entries_say_what_they_estimate():
    assert get_family("umx").load() is OpenUnmix and get_family("unet").load() is UNet
    for family in (f for f in families() if not f.multi_source):
        assert family.multi_source is False and "magnitude" in family.estimates
        model = build_model(family.name, n_fft=256, sample_rate=16000, nb_channels=2).eval()
        mag = torch.rand(2, 2, 129, 16)
        assert model(mag).shape == mag.shape  # a per-target magnitude estimate


def test_names_are_case_insensitive_and_unknown_names_are_config_errors():
    assert get_family(" UMX ").name == "umx"
    assert get_family(" HTDemucs ").name == "htdemucs"
    with pytest.raises(ConfigError) as err:
        get_family("transformer")
    assert err.value.field == "model" and "umx, unet, htdemucs, bs_roformer, mel_roformer" in str(err.value)


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
    with pytest.raises(ConfigError, match="choose from umx, unet, htdemucs"):
        bundle.save_bundle(str(tmp_path / "b"), {"vocals": build_model("umx", n_fft=256, hidden_size=8)}, meta)


def test_the_registry_imports_without_torch():
    code = ("import sys; from sepcluster.models.registry import model_names; "
            "print(model_names(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout
    assert out.strip() == "('umx', 'unet', 'htdemucs', 'bs_roformer', 'mel_roformer') False"
