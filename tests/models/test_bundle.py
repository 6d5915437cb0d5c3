import json
from pathlib import Path

import pytest
import torch

from sepcluster.errors import ConfigError, DataError, StorageError
from sepcluster.models import BundleMeta, build_model, infer_umx_hparams, load_bundle, save_bundle
from tests.oracles import needs_openunmix, openunmix

TARGETS = ("vocals", "drums", "bass", "other")


def _small_umx(seed: int, **kw):
    torch.manual_seed(seed)
    model = build_model("umx", n_fft=512, hidden_size=16, nb_layers=2, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _meta(**kw):
    base = dict(model="umx", sample_rate=44100, n_fft=512, n_hop=128, bandwidth=16000.0,
                training_data="s3://bucket/mixtures", recipe_hash="abc123", extra={"epochs": 3})
    base.update(kw)
    return BundleMeta(**base)


def _mag(channels=2, bins=257, frames=9):
    return torch.rand(2, channels, bins, frames, generator=torch.Generator().manual_seed(5))


def test_round_trip_umx(tmp_path):
    models = {t: _small_umx(i) for i, t in enumerate(TARGETS)}
    uri = str(tmp_path / "bundle")
    written = save_bundle(uri, models, _meta())
    files = sorted(p.name for p in Path(uri).iterdir())
    assert files == ["bass.pth", "bundle.json", "drums.pth", "other.pth", "vocals.pth"]

    info = json.loads((Path(uri) / "bundle.json").read_text())
    assert info["targets"] == list(TARGETS)
    assert (info["sample_rate"], info["n_fft"], info["n_hop"], info["nb_channels"]) == (44100, 512, 128, 2)
    assert (info["max_bin"], info["hidden_size"], info["nb_layers"], info["model"]) == (186, 16, 2, "umx")
    assert info["training_data"] == "s3://bucket/mixtures" and info["recipe_hash"] == "abc123"
    assert info["extra"] == {"epochs": 3}
    assert set(info["weights"]) == set(TARGETS) and len(info["weights"]["vocals"]["sha256"]) == 64

    bundle = load_bundle(uri)
    assert bundle.targets == list(TARGETS)
    assert bundle.bundle_id == written.bundle_id() == load_bundle(uri).bundle_id
    assert len(bundle.bundle_id) == 16
    mag = _mag()
    estimates = bundle.estimate_magnitudes(mag)
    assert list(estimates) == list(TARGETS)
    for t in TARGETS:
        assert not bundle.models[t].training
        with torch.no_grad():
            assert torch.equal(estimates[t], models[t](mag))
        assert estimates[t].shape == mag.shape

    some = load_bundle("file://" + uri, targets=["vocals", "bass"])
    assert some.targets == ["vocals", "bass"]
    assert some.bundle_id == bundle.bundle_id
    assert bundle.stft().n_fft == 512 and bundle.istft().n_hop == 128


def test_bundle_id_changes_with_weights(tmp_path):
    a = save_bundle(str(tmp_path / "a"), {"vocals": _small_umx(0)}, _meta())
    b = save_bundle(str(tmp_path / "b"), {"vocals": _small_umx(1)}, _meta())
    c = save_bundle(str(tmp_path / "c"), {"vocals": _small_umx(0)}, _meta())
    assert a.bundle_id() != b.bundle_id()
    assert a.bundle_id() == c.bundle_id()


def test_round_trip_unet_and_mixed_architectures(tmp_path):
    torch.manual_seed(0)
    models = {"vocals": build_model("unet", n_fft=512, base_channels=4, depth=2).eval(),
              "drums": build_model("unet", n_fft=512, base_channels=2, depth=3).eval()}
    save_bundle(str(tmp_path / "u"), models, _meta(model="unet"))
    bundle = load_bundle(str(tmp_path / "u"))
    assert bundle.meta.model == "unet"
    assert bundle.meta.target_kwargs == {"drums": {"base_channels": 2, "depth": 3}}
    mag = _mag(frames=6)
    out = bundle.estimate_magnitudes(mag)
    with torch.no_grad():
        for t in models:
            assert torch.equal(out[t], models[t](mag))


def test_save_errors(tmp_path):
    with pytest.raises(ConfigError, match="models"):
        save_bundle(str(tmp_path / "x"), {}, _meta())
    with pytest.raises(ConfigError, match="meta.model"):
        save_bundle(str(tmp_path / "x"), {"vocals": _small_umx(0)}, _meta(model="unet"))
    with pytest.raises(ConfigError, match="n_fft"):
        save_bundle(str(tmp_path / "x"), {"vocals": _small_umx(0)}, _meta(n_fft=4096))
    with pytest.raises(ConfigError, match="nb_channels"):
        save_bundle(str(tmp_path / "x"), {"vocals": _small_umx(0)}, _meta(nb_channels=1))
    with pytest.raises(ConfigError, match="targets"):
        save_bundle(str(tmp_path / "x"), {"../evil": _small_umx(0)}, _meta())
    with pytest.raises(ConfigError, match=r"meta\.bandwidth.*max_bin 93, but the models use 186"):
        save_bundle(str(tmp_path / "x"), {"vocals": _small_umx(0)}, _meta(bandwidth=8000.0))
    assert not (tmp_path / "x").exists()


@needs_openunmix
def test_official_openunmix_folder(tmp_path):
    folder = tmp_path / "umx-official"
    folder.mkdir()
    refs = {}
    for i, t in enumerate(TARGETS):
        torch.manual_seed(i)
        ref = openunmix.model.OpenUnmix(nb_bins=513, nb_channels=2, hidden_size=32, max_bin=372)
        with torch.no_grad():
            for p in ref.parameters():
                p.add_(0.1 * torch.randn_like(p))
        refs[t] = ref.eval()
        name = f"{t}.pth" if t != "bass" else "bass-8d85a5bd.pth"  # torch-hub style name
        torch.save(ref.state_dict(), folder / name)
    (folder / "separator.json").write_text(json.dumps(
        {"targets": list(TARGETS), "sample_rate": 22050.0, "nfft": 1024, "nhop": 256, "nb_channels": 2}))
    (folder / "vocals.json").write_text(json.dumps({"args": {"nfft": 1024, "nhop": 256, "bandwidth": 8000,
                                                             "hidden_size": 32, "nb_channels": 2}}))

    bundle = load_bundle(str(folder))
    assert sorted(bundle.targets) == sorted(TARGETS)
    meta = bundle.meta
    assert meta.source == "openunmix" and meta.model == "umx"
    assert (meta.sample_rate, meta.n_fft, meta.n_hop, meta.bandwidth) == (22050.0, 1024, 256, 8000.0)
    assert (meta.nb_channels, meta.hidden_size, meta.max_bin, meta.nb_layers) == (2, 32, 372, 3)
    assert meta.weights["bass"]["file"] == "bass-8d85a5bd.pth"
    mag = _mag(bins=513, frames=12)
    out = bundle.estimate_magnitudes(mag)
    with torch.no_grad():
        for t in TARGETS:
            expected = refs[t](mag.clone())
            assert float((out[t] - expected).abs().max() / expected.abs().max()) <= 1e-5


@needs_openunmix
def test_official_openunmix_single_pth_file(tmp_path):
    """One Open-Unmix weights file (as openunmix saves a target) loads as a one-target bundle, with the
    separator.json beside it, and estimates what the openunmix model estimates."""
    torch.manual_seed(3)
    ref = openunmix.model.OpenUnmix(nb_bins=513, nb_channels=2, hidden_size=32, max_bin=372)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ref.eval()
    path = tmp_path / "vocals-0123abcd.pth"
    torch.save(ref.state_dict(), path)
    (tmp_path / "separator.json").write_text(json.dumps({"sample_rate": 22050.0, "nfft": 1024, "nhop": 256}))
    bundle = load_bundle(str(path))
    assert bundle.targets == ["vocals"] and bundle.meta.source == "openunmix"
    assert (bundle.meta.sample_rate, bundle.meta.n_fft, bundle.meta.n_hop) == (22050.0, 1024, 256)
    assert bundle.meta.weights["vocals"]["file"] == "vocals-0123abcd.pth"
    mag = _mag(bins=513, frames=12)
    with torch.no_grad():
        expected = ref(mag.clone())
        assert float((bundle.estimate_magnitudes(mag)["vocals"] - expected).abs().max()
                     / expected.abs().max()) <= 1e-5
    (tmp_path / "notes.pth").write_bytes(b"")
    with pytest.raises(DataError, match="notes.pth"):
        load_bundle(str(tmp_path / "notes.pth"))


@needs_openunmix
def test_official_umxhq_shaped_without_metadata(tmp_path):
    torch.manual_seed(0)
    ref = openunmix.model.OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=512, max_bin=1487).eval()
    torch.save(ref.state_dict(), tmp_path / "vocals.pth")
    assert infer_umx_hparams(ref.state_dict()) == {"nb_bins": 2049, "nb_channels": 2, "hidden_size": 512,
                                                   "nb_layers": 3, "unidirectional": False, "max_bin": 1487}
    bundle = load_bundle(str(tmp_path), targets=["vocals"])
    assert (bundle.meta.sample_rate, bundle.meta.n_fft, bundle.meta.n_hop) == (44100.0, 4096, 1024)
    mag = torch.rand(1, 2, 2049, 5)
    with torch.no_grad():
        assert float((bundle.models["vocals"](mag) - ref(mag)).abs().max()) <= 1e-5 * float(ref(mag).abs().max())


@needs_openunmix
def test_official_mono_unidirectional(tmp_path):
    ref = openunmix.model.OpenUnmix(nb_bins=257, nb_channels=1, hidden_size=16, nb_layers=2,
                                    unidirectional=True, max_bin=100).eval()
    torch.save(ref.state_dict(), tmp_path / "speech.pth")
    bundle = load_bundle(str(tmp_path))
    assert bundle.meta.model_kwargs == {"nb_bins": 257, "nb_channels": 1, "hidden_size": 16, "nb_layers": 2,
                                        "unidirectional": True, "max_bin": 100}


def test_load_errors(tmp_path):
    with pytest.raises(StorageError, match="not found"):
        load_bundle(str(tmp_path / "nope"))
    (tmp_path / "file.txt").write_bytes(b"x")
    with pytest.raises(StorageError, match="not a folder"):
        load_bundle(str(tmp_path / "file.txt"))
    (tmp_path / "file.pth").write_bytes(b"x")  # one Open-Unmix .pth file is a model: this one is broken
    with pytest.raises(DataError, match=r"file\.pth: cannot read a torch state dict"):
        load_bundle(str(tmp_path / "file.pth"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no bundle.json"):
        load_bundle(str(tmp_path / "empty"))

    uri = str(tmp_path / "b")
    save_bundle(uri, {"vocals": _small_umx(0), "drums": _small_umx(1)}, _meta())
    with pytest.raises(ConfigError, match=r"'bass' is not in bundle .*available: vocals, drums"):
        load_bundle(uri, targets=["vocals", "bass"])

    # weights of another architecture (hidden size 32 instead of 16), digest updated
    other = build_model("umx", n_fft=512, hidden_size=32, nb_layers=2)
    torch.save(other.state_dict(), Path(uri) / "drums.pth")
    info = json.loads((Path(uri) / "bundle.json").read_text())
    import hashlib
    info["weights"]["drums"]["sha256"] = hashlib.sha256((Path(uri) / "drums.pth").read_bytes()).hexdigest()
    (Path(uri) / "bundle.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"drums\.pth.*key 'fc1\.weight' has shape \(32, 372\), expected \(16, 372\)"):
        load_bundle(uri)
    assert load_bundle(uri, targets="vocals").targets == ["vocals"]

    # a unet state dict where umx is expected: missing/unexpected keys named
    torch.save(build_model("unet", n_fft=512, base_channels=2, depth=1).state_dict(), Path(uri) / "drums.pth")
    info["weights"]["drums"]["sha256"] = None
    (Path(uri) / "bundle.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"drums\.pth: not a state dict of this bundle's 'umx' architecture: missing key '\w+'.*unexpected key 'high_logits'"):
        load_bundle(uri)

    # changed file vs recorded digest
    save_bundle(uri, {"vocals": _small_umx(0)}, _meta())
    torch.save(_small_umx(5).state_dict(), Path(uri) / "vocals.pth")
    with pytest.raises(DataError, match=r"vocals\.pth: SHA-256 differs"):
        load_bundle(uri)

    # missing weights file listed in bundle.json
    (Path(uri) / "vocals.pth").unlink()
    with pytest.raises(DataError, match=r"vocals\.pth: weights of target 'vocals'.*missing"):
        load_bundle(uri)

    # invalid bundle.json
    (Path(uri) / "bundle.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bundle\.json: invalid JSON"):
        load_bundle(uri)
    (Path(uri) / "bundle.json").write_text(json.dumps({"model": "umx", "targets": ["vocals"], "n_fft": -4}))
    with pytest.raises(ConfigError, match=r"bundle\.json\.n_fft"):
        load_bundle(uri)


def test_official_folder_errors(tmp_path):
    (tmp_path / "vocals.pth").write_bytes(b"definitely not a torch file")
    with pytest.raises(DataError, match=r"vocals\.pth: cannot read a torch state dict"):
        load_bundle(str(tmp_path))
    torch.save(build_model("unet", n_fft=512, base_channels=2, depth=1).state_dict(), tmp_path / "vocals.pth")
    with pytest.raises(DataError, match=r"vocals\.pth: not an Open-Unmix state dict \(missing key 'fc1\.weight'\)"):
        load_bundle(str(tmp_path))
    torch.save({"epoch": 3, "state_dict": _small_umx(0).state_dict(), "optimizer": {}}, tmp_path / "vocals.pth")
    assert load_bundle(str(tmp_path)).meta.max_bin == 186  # a training checkpoint's state_dict is used
    torch.save(_small_umx(0).state_dict(), tmp_path / "vocals-0123abcd.pth")
    with pytest.raises(DataError, match="two weights files for target 'vocals'"):
        load_bundle(str(tmp_path))


@needs_openunmix
def test_official_v1_weights_with_legacy_keys(tmp_path):
    """Released Open-Unmix weights come from 1.0 models that also saved their STFT window and
    sample rate; those entries are dropped and used as metadata."""
    torch.manual_seed(3)
    ref = openunmix.model.OpenUnmix(nb_bins=513, nb_channels=2, hidden_size=16, max_bin=200).eval()
    state = dict(ref.state_dict())
    state["stft.window"] = torch.hann_window(1024)
    state["transform.0.window"] = torch.hann_window(1024)
    state["sample_rate"] = torch.tensor(16000)
    torch.save(state, tmp_path / "vocals-b62c91ce.pth")
    bundle = load_bundle(str(tmp_path))
    assert bundle.targets == ["vocals"]
    assert (bundle.meta.n_fft, bundle.meta.n_hop, bundle.meta.sample_rate) == (1024, 256, 16000.0)
    mag = torch.rand(1, 2, 513, 6)
    with torch.no_grad():
        assert torch.allclose(bundle.models["vocals"](mag), ref(mag), rtol=1e-5, atol=1e-6)


def test_wrapped_models_and_prefixed_state_dicts(tmp_path):
    model = _small_umx(0)
    save_bundle(str(tmp_path / "b"), {"vocals": torch.nn.DataParallel(model)}, _meta())
    info = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert info["model_kwargs"]["hidden_size"] == 16
    assert load_bundle(str(tmp_path / "b")).models["vocals"].hidden_size == 16

    folder = tmp_path / "official"
    folder.mkdir()
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, folder / "vocals.pth")
    loaded = load_bundle(str(folder)).models["vocals"]
    mag = _mag()
    with torch.no_grad():
        assert torch.equal(loaded(mag), model(mag))
