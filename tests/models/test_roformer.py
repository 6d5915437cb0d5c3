"""MSST RoFormer checkpoints: loading, equality with the reference layers, clear errors.

Reference: the ``bs-roformer`` 0.4.1 classes with the same weights. MSST's forward differs from
them in one step, the DC bin zeroed before the inverse STFT when ``zero_dc`` is set (MSST's default);
the reference runs with that step inserted where MSST has it (``_msst_dc_zeroing``).
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from sepcluster.errors import ConfigError, DataError
from sepcluster.models.roformer import find_config, load_roformer
from tests.models.foreign_files import HOP, bs_options, mel_options, msst_yaml, save_msst

pytest.importorskip("bs_roformer")


@contextlib.contextmanager
def _msst_dc_zeroing(enabled: bool):
    """Run the package's forward with MSST's ``zero_dc`` step (DC bin := 0 before ``torch.istft``)."""
    real = torch.istft
    if not enabled:
        yield
        return

    def istft(spec, *args, **kwargs):
        return real(spec.index_fill(1, torch.tensor(0), 0.0), *args, **kwargs)

    torch.istft = istft
    try:
        yield
    finally:
        torch.istft = real


def _reference(reference, audio, zero_dc):
    with torch.no_grad(), _msst_dc_zeroing(zero_dc):
        out = reference(audio)
    return out if out.ndim == 4 else out[:, None]  # the package squeezes a single stem


@pytest.mark.parametrize("model_type", ["bs_roformer", "mel_band_roformer"])
@pytest.mark.parametrize("zero_dc", [None, False])
def test_msst_checkpoint_equals_reference(tmp_path, model_type, zero_dc):
    options = bs_options() if model_type == "bs_roformer" else mel_options()
    if zero_dc is not None:
        options["zero_dc"] = zero_dc
    ckpt, config, reference = save_msst(model_type, tmp_path, options=options)
    loaded = load_roformer(ckpt)
    assert loaded.config_path == str(config) and loaded.model_type == model_type
    assert loaded.instruments == ["vocals"] and loaded.training_instruments == ["vocals", "other"]
    assert (loaded.sample_rate, loaded.channels, loaded.chunk_size) == (44100, 2, HOP * 100)
    assert (loaded.num_overlap, loaded.batch_size, loaded.step, loaded.fade_size) == (2, 2, HOP * 50, HOP * 10)
    assert not loaded.model.training
    torch.manual_seed(1)
    audio = torch.randn(2, 2, loaded.chunk_size)
    with torch.no_grad():
        ours = loaded.model(audio)
    expected = _reference(reference, audio, zero_dc is None)  # MSST's default is zero_dc=True
    assert ours.shape == (2, 1, 2, loaded.chunk_size)
    assert torch.equal(ours, expected)


def test_bs_output_keeps_the_input_length(tmp_path):
    """MSST gives the inverse STFT the input length; the package returns whole hops only."""
    ckpt, _, reference = save_msst("bs_roformer", tmp_path)
    loaded = load_roformer(ckpt)
    audio = torch.randn(1, 2, HOP * 30 + 17)
    with torch.no_grad():
        ours = loaded.model(audio)
    expected = _reference(reference, audio, True)
    assert ours.shape[-1] == audio.shape[-1] and expected.shape[-1] == HOP * 30
    assert torch.allclose(ours[..., :HOP * 30], expected, atol=1e-6, rtol=0)


def test_multi_stem_mel_with_linear_transformer(tmp_path):
    options = mel_options(num_stems=2, linear_transformer_depth=1)
    ckpt, _, reference = save_msst("mel_band_roformer", tmp_path, options=options, target=None)
    loaded = load_roformer(ckpt)
    assert loaded.instruments == ["vocals", "other"] and loaded.target_instrument is None
    audio = torch.randn(1, 2, HOP * 40)
    with torch.no_grad():
        ours = loaded.model(audio)
    assert torch.equal(ours, _reference(reference, audio, True))


def test_wrapped_and_prefixed_checkpoint(tmp_path):
    ckpt, config, reference = save_msst("bs_roformer", tmp_path)
    state = torch.load(ckpt, weights_only=True)
    wrapped = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    loaded = load_roformer(wrapped, config=config)
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)


def test_model_type_in_config_and_options_accepted(tmp_path):
    options = bs_options(mlp_expansion_factor=4, use_torch_checkpoint=False, skip_connection=False,
                         linear_transformer_depth=0, sage_attention=False)
    ckpt, _, _ = save_msst("bs_roformer", tmp_path, options=options, model_type="bs_roformer")
    assert load_roformer(ckpt).model_type == "bs_roformer"


def test_checkpoint_not_matching_config_names_keys(tmp_path):
    ckpt, config, _ = save_msst("bs_roformer", tmp_path)
    config.write_text(msst_yaml(bs_options(depth=2)))
    with pytest.raises(DataError) as err:
        load_roformer(ckpt)
    text = str(err.value)
    assert str(ckpt) in text and "missing keys: layers.1." in text and "\n" not in text
    config.write_text(msst_yaml(bs_options(mlp_expansion_factor=2)))
    with pytest.raises(DataError, match=r"shape mismatch \(file vs model\): mask_estimators\.0\.to_freqs\.0\.0\.0"):
        load_roformer(ckpt)


def test_unknown_model_type_and_option(tmp_path):
    ckpt, config, _ = save_msst("bs_roformer", tmp_path, model_type="scnet")
    with pytest.raises(ConfigError, match="model_type: 'scnet' is not supported") as err:
        load_roformer(ckpt)
    assert str(config) in str(err.value)
    config.write_text(msst_yaml(bs_options(), extra_model="  dim_heads: 64"))
    with pytest.raises(ConfigError, match=r"model\.dim_heads: unknown option of bs_roformer") as err:
        load_roformer(ckpt)
    assert str(config) in str(err.value)
    config.write_text(msst_yaml(bs_options(use_pope=True)))
    with pytest.raises(ConfigError, match=r"model\.use_pope"):
        load_roformer(ckpt)


def test_num_stems_must_match_instruments(tmp_path):
    ckpt, config, _ = save_msst("bs_roformer", tmp_path, target=None)
    with pytest.raises(ConfigError, match=r"model\.num_stems: is 1, but 2 instruments needs 2 output"):
        load_roformer(ckpt)


def test_refuses_pickled_objects_and_truncation(tmp_path):
    ckpt, config, _ = save_msst("bs_roformer", tmp_path)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    state = torch.load(ckpt, weights_only=True)
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": state, "hook": Payload()}, evil)
    with pytest.raises(DataError, match="refused to load: its pickle names posix.system") as err:
        load_roformer(evil, config=config)
    assert str(evil) in str(err.value) and not marker.exists()
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load_roformer(ckpt)
    assert str(ckpt) in str(err.value)


def test_find_config(tmp_path):
    ckpt, config, _ = save_msst("bs_roformer", tmp_path, name="model_bs_roformer_ep_1")
    assert find_config(ckpt) == str(config)
    other = tmp_path / "config_vocals.yaml"
    config.rename(other)
    assert find_config(ckpt) == str(other)  # the only MSST config in the folder
    (tmp_path / "second.yaml").write_text(other.read_text())
    with pytest.raises(ConfigError, match="several MSST configs"):
        find_config(ckpt)
    (tmp_path / "second.yaml").unlink()
    other.unlink()
    with pytest.raises(ConfigError, match="no YAML config found") as err:
        load_roformer(ckpt)
    assert str(ckpt) in str(err.value)
