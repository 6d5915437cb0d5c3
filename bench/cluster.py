"""Benchmark: the local 2-node Ray cluster vs a single node with the same total CPUs.

Both sides are real ``ray start`` processes on 127.0.0.1 (:class:`sepcluster.localcluster.RayLocalCluster`):

* ``cluster``: a head and one worker node, 1 CPU each (actors/tasks spread over two raylets,
  two object stores, objects and results cross nodes);
* ``single``: one head node with 2 CPUs.

The same driver code runs against each: ``sepcluster.generate.generate(..., address=...)``
(2 actors, mixtures/s counted by generate from actors ready to the last shard committed) and
``sepcluster.evaluate.pipeline.evaluate(..., address=...)`` (torch BSS Eval v4, one Ray Data
task per track; tracks/s over the whole call). Each measurement is repeated ``--repeats``
times alternating the two setups, and the best run of each is compared (the least disturbed by
other load). Target: cluster / single >= 0.9 (cluster overhead under 10%).

Ray runs workers at niceness 15 by default; both setups start their nodes with
``RAY_worker_niceness=0`` so that other load on a shared machine weighs on them alike.

    .venv/bin/python bench/cluster.py [--mixtures 60] [--seconds 3] [--tracks 4] [--track-seconds 4]
                                      [--repeats 2] [--skip-evaluate]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SEPCLUSTER_NO_PROGRESS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402

LABELS = ["vocals", "drums", "bass", "other"]


def recipe(seconds: float) -> dict:
    """Mono 44.1 kHz mixtures of ``seconds``, 4 stems, quick pitch shift / time stretch."""
    return {
        "duration": seconds, "sample_rate": 44100, "channels": 1, "ref_db": -20, "labels": LABELS,
        "coherent_probability": 0.5, "fix_clipping": True, "quick_pitch_time": True,
        "event": {"source_time": ["uniform", 0, 4], "event_time": ["const", 0], "event_duration": ["const", seconds],
                  "snr": ["uniform", -5, 5], "pitch_shift": ["uniform", -2, 2], "time_stretch": ["uniform", 0.8, 1.2]},
    }


def make_catalog(root: Path, tracks: int, seconds: float) -> tuple[str, str]:
    """Synthetic songs as ``refs/<track>/<target>.wav`` and imperfect ``ests/<track>/<target>.wav``."""
    from sepcluster.audio import write_audio
    from sepcluster.stems.synth import render_song

    rng = np.random.default_rng(0)
    for i in range(tracks):
        stems, _ = render_song(11, i, seconds, sample_rate=44100, channels=2)
        mix = sum(stems.values())
        for j, (label, ref) in enumerate(stems.items()):
            est = (0.7 * ref + 0.2 * np.roll(ref, 7 + 5 * j, axis=0) + 0.15 * mix
                   + 0.003 * rng.standard_normal(ref.shape))
            write_audio(str(root / "refs" / f"track{i:02d}" / f"{label}.wav"), ref, 44100, bits=32)
            write_audio(str(root / "ests" / f"track{i:02d}" / f"{label}.wav"), est.astype(np.float32), 44100, bits=32)
    return str(root / "refs"), str(root / "ests")


def start(kind: str, base: Path):
    from sepcluster.localcluster import RayLocalCluster

    workers, cpus = (1, 1) if kind == "cluster" else (0, 2)
    cluster = RayLocalCluster(str(base / f"ray-{kind}"), workers=workers, num_cpus=cpus)
    cluster.env = {"RAY_worker_niceness": "0", "SEPCLUSTER_HOME": str(base / "home"),
                   "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]}
    t0 = time.perf_counter()
    cluster.start()
    return cluster, time.perf_counter() - t0


def run_generate(address: str, stems: str, out: str, rec: dict, n: int) -> dict:
    from sepcluster import raycluster
    from sepcluster.generate import generate

    try:
        s = generate(rec, stems, out, n, num_actors=2, shard_size=max(1, n // 12), address=address, progress=False)
    finally:
        raycluster.shutdown()
    assert s.complete and s.generated == n
    return {"mixtures_per_s": s.mixtures_per_second, "seconds": s.seconds, "startup_s": s.startup_seconds,
            "cpu_s_per_mixture": s.per_mixture(s.cpu_seconds)}


def run_evaluate(address: str, refs: str, ests: str, out: str, tracks: int) -> dict:
    from sepcluster import raycluster
    from sepcluster.evaluate.pipeline import evaluate

    t0 = time.perf_counter()
    try:
        s = evaluate(refs, ests, out, engine="torch", address=address, write_json=False, log_mlflow=False)
    finally:
        raycluster.shutdown()
    wall = time.perf_counter() - t0
    assert s["n_tracks"] == tracks and s["n_failed"] == 0, s
    return {"tracks_per_s": tracks / wall, "seconds": wall, "engine_s_per_track_minute": s["seconds_per_track_minute"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mixtures", type=int, default=60)
    ap.add_argument("--seconds", type=float, default=3.0, help="mixture length (s)")
    ap.add_argument("--tracks", type=int, default=4, help="evaluate: synthetic tracks")
    ap.add_argument("--track-seconds", type=float, default=4.0,
                    help="evaluate: track length (BSS Eval v4 costs ~3 CPU-s per second of stereo 4-target audio)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-evaluate", action="store_true")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    args = ap.parse_args(argv)

    from sepcluster.localcluster import RayLocalCluster
    from sepcluster.stems.synth import synthesize_library

    base = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    os.environ["SEPCLUSTER_HOME"] = str(base / "home")
    os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + str(base / "home" / "mlflow.db")
    os.environ.update(RayLocalCluster.client_env())
    results: dict = {"generate": {"cluster": [], "single": []}, "evaluate": {"cluster": [], "single": []},
                     "startup_s": {"cluster": [], "single": []}}
    try:
        t0 = time.perf_counter()
        stems = str(base / "stems")
        synthesize_library(stems, songs=4, seconds=args.seconds + 5, seed=3, sample_rate=44100, channels=1)
        rec = recipe(args.seconds)
        if not args.skip_evaluate:
            refs, ests = make_catalog(base / "catalog", args.tracks, args.track_seconds)
        print(f"data ready in {time.perf_counter() - t0:.1f} s: {args.mixtures} mixtures of {args.seconds:g} s "
              f"(mono, 44.1 kHz, 4 stems); {0 if args.skip_evaluate else args.tracks} tracks of "
              f"{args.track_seconds:g} s for evaluate", flush=True)
        run = 0
        for rep in range(args.repeats):
            for kind in (("cluster", "single") if rep % 2 == 0 else ("single", "cluster")):
                run += 1
                cluster, startup = start(kind, base)
                results["startup_s"][kind].append(startup)
                try:
                    g = run_generate(cluster.address, stems, str(base / f"mix-{run}"), rec, args.mixtures)
                    results["generate"][kind].append(g)
                    line = (f"[{kind:>7} #{rep + 1}] generate {g['mixtures_per_s']:6.2f} mixtures/s "
                            f"({g['cpu_s_per_mixture']:.3f} CPU-s/mixture)")
                    if not args.skip_evaluate:
                        e = run_evaluate(cluster.address, refs, ests, str(base / f"eval-{run}"), args.tracks)
                        results["evaluate"][kind].append(e)
                        line += (f"; evaluate {e['tracks_per_s']:6.3f} tracks/s ({e['seconds']:.1f} s, engine "
                                 f"{e['engine_s_per_track_minute']:.0f} s per track-minute)")
                    print(line + f"; nodes up in {startup:.0f} s", flush=True)
                finally:
                    cluster.stop()
                    shutil.rmtree(base / f"mix-{run}", ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(f"\nload average during the run: {os.getloadavg()[0]:.1f} (this machine: {os.cpu_count()} cores); "
          f"figures are the best of {args.repeats} run(s) per setup")
    summary = {}
    for job, key, unit in (("generate", "mixtures_per_s", "mixtures/s"), ("evaluate", "tracks_per_s", "tracks/s")):
        if not results[job]["cluster"]:
            continue
        best = {k: max(r[key] for r in results[job][k]) for k in ("cluster", "single")}
        ratio = best["cluster"] / best["single"] if best["single"] else float("nan")
        summary[job] = {**best, "ratio": ratio}
        verdict = "ok" if ratio >= 0.9 else "BELOW TARGET"
        print(f"{job:<9} 2 nodes x 1 CPU: {best['cluster']:7.3f} {unit}   1 node x 2 CPUs: {best['single']:7.3f} "
              f"{unit}   ratio {ratio:.2f} (target >= 0.9: {verdict})")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
