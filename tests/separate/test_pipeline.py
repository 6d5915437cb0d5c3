"""The separate job end to end on a real local Ray (2 CPUs): catalogs, errors, resume, names."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sepcluster import storage
from sepcluster.separate import catalog
from sepcluster.separate.pipeline import separate

from .conftest import ROOT_DIR, synth, write

pytestmark = pytest.mark.usefixtures("ray_local")


def _rows(out) -> list:
    return storage.read_parquet(str(Path(out) / "catalog.parquet")).to_pylist()


def _by_track(rows) -> dict:
    d: dict = {}
    for r in rows:
        d.setdefault(r["track"], {})[r["target"]] = r
    return d


def _snr(ref, est) -> float:
    n = min(len(ref), len(est))
    ref, est = ref[:n], est[:n]
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((ref - est) ** 2)))


def _hidden_files(out) -> list:
    return [str(p) for p in Path(out).rglob(".*") if p.is_file()]


def _bad_folder(root: Path) -> Path:
    d = root / "in"
    write(d / "good.wav", synth(4.0, 44100, seed=1), 44100)
    write(d / "sub" / "mono 8k.wav", synth(3.0, 8000, channels=1, seed=2), 8000)
    write(d / "hi96k.flac", synth(2.0, 96000, seed=3), 96000, subtype="PCM_24")
    write(d / "six.wav", synth(1.5, 44100, channels=6, seed=4), 44100)
    nan = synth(1.0, 44100, seed=5)
    nan[1000:1100] = np.nan
    write(d / "nan.wav", nan, 44100, subtype="FLOAT")
    (d / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(300))
    (d / "empty.wav").write_bytes(b"")
    (d / "bad.mp3").write_bytes(b"ID3" + b"\x00" * 500)
    (d / "notes.txt").write_text("not audio")
    return d


def test_bad_files_never_stop_the_catalog_then_resume(tmp_path, small_bundle, sepcluster_home):
    src = _bad_folder(tmp_path)
    out = tmp_path / "out"
    s1 = separate(model=small_bundle, input=str(src), out=str(out), residual=True)
    assert (s1.tracks_total, s1.tracks_done, s1.tracks_failed, s1.exit_code) == (8, 3, 5, 1)
    rows = _rows(out)
    assert len(rows) == 8 * 3
    tracks = _by_track(rows)
    assert set(tracks) == {"good", "mono 8k", "hi96k", "six", "nan", "corrupt", "empty", "bad"}
    for name, reason in [("six", "6 channels"), ("nan", "NaN"), ("empty", "empty"), ("corrupt", "corrupt.wav"),
                         ("bad", "bad.mp3")]:
        r = tracks[name]["vocals"]
        assert r["status"] == "error" and reason in r["error"], (name, r["error"])
        assert r["output_uri"] is None
    for name, rate, channels, seconds in [("good", 44100, 2, 4.0), ("mono 8k", 8000, 1, 3.0), ("hi96k", 96000, 2, 2.0)]:
        for target in ("vocals", "drums", "accompaniment"):
            r = tracks[name][target]
            assert r["status"] == "done" and r["error"] is None
            assert (r["sample_rate"], r["channels"], r["output_channels"]) == (rate, channels, channels)
            assert r["duration"] == pytest.approx(seconds) and r["bundle_id"] == s1.bundle_id
            assert r["output_uri"] == str(out / name / f"{target}.wav")
            info = sf.info(r["output_uri"])
            assert (info.samplerate, info.channels, info.frames) == (rate, channels, int(seconds * rate))
    assert _hidden_files(out) == []  # no temporary files or parts left
    # MLflow got the run with its counts
    import mlflow

    run = mlflow.get_run(s1.run_id)
    assert run.data.metrics["tracks_failed"] == 5 and run.data.metrics["tracks_done"] == 3
    assert run.data.metrics["audio_seconds_per_wall_second"] > 0

    # rerun with --downmix: done tracks are skipped, the 6-channel file now separates to mono
    stamp = os.stat(out / "good" / "vocals.wav").st_mtime_ns
    s2 = separate(model=small_bundle, input=str(src), out=str(out), residual=True, downmix=True)
    assert (s2.tracks_skipped, s2.tracks_done, s2.tracks_failed) == (3, 1, 4)
    assert os.stat(out / "good" / "vocals.wav").st_mtime_ns == stamp
    six = _by_track(_rows(out))["six"]["vocals"]
    assert six["status"] == "done" and six["downmixed"] and (six["channels"], six["output_channels"]) == (6, 1)
    assert sf.info(six["output_uri"]).channels == 1
    assert len(_rows(out)) == 24

    # --overwrite redoes done tracks
    s3 = separate(model=small_bundle, input=str(src / "good.wav"), out=str(out), residual=True, overwrite=True)
    assert (s3.tracks_done, s3.tracks_skipped, s3.exit_code) == (1, 0, 0)
    assert os.stat(out / "good" / "vocals.wav").st_mtime_ns != stamp


def test_oracle_irm_on_musdb_root_via_cli(musdb_sample, tmp_path, sepcluster_home, capsys):
    from sepcluster.cli import main

    out = tmp_path / "irm"
    code = main(["separate", "--oracle", "irm", "--input", str(musdb_sample), "--subset", "train", "--out",
                 str(out), "--targets", "vocals,drums", "--residual", "--format", "flac", "--bits", "24"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "1 tracks: 1 separated, 0 already done, 0 failed" in printed and "catalog.parquet" in printed
    track = "Music Delta - 80s Rock"
    refs = {n: sf.read(str(musdb_sample / "train" / track / f"{n}.wav"), dtype="float32")[0]
            for n in ("vocals", "drums", "bass", "other")}
    refs["accompaniment"] = refs.pop("bass") + refs.pop("other")  # the mixture minus the targets
    rows = _by_track(_rows(out))[track]
    assert set(rows) == set(refs) and rows["vocals"]["subset"] == "train"
    assert rows["vocals"]["bundle_id"] == "oracle:irm" and rows["vocals"]["format"] == "flac"
    for name, ref in refs.items():
        est, rate = sf.read(str(out / track / f"{name}.flac"), dtype="float32")
        assert rate == 44100
        assert _snr(ref, est) > 6.0, name  # IRM1 upper bound (about 9-14 dB on this excerpt)


def test_random_umx_on_musdb_sample_with_unsafe_names(musdb_sample, tmp_path, small_bundle, sepcluster_home):
    from sepcluster.models import load_bundle
    from sepcluster.separate import separate_track

    mix = musdb_sample / "train" / "Music Delta - 80s Rock" / "mixture.wav"
    stem = next((musdb_sample / "stems").iterdir())
    copies = []
    for i in range(3):
        copies.append(tmp_path / f"copy{i}.wav")
        copies[-1].write_bytes(mix.read_bytes())
    manifest = tmp_path / "list.csv"
    manifest.write_text("uri,name\n"
                        f"{mix},../../escape\n"
                        f"{copies[0]},Ünïcödé / név with spaces\n"
                        f"{stem},\n"
                        f"{copies[1]},..\n"
                        f"{copies[2]},../../ESCAPE\n"
                        f"{mix},listed twice\n"
                        "notes.txt,unsupported\n")
    out = tmp_path / "sep"
    s = separate(model=small_bundle, input=str(manifest), out=str(out), bits=32, chunk_seconds=4.0,
                 overlap_seconds=1.0)
    assert (s.tracks_total, s.tracks_done, s.tracks_failed, s.exit_code) == (6, 5, 1, 1)
    bad = _by_track(_rows(out))["unsupported"]["vocals"]
    assert bad["status"] == "error" and "unsupported audio format '.txt'" in bad["error"]
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(names) == 5  # no folder for the unsupported input
    assert {"_.._escape", "Ünïcödé _ név with spaces", "Music Delta - 80s Rock", "track"} <= set(names)
    (other,) = set(names) - {"_.._escape", "Ünïcödé _ név with spaces", "Music Delta - 80s Rock", "track"}
    assert other.startswith("_.._ESCAPE [")  # a case-insensitive collision, disambiguated
    for p in out.rglob("*"):
        assert out in p.resolve().parents or p.resolve() == out
    # the pipeline's stems equal the in-memory separation of the same mixture
    audio, rate = sf.read(str(mix), dtype="float32", always_2d=True)
    ref = separate_track(load_bundle(small_bundle), audio, rate, chunk_seconds=4.0, overlap_seconds=1.0)
    for target in ("vocals", "drums"):
        got, _ = sf.read(str(out / "_.._escape" / f"{target}.wav"), dtype="float32", always_2d=True)
        assert got.shape == audio.shape
        assert np.abs(got - ref[target]).max() <= 1e-5


def test_cli_argument_errors(tmp_path, sepcluster_home, capsys):
    from sepcluster.cli import main

    assert main(["separate", "--input", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "exactly one of --model PATH or --oracle irm" in capsys.readouterr().err
    assert main(["separate", "--oracle", "irm", "--input", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "input not found" in capsys.readouterr().err


def _descendants(pid: int) -> list:
    children: dict = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_resume_after_killed_actor_and_killed_run(tmp_path, small_bundle, sepcluster_home):
    """A run (its own driver process, on this module's Ray) loses an actor to SIGKILL (Ray
    restarts it and retries its track), then the driver itself is killed; the rerun skips
    every track already finished and completes the catalog."""
    import ray

    src = tmp_path / "in"
    for i in range(6):
        write(src / f"t{i}.wav", synth(6.0, 44100, seed=10 + i), 44100)
    out = tmp_path / "out"
    parts = Path(catalog.parts_uri(str(out)))
    address = ray.get_runtime_context().gcs_address
    code = ("import sys; from sepcluster.separate.pipeline import separate; "
            f"s = separate(model={small_bundle!r}, input={str(src)!r}, out={str(out)!r}, address={address!r}); "
            "print('SUMMARY', s.tracks_done, s.tracks_failed); sys.exit(s.exit_code)")
    env = dict(os.environ, SEPCLUSTER_NO_PROGRESS="1")
    log = open(tmp_path / "run.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT_DIR, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    killed_actor = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            n = len(list(parts.glob("*.parquet"))) if parts.exists() else 0
            if killed_actor is None and n >= 1:
                # this module's Ray runs under this process: its workers are our descendants
                actors = [p for p in _descendants(os.getpid()) if "SeparateWorker" in _cmdline(p)]
                if actors:
                    killed_actor = actors[0]
                    os.kill(killed_actor, signal.SIGKILL)  # Ray restarts it and retries its track
            if killed_actor is not None and n >= 2:
                break
            time.sleep(0.1)
        assert killed_actor is not None, "no actor to kill: " + (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()  # the driver dies; Ray ends its job and the job's actors
        proc.wait()
        log.close()
    done_rows = [r for r in catalog.read_rows(str(out)) if r["status"] == "done"]
    finished = {r["source_uri"] for r in done_rows}
    assert len(finished) >= 2, (tmp_path / "run.log").read_text()[-3000:]
    # stems of tracks in the catalog as done; a track whose stems were written but whose
    # catalog row was not committed when the driver died is not done, and is redone
    stamps = {r["output_uri"]: os.stat(r["output_uri"]).st_mtime_ns for r in done_rows}
    # the rerun resumes: finished tracks are skipped, the rest is separated
    s = separate(model=small_bundle, input=str(src), out=str(out))
    assert s.tracks_skipped == len(finished) and s.tracks_done == 6 - len(finished) and s.exit_code == 0
    rows = _rows(out)
    assert len(rows) == 12 and all(r["status"] == "done" for r in rows)
    for p, stamp in stamps.items():
        assert os.stat(p).st_mtime_ns == stamp  # nothing finished before was redone
    assert _hidden_files(out) == []


def test_rerun_with_other_output_settings_separates_again(tmp_path, small_bundle, sepcluster_home):
    """The resume key holds every setting that changes the output (format, Wiener iterations, ...)."""
    src = tmp_path / "in"
    write(src / "a.wav", synth(2.0, 44100, seed=1), 44100)
    out = tmp_path / "out"
    s1 = separate(model=small_bundle, input=str(src), out=str(out))
    assert (s1.tracks_done, s1.tracks_skipped) == (1, 0)
    assert separate(model=small_bundle, input=str(src), out=str(out)).tracks_skipped == 1  # same settings
    s3 = separate(model=small_bundle, input=str(src), out=str(out), format="flac", niter=0)
    assert (s3.tracks_done, s3.tracks_skipped) == (1, 0)
    rows = _by_track(_rows(out))["a"]
    assert rows["vocals"]["format"] == "flac" and rows["vocals"]["output_uri"].endswith("vocals.flac")
    assert rows["vocals"]["settings_id"] and rows["vocals"]["model_kind"] == "bundle"
    assert rows["vocals"]["weights_sha256"] and len(rows["vocals"]["weights_sha256"]) == 64
    assert sf.info(rows["vocals"]["output_uri"]).format == "FLAC"
    # the row names the process that made it: a Ray actor on this host (not the driver), on the CPU
    host, pid = rows["vocals"]["worker"].rsplit(":", 1)
    assert host == socket.gethostname() and int(pid) != os.getpid() and rows["vocals"]["device"] == "cpu"


def test_worker_identity_names_the_host_process_and_the_gpus_ray_gave_it(monkeypatch):
    """The catalog's ``worker`` / ``device``: the GPU ids are the node's (Ray's CUDA_VISIBLE_DEVICES),
    so two actors packed on one GPU (``--gpus-per-actor 0.5``) show the same device, other GPUs another."""
    from sepcluster.separate.worker import worker_identity

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert worker_identity("cuda") == {"worker": f"{socket.gethostname()}:{os.getpid()}", "device": "cuda (GPU 3)"}
    assert worker_identity("cuda:0")["device"] == "cuda (GPU 3)"
    assert worker_identity("cpu")["device"] == "cpu"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert worker_identity("cuda")["device"] == "cuda"


def test_musdb_layout_is_read_by_museval_eval_mus_dir(tmp_path, musdb_sample, sepcluster_home):
    """``layout="musdb"`` writes <out>/<subset>/<track>/<target>.wav, which museval itself scores."""
    import musdb
    import museval

    out = tmp_path / "est"
    s = separate(oracle="irm", input=str(musdb_sample), subsets=["train"], out=str(out), layout="musdb")
    assert (s.tracks_done, s.tracks_failed) == (1, 0)
    folder = out / "train" / "Music Delta - 80s Rock"
    assert sorted(p.name for p in folder.iterdir()) == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    db = musdb.DB(root=str(musdb_sample), is_wav=True, subsets="train")
    museval.eval_mus_dir(dataset=db, estimates_dir=str(out), output_dir=str(tmp_path / "museval"))
    scores = json.loads(next((tmp_path / "museval").rglob("*.json")).read_text())
    names = {t["name"] for t in scores["targets"]}
    assert names == {"vocals", "drums", "bass", "other"}
    vocals = next(t for t in scores["targets"] if t["name"] == "vocals")
    sdr = [f["metrics"]["SDR"] for f in vocals["frames"] if f["metrics"]["SDR"] is not None]
    assert sdr and np.nanmedian(sdr) > 5.0  # the ideal ratio mask is a good estimate


def test_demucs_and_roformer_files_separate_a_catalog_as_their_references(tmp_path, sepcluster_home):
    """A demucs ``.th`` and an MSST RoFormer ``.ckpt`` + YAML run through the same Ray Data catalog
    pipeline: the written stems equal ``apply_model`` / MSST's ``demix`` (float32 WAV), the rows
    name the model kind and the weights' hash, a rerun resumes, and an input at another rate is
    resampled to the model's rate and back."""
    from tests.models.foreign_files import save_demucs
    from tests.separate.waveform_cases import apply_model, demucs_reference, msst_demix, save_roformer, small_htdemucs

    src = tmp_path / "in"
    write(src / "a.wav", synth(9.0, 44100, seed=1), 44100, subtype="FLOAT")
    write(src / "b 48k.wav", synth(2.0, 48000, seed=2), 48000, subtype="FLOAT")
    th = save_demucs(small_htdemucs(), tmp_path / "htdemucs.th")
    ckpt, config = save_roformer("bs_roformer", tmp_path, "bs", stems=1)
    mixture = sf.read(str(src / "a.wav"), dtype="float32", always_2d=True)[0]
    demucs_expected = {s: x for s, x in zip(demucs_reference(th).sources, apply_model(demucs_reference(th), mixture))}
    cases = {
        "demucs": ("demucs", dict(model=str(th)), demucs_expected),
        # both tracks in one actor call, their chunks sharing model calls (batching across tracks)
        "demucs-2-tracks-at-once": ("demucs", dict(model=str(th), tracks_per_actor=2, batch_chunks=4),
                                    demucs_expected),
        "bs_roformer": ("bs_roformer", dict(model=str(ckpt), model_config=str(config)),
                        msst_demix("bs_roformer", ckpt, config, mixture)),
    }
    for name, (kind, how, reference) in cases.items():
        out = tmp_path / f"out-{name}"
        s = separate(input=str(src), out=str(out), format="wav", bits=32, **how)
        assert (s.tracks_done, s.tracks_failed) == (2, 0), name
        rows = _by_track(_rows(out))
        assert set(rows["a"]) == set(reference), kind
        for target, row in rows["a"].items():
            assert row["model_kind"] == kind and len(row["weights_sha256"]) == 64 and not row["error"]
            got = sf.read(row["output_uri"], dtype="float32", always_2d=True)[0]
            assert got.shape == mixture.shape
            assert np.abs(got - reference[target]).max() <= 1e-4, (kind, target)
        other = sf.read(next(iter(rows["b 48k"].values()))["output_uri"], always_2d=True)
        assert other[1] == 48000 and other[0].shape == (96000, 2)
        assert separate(input=str(src), out=str(out), format="wav", bits=32, **how).tracks_skipped == 2


def test_loud_stems_are_warned_and_recorded(tmp_path, sepcluster_home, caplog):
    """A stem that peaks above +-1 is warned about with its track and peak, and the catalog records it."""
    from .test_engine import _loud_track

    _loud_track(tmp_path / "root" / "test" / "Loud Song")
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="sepcluster.separate.pipeline"):
        s = separate(oracle="irm", input=str(tmp_path / "root"), subsets=["test"], out=str(out),
                     targets=["vocals"], clip="rescale")
    assert (s.tracks_done, s.clipped) == (1, 1)
    assert any("Loud Song" in r.message and "stem 'vocals' peaks at" in r.message and "rescaled" in r.message
               for r in caplog.records)
    row = _by_track(_rows(out))["Loud Song"]["vocals"]
    assert row["peak"] > 1.2 and row["clipping"] == "rescaled"
    assert 0.98 < np.abs(sf.read(row["output_uri"])[0]).max() < 1.0
    assert "peaked above +-1" in s.format()


def test_precision_is_checked_against_the_device_before_any_track(tmp_path, small_bundle, sepcluster_home, caplog):
    """On the CPU: ``--precision fp16`` is refused naming the option before a track is touched (no stem, no
    catalog); bf16 autocasts a demucs model (its stems move by bf16 rounding from ``apply_model``'s fp32
    ones, and the resume key tells the two apart); with a spectrogram bundle bf16 is warned about."""
    from sepcluster.errors import ConfigError
    from tests.models.foreign_files import save_demucs
    from tests.separate.waveform_cases import apply_model, demucs_reference, small_htdemucs

    src = tmp_path / "in"
    write(src / "a.wav", synth(3.0, 44100, seed=5), 44100, subtype="FLOAT")
    th = save_demucs(small_htdemucs(), tmp_path / "htdemucs.th")
    with pytest.raises(ConfigError, match="fp16 autocast runs on CUDA only") as err:
        separate(input=str(src), out=str(tmp_path / "fp16"), model=str(th), device="cpu", precision="fp16")
    assert err.value.field == "precision"
    assert not (tmp_path / "fp16" / "a").exists() and not storage.exists(catalog.catalog_uri(str(tmp_path / "fp16")))

    out = tmp_path / "bf16"
    assert separate(input=str(src), out=str(out), model=str(th), precision="bf16", format="wav",
                    bits=32).tracks_done == 1
    mixture = sf.read(str(src / "a.wav"), dtype="float32", always_2d=True)[0]
    reference = demucs_reference(th)
    for target, expected in zip(reference.sources, apply_model(reference, mixture)):
        got = sf.read(str(out / "a" / f"{target}.wav"), dtype="float32", always_2d=True)[0]
        err_db = 10 * np.log10(np.sum(expected.astype(np.float64) ** 2) / np.sum((got - expected) ** 2))
        assert 20 < err_db < 120, (target, err_db)  # near the fp32 stems, but not them
    again = separate(input=str(src), out=str(out), model=str(th), format="wav", bits=32)  # fp32: other settings
    assert (again.tracks_done, again.tracks_skipped) == (1, 0)

    with caplog.at_level("WARNING", logger="sepcluster.separate.pipeline"):
        separate(input=str(src), out=str(tmp_path / "umx"), model=small_bundle, precision="bf16")
    assert any("--precision bf16 applies to waveform models" in r.message and "bundle runs in fp32" in r.message
               for r in caplog.records)


def test_gpu_actors_count_the_gpus_an_autoscaler_may_bring_up():
    """``--device cuda`` on a cluster with no GPU node up: refused naming the device on a fixed cluster;
    on an autoscaling one (its autoscaler's config in the GCS, as KubeRay's writes it) one actor per GPU
    it may bring up (two per GPU with --gpus-per-actor 0.5), whose pending actors ask for the nodes."""
    from sepcluster.errors import ConfigError
    from sepcluster.separate.pipeline import _resources
    from tests.conftest import fake_autoscaler

    with pytest.raises(ConfigError, match="no GPUs") as err:
        _resources("cuda", None, None)
    assert err.value.field == "device"
    assert _resources(None, None, None)["device"] == "cpu"
    fake_autoscaler([({"CPU": 8, "GPU": 1}, 3)])
    try:
        res = _resources("cuda", None, None)
        assert res["actors"] == 3 and res["remote"]["num_gpus"] == 1.0
        res = _resources("cuda", None, None, gpus_per_actor=0.5)
        assert res["actors"] == 6 and res["remote"]["num_gpus"] == 0.5
        assert _resources(None, None, None)["device"] == "cpu"  # the default device is what is up now
    finally:
        fake_autoscaler(None)
