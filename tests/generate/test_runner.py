"""generate() on a real local Ray: determinism, resume, actor death, MLflow, CLI."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from sepcluster.errors import ConfigError, DataError
from sepcluster.datasets import mixtures as layout
from sepcluster.datasets.library import index_library
from sepcluster.generate import generate, iter_mixtures, load_mixture, read_manifest
from sepcluster.generate.mixing import make_mixture
from sepcluster.generate.recipe import load_recipe
from tests.generate.conftest import small_recipe


def _all(uri):
    return {m.seed: m for m in iter_mixtures(uri)}


def test_validation_happens_before_any_work(small_library, tmp_path, sepcluster_home):
    out = tmp_path / "never"
    with pytest.raises(ConfigError) as err:
        generate(small_recipe(**{"event.snr": ["uniform", 3, -3]}), str(small_library), str(out), 4)
    assert err.value.field == "event.snr"
    with pytest.raises(ConfigError) as err:
        generate(small_recipe(labels=["vocals", "piano"]), str(small_library), str(out), 4)
    assert err.value.field == "labels" and "piano" in str(err.value)
    with pytest.raises(ConfigError) as err:
        generate(small_recipe(), str(small_library), str(out), 0)
    assert err.value.field == "num_mixtures"
    with pytest.raises(ConfigError) as err:
        generate(small_recipe(), str(small_library), str(out), 2, audio_format="mp3")
    assert err.value.field == "audio_format"
    with pytest.raises(DataError, match="does not exist"):
        generate(small_recipe(), str(tmp_path / "no-library"), str(out), 2)
    assert not out.exists()


def test_same_dataset_for_any_actor_count_and_shard_size(small_library, tmp_path, ray_local, sepcluster_home):
    import mlflow

    recipe = small_recipe()
    a = generate(recipe, str(small_library), str(tmp_path / "a"), 10, base_seed=5, num_actors=1, shard_size=7)
    b = generate(recipe, str(small_library), str(tmp_path / "b"), 10, base_seed=5, num_actors=2, shard_size=3)
    # more actors than the 2 CPUs: the ones Ray cannot place wait, the placed ones do the work
    c = generate(recipe, str(small_library), str(tmp_path / "c"), 10, base_seed=5, num_actors=4, shard_size=2)
    assert a.complete and b.complete and c.complete and a.generated == b.generated == c.generated == 10
    assert [s["name"] for s in read_manifest(str(tmp_path / "a"))] == [
        "shard-0000000005-0000000011.parquet", "shard-0000000012-0000000014.parquet"]
    assert len(read_manifest(str(tmp_path / "b"))) == 4
    ma, mb = _all(str(tmp_path / "a")), _all(str(tmp_path / "b"))
    assert sorted(ma) == sorted(mb) == list(range(5, 15))
    assert {m.coherent for m in ma.values()} == {True, False}
    mc = _all(str(tmp_path / "c"))
    assert sorted(mc) == sorted(ma)
    for seed in ma:
        assert np.array_equal(ma[seed].mixture, mb[seed].mixture)
        assert np.array_equal(ma[seed].mixture, mc[seed].mixture)
        assert all(np.array_equal(ma[seed].stems[k], mb[seed].stems[k]) for k in ma[seed].stems)
        assert ma[seed].jams == mb[seed].jams and ma[seed].events == mb[seed].events
    # and equal to rendering the seed in this process
    rec = load_recipe(recipe)
    library = index_library(str(small_library), rec.labels)
    for seed in (5, 14):
        assert np.array_equal(make_mixture(rec, library, seed).mixture, ma[seed].mixture)
    # the MLflow run of b: params, metrics, output
    run = mlflow.get_run(b.run_id)
    assert run.info.status == "FINISHED"
    assert mlflow.get_experiment(run.info.experiment_id).name == "sepcluster-generate"
    assert run.data.params["recipe_hash"] == rec.hash == b.recipe_hash
    assert run.data.params["num_mixtures"] == "10" and run.data.params["num_actors"] == "2"
    assert run.data.params["recipe.event.snr"] == '["uniform",-5,5]'
    assert run.data.params["out"] == str(tmp_path / "b")
    assert run.data.metrics["mixtures_generated"] == 10
    assert run.data.metrics["shards_written"] == 4
    assert run.data.metrics["mixtures_per_s"] > 0
    # where the actors' time went: rendering plus storing is at most the shards' wall time
    assert b.render_seconds > 0 and b.store_seconds > 0
    assert run.data.metrics["render_seconds_per_mixture"] == pytest.approx(b.render_seconds / 10)
    assert run.data.metrics["store_seconds_per_mixture"] == pytest.approx(b.store_seconds / 10)
    assert b.render_seconds + b.store_seconds <= b.seconds * b.num_actors + 1e-6
    assert run.data.tags["sepcluster.output"] == str(tmp_path / "b")
    assert b.peak_rss_mb and all(v > 0 for v in b.peak_rss_mb.values())


def test_rerun_skips_committed_shards_and_refuses_another_recipe(small_library, tmp_path, ray_local,
                                                                 sepcluster_home):
    out = str(tmp_path / "ds")
    first = generate(small_recipe(), str(small_library), out, 6, num_actors=2, shard_size=2)
    assert first.shards_written == 3
    names = {s["name"]: os.stat(s["uri"]).st_mtime_ns for s in read_manifest(out)}
    before = _all(out)
    # lose the middle shard (as if its actor had died before committing), rerun
    os.unlink(os.path.join(out, layout.shard_name(2, 3)))
    again = generate(small_recipe(), str(small_library), out, 6, num_actors=2)
    assert (again.shards_skipped, again.shards_written, again.generated, again.skipped) == (2, 1, 2, 4)
    assert again.shard_size == 2  # the dataset's shard size is reused
    for s in read_manifest(out):
        if s["name"] != layout.shard_name(2, 3):
            assert os.stat(s["uri"]).st_mtime_ns == names[s["name"]]  # untouched
    after = _all(out)
    assert sorted(after) == list(range(6))
    assert all(np.array_equal(after[s].mixture, before[s].mixture) for s in range(6))
    # nothing left to do
    third = generate(small_recipe(), str(small_library), out, 6)
    assert third.generated == 0 and third.skipped == 6 and third.complete
    # another recipe into the same out is refused, before any work
    with pytest.raises(ConfigError) as err:
        generate(small_recipe(**{"event.snr": ["uniform", -3, 3]}), str(small_library), out, 6)
    assert err.value.field == "recipe" and "another recipe" in err.value.problem
    with pytest.raises(ConfigError) as err:
        generate(small_recipe(), str(small_library), out, 6, base_seed=1)
    assert err.value.field == "base_seed"
    # a larger num_mixtures extends the dataset
    more = generate(small_recipe(), str(small_library), out, 8)
    assert more.generated == 2 and more.skipped == 6
    assert sorted(_all(out)) == list(range(8))


def _mixer_actor_pids() -> list[int]:
    """PIDs of MixerActor workers of the Ray this test process started (worker -> raylet -> us)."""
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            if b"ray::MixerActor" not in cmd:
                continue
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{ppid}/stat") as f:
                gppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if gppid == me:
            pids.append(int(entry))
    return pids


def test_actor_killed_mid_run_every_seed_once(small_library, tmp_path, ray_local, sepcluster_home):
    out = str(tmp_path / "ds")
    n = 24
    # full-quality pitch/time: slow enough that the run is still going when the kill lands
    recipe = small_recipe(quick_pitch_time=False)
    result = {}

    def run():
        try:
            result["summary"] = generate(recipe, str(small_library), out, n, num_actors=2, shard_size=2)
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 240
    while thread.is_alive() and time.monotonic() < deadline:
        if os.path.exists(os.path.join(out, layout.DATASET_FILE)) and read_manifest(out):  # a shard is committed
            pids = _mixer_actor_pids()
            if pids:
                killed = pids[0]
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.05)
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    summary = result["summary"]
    assert killed is not None, "the run ended before an actor could be killed"
    assert summary.actor_failures >= 1
    assert summary.complete and summary.generated + summary.skipped == n
    seeds = layout.read_seeds(out)
    assert seeds == list(range(n))  # every seed exactly once, in order
    rec = load_recipe(recipe)
    library = index_library(str(small_library), rec.labels)
    for seed in (0, n - 1):
        assert np.array_equal(load_mixture(out, seed).mixture, make_mixture(rec, library, seed).mixture)
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temporary files left


def test_cli_generate_and_regenerate(small_library, tmp_path, ray_local, sepcluster_home, capsys):
    import yaml

    from sepcluster.cli import main

    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(small_recipe(**{"event.pitch_shift": None})))
    out = str(tmp_path / "ds")
    rc = main(["generate", "--recipe", str(recipe_path), "--stems", str(small_library), "--out", out,
               "--num-mixtures", "4", "--num-actors", "2", "--audio-format", "flac24", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "4 made" in text and "recipe hash" in text
    rc = main(["generate", "--out", out, "--regenerate", "2", "--stems", str(small_library)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "regenerated audio identical to the dataset: yes" in text
    assert "reproduces the audio: yes" in text
    rc = main(["generate", "--out", out, "--regenerate", "3"])  # stems from the dataset record
    assert rc == 0
    # bad recipe: exit code 2 and the field named
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(small_recipe(coherent_probability=2)))
    rc = main(["generate", "--recipe", str(bad), "--stems", str(small_library), "--out", str(tmp_path / "x"),
               "--num-mixtures", "2"])
    assert rc == 2
    assert "coherent_probability" in capsys.readouterr().err
