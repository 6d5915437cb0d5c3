"""Benchmark: museval 0.4.1 vs sepcluster's torch BSS Eval v4 on the same tracks; and the evaluate job on a catalog.

    .venv/bin/python bench/evaluate.py [--seconds 60] [--tracks 1] [--device cpu|cuda] [--json OUT]
    .venv/bin/python bench/evaluate.py --catalog [--catalog-tracks 200] [--catalog-seconds 180]
                                       [--bss-tracks 8] [--rss-tracks 50] [--workdir DIR] [--json OUT]

``--catalog`` (bench/evaluate_catalog.py): a synthetic catalog of 16-bit stereo 44.1 kHz WAV
references and estimates (4 targets) in a temporary folder, evicted from the page cache, then
the evaluate job on a fresh 2-CPU local Ray: ``--metrics sdr,sisdr`` on every track beside a
plain read of the same files (the disk's speed), ``bss`` on ``--bss-tracks`` of them (the
catalog time extrapolated from those, and said so), and the workers' peak RSS with
``--rss-tracks`` against every track. The folder is deleted afterwards.

Each track is stereo with 4 targets (vocals, drums, bass, other), 44.1 kHz: the real MUSDB
sample from ../shared (tiled to the length, each repetition with its own gains so that the
track is not periodic) or, without ../shared, synthetic coloured-noise stems. Estimates are
imperfect (scaled target + delayed copy + leakage of the mixture + noise). Both engines get the
identical arrays and museval's defaults (1 s windows and hops, 512-tap filters).

Prints, per engine, wall and CPU seconds per track-minute, the speed ratio, and the largest
per-frame difference per metric (and whether NaN frames agree). No network needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT.parent / "shared" / "data" / "musdb18-sample" / "train" / "Music Delta - 80s Rock"
SOURCES = ("vocals", "drums", "bass", "other")
RATE = 44100


def make_track(seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """references, estimates: float64 (4, samples, 2); and where the audio comes from."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    if SAMPLE.is_dir():
        import soundfile as sf

        stems = [sf.read(str(SAMPLE / f"{s}.wav"), always_2d=True)[0] for s in SOURCES]
        length = stems[0].shape[0]
        reps = int(np.ceil(n / length))
        refs = np.zeros((4, reps * length, 2))
        for k in range(reps):
            gains = rng.uniform(0.6, 1.2, size=4)
            for j in range(4):
                refs[j, k * length:(k + 1) * length] = gains[j] * stems[j]
        refs = refs[:, :n]
        origin = f"real MUSDB sample tiled to {seconds:g} s"
    else:
        from scipy.signal import lfilter

        refs = np.stack([np.stack([lfilter([1.0], [1.0, -0.6 - 0.1 * j], rng.standard_normal(n)) * 0.1
                                   for _ in range(2)], axis=1) for j in range(4)])
        origin = f"synthetic coloured noise, {seconds:g} s"
    mix = refs.sum(axis=0)
    ests = np.stack([0.7 * refs[j] + 0.2 * np.roll(refs[j], 7 + 5 * j, axis=0) + 0.15 * mix
                     + 0.003 * rng.standard_normal(refs[j].shape) for j in range(4)])
    return refs, ests, origin


def timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def museval_in_fresh_process(seconds: float, seed: int) -> tuple[float, float]:
    """(wall, CPU) seconds of museval on track ``seed`` in a new Python: museval as users run it,
    with the default allocator (this process has sepcluster's kept-heap setting once bss_eval ran)."""
    import subprocess

    code = ("import sys, json, time; sys.path.insert(0, %r); from evaluate import make_track, RATE, timed; "
            "import museval.metrics as mm; r, e, _ = make_track(%r, %d); "
            "_, w, c = timed(lambda: mm.bss_eval(r, e, window=RATE, hop=RATE)); print(json.dumps([w, c]))"
            % (str(Path(__file__).resolve().parent), float(seconds), int(seed)))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    wall, cpu = json.loads(out.strip().splitlines()[-1])
    return wall, cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="track length (default 60)")
    ap.add_argument("--tracks", type=int, default=1, help="number of tracks (default 1)")
    ap.add_argument("--device", default="cpu", help="torch engine device (cpu or cuda)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--skip-museval", action="store_true", help="time the torch engine only")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--catalog", action="store_true", help="the evaluate job on a synthetic catalog instead")
    ap.add_argument("--catalog-tracks", type=int, default=200, help="catalog tracks (default 200)")
    ap.add_argument("--catalog-seconds", type=float, default=180.0, help="catalog track length (default 180)")
    ap.add_argument("--bss-tracks", type=int, default=0,
                    help="tracks scored with bss (default 0: all; fewer prints an extrapolation)")
    ap.add_argument("--cluster", action="store_true",
                    help="with --catalog: also run sdr,sisdr and bss on a local 2-node Ray cluster")
    ap.add_argument("--rss-tracks", type=int, default=50, help="smaller catalog for the RSS comparison (default 50)")
    ap.add_argument("--workdir", default=None, help="where the catalog is written (default: the temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the catalog after the runs (for --reuse)")
    ap.add_argument("--reuse", metavar="DIR", help="run on the catalog a --keep run left in DIR (no writing)")
    args = ap.parse_args(argv)
    if args.catalog:
        from evaluate_catalog import run_catalog

        return run_catalog(args)

    import torch
    import museval.metrics as mm

    from sepcluster.evaluate.bsseval import bss_eval

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"device {args.device}", flush=True)
    # warm-up (first-call allocations, FFT plans)
    r0, e0, _ = make_track(3.0, 99)
    bss_eval(r0, e0, window=RATE, hop=RATE, device=args.device)

    totals = {"museval": [0.0, 0.0], "torch": [0.0, 0.0], "museval_kept_heap": [0.0, 0.0]}
    worst = {m: 0.0 for m in ("SDR", "ISR", "SIR", "SAR")}
    nan_agree = True
    minutes = 0.0
    for k in range(args.tracks):
        refs, ests, origin = make_track(args.seconds, k)
        minutes += refs.shape[1] / RATE / 60.0
        print(f"track {k}: {origin}, 4 targets, stereo", flush=True)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        ours, w, c = timed(lambda: bss_eval(refs, ests, window=RATE, hop=RATE, device=args.device))
        totals["torch"][0] += w
        totals["torch"][1] += c
        print(f"  torch   : {w:8.2f} s wall, {c:8.2f} s CPU", flush=True)
        if args.skip_museval:
            continue
        w, c = museval_in_fresh_process(args.seconds, k)
        totals["museval"][0] += w
        totals["museval"][1] += c
        print(f"  museval : {w:8.2f} s wall, {c:8.2f} s CPU  (own process, default allocator)", flush=True)
        ref, w, c = timed(lambda: mm.bss_eval(refs, ests, window=RATE, hop=RATE))
        totals["museval_kept_heap"][0] += w
        totals["museval_kept_heap"][1] += c
        print(f"  museval : {w:8.2f} s wall, {c:8.2f} s CPU  (this process: glibc keeps freed memory, "
              f"as sepcluster sets it)", flush=True)
        for name, a, b in zip(worst, (ours.sdr, ours.isr, ours.sir, ours.sar), ref[:4]):
            nan_agree &= bool(np.array_equal(np.isnan(a), np.isnan(b)))
            fin = np.isfinite(a) & np.isfinite(b)
            if fin.any():
                worst[name] = max(worst[name], float(np.max(np.abs(a[fin] - b[fin]))))

    res = {"seconds_per_track": args.seconds, "tracks": args.tracks, "device": args.device,
           "torch_threads": torch.get_num_threads(),
           "torch_wall_s_per_track_minute": totals["torch"][0] / minutes,
           "torch_cpu_s_per_track_minute": totals["torch"][1] / minutes}
    print("\nseconds per track-minute (4 stereo targets):")
    print(f"  torch   : {res['torch_wall_s_per_track_minute']:8.2f} wall  {res['torch_cpu_s_per_track_minute']:8.2f} CPU")
    if not args.skip_museval:
        res.update({"museval_wall_s_per_track_minute": totals["museval"][0] / minutes,
                    "museval_cpu_s_per_track_minute": totals["museval"][1] / minutes,
                    "speedup_wall": totals["museval"][0] / totals["torch"][0],
                    "speedup_cpu": totals["museval"][1] / totals["torch"][1],
                    "museval_kept_heap_wall_s_per_track_minute": totals["museval_kept_heap"][0] / minutes,
                    "speedup_wall_vs_museval_kept_heap": totals["museval_kept_heap"][0] / totals["torch"][0],
                    "max_abs_diff_db": worst, "nan_frames_agree": nan_agree})
        print(f"  museval : {res['museval_wall_s_per_track_minute']:8.2f} wall  "
              f"{res['museval_cpu_s_per_track_minute']:8.2f} CPU")
        print(f"  museval with the kept heap: {res['museval_kept_heap_wall_s_per_track_minute']:8.2f} wall")
        print(f"  speed-up vs museval as shipped: {res['speedup_wall']:.1f}x wall, {res['speedup_cpu']:.1f}x CPU; "
              f"vs museval with the same heap setting: {res['speedup_wall_vs_museval_kept_heap']:.1f}x wall")
        print("largest per-frame difference (dB): " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items())
              + f"; NaN frames agree: {nan_agree}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
