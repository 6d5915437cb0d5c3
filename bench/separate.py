"""Benchmark: sepcluster separate vs Open-Unmix's ``Separator``, same architecture and weights.

Both sides use the same random umxhq-shaped weights (4 targets, 2049 bins, stereo, hidden
512, 3 LSTM layers, max_bin 1487), ``niter=1``, on CPU, each measurement in a fresh
subprocess (wall time of the separation only, and the process's peak RSS from
``getrusage``):

1. speed on a 1-minute stereo track (``--seconds``): Open-Unmix's Separator as users run it
   (``wiener_win_len=300``) vs ``sepcluster.separate.separate_track`` with its defaults
   (30 s chunks, 3 s cross-fades); realtime factors and the ratio (target >= 1.5x); best of
   ``--repeats`` runs, since the machine may be shared.
2. equality: both sides on the whole track at once (Open-Unmix ``wiener_win_len=None``,
   sepcluster ``chunk_seconds=None``) must give the same stems (max |diff| printed; expected
   ~1e-6), and the two defaults are compared too (SNR; they differ only by the Wiener
   filter's time windows).
3. peak RSS on a ``--rss-minutes`` (default 10) minute track for both (Open-Unmix reads the
   whole file, sepcluster streams it with ``separate_file``), and for sepcluster alone on a
   ``--long-minutes`` (default 60) minute track (target <= 3 GB). Open-Unmix is stopped when
   the machine's available memory falls under ``--min-free-gb`` (its peak is then reported
   as "more than").

Run: ``.venv/bin/python bench/separate.py`` (``--quick`` for a short smoke run). The
openunmix package is a test-only oracle: ``pip install --no-deps openunmix==1.3.0``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ("vocals", "drums", "bass", "other")
SR = 44100
UMXHQ = dict(nb_bins=2049, nb_channels=2, hidden_size=512, nb_layers=3, max_bin=1487)


def synth_block(start: int, frames: int, sr: int = SR) -> np.ndarray:
    """Deterministic music-like stereo audio for samples ``start .. start+frames``."""
    t = (start + np.arange(frames)) / sr
    rng = np.random.default_rng(start)
    chans = []
    for c in range(2):
        phase = 2 * np.pi * 110.0 * (c + 1) * (t - 0.2 / (2 * np.pi * 0.05) * np.cos(2 * np.pi * 0.05 * t))
        tone = 0.25 * np.sin(phase) + 0.1 * np.sin(3 * phase)
        pulse = 0.2 * (np.sin(2 * np.pi * 2.0 * t) > 0.95) * rng.standard_normal(frames)
        chans.append(tone + pulse + 0.02 * rng.standard_normal(frames))
    return np.clip(np.stack(chans, axis=1), -1, 1).astype(np.float32)


def track(seconds: float) -> np.ndarray:
    return synth_block(0, int(round(seconds * SR)))


def write_long_wav(path: str, minutes: float) -> None:
    import soundfile as sf

    total = int(round(minutes * 60 * SR))
    block = SR * 30
    with sf.SoundFile(path, "w", samplerate=SR, channels=2, subtype="PCM_16") as f:
        for start in range(0, total, block):
            f.write(synth_block(start, min(block, total - start)))


def _openunmix():
    import types

    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    import openunmix.model  # noqa: F401

    return openunmix


def make_weights(folder: str) -> str:
    """Random umxhq-shaped Open-Unmix state dicts (seed 0) and the same weights as a bundle."""
    import torch

    from sepcluster.models import BundleMeta, build_model, save_bundle

    openunmix = _openunmix()
    torch.manual_seed(0)
    ours = {}
    for t in TARGETS:
        ref = openunmix.model.OpenUnmix(**UMXHQ)
        torch.save(ref.state_dict(), os.path.join(folder, f"umx-{t}.pth"))
        m = build_model("umx", n_fft=4096, sample_rate=SR, nb_channels=2, hidden_size=512, nb_layers=3)
        m.load_state_dict(ref.state_dict())
        ours[t] = m.eval()
    bundle = os.path.join(folder, "bundle")
    save_bundle(bundle, ours, BundleMeta(model="umx", sample_rate=SR, n_fft=4096, n_hop=1024))
    return bundle


# ---------------------------------------------------------------------------------------
# workers (run in subprocesses)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(args) -> dict:
    import torch

    result: dict = {}
    if args.worker in ("umx", "umx-file"):
        openunmix = _openunmix()
        models = {}
        for t in TARGETS:
            m = openunmix.model.OpenUnmix(**UMXHQ)
            m.load_state_dict(torch.load(os.path.join(args.weights, f"umx-{t}.pth"), weights_only=True))
            models[t] = m.eval()
        win = None if args.win == "none" else int(args.win)
        sep = openunmix.model.Separator(models, niter=1, sample_rate=SR, n_fft=4096, n_hop=1024, nb_channels=2,
                                        wiener_win_len=win)
        sep.freeze()
        if args.worker == "umx":
            x = track(args.seconds)
        else:
            from sepcluster.audio import read_audio

            x, _ = read_audio(args.wav)
        walls = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with torch.no_grad():
                est = sep(torch.from_numpy(np.ascontiguousarray(x.T))[None])
            walls.append(time.perf_counter() - t0)
        result["seconds_audio"] = x.shape[0] / SR
        if args.save:
            np.save(args.save, est[0].numpy().transpose(0, 2, 1))  # (targets, samples, channels)
    else:
        from sepcluster.models import load_bundle
        from sepcluster.separate import make_estimator, separate_file, separate_track

        bundle = load_bundle(args.bundle)
        chunk = None if args.chunk == "none" else float(args.chunk)
        walls = []
        if args.worker == "sep":
            x = track(args.seconds)
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = separate_track(bundle, x, SR, niter=1, chunk_seconds=chunk)
                walls.append(time.perf_counter() - t0)
            result["seconds_audio"] = x.shape[0] / SR
            if args.save:
                np.save(args.save, np.stack([out[t] for t in TARGETS]))
        else:
            est = make_estimator(bundle, niter=1)
            outs = {t: os.path.join(args.outdir, f"{t}.wav") for t in est.outputs}
            t0 = time.perf_counter()
            stats = separate_file(est, args.wav, outs, chunk_seconds=chunk)
            walls.append(time.perf_counter() - t0)
            result["seconds_audio"] = stats.duration
    result["wall"] = walls
    result["max_rss_mb"] = _rss_mb()
    return result


# ---------------------------------------------------------------------------------------
# parent


def run_worker(argv: list, min_free_gb: float) -> dict:
    """Run a worker subprocess; stop it if the machine's available memory gets low."""
    cmd = [sys.executable, os.path.abspath(__file__), *argv]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = {"killed": False, "peak": 0.0}

    def watch():
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            state["peak"] = max(state["peak"], int(line.split()[1]) / 1024.0)
                with open("/proc/meminfo") as f:
                    info = {ln.split(":")[0]: int(ln.split()[1]) for ln in f}
                if info.get("MemAvailable", 1 << 40) / 1024 / 1024 < min_free_gb:
                    state["killed"] = True
                    proc.kill()
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    out, err = proc.communicate()
    th.join()
    if state["killed"]:
        return {"killed": True, "max_rss_mb": state["peak"]}
    if proc.returncode != 0:
        raise RuntimeError(f"worker {argv} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="track length of the speed comparison")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side (best is kept)")
    p.add_argument("--rss-minutes", type=float, default=10.0, help="track length of the RSS comparison (0: skip)")
    p.add_argument("--long-minutes", type=float, default=60.0, help="sepcluster-only RSS track length (0: skip)")
    p.add_argument("--min-free-gb", type=float, default=3.0, help="stop Open-Unmix below this available memory")
    p.add_argument("--quick", action="store_true", help="smoke run: 10 s track, 1 repeat, 1 and 2 minute RSS")
    p.add_argument("--json", help="also write the figures to this JSON file")
    # worker mode (internal)
    p.add_argument("--worker", choices=["umx", "umx-file", "sep", "sep-file"], help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--bundle", help=argparse.SUPPRESS)
    p.add_argument("--win", default="300", help=argparse.SUPPRESS)
    p.add_argument("--chunk", default="30", help=argparse.SUPPRESS)
    p.add_argument("--wav", help=argparse.SUPPRESS)
    p.add_argument("--outdir", help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if args.quick:
        args.seconds, args.repeats, args.rss_minutes, args.long_minutes = 10.0, 1, 1.0, 2.0

    import torch

    figures: dict = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="sepcluster-bench-") as tmp:
        bundle = make_weights(tmp)
        common = ["--weights", tmp, "--bundle", bundle, "--seconds", str(args.seconds)]
        one = ["--repeats", "1"]
        print(f"speed: {args.seconds:.0f} s stereo track, niter=1, CPU ({figures['torch_threads']} threads), "
              f"best of {args.repeats}", flush=True)
        # alternate the two sides, one timed run per subprocess, so both see the same machine load
        ref: dict = {"wall": []}
        ours: dict = {"wall": []}
        for r in range(args.repeats):
            save_ref = ["--save", os.path.join(tmp, "umx300.npy")] if r == 0 else []
            save_ours = ["--save", os.path.join(tmp, "sep30.npy")] if r == 0 else []
            got = run_worker(["--worker", "umx", "--win", "300", *save_ref, *common, *one], args.min_free_gb)
            ref = {**got, "wall": ref["wall"] + got["wall"]}
            got = run_worker(["--worker", "sep", "--chunk", "30", *save_ours, *common, *one], args.min_free_gb)
            ours = {**got, "wall": ours["wall"] + got["wall"]}
        rt_ref = ref["seconds_audio"] / min(ref["wall"])
        rt_ours = ours["seconds_audio"] / min(ours["wall"])
        figures["speed"] = {"seconds": args.seconds, "openunmix_wall": ref["wall"], "sepcluster_wall": ours["wall"],
                            "openunmix_realtime": rt_ref, "sepcluster_realtime": rt_ours,
                            "ratio": rt_ours / rt_ref, "openunmix_rss_mb": ref["max_rss_mb"],
                            "sepcluster_rss_mb": ours["max_rss_mb"]}
        print(f"  openunmix Separator (wiener_win_len=300): {rt_ref:6.2f}x realtime  (walls {_fmt(ref['wall'])})")
        print(f"  sepcluster separate_track (30 s chunks):  {rt_ours:6.2f}x realtime  (walls {_fmt(ours['wall'])})")
        print(f"  ratio sepcluster / openunmix: {rt_ours / rt_ref:.2f}x (target >= 1.5x)", flush=True)

        # equality: same algorithm on the whole track
        ref_all = run_worker(["--worker", "umx", "--win", "none", "--save", os.path.join(tmp, "umxall.npy"),
                              *common, *one], args.min_free_gb)
        ours_all = run_worker(["--worker", "sep", "--chunk", "none", "--save", os.path.join(tmp, "sepall.npy"),
                               *common, *one], args.min_free_gb)
        a, b = np.load(os.path.join(tmp, "umxall.npy")), np.load(os.path.join(tmp, "sepall.npy"))
        d300, d30 = np.load(os.path.join(tmp, "umx300.npy")), np.load(os.path.join(tmp, "sep30.npy"))
        max_diff = float(np.abs(a - b).max())
        snr_defaults = [float(10 * np.log10(np.sum(d300[i] ** 2) / np.sum((d300[i] - d30[i]) ** 2)))
                        for i in range(len(TARGETS))]
        figures["equality"] = {"whole_track_max_abs_diff": max_diff, "peak": float(np.abs(a).max()),
                               "defaults_snr_db": dict(zip(TARGETS, snr_defaults)),
                               "whole_track_walls": {"openunmix": ref_all["wall"], "sepcluster": ours_all["wall"]}}
        print(f"equality, whole track at once (openunmix wiener_win_len=None vs sepcluster chunk_seconds=None): "
              f"max |diff| = {max_diff:.2e} (peak {np.abs(a).max():.2f}) -> "
              f"{'OK' if max_diff <= 1e-4 * np.abs(a).max() else 'DIFFERENT'}")
        print("  defaults (300-frame Wiener windows vs 30 s chunks), SNR dB: "
              + ", ".join(f"{t} {v:.1f}" for t, v in zip(TARGETS, snr_defaults)), flush=True)

        if args.rss_minutes > 0:
            wav = os.path.join(tmp, "rss.wav")
            write_long_wav(wav, args.rss_minutes)
            os.makedirs(os.path.join(tmp, "o1"), exist_ok=True)
            ours_f = run_worker(["--worker", "sep-file", "--wav", wav, "--outdir", os.path.join(tmp, "o1"), *common],
                                args.min_free_gb)
            ref_f = run_worker(["--worker", "umx-file", "--wav", wav, *common, *one], args.min_free_gb)
            figures["rss"] = {"minutes": args.rss_minutes, "sepcluster_mb": ours_f["max_rss_mb"],
                              "sepcluster_wall": ours_f["wall"], "openunmix_mb": ref_f["max_rss_mb"],
                              "openunmix_killed": bool(ref_f.get("killed")), "openunmix_wall": ref_f.get("wall")}
            more = "more than " if ref_f.get("killed") else ""
            stopped = " (stopped: the machine ran low on memory)" if ref_f.get("killed") else ""
            print(f"peak RSS, {args.rss_minutes:g}-minute stereo track: "
                  f"openunmix {more}{ref_f['max_rss_mb'] / 1024:.2f} GB{stopped}, "
                  f"sepcluster {ours_f['max_rss_mb'] / 1024:.2f} GB "
                  f"({args.rss_minutes * 60 / ours_f['wall'][0]:.2f}x realtime)", flush=True)
            os.unlink(wav)
        if args.long_minutes > 0:
            wav = os.path.join(tmp, "long.wav")
            write_long_wav(wav, args.long_minutes)
            os.makedirs(os.path.join(tmp, "o2"), exist_ok=True)
            long = run_worker(["--worker", "sep-file", "--wav", wav, "--outdir", os.path.join(tmp, "o2"), *common],
                              args.min_free_gb)
            figures["long"] = {"minutes": args.long_minutes, "sepcluster_mb": long["max_rss_mb"],
                               "sepcluster_wall": long["wall"]}
            print(f"peak RSS, {args.long_minutes:g}-minute stereo track: sepcluster {long['max_rss_mb'] / 1024:.2f} GB "
                  f"(target <= 3 GB; {args.long_minutes * 60 / long['wall'][0]:.2f}x realtime)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


def _fmt(walls) -> str:
    return ", ".join(f"{w:.1f}s" for w in walls)


if __name__ == "__main__":
    sys.exit(main())
