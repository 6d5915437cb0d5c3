"""Multi-source training on a real local Ray (2 CPUs): HTDemucs / BS-RoFormer trained on all targets at once,
written in their projects' formats, logged and registered in MLflow with diagnostics; a damaged checkpoint
skipped on resume; bad input refused before any worker starts.

Kept tiny for 2 cores: 16 kHz, 1 s excerpts, an 8-channel HTDemucs and a 16-wide RoFormer.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from sepcluster.errors import ConfigError
from tests.conftest import checkpoint_metas
from tests.train.conftest import RATE, TINY, mlflow_client

pytestmark = pytest.mark.slow
pytest.importorskip("demucs")
pytest.importorskip("bs_roformer")

HT = dict(model="htdemucs", channels=8, depth=2, nfft=256, t_layers=1, t_heads=2, seq_dur=1.0, batch_size=4,
          samples_per_epoch=16, epochs=2, lr=1e-3, patience=50, lr_decay_patience=50, valid_songs=["song002"])
RO = dict(model="bs_roformer", dim=16, depth=1, heads=2, dim_head=8, stft_n_fft=256, stft_hop_length=64,
          stft_win_length=256, seq_dur=0.5, batch_size=4, samples_per_epoch=8, epochs=1, patience=50,
          lr_decay_patience=50, valid_fraction=0.25, valid_seq_dur=1.0)


@pytest.fixture(scope="module")
def htdemucs_run(stem_library, ray_local, tmp_path_factory):
    """2 DDP workers train one HTDemucs of vocals and drums with EMA and per-epoch diagnostics, registered."""
    from sepcluster.train import train

    base = tmp_path_factory.mktemp("ht")
    result = train(str(stem_library), ["vocals", "drums"], dict(HT, ema_decay=0.9, diagnostics_every=1,
                                                                diagnostics_seconds=0.5, num_to_keep=5),
                   num_workers=2, run_name="ht", storage_path=str(base / "runs"), out=str(base / "sep.th"),
                   register="ht-test")
    return result, base


def test_htdemucs_trains_all_targets_and_is_a_demucs_th(htdemucs_run):
    from demucs.states import load_model

    from sepcluster.models.demucs import load_demucs

    result, base = htdemucs_run
    assert result.bundle == str(base / "sep.th") and list(result.targets) == ["htdemucs"]
    r = result.targets["htdemucs"]
    assert r.target == "vocals+drums" and r.finished and r.epoch == 2
    assert r.attempts[0]["world_size"] == 2 and [e for e, _ in r.attempts[0]["ended"]] == [1, 2]
    for key in ("valid_sisdr", "valid_sdr", "valid_sisdr.vocals", "valid_sdr.drums", "valid_sdr_improvement"):
        assert all(np.isfinite(h[key]) for h in r.history), key
    theirs, ours = load_model(result.bundle).eval(), load_demucs(result.bundle)
    assert theirs.sources == ours.sources == ["vocals", "drums"] and theirs.samplerate == RATE
    mix = torch.randn(1, 2, RATE)
    with torch.no_grad():
        assert torch.equal(theirs(mix), ours.models[0](mix))


def test_the_ema_weights_are_validated_kept_and_exported(htdemucs_run):
    from sepcluster.models.demucs import load_demucs
    from sepcluster.train.checkpoint import TrainState

    result, base = htdemucs_run
    r = result.targets["htdemucs"]
    folders = sorted((base / "runs" / "ht-htdemucs").glob("checkpoint_epoch*"))
    best = TrainState.read(str(next(f for f in folders if f.name.startswith(f"checkpoint_epoch{r.best_epoch:05d}"))))
    exported = load_demucs(result.bundle).models[0].state_dict()
    average = best.ema_state["average"]
    assert best.ema_state["count"] > 1
    differs = 0
    for key, value in exported.items():
        assert torch.equal(value, average[key].float() if value.is_floating_point() else average[key]), key
        differs += int(not torch.equal(best.model_state[key], average[key]))
    assert differs > 0  # the live weights of that epoch are not what was exported


def test_mlflow_holds_curves_diagnostics_and_the_registered_separator(htdemucs_run, tmp_path):
    import mlflow
    from PIL import Image

    from sepcluster.models.demucs import load_demucs
    from sepcluster.tracking import resolve_model_uri

    result, _ = htdemucs_run
    client = mlflow_client()
    child = result.targets["htdemucs"].mlflow_run_id
    parent = client.get_run(child).data.tags["mlflow.parentRunId"]
    assert parent == result.mlflow_run_id
    for key in ("valid_sisdr", "valid_sdr", "valid_sisdr.vocals", "valid_sdr.drums", "train_loss"):
        assert [m.step for m in client.get_metric_history(child, key)] == [1, 2], key
    for epoch in ("epoch00001", "epoch00002"):
        names = {Path(a.path).name for a in client.list_artifacts(child, f"diagnostics/{epoch}")}
        assert names == {"spectrograms.png", "mixture.flac", "vocals.reference.flac", "vocals.estimate.flac",
                         "drums.reference.flac", "drums.estimate.flac"}
    folder = client.download_artifacts(child, "diagnostics/epoch00002", str(tmp_path))
    with Image.open(Path(folder) / "spectrograms.png") as png:
        assert png.size[0] > 300 and png.size[1] > 300
    audio, rate = sf.read(Path(folder) / "vocals.estimate.flac")
    assert rate == RATE and audio.shape == (RATE // 2, 2) and sf.info(Path(folder) / "mixture.flac").format == "FLAC"
    # the separator as an MLflow model, registered under the name given
    assert result.registered == "models:/ht-test/1"
    version = client.get_model_version("ht-test", "1")
    assert version.run_id == result.mlflow_run_id
    path = resolve_model_uri("models:/ht-test/1")
    assert path.endswith("sep.th") and load_demucs(path).sources == ["vocals", "drums"]
    from sepcluster.separate import resolve_separator  # what `sepcluster separate --model models:/...` runs

    spec = resolve_separator("models:/ht-test/1")
    assert (spec.kind, spec.path, spec.sources) == ("demucs", path, ("vocals", "drums"))
    model = mlflow.pyfunc.load_model("models:/ht-test/1")
    signature = model.metadata.signature
    assert [s.name for s in signature.outputs.inputs] == ["vocals", "drums"]
    assert signature.inputs.inputs[0].shape == (-1, 2)
    stems = model.predict(np.random.default_rng(0).standard_normal((RATE * 2, 2)).astype(np.float32) * 0.1)
    assert set(stems) == {"vocals", "drums"} and all(v.shape == (RATE * 2, 2) for v in stems.values())
    with pytest.raises(ConfigError, match="no such MLflow model"):
        resolve_model_uri("models:/ht-test/7")
    with pytest.raises(ConfigError, match="not an MLflow model URI"):
        resolve_model_uri("runs:/abc/model")


@pytest.fixture(scope="module")
def parquet_dataset(stem_library, ray_local, tmp_path_factory) -> Path:
    from sepcluster.generate.runner import generate

    out = tmp_path_factory.mktemp("ms-ds") / "ds"
    recipe = {"duration": 1.0, "sample_rate": RATE, "channels": 2, "labels": ["vocals", "drums", "bass", "other"],
              "coherent_probability": 1.0, "quick_pitch_time": True,
              "event": {"source_time": ["uniform", 0, 2], "event_time": ["const", 0],
                        "event_duration": ["const", 1.0], "snr": ["uniform", -5, 5], "pitch_shift": None,
                        "time_stretch": None}}
    generate(recipe, str(stem_library), str(out), num_mixtures=12, shard_size=6, progress=False)
    return out


def test_bs_roformer_on_augmented_parquet_is_an_msst_checkpoint(parquet_dataset, ray_local, tmp_path):
    from sepcluster.models.roformer import load_roformer
    from sepcluster.train import train

    result = train(str(parquet_dataset), ["vocals", "bass", "other"], dict(RO, augment=True, polarity_flip=True),
                   run_name="ro", storage_path=str(tmp_path / "runs"), out=str(tmp_path / "out"))
    assert result.bundle == str(tmp_path / "out" / "bs_roformer.ckpt")
    config = yaml.load((tmp_path / "out" / "bs_roformer.yaml").read_text(), Loader=yaml.FullLoader)  # noqa: S506
    assert config["training"]["instruments"] == ["vocals", "bass", "other"] and config["model"]["num_stems"] == 3
    assert config["audio"]["chunk_size"] == RATE // 2 and config["training"]["augment"] is True
    loaded = load_roformer(result.bundle)
    assert loaded.instruments == ["vocals", "bass", "other"] and loaded.sample_rate == RATE
    r = result.targets["bs_roformer"]
    assert r.finished and np.isfinite(r.history[0]["valid_sdr.bass"])


def test_a_damaged_checkpoint_is_skipped_with_a_warning(stem_library, ray_local, tmp_path, caplog):
    from sepcluster.train import train

    runs = tmp_path / "runs"
    cfg = dict(TINY, epochs=2, num_to_keep=3, diagnostics_every=0)
    train(str(stem_library), "vocals", cfg, run_name="bad", storage_path=str(runs), out=str(tmp_path / "b"))
    newest = max((runs / "bad-vocals").glob("checkpoint_epoch00002_*"))
    data = bytearray((newest / "state.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (newest / "state.pt").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="sepcluster"):
        result = train(str(stem_library), "vocals", dict(cfg, epochs=3), run_name="bad", storage_path=str(runs),
                       out=str(tmp_path / "b"))
    warned = [r.getMessage() for r in caplog.records if "skipping checkpoint" in r.getMessage()]
    assert warned and newest.name in warned[0] and "SHA-256" in warned[0]
    r = result.targets["vocals"]
    assert r.finished and r.epoch == 3
    assert [a["start_epoch"] for a in r.attempts] == [1, 2]  # resumed after epoch 1, epoch 2 redone
    assert [h["epoch"] for h in r.history] == [1, 2, 3]
    assert checkpoint_metas(runs, "bad-vocals")[-1]["epoch"] == 3


def test_bad_multi_source_input_fails_before_workers_start(stem_library, tmp_path, ray_local):
    from sepcluster.cli import main
    from sepcluster.train import train

    runs = tmp_path / "runs"
    with pytest.raises(ConfigError) as err:
        train(str(stem_library), ["vocals", "accompaniment"], dict(HT), storage_path=str(runs))
    assert err.value.field == "targets" and "htdemucs" in str(err.value) and "accompaniment" in str(err.value)
    with pytest.raises(ConfigError) as err:
        train(str(stem_library), ["vocals"], dict(HT, hidden_size=32), storage_path=str(runs))
    assert err.value.field == "hidden_size"
    with pytest.raises(ConfigError) as err:
        train(str(stem_library), ["vocals"], dict(HT, audio_channels=1), storage_path=str(runs))
    assert err.value.field == "audio_channels" and "set by the training run" in str(err.value)
    with pytest.raises(ConfigError) as err:
        train(str(stem_library), ["vocals"], dict(HT), storage_path=str(runs), out=str(tmp_path / "m.ckpt"))
    assert err.value.field == "out"
    with pytest.raises(ConfigError) as err:
        train(str(stem_library), ["vocals"], dict(HT, loss="mse"), storage_path=str(runs))
    assert err.value.field == "loss"
    with pytest.raises(ConfigError) as err:
        train(str(stem_library), ["vocals"], dict(HT), storage_path=str(runs), register="a/b")
    assert err.value.field == "register"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": "bs_roformer", "dimension": 64}))
    assert main(["train", "--config", str(cfg), "--data", str(stem_library), "--targets", "vocals",
                 "--storage-path", str(runs)]) == 2
    assert not runs.exists()


def test_state_files_of_a_multi_source_run_say_what_it_trains(htdemucs_run):
    import json

    result, base = htdemucs_run
    meta = json.loads(next((base / "runs" / "ht-htdemucs").glob("checkpoint_epoch00002_*/meta.json")).read_text())
    assert meta["target"] == "vocals+drums" and meta["model_name"] == "htdemucs"
    state = torch.load(io.BytesIO(next((base / "runs" / "ht-htdemucs").glob("checkpoint_epoch00002_*/state.pt"))
                                  .read_bytes()), map_location="cpu", weights_only=False)
    assert state["model_kwargs"]["sources"] == ["vocals", "drums"] and state["model_kwargs"]["segment"] == 1.0
