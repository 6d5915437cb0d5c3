"""Detecting the kind of a model path from its files."""

from __future__ import annotations

import pytest
import torch

from sepcluster.errors import ConfigError, DataError
from sepcluster.models.foreign import KINDS, detect_model
from sepcluster.models.umx import OpenUnmix
from tests.models.foreign_files import mel_options, save_demucs, save_demucs_safetensors, save_msst, small_demucs

pytest.importorskip("demucs")
pytest.importorskip("bs_roformer")


def _umx_pth(path):
    torch.save(OpenUnmix(nb_bins=65, nb_channels=2, hidden_size=8, nb_layers=1, max_bin=40).state_dict(), path)
    return path


def test_bundles_and_open_unmix(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text("{}")
    assert detect_model(bundle).kind == "bundle"
    official = tmp_path / "umxhq"
    official.mkdir()
    _umx_pth(official / "vocals-b62c91ce.pth")
    assert detect_model(official).kind == "bundle"
    single = detect_model(_umx_pth(tmp_path / "vocals.pth"))
    assert (single.kind, single.config) == ("umx", None)
    assert detect_model(tmp_path / "vocals.pth", model_type="umx").kind == "umx"


def test_demucs_files_and_bags(tmp_path):
    model = small_demucs("demucs")
    th = save_demucs(model, tmp_path / "955717e8-8726e21a.th")
    assert detect_model(th) == detect_model(th, model_type="demucs")
    assert detect_model(th).kind == "demucs" and not detect_model(th).bag
    hf = save_demucs_safetensors(model, tmp_path / "955717e8.safetensors")
    assert detect_model(hf).kind == "demucs"
    (tmp_path / "htdemucs_ft.yaml").write_text("models: ['955717e8']\nweights: [[1, 1, 1, 1]]\n")
    found = detect_model(tmp_path / "htdemucs_ft.yaml")
    assert (found.kind, found.bag) == ("demucs", True)


@pytest.mark.parametrize("kind", ["bs_roformer", "mel_band_roformer"])
def test_roformer_checkpoints(tmp_path, kind):
    ckpt, config, _ = save_msst(kind, tmp_path, name="model_ep_100")
    found = detect_model(ckpt)
    assert (found.kind, found.config) == (kind, str(config))
    assert detect_model(ckpt, model_type="roformer").kind == kind
    moved = tmp_path / "sub"
    moved.mkdir()
    pth = moved / "weights.pth"  # a .pth that is not Open-Unmix, config given explicitly
    pth.write_bytes(ckpt.read_bytes())
    assert detect_model(pth, config=config).kind == kind
    with pytest.raises(ConfigError, match="no YAML config found") as err:
        detect_model(pth)
    assert str(pth) in str(err.value)


def test_mel_type_read_from_options(tmp_path):
    ckpt, config, _ = save_msst("mel_band_roformer", tmp_path, options=mel_options())
    assert "model_type" not in config.read_text()
    assert detect_model(ckpt).kind == "mel_band_roformer"


def test_errors_name_the_path_and_what_was_expected(tmp_path):
    with pytest.raises(ConfigError, match="no such file or folder"):
        detect_model(tmp_path / "missing.ckpt")
    audio = tmp_path / "song.wav"
    audio.write_bytes(b"RIFF0000WAVE")
    with pytest.raises(ConfigError, match="expected a sepcluster bundle folder") as err:
        detect_model(audio)
    assert str(audio) in str(err.value) and "\n" not in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="not a model sepcluster can load"):
        detect_model(empty)
    ckpt, config, _ = save_msst("bs_roformer", tmp_path)
    with pytest.raises(ConfigError, match="give the checkpoint as the model"):
        detect_model(config)
    with pytest.raises(ConfigError, match="--model-type is demucs, but the files are a bs_roformer model"):
        detect_model(ckpt, model_type="demucs")
    with pytest.raises(ConfigError, match="'htdemucs' is not one of"):
        detect_model(ckpt, model_type="htdemucs")
    (tmp_path / "other.yaml").write_text("something: 1\n")
    with pytest.raises(ConfigError, match="not a model sepcluster can load"):
        detect_model(tmp_path / "other.yaml")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(_umx_pth(tmp_path / "ok.pth").read_bytes()[:100])
    with pytest.raises(DataError, match="truncated or corrupt"):
        detect_model(broken)
    assert set(KINDS) == {"bundle", "umx", "demucs", "bs_roformer", "mel_band_roformer"}
