"""Benchmark of separate's waveform models per device, batch size and precision (prints figures, no assertions).

Made for a CUDA GPU (run it where one is lent); ``--device cpu --precisions fp32,bf16`` gives the
CPU's bf16 figures (autocast; fp16 is CUDA only).

Models as ``bench/separate.py`` makes them (random weights, saved as each reference saves them): an
HTDemucs of the default demucs size (26.9 M parameters, 7.8 s segments) and a BS-RoFormer of the
published viperx vocals size (160 M parameters, 8 s chunks, num_overlap 2), loaded by sepcluster's
loaders and run by its estimator (``sepcluster.separate.make_estimator``) on one device:

1. speed: realtime factor (seconds of audio per second of wall time, after a warm-up call) on a
   ``--seconds`` stereo track at each batch size of ``--batches`` (chunks per model call; default
   1, 4, 16) and precision of ``--precisions`` (fp32 = strict fp32, TF32 off; bf16 / fp16 = CUDA
   autocast), and the peak GPU memory of that run (``torch.cuda.max_memory_allocated``).
   Target (issue 12): >= 150x realtime for HTDemucs on one H100/H200-class GPU.
2. what a lower precision changes, on real audio: ``../shared``'s MUSDB18 sample mixture (tiled to
   ``--seconds``; a synthetic track where ``../shared`` is absent): the SDR of the bf16 / fp16 stems
   against the fp32 stems of the same batch size (``10 log10(sum s^2 / sum (s - s_hat)^2)`` over all
   stems and channels). With random weights an SDR against the true stems would mean nothing; this
   one says how far autocast moves the output. With trained weights, also score both precisions'
   stems against the references with ``sepcluster evaluate`` (``separate --precision``).

Usage: ``.venv/bin/python bench/separate_gpu.py [--device cuda] [--seconds 60] [--batches 1,4,16]
[--precisions fp32,bf16,fp16] [--kinds htdemucs,bs_roformer] [--json OUT]``. ``--device cpu --quick``
is a smoke run of this script on a machine without a GPU. On the CPU: ``--device cpu --batches 2
--precisions fp32,bf16`` (two chunks at once, sepcluster's CPU default for demucs; a RoFormer runs one).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import separate as bench_separate  # noqa: E402  (bench/separate.py: the models as the references save them)

SR = bench_separate.SR
MUSDB_SAMPLE = ROOT.parent / "shared" / "data" / "musdb18-sample" / "train" / "Music Delta - 80s Rock" / "mixture.wav"


def real_track(seconds: float, audio: str = "") -> tuple[np.ndarray, str]:
    """``(float32 (samples, 2), what it is)``: ``audio`` (default the MUSDB sample mixture) tiled to
    ``seconds``, or a synthetic track where there is none."""
    path = Path(audio) if audio else MUSDB_SAMPLE
    if not path.exists():
        return bench_separate.track(seconds), f"synthetic track ({path} absent)"
    from sepcluster.audio import read_audio

    x, _ = read_audio(str(path), SR)
    frames = int(round(seconds * SR))
    return np.ascontiguousarray(np.resize(x, (frames, x.shape[1]))), f"'{path.parent.name}/{path.name}' tiled"


def load_model(kind: str, tmp: str, quick: bool):
    """The sepcluster model of ``kind`` (htdemucs, bs_roformer), random weights saved as its reference saves them."""
    if kind == "htdemucs":
        from sepcluster.models.demucs import load_demucs

        return load_demucs(bench_separate.make_htdemucs(tmp))
    from sepcluster.models.roformer import load_roformer

    return load_roformer(*bench_separate.make_roformer(tmp, quick))


def run_once(model, x: np.ndarray, device: str, batch: int, precision: str) -> tuple[np.ndarray, float, float]:
    """``(stems (sources, samples, channels), wall seconds, peak GPU GiB or nan)`` of one separation,
    after a warm-up call on the first seconds (kernels, allocator, autotuning)."""
    import torch

    from sepcluster.separate import make_estimator, separate_track

    est = make_estimator(model, device=device, precision=precision, batch_size=batch)
    cuda = device.startswith("cuda")
    separate_track(est, x[: min(len(x), (10 if cuda else 1) * SR)], SR)  # the CPU: one chunk
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = separate_track(est, x, SR)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else float("nan")
    return np.stack([out[o] for o in est.outputs]), wall, peak


def agreement_db(ref: np.ndarray, est: np.ndarray) -> float:
    """SDR of ``est`` against ``ref`` over every sample, stem and channel (inf where equal)."""
    ref = ref.astype(np.float64)
    err = float(np.sum((ref - est) ** 2))
    return math.inf if err == 0 else 10 * math.log10(float(np.sum(ref ** 2)) / err)


def bench_kind(kind: str, x: np.ndarray, args, tmp: str) -> list:
    model = load_model(kind, tmp, args.quick)
    seconds = len(x) / SR
    rows = []
    for batch in args.batches:
        fp32 = None
        for precision in args.precisions:
            stems, wall, peak = run_once(model, x, args.device, batch, precision)
            if precision == "fp32":
                fp32 = stems
            row = {"kind": kind, "batch": batch, "precision": precision, "wall_s": wall,
                   "realtime": seconds / wall, "peak_gpu_gib": peak,
                   "sdr_vs_fp32_db": agreement_db(fp32, stems) if fp32 is not None and precision != "fp32" else None}
            rows.append(row)
            vs = f", SDR vs fp32 {row['sdr_vs_fp32_db']:.1f} dB" if row["sdr_vs_fp32_db"] is not None else ""
            memory = f", peak GPU memory {peak:.2f} GiB" if peak == peak else ""
            print(f"  {kind:12s} batch {batch:2d} {precision}: {row['realtime']:7.3f}x realtime ({wall:.2f} s)"
                  f"{memory}{vs}", flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="torch device (default cuda)")
    p.add_argument("--seconds", type=float, default=60.0, help="track length (default 60 s)")
    p.add_argument("--batches", default="1,4,16", help="chunks per model call (default 1,4,16)")
    p.add_argument("--precisions", default="fp32,bf16,fp16", help="fp32 first, then autocast precisions "
                   "(the CPU: fp32,bf16)")
    p.add_argument("--kinds", default="htdemucs,bs_roformer", help="htdemucs, bs_roformer")
    p.add_argument("--quick", action="store_true", help="smoke run: a small RoFormer (dim 64, depth 1)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--audio", default="", help="stereo mixture to tile (default ../shared's MUSDB18 sample mixture)")
    args = p.parse_args()
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    args.precisions = [q.strip() for q in args.precisions.split(",") if q.strip()]
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("skipped: no CUDA device here (run it on a GPU machine; --device cpu --quick is a smoke run)", flush=True)
        return 0  # `make bench` runs every bench script
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"
    x, what = real_track(args.seconds, args.audio)
    print(f"device: {name}; torch {torch.__version__}; track: {what}, {len(x) / SR:.0f} s stereo", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sepcluster-bench-gpu-") as tmp:
        for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
            rows += bench_kind(kind, x, args, tmp)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
