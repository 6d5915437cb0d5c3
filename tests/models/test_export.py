"""Trained multi-source models written in their projects' formats: read back by those projects' own
loaders (test-only oracles) and by sepcluster's, with the same outputs; the pyfunc body separates them.

Oracles: ``demucs.states.load_model`` and demucs' local repository (``demucs.pretrained.get_model``)
for HTDemucs; Music-Source-Separation-Training's loading for the RoFormers, i.e. its YAML read with
``yaml.FullLoader``, the ``bs-roformer`` 0.4.1 class built from ``model:`` (MSST's copies have its
parameter names) and ``load_state_dict`` of ``torch.load(weights_only=True)`` (Mel-Band: MSST's keys
have no empty slot for the missing linear transformer, the package's do).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import yaml

from sepcluster.errors import ConfigError
from sepcluster.models.export import export_model, export_path
from sepcluster.models.registry import build_model

pytest.importorskip("demucs")
pytest.importorskip("bs_roformer")

SOURCES = ["vocals", "drums", "bass"]
HT = dict(channels=8, depth=2, nfft=256, t_layers=1, t_heads=2)
RO = dict(dim=16, depth=1, heads=2, dim_head=8, stft_n_fft=256, stft_hop_length=64, stft_win_length=256)


def _trained(name: str, **options):
    """A model of ``name`` whose weights are not the initial ones (so every weight has to travel)."""
    torch.manual_seed(3)
    model = build_model(name, sources=SOURCES, nb_channels=2, sample_rate=16000, segment=0.5, **options)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_htdemucs_th_is_read_by_demucs_and_by_sepcluster(tmp_path):
    from demucs.pretrained import get_model
    from demucs.states import load_model

    from sepcluster.models.demucs import load_demucs

    model = _trained("htdemucs", **HT)
    written = export_model(model, "htdemucs", "demucs", str(tmp_path), sources=SOURCES, sample_rate=16000,
                           chunk_size=8000, training={"lr": 0.001})
    assert written.path == str(tmp_path / "htdemucs.th") and written.files == (written.path,)
    mix = torch.randn(1, 2, 8000)
    with torch.no_grad():
        expected = model(mix)
        theirs = load_model(written.path).eval()  # demucs' own loader (weights_only=False: our own file)
        assert type(theirs) is type(model) and theirs.sources == SOURCES and theirs.samplerate == 16000
        assert torch.equal(theirs(mix), expected)
        repo = get_model("htdemucs", repo=tmp_path).eval()  # demucs' local repository of <sig>.th files
        assert torch.equal(repo(mix), expected)
        ours = load_demucs(written.path)  # the separate job's safe loader
        assert ours.sources == SOURCES and ours.segment_length() == 8000
        assert torch.equal(ours.models[0](mix), expected)


def _msst_reference(ckpt: str, config: str, model_type: str):
    """MSST's loading, with the bs-roformer 0.4.1 classes (see the module docstring)."""
    from bs_roformer import BSRoformer, MelBandRoformer

    with open(config) as f:
        cfg = yaml.load(f, Loader=yaml.FullLoader)  # noqa: S506 - what MSST does, on our own file
    options = {k: v for k, v in cfg["model"].items()
               if k not in ("zero_dc", "mlp_expansion_factor", "skip_connection", "use_torch_checkpoint",
                            "sage_attention", "linear_transformer_depth")}
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if model_type == "bs_roformer":
            model = BSRoformer(options.pop("dim"), **options)
        else:
            model = MelBandRoformer(options.pop("dim"), linear_transformer_depth=0, **options)
            state = {".".join(k.split(".")[:2] + [str(int(k.split(".")[2]) + 1)] + k.split(".")[3:])
                     if k.startswith("layers.") else k: v for k, v in state.items()}
    model.load_state_dict(state)  # strict
    return model.eval(), cfg


@pytest.mark.parametrize("family,model_type,extra", [("bs_roformer", "bs_roformer", {}),
                                                     ("mel_roformer", "mel_band_roformer", {"num_bands": 8})])
def test_roformer_ckpt_and_yaml_are_read_by_msst_and_by_sepcluster(tmp_path, family, model_type, extra):
    from sepcluster.models.roformer import load_roformer
    from tests.models.test_roformer import _reference

    model = _trained(family, **RO, **extra)
    written = export_model(model, family, "msst", str(tmp_path / "sep.ckpt"), sources=SOURCES, sample_rate=16000,
                           chunk_size=8000, training={"lr": 0.001, "targets": SOURCES})
    assert written.files == (str(tmp_path / "sep.ckpt"), str(tmp_path / "sep.yaml")) and written.kind == model_type
    if family == "bs_roformer":  # MSST writes its band split as a tuple
        assert "freqs_per_bands: !!python/tuple" in (tmp_path / "sep.yaml").read_text()
    mix = torch.randn(1, 2, 64 * 100)
    with torch.no_grad():
        expected = model(mix)
    reference, cfg = _msst_reference(*written.files, model_type)
    assert cfg["training"]["instruments"] == SOURCES and cfg["audio"]["sample_rate"] == 16000
    assert cfg["model"]["num_stems"] == 3 and cfg["inference"]["num_overlap"] >= 1
    torch.testing.assert_close(_reference(reference, mix, zero_dc=True), expected, atol=1e-5, rtol=1e-5)
    ours = load_roformer(written.path)  # finds sep.yaml beside sep.ckpt
    assert ours.model_type == model_type and ours.instruments == SOURCES and ours.chunk_size == 8000
    with torch.no_grad():
        assert torch.equal(ours.model(mix), expected)


def test_separator_callable_of_each_format(tmp_path):
    from sepcluster.models.inference import load_separator
    from sepcluster.models.multisource import chunked_forward

    audio = np.random.default_rng(0).standard_normal((20000, 2)).astype(np.float32) * 0.1
    for family, export, extra in (("htdemucs", "demucs", HT), ("bs_roformer", "msst", RO)):
        model = _trained(family, **extra)
        written = export_model(model, family, export, str(tmp_path / family), sources=SOURCES, sample_rate=16000,
                               chunk_size=8000)
        separator = load_separator(written.path)
        assert separator.outputs == SOURCES and (separator.sample_rate, separator.channels) == (16000, 2)
        out = separator(audio)
        assert list(out) == SOURCES and all(v.shape == (20000, 2) and v.dtype == np.float32 for v in out.values())
        with torch.no_grad():
            expected = chunked_forward(model, torch.from_numpy(audio.T.copy())[None], 8000)[0]
        for k, name in enumerate(SOURCES):
            np.testing.assert_allclose(out[name], expected[k].numpy().T, atol=1e-5)
        with pytest.raises(Exception, match="takes"):
            separator(audio[:, :1].repeat(3, axis=1))


def test_where_out_puts_the_files(tmp_path):
    assert export_path(str(tmp_path / "m.th"), "htdemucs", "demucs") == (str(tmp_path / "m.th"), None)
    assert export_path(str(tmp_path / "dir"), "htdemucs", "demucs") == (str(tmp_path / "dir" / "htdemucs.th"), None)
    assert export_path("s3://b/x/m.ckpt", "bs_roformer", "msst") == ("s3://b/x/m.ckpt", "s3://b/x/m.yaml")
    assert export_path("s3://b/x", "mel_roformer", "msst") == ("s3://b/x/mel_roformer.ckpt", "s3://b/x/mel_roformer.yaml")
    for bad, family, export in (("m.ckpt", "htdemucs", "demucs"), ("m.th", "bs_roformer", "msst"),
                                ("m.pth", "htdemucs", "demucs")):
        with pytest.raises(ConfigError) as err:
            export_path(str(tmp_path / bad), family, export)
        assert err.value.field == "out" and bad in str(err.value)
