"""Benchmark: the fixed cost of small jobs (issue 15, point 5), each command in a fresh process.

Rows (wall seconds, best of ``--repeats``):

- ``sepcluster --help`` and ``sepcluster separate --help`` (imports only);
- ``separate --oracle irm`` of one ``--seconds`` stereo track with a new local Ray, and the same
  with ``RAY_ADDRESS`` naming a Ray already running on this machine (``ray start --head``);
- ``evaluate --metrics sdr,sisdr``, ``bss`` and ``bss,sdr,sisdr`` (the default) of that track, new
  local Ray, logging to MLflow as by default;
- where a separate's time goes, measured apart in one process: importing the job, ``ray.init``
  of a local Ray, the MLflow SQLite store's first run (fresh store and existing store), and a
  one-item Ray Data pipeline (its start-up).

Run: ``.venv/bin/python bench/startup.py [--seconds 10] [--repeats 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
CLI = [PY, "-m", "sepcluster"]


def _run(cmd: list, env: dict, cwd: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def _best(make_cmd, env: dict, cwd: str, repeats: int) -> float:
    return min(_run(make_cmd(i), env, cwd) for i in range(repeats))


def _track(folder: str, seconds: float) -> str:
    import soundfile as sf

    rng = np.random.default_rng(0)
    track = os.path.join(folder, "in", "t1")
    os.makedirs(track)
    n = int(seconds * 44100)
    stems = {s: (0.1 * rng.standard_normal((n, 2))).astype(np.float32) for s in ("vocals", "drums", "bass", "other")}
    for name, audio in stems.items():
        sf.write(os.path.join(track, f"{name}.wav"), audio, 44100)
    sf.write(os.path.join(track, "mixture.wav"), sum(stems.values()), 44100)
    return os.path.join(track, "mixture.wav")


PHASES = r"""
import json, os, sys, time
t = {}
t0 = time.perf_counter(); import sepcluster.separate.pipeline, sepcluster.evaluate.pipeline; t['import jobs'] = time.perf_counter() - t0
from sepcluster import raycluster, tracking
home = sys.argv[1]
os.environ['SEPCLUSTER_HOME'] = os.path.join(home, 'fresh')
t0 = time.perf_counter()
with tracking.job_run('startup', {'x': 1}):
    pass
t['mlflow first run (new SQLite store)'] = time.perf_counter() - t0
t0 = time.perf_counter()
with tracking.job_run('startup', {'x': 2}):
    pass
t['mlflow run (existing store)'] = time.perf_counter() - t0
t0 = time.perf_counter(); raycluster.init(num_cpus=2); t['ray.init (new local Ray)'] = time.perf_counter() - t0
import ray.data
t0 = time.perf_counter()
rows = ray.data.from_items([{'x': 1}]).map(lambda r: r).take_all()
t['Ray Data one-item pipeline'] = time.perf_counter() - t0
t0 = time.perf_counter(); raycluster.shutdown(); t['ray.shutdown'] = time.perf_counter() - t0
print(json.dumps(t))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the test track")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the figures as JSON")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sepcluster-startup-")
    env = dict(os.environ, SEPCLUSTER_HOME=os.path.join(work, "home"), SEPCLUSTER_NO_PROGRESS="1")
    env.pop("RAY_ADDRESS", None)
    figures: dict = {}
    try:
        mix = _track(work, args.seconds)
        refs = os.path.dirname(os.path.dirname(mix))
        figures["sepcluster --help"] = _best(lambda i: CLI + ["--help"], env, work, max(args.repeats, 3))
        figures["sepcluster separate --help"] = _best(lambda i: CLI + ["separate", "--help"], env, work,
                                                      max(args.repeats, 3))
        _run(CLI + ["separate", "--oracle", "irm", mix, "-o", os.path.join(work, "warm")], env, work)  # MLflow store
        figures[f"separate 1 x {args.seconds:g} s, new local Ray"] = _best(
            lambda i: CLI + ["separate", "--oracle", "irm", mix, "-o", os.path.join(work, f"sep{i}")], env, work,
            args.repeats)
        for metrics in ("sdr,sisdr", "bss", "bss,sdr,sisdr"):  # the last: evaluate's default
            figures[f"evaluate --metrics {metrics}, new local Ray"] = _best(
                lambda i, m=metrics: CLI + ["evaluate", "--references", refs, "--estimates",
                                            os.path.join(work, "sep0"), "--out", os.path.join(work, f"ev-{m}-{i}"),
                                            "--metrics", m], env, work, args.repeats)
        figures.update(_with_running_ray(mix, env, work, args))
        done = subprocess.run([PY, "-c", PHASES, work], env=env, capture_output=True, text=True, cwd=work)
        if done.returncode == 0:
            figures.update({f"phase: {k}": v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()})
        else:
            print(done.stderr[-2000:], file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    width = max(len(k) for k in figures)
    for name, seconds in figures.items():
        print(f"{name:<{width}}  {seconds:7.2f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


def _with_running_ray(mix: str, env: dict, work: str, args) -> dict:
    """The separate row again with RAY_ADDRESS naming a Ray head already running on this machine
    (a ``ray start --block`` process group of :class:`sepcluster.localcluster.RayLocalCluster`)."""
    sys.path.insert(0, ROOT)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from sepcluster.localcluster import RayLocalCluster

    cluster = RayLocalCluster(os.path.join(work, "ray"), workers=0, num_cpus=2)
    try:
        cluster.start()
        env2 = dict(env, RAY_ADDRESS=cluster.address, **cluster.client_env())
        return {f"separate 1 x {args.seconds:g} s, RAY_ADDRESS (running Ray)": _best(
            lambda i: CLI + ["separate", "--oracle", "irm", mix, "-o", os.path.join(work, f"sepr{i}")], env2, work,
            args.repeats)}
    except Exception as exc:  # noqa: BLE001 - the other rows still count
        print(f"the running-Ray row was skipped: {exc}", file=sys.stderr)
        return {}
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
