"""Demucs model files and bags: loaded without wholesale unpickling, equal to demucs' own loader."""

from __future__ import annotations

import collections
import os

import pytest
import torch

from sepcluster.errors import ConfigError, DataError
from sepcluster.models.demucs import load_demucs
from tests.models.foreign_files import (SOURCES4, SOURCES6, demucs_package, save_demucs, save_demucs_safetensors,
                                        save_demucs_with_checksum, small_demucs)

pytest.importorskip("demucs")
pytest.importorskip("omegaconf")  # demucs.states.serialize_model needs it (test-only)


def _same_output(ours, reference, seed=3):
    """Equal outputs on one random stereo segment of the model's own length (HTDemucs takes no more)."""
    torch.manual_seed(seed)
    mix = torch.randn(1, reference.audio_channels, int(reference.samplerate * reference.segment))
    with torch.no_grad():
        return torch.equal(ours(mix), reference(mix))


@pytest.mark.parametrize("kind", ["htdemucs", "hdemucs", "demucs"])
def test_th_file_equals_demucs_load_model(tmp_path, kind):
    from demucs.states import load_model

    path = save_demucs(small_demucs(kind), tmp_path / f"{kind}.th")
    loaded = load_demucs(path)
    reference = load_model(path).eval()  # demucs' own loader (weights_only=False, our own file)
    model = loaded.models[0]
    assert type(model) is type(reference) and not model.training and not loaded.is_bag
    assert loaded.sources == SOURCES4 and loaded.samplerate == 44100 and loaded.audio_channels == 2
    assert loaded.weights == [[1.0] * 4] and loaded.files == [str(path)]
    assert loaded.segments == [reference.segment]
    assert loaded.segment_length() == int(reference.samplerate * reference.segment)
    assert _same_output(model, reference)


def test_six_sources_and_safetensors(tmp_path):
    from demucs.hf import load_safetensors_model

    model = small_demucs("htdemucs", SOURCES6, seed=1)
    loaded = load_demucs(save_demucs(model, tmp_path / "six.th"))
    assert loaded.sources == SOURCES6 and loaded.kinds == ["HTDemucs"]
    path = save_demucs_safetensors(model, tmp_path / "5c90dfd2.safetensors")
    from_hf = load_demucs(path)
    reference = load_safetensors_model(path).eval()  # demucs 4.1.0's HuggingFace loader
    assert from_hf.sources == SOURCES6 and from_hf.segments == [reference.segment]
    assert _same_output(from_hf.models[0], reference)
    assert _same_output(loaded.models[0], reference)  # same weights (both half precision)
    (tmp_path / "htdemucs_6s.yaml").write_text("models: ['5c90dfd2']\n")
    bag = load_demucs(tmp_path / "htdemucs_6s.yaml")
    assert bag.sources == SOURCES6 and len(bag.models) == 1


def test_bag_equals_demucs_bag_of_models(tmp_path):
    from demucs.apply import BagOfModels, apply_model
    from demucs.pretrained import get_model

    save_demucs(small_demucs("htdemucs", seed=1), tmp_path / "aaaa1111.th")
    save_demucs_with_checksum(small_demucs("htdemucs", seed=2), tmp_path, "bbbb2222")
    (tmp_path / "mybag.yaml").write_text(
        "models: ['aaaa1111', 'bbbb2222']\nweights: [[1., 0., 1., 1.], [0., 1., 1., 0.]]\nsegment: 0.5\n")
    bag = load_demucs(tmp_path / "mybag.yaml")
    reference = get_model("mybag", repo=tmp_path)  # demucs' LocalRepo + BagOnlyRepo
    assert bag.is_bag and len(bag.models) == 2 and bag.sources == reference.sources
    assert bag.weights == reference.weights
    assert bag.segments == [m.segment for m in reference.models] == [0.5, 0.5]
    assert bag.segment == 0.5 and bag.segment_length(1) == 22050
    for ours, theirs in zip(bag.models, reference.models):
        assert _same_output(ours, theirs)
    torch.manual_seed(5)
    mix = torch.randn(1, 2, 44100)
    ours = apply_model(BagOfModels(bag.models, bag.weights), mix, shifts=0, split=True, overlap=0.25)
    assert torch.equal(ours, apply_model(reference, mix, shifts=0, split=True, overlap=0.25))


def test_bag_errors(tmp_path):
    save_demucs(small_demucs("demucs"), tmp_path / "aaaa1111.th")
    bag = tmp_path / "bag.yaml"
    bag.write_text("models: ['aaaa1111', 'cccc3333']\n")
    with pytest.raises(ConfigError, match="no model file for signature 'cccc3333'") as err:
        load_demucs(bag)
    assert str(bag) in str(err.value)
    bag.write_text("models: ['aaaa1111']\nweights: [[1, 1]]\n")
    with pytest.raises(ConfigError, match="weights: each list needs 4 weights"):
        load_demucs(bag)
    bag.write_text("models: ['aaaa1111']\nsegmnet: 4\n")
    with pytest.raises(ConfigError, match="segmnet: unknown field"):
        load_demucs(bag)
    bad = save_demucs_with_checksum(small_demucs("demucs", seed=4), tmp_path, "dddd4444")
    bad.rename(tmp_path / "dddd4444-00000000.th")
    bag.write_text("models: ['dddd4444']\n")
    with pytest.raises(DataError, match="checksum mismatch"):
        load_demucs(bag)


def test_pickle_naming_another_global_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    package = demucs_package(small_demucs("demucs"))
    for name, where in (("top.th", "klass"), ("nested.th", "kwargs")):
        evil = dict(package)
        evil[where] = Payload() if where == "klass" else {**package["kwargs"], "channels": Payload()}
        path = tmp_path / name
        torch.save(evil, path)
        with pytest.raises(DataError) as err:
            load_demucs(path)
        assert str(path) in str(err.value) and "posix.system" in str(err.value)
        assert "\n" not in str(err.value)
        assert not marker.exists()


def test_other_classes_and_quantized_states_are_refused(tmp_path):
    package = demucs_package(small_demucs("demucs"))
    path = tmp_path / "linear.th"
    torch.save({**package, "klass": torch.nn.Linear}, path)
    with pytest.raises(DataError, match="torch.nn.modules.linear.Linear"):
        load_demucs(path)
    torch.save({**package, "klass": collections.OrderedDict}, path)  # allowed by torch, not a model class
    with pytest.raises(DataError, match="klass is <class .collections.OrderedDict.>, not one of"):
        load_demucs(path)
    torch.save({**package, "state": {"__quantized": True, "quantized": []}}, path)
    with pytest.raises(DataError, match="diffq-quantized"):
        load_demucs(path)
    torch.save({"state": package["state"]}, path)
    with pytest.raises(DataError, match="not a demucs model package"):
        load_demucs(path)


def test_truncated_empty_and_foreign_files(tmp_path):
    path = save_demucs(small_demucs("hdemucs"), tmp_path / "model.th")
    data = path.read_bytes()
    for size in (len(data) // 2, len(data) - 30):
        path.write_bytes(data[:size])
        with pytest.raises(DataError, match="truncated or corrupt") as err:
            load_demucs(path)
        assert str(path) in str(err.value)
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        load_demucs(path)
    path.write_text("models: [a]\n")
    with pytest.raises(DataError, match="not a PyTorch file"):
        load_demucs(path)


def test_weights_not_matching_arguments(tmp_path):
    package = demucs_package(small_demucs("demucs"))
    state = dict(package["state"])
    state.pop(next(iter(state)))
    path = tmp_path / "missing.th"
    torch.save({**package, "state": state}, path)
    with pytest.raises(DataError, match="missing keys") as err:
        load_demucs(path)
    assert str(path) in str(err.value)
