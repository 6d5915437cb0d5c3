"""The Ray paths of separate and train on a GPU (prints figures; no assertions).

Made for a lent GPU machine (``bench/gpu_check.sh`` runs it there with the Ray and MLflow that
``bench/gpu_wheels.sh`` packs); ``--device cpu`` is a smoke run of this script anywhere.

1. ``separate``: ``sepcluster.separate.separate`` (the Ray Data catalog pipeline, its actor pool and
   resume) over ``--tracks`` stereo tracks of ``--seconds`` (the MUSDB18 sample mixture tiled, else
   a synthetic track) with an HTDemucs of the default demucs size (random weights, saved as demucs
   saves it), once per value of ``--gpus-per-actor`` (1: one actor per GPU; 0.5: two actors packed
   on each GPU), at ``--precision`` and ``--batch-size``. Printed per run: tracks done / failed,
   wall time, seconds of audio per second of wall time over the whole catalog (model loading and
   Ray start-up included), and from the catalog rows which worker process and which GPU made
   each track (two workers on one GPU is the packing).
2. ``train``: ``sepcluster.train.train`` of the HTDemucs demo config (``demo_htdemucs.yaml``) on a
   synthetic stem library, one Ray Train worker on the GPU (``use_gpu``: Ray Train's process
   group, NCCL) at ``--train-precision``: the backend, device and precision the worker recorded,
   and samples/s per epoch (``bench/train.py --sections gpu`` gives the model's own samples/s and
   GPU memory).

Usage: ``python bench/gpu_ray.py [--sections separate,train] [--device cuda] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("SEPCLUSTER_NO_PROGRESS", "1")
import separate as bench_separate  # noqa: E402  (bench/separate.py: models as the references save them)
import separate_gpu  # noqa: E402  (bench/separate_gpu.py: the real track)

SR = bench_separate.SR


def bench_separate_catalog(args, work: str) -> list:
    """One catalog run per ``--gpus-per-actor`` value; their figures."""
    import soundfile as sf

    from sepcluster.separate import catalog
    from sepcluster.separate.pipeline import separate

    x, what = separate_gpu.real_track(args.seconds, args.audio)
    src = os.path.join(work, "catalog")
    os.makedirs(src, exist_ok=True)
    for i in range(args.tracks):  # distinct tracks: each starts at another place of the mixture
        sf.write(os.path.join(src, f"track{i:02d}.wav"), np.roll(x, i * SR, axis=0), SR, subtype="FLOAT")
    th = bench_separate.make_htdemucs(work)
    print(f"  {args.tracks} tracks of {args.seconds:g} s ({what}), HTDemucs default size, random weights", flush=True)
    results = []
    shares = [float(g) for g in args.gpus_per_actor.split(",")] if args.device == "cuda" else [1.0]
    for share in shares:
        out = os.path.join(work, f"out-{share:g}")
        started = time.perf_counter()
        summary = separate(model=th, input=src, out=out, device=args.device, gpus_per_actor=share,
                           precision=args.precision, batch_chunks=args.batch_size, format="wav", bits=16)
        wall = time.perf_counter() - started
        rows = [r for r in catalog.read_rows(out) if r["target"] == "vocals"]
        per_worker = collections.Counter((r["worker"], r["device"]) for r in rows)
        res = {"gpus_per_actor": share, "tracks_done": summary.tracks_done, "tracks_failed": summary.tracks_failed,
               "wall_s": wall, "audio_s": summary.audio_seconds, "realtime": summary.audio_seconds / wall,
               "workers": {f"{w} {d}": n for (w, d), n in sorted(per_worker.items())},
               "errors": [e for _, e in summary.errors][:3]}
        results.append(res)
        print(f"  --gpus-per-actor {share:g}: {summary.tracks_done} done, {summary.tracks_failed} failed in {wall:.1f} s "
              f"= {res['realtime']:.1f}x realtime over the catalog (start-up and model loading included); "
              f"tracks per worker: {res['workers']}" + (f"; errors {res['errors']}" if res["errors"] else ""),
              flush=True)
    return results


def bench_train(args, work: str) -> dict:
    """The HTDemucs demo config on one Ray Train GPU worker."""
    import torch

    from sepcluster.stems.synth import synthesize_library
    from sepcluster.train import train

    lib = os.path.join(work, "lib")
    synthesize_library(lib, songs=6, seconds=12.0, seed=5, sample_rate=44100)
    cfg = str(ROOT / "sepcluster" / "train" / "demo_htdemucs.yaml")
    gpu = args.device == "cuda"
    overrides = {"precision": args.train_precision} if gpu else {}
    started = time.perf_counter()
    result = train(lib, ["vocals", "drums", "bass", "other"], cfg, num_workers=1, use_gpu=gpu,
                   run_name="gpu-ray-train", storage_path=os.path.join(work, "runs"), out=os.path.join(work, "htdemucs"),
                   epochs=args.epochs, samples_per_epoch=args.samples, diagnostics_every=0, **overrides)
    wall = time.perf_counter() - started
    r = next(iter(result.targets.values()))
    attempt = r.attempts[0] if r.attempts else {}
    rates = [round(h["samples_per_s"], 1) for h in r.history]
    res = {"backend": attempt.get("backend"), "device": attempt.get("device"), "precision": attempt.get("precision"),
           "samples_per_s": rates, "epochs": r.epoch, "finished": r.finished, "wall_s": wall}
    print(f"  HTDemucs demo config, 1 worker: backend {res['backend']}, device {res['device']}, precision "
          f"{res['precision']}; {r.epoch} epochs, samples/s {rates}; {wall:.1f} s in all "
          f"(torch {torch.__version__})", flush=True)
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="separate,train")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--audio", default="", help="the mixture to tile (default: the MUSDB18 sample in ../shared)")
    parser.add_argument("--gpus-per-actor", default="1,0.5", help="comma-separated values, one catalog run each")
    parser.add_argument("--precision", default="bf16", help="separate's --precision")
    parser.add_argument("--batch-size", type=int, default=8, help="separate's --batch-size (chunks per model call)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=256, help="training samples per epoch")
    parser.add_argument("--train-precision", default="bf16")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if args.device != "cuda":
        args.precision = "fp32"
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="sepcluster-gpu-ray-") as work:
        os.environ["SEPCLUSTER_HOME"] = os.path.join(work, "home")
        os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + os.path.join(work, "home", "mlflow.db")
        sections = [s.strip() for s in args.sections.split(",") if s.strip()]
        for name, fn in (("separate", bench_separate_catalog), ("train", bench_train)):
            if name not in sections:
                continue
            print(f"== {name} through Ray on {args.device}", flush=True)
            try:
                out[name] = fn(args, work)
            except Exception as exc:  # noqa: BLE001 - report and go on to the next section
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"  {name} failed: {out[name]['error']}", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0 if all("error" not in v for v in out.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
