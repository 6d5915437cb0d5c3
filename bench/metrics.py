"""Benchmark: whole-track global SDR + SI-SDR (sepcluster.evaluate.metrics) at catalog scale.

    .venv/bin/python bench/metrics.py [--seconds 180] [--targets 4] [--repeat 5] [--no-read] [--fresh-heap]
                                      [--json OUT]

One synthetic stereo 44.1 kHz track (coloured noise stems, imperfect estimates: scaled target +
leakage + noise), float32 as decoded audio is, scored ``--repeat`` times by
``metrics.track_scores`` (both metrics in one pass, float64 accumulation). Side by side:

- the plain formulas as demucs and MSST evaluate them (whole arrays cast to float64, then
  ``sum(s^2)``, ``sum((s - s_hat)^2)`` and the SI-SDR projection): same numbers, more memory;
- reading the same audio back from 16-bit WAV files (MUSDB18-HQ's format) with soundfile, from
  the page cache: the fastest a catalog on disk can deliver it.

The process keeps freed memory (``sepcluster.memory.keep_freed_memory``, as the evaluate job
does), so that the whole-array comparisons are not timed on page faults (``--fresh-heap``: not).
sepcluster's pass allocates 192 KiB. Prints wall and CPU time per track, tracks/s and MB/s of
float32 input (references + estimates), and the ratios. No network needed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATE = 44100
SOURCES = ("vocals", "drums", "bass", "other", "piano", "guitar")


def make_track(seconds: float, ntargets: int, seed: int = 0) -> tuple[dict, dict]:
    """references, estimates: target -> float32 (samples, 2)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    names = SOURCES[:ntargets] if ntargets <= len(SOURCES) else [f"s{i}" for i in range(ntargets)]
    refs = {t: lfilter([0.1], [1.0, -0.6 - 0.05 * j], rng.standard_normal((n, 2), dtype=np.float32),
                       axis=0).astype(np.float32) for j, t in enumerate(names)}
    mix = sum(refs.values())
    ests = {t: (0.8 * r + 0.1 * mix + 0.01 * rng.standard_normal(r.shape, dtype=np.float32)).astype(np.float32)
            for t, r in refs.items()}
    return refs, ests


def plain_formulas(refs: dict, ests: dict) -> dict:
    """demucs' new_sdr and MSST's si_sdr as written: whole arrays in float64."""
    out = {}
    for t, r in refs.items():
        s, x = r.astype(np.float64), ests[t].astype(np.float64)
        usdr = 10 * np.log10((np.sum(s ** 2) + 1e-7) / (np.sum((s - x) ** 2) + 1e-7))
        alpha = np.sum(x * s) / np.sum(s ** 2)
        sisdr = 10 * np.log10(np.sum((alpha * s) ** 2) / np.sum((alpha * s - x) ** 2))
        out[t] = (usdr, sisdr)
    return out


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, its CPU seconds, last result)."""
    best, cpu, res = float("inf"), 0.0, None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        res = fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        if w < best:
            best, cpu = w, c
    return best, cpu, res


def read_back(refs: dict, ests: dict, repeat: int) -> tuple[float, float]:
    """Write the track as 16-bit WAVs, read it back as float32: (best wall, its CPU seconds)."""
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for kind, store in (("ref", refs), ("est", ests)):
            for t, a in store.items():
                p = Path(tmp) / f"{kind}-{t}.wav"
                sf.write(str(p), np.clip(a, -1, 1), RATE, subtype="PCM_16")
                paths.append(p)
        wall, cpu, _ = timed(lambda: [sf.read(str(p), dtype="float32", always_2d=True) for p in paths], repeat)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--targets", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-read", action="store_true", help="skip the WAV read-back comparison")
    ap.add_argument("--fresh-heap", action="store_true", help="do not keep freed memory (glibc default)")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()

    from sepcluster.evaluate import metrics
    from sepcluster.memory import keep_freed_memory

    if not args.fresh_heap:
        keep_freed_memory()

    refs, ests = make_track(args.seconds, args.targets)
    mb = sum(a.nbytes for a in (*refs.values(), *ests.values())) / 1e6
    print(f"track: {args.seconds:g} s stereo {RATE} Hz, {args.targets} targets, float32: {mb:.0f} MB of "
          f"references + estimates; best of {args.repeat}")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the synthetic track needs no adjustment
        wall, cpu, df = timed(lambda: metrics.track_scores(refs, ests), args.repeat)
    pw, pc, plain = timed(lambda: plain_formulas(refs, ests), max(1, args.repeat // 2))
    diff = max(max(abs(df.set_index("target").loc[t, "uSDR"] - u), abs(df.set_index("target").loc[t, "SI-SDR"] - s))
               for t, (u, s) in plain.items())
    rows = {"sepcluster": (wall, cpu), "plain formulas (float64 arrays)": (pw, pc)}
    if not args.no_read:
        rows["read 16-bit WAVs (page cache)"] = read_back(refs, ests, max(1, args.repeat // 2))
    print(f"{'':34s} {'wall ms':>9s} {'cpu ms':>9s} {'tracks/s':>9s} {'MB/s':>8s}")
    for name, (w, c) in rows.items():
        print(f"{name:34s} {w * 1e3:9.1f} {c * 1e3:9.1f} {1 / w:9.2f} {mb / w:8.0f}")
    print(f"sepcluster vs plain formulas: {pw / wall:.1f}x faster; largest difference {diff:.2e} dB")
    if "read 16-bit WAVs (page cache)" in rows:
        rw = rows["read 16-bit WAVs (page cache)"][0]
        print(f"scoring takes {wall / rw:.2f}x the time of reading the same audio from the page cache")
    print(df.to_string(index=False))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "seconds": args.seconds, "targets": args.targets, "mb": mb,
            **{name: {"wall_s": w, "cpu_s": c, "tracks_per_s": 1 / w, "mb_per_s": mb / w}
               for name, (w, c) in rows.items()},
            "max_abs_diff_db": diff}, indent=2))


if __name__ == "__main__":
    main()
