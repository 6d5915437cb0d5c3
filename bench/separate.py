"""Benchmark: sepcluster separate vs the references, same architecture and weights, each side in its own process.

Three parts (``--parts``, default all), CPU, random weights, wall time of the separation only and the
process's peak RSS (``getrusage``; the parent also samples VmRSS):

``umx``: Open-Unmix's ``Separator`` (random umxhq-shaped weights: 4 targets, 2049 bins, stereo,
hidden 512, 3 LSTM layers, max_bin 1487), ``niter=1``:

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

``demucs``: an HTDemucs of the default demucs size (26.9 M parameters; htdemucs' 7.8 s segment),
saved as demucs saves it, vs ``demucs.apply.apply_model(shifts=0, split=True, overlap=0.25)`` on
the model demucs' own loader reads back (``torch.no_grad``, torch's default threads):

1. speed and equality on a ``--demucs-seconds`` track (default 20 s: 4 chunks), best of
   ``--repeats``, sides alternating; sepcluster with its CPU defaults (two chunks at once, one
   intra-op thread each); realtime factors, ratio (target >= 1.3x) and max |diff|.
2. peak RSS on ``--rss-minutes`` (demucs holds the whole track, and only if memory allows) and
   ``--long-minutes`` (sepcluster, streaming the file) tracks. A full-size model runs at about
   1x realtime on 2 cores, so these runs are cut short after ``--stop-chunks`` chunks: the
   streaming engine has reached its steady state by then (its buffers do not grow with the
   track: tests/separate/test_waveform_engine.py), while demucs' whole-track output buffers
   fill as it goes, so its figure is a lower bound ("at least").

``--precision bf16``: sepcluster's side of the demucs and roformer parts runs with bf16 autocast (the
references stay fp32, so the ratio includes bf16's speed-up and max |diff| is bf16's rounding).

``roformer``: a BS-RoFormer of the published size of MSST's viperx vocals model
(configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml: dim 512, depth 12, 62 bands, STFT
2048/441, chunk 352800 = 8 s, num_overlap 2, target vocals; 160 M parameters) with
``inference.batch_size`` 1 instead of 4 (time on 2 cores), vs MSST's own ``demix`` and model
class (the ``msst`` package): speed and equality on a ``--roformer-seconds`` track (default 4 s: one
chunk, about a minute of CPU per side), peak RSS like the demucs part (cut after
``--roformer-stop-chunks``; sepcluster on the ``--long-minutes`` track only).

Run: ``.venv/bin/python bench/separate.py`` (``--quick`` for a short smoke run with smaller
RoFormer dims). Test-only oracles: ``pip install --no-deps openunmix==1.3.0``; demucs 4.1.0 and
omegaconf; ``pip install --no-deps msst==0.1.0`` and ``ml-collections``.
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


def long_wav(tmp: str, minutes: float) -> str:
    """The ``minutes``-long test WAV in ``tmp``, written once and shared by the parts."""
    path = os.path.join(tmp, f"long-{minutes:g}min.wav")
    if not os.path.exists(path):
        write_long_wav(path, minutes)
    return path


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
    if args.worker in WAVEFORM_WORKERS:
        return waveform_worker(args)
    return umx_worker(args)


def umx_worker(args) -> dict:
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




# --- waveform models (demucs, MSST RoFormer)

WAVEFORM_WORKERS = ("demucs-ref", "demucs-sep", "msst-ref", "msst-sep")
HTDEMUCS_SOURCES = ["drums", "bass", "other", "vocals"]
VIPERX_BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)


class _Stop(Exception):
    """Raised when the model is about to see more than ``--stop-after`` chunks (RSS runs)."""


def _stop_after(modules, n: int) -> list:
    """Cut the run short once the models have been given more than ``n`` chunks; returns the count."""
    seen = [0]

    def hook(module, inputs):
        seen[0] += int(inputs[0].shape[0])
        if seen[0] > n:
            raise _Stop()

    for m in modules:
        m.register_forward_pre_hook(hook)
    return seen


def make_htdemucs(folder: str) -> str:
    """A default-size HTDemucs (htdemucs' segment 7.8 s), random weights, saved as demucs saves it."""
    from fractions import Fraction

    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.states import serialize_model
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    model = HTDemucs(sources=HTDEMUCS_SOURCES, segment=Fraction(39, 5))
    path = os.path.join(folder, "htdemucs.th")
    torch.save(serialize_model(model, OmegaConf.create({"seed": 0})), path)
    return path


def make_roformer(folder: str, quick: bool) -> tuple:
    """A BS-RoFormer of viperx's published vocals config (module docstring; ``quick``: dim 64, depth 1),
    random weights: ``(checkpoint, config)`` as MSST saves them."""
    import torch

    from sepcluster.models.roformer_nets import MSSTBSRoformer

    dim, depth = (64, 1) if quick else (512, 12)
    model = dict(dim=dim, depth=depth, stereo=True, num_stems=1, time_transformer_depth=1, freq_transformer_depth=1,
                 linear_transformer_depth=0, freqs_per_bands=VIPERX_BANDS, dim_head=64, heads=8, attn_dropout=0.1,
                 ff_dropout=0.1, flash_attn=True, dim_freqs_in=1025, stft_n_fft=2048, stft_hop_length=441,
                 stft_win_length=2048, stft_normalized=False, mask_estimator_depth=2,
                 multi_stft_resolution_loss_weight=1.0, multi_stft_hop_size=147, multi_stft_normalized=False,
                 multi_stft_resolutions_window_sizes=(4096, 2048, 1024, 512, 256))
    torch.manual_seed(0)
    net = MSSTBSRoformer(**model)
    ckpt, config = os.path.join(folder, "bs_roformer.ckpt"), os.path.join(folder, "bs_roformer.yaml")
    torch.save(net.state_dict(), ckpt)
    lines = ["audio:", "  chunk_size: 352800", "  num_channels: 2", "  sample_rate: 44100", "model:"]
    for key, value in model.items():
        if isinstance(value, tuple):
            lines += [f"  {key}: !!python/tuple"] + [f"  - {v}" for v in value]
        else:
            lines.append(f"  {key}: {json.dumps(value)}")
    lines += ["training:", "  instruments: [vocals, other]", "  target_instrument: vocals", "  use_amp: true",
              "inference:", "  batch_size: 1", "  num_overlap: 2"]
    with open(config, "w") as f:
        f.write("\n".join(lines) + "\n")
    return ckpt, config


def _load_side(args):
    """``(run(x or None) -> (sources, samples, channels) or None, models)`` of a waveform worker."""
    import torch

    if args.worker == "demucs-ref":
        from demucs.apply import apply_model
        from demucs.states import load_model

        model = load_model(args.model).eval()

        def run(x):
            with torch.no_grad():
                out = apply_model(model, torch.from_numpy(np.ascontiguousarray(x.T))[None], shifts=0, split=True,
                                  overlap=0.25)[0]
            return out.numpy().transpose(0, 2, 1)
        return run, [model]
    if args.worker == "msst-ref":
        from ml_collections import ConfigDict
        from msst.models.bs_roformer.bs_roformer import BSRoformer
        from msst.utils.model_utils import demix

        from sepcluster.models.safeload import load_yaml_tuples

        cfg = ConfigDict(load_yaml_tuples(args.config))
        model = BSRoformer(**dict(cfg.model)).eval()
        model.load_state_dict(torch.load(args.model, weights_only=True))

        def run(x):
            out = demix(cfg, model, np.ascontiguousarray(x.T), "cpu", "bs_roformer")
            return np.stack([v.T for v in out.values()])
        return run, [model]
    from sepcluster.separate import make_estimator, separate_file, separate_track

    if args.worker == "demucs-sep":
        from sepcluster.models.demucs import load_demucs

        est = make_estimator(load_demucs(args.model), workers=args.workers, precision=args.precision)
    else:
        from sepcluster.models.roformer import load_roformer

        est = make_estimator(load_roformer(args.model, args.config), workers=args.workers, precision=args.precision)

    def run(x):
        if x is None:  # stream the file
            outs = {o: os.path.join(args.outdir, f"{o}.wav") for o in est.outputs}
            separate_file(est, args.wav, outs)
            return None
        out = separate_track(est, x, SR)
        return np.stack([out[o] for o in est.outputs])
    return run, est.models


def waveform_worker(args) -> dict:
    """One side of the demucs / RoFormer parts: speed (``--seconds``) or a file (``--wav``, cut short
    after ``--stop-after`` chunks)."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    run, models = _load_side(args)
    seen = _stop_after(models, args.stop_after) if args.stop_after else None
    if args.wav:
        streaming = args.worker.endswith("-sep")
        if streaming:
            x, seconds = None, None
        else:  # the references hold the whole track
            from sepcluster.audio import read_audio

            x, _ = read_audio(args.wav)
            seconds = x.shape[0] / SR
    else:
        x = track(args.seconds)
        seconds = x.shape[0] / SR
    result: dict = {"seconds_audio": seconds}
    t0 = time.perf_counter()
    try:
        out = run(x)
        result["stopped"] = False
    except _Stop:
        out, result["stopped"] = None, True
    result["wall"] = [time.perf_counter() - t0]
    result["chunks"] = min(seen[0], args.stop_after) if seen else None  # chunks the model was allowed to run
    if args.save and out is not None:
        np.save(args.save, out)
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


def umx_part(args, tmp: str, figures: dict) -> None:
    """Open-Unmix's Separator vs separate_track / separate_file (module docstring)."""
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
        wav = long_wav(tmp, args.rss_minutes)
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
    if args.long_minutes > 0:
        wav = long_wav(tmp, args.long_minutes)
        os.makedirs(os.path.join(tmp, "o2"), exist_ok=True)
        long = run_worker(["--worker", "sep-file", "--wav", wav, "--outdir", os.path.join(tmp, "o2"), *common],
                          args.min_free_gb)
        figures["long"] = {"minutes": args.long_minutes, "sepcluster_mb": long["max_rss_mb"],
                           "sepcluster_wall": long["wall"]}
        print(f"peak RSS, {args.long_minutes:g}-minute stereo track: sepcluster {long['max_rss_mb'] / 1024:.2f} GB "
              f"(target <= 3 GB; {args.long_minutes * 60 / long['wall'][0]:.2f}x realtime)", flush=True)


def _speed(name: str, ref_w: str, sep_w: str, common: list, seconds: float, repeats: int, tmp: str,
           min_free_gb: float) -> dict:
    """Alternate the two sides (one timed run per subprocess); realtime factors, ratio, max |diff|."""
    ref: dict = {"wall": []}
    ours: dict = {"wall": []}
    saves = {w: os.path.join(tmp, f"{w}.npy") for w in (ref_w, sep_w)}
    for r in range(repeats):
        for w, acc in ((ref_w, ref), (sep_w, ours)):
            got = run_worker(["--worker", w, "--seconds", str(seconds), *common,
                              *(["--save", saves[w]] if r == 0 else [])], min_free_gb)
            acc.update({**got, "wall": acc["wall"] + got["wall"]})
    a, b = np.load(saves[ref_w]), np.load(saves[sep_w])
    fig = {"seconds": seconds, "reference_wall": ref["wall"], "sepcluster_wall": ours["wall"],
           "reference_realtime": seconds / min(ref["wall"]), "sepcluster_realtime": seconds / min(ours["wall"]),
           "max_abs_diff": float(np.abs(a - b).max()), "peak": float(np.abs(a).max()),
           "reference_rss_mb": ref["max_rss_mb"], "sepcluster_rss_mb": ours["max_rss_mb"]}
    fig["ratio"] = fig["sepcluster_realtime"] / fig["reference_realtime"]
    print(f"  {name}: {fig['reference_realtime']:6.3f}x realtime  (walls {_fmt(ref['wall'])}, "
          f"peak RSS {ref['max_rss_mb'] / 1024:.2f} GB)")
    print(f"  sepcluster separate_track: {fig['sepcluster_realtime']:6.3f}x realtime  (walls {_fmt(ours['wall'])}, "
          f"peak RSS {ours['max_rss_mb'] / 1024:.2f} GB)")
    print(f"  ratio sepcluster / reference: {fig['ratio']:.2f}x; equal output: max |diff| = {fig['max_abs_diff']:.2e} "
          f"(peak {fig['peak']:.2f})", flush=True)
    return fig


def _rss(name: str, ref_w: str, sep_w: str, common: list, args, tmp: str, stop: int, sep_short: bool = True) -> dict:
    """Peak RSS: the reference on ``--rss-minutes`` (whole track in memory), sepcluster streaming
    ``--long-minutes`` (and with ``sep_short`` ``--rss-minutes``) files; every run cut short after
    ``stop`` chunks."""
    out: dict = {}
    short = (sep_w, ref_w) if sep_short else (ref_w,)
    for minutes, sides in ((args.rss_minutes, short), (args.long_minutes, (sep_w,))):
        if minutes <= 0:
            continue
        wav = long_wav(tmp, minutes)
        outdir = os.path.join(tmp, f"out-{sep_w}-{minutes:g}")
        os.makedirs(outdir, exist_ok=True)
        for w in sides:
            got = run_worker(["--worker", w, "--wav", wav, "--outdir", outdir, "--stop-after", str(stop), *common],
                             args.min_free_gb)
            side = "reference" if w == ref_w else "sepcluster"
            out[f"{side}_{minutes:g}min"] = got
            if got.get("killed"):
                what = f"more than {got['max_rss_mb'] / 1024:.2f} GB (stopped: the machine ran low on memory)"
            else:
                bound = "at least " if side == "reference" and got.get("stopped") else ""
                what = (f"{bound}{got['max_rss_mb'] / 1024:.2f} GB after {got.get('chunks')} chunks "
                        f"in {got['wall'][0]:.0f} s" + (", cut short" if got.get("stopped") else ""))
            label = name if side == "reference" else "sepcluster (streaming the file)"
            print(f"  peak RSS, {minutes:g}-minute stereo track, {label}: {what}", flush=True)
    return out


def demucs_part(args, tmp: str, figures: dict) -> None:
    """A default-size HTDemucs vs demucs' apply_model (module docstring)."""
    model = make_htdemucs(tmp)
    common = ["--model", model, "--precision", args.precision]
    print(f"HTDemucs (default size, 26.9 M parameters, 7.8 s segments), CPU "
          f"({figures['torch_threads']} threads): {args.demucs_seconds:g} s track, best of {args.repeats}", flush=True)
    figures["demucs"] = {"speed": _speed("demucs apply_model (split, overlap 0.25)", "demucs-ref", "demucs-sep",
                                         common, args.demucs_seconds, args.repeats, tmp, args.min_free_gb)}
    print("  (target >= 1.3x)", flush=True)
    figures["demucs"]["rss"] = _rss("demucs apply_model (whole track in memory)", "demucs-ref", "demucs-sep", common,
                                    args, tmp, args.stop_chunks)


def roformer_part(args, tmp: str, figures: dict) -> None:
    """A published-size BS-RoFormer vs MSST's demix (module docstring)."""
    import importlib.util

    if importlib.util.find_spec("msst") is None:
        print("roformer part skipped: the msst package (test-only oracle) is not installed", flush=True)
        return
    ckpt, config = make_roformer(tmp, args.quick)
    common = ["--model", ckpt, "--config", config, "--precision", args.precision]
    size = "dim 64, depth 1 (--quick)" if args.quick else "viperx ep_317 size: dim 512, depth 12, 160 M parameters"
    print(f"BS-RoFormer ({size}; chunk 8 s, num_overlap 2, inference.batch_size 1), CPU: "
          f"{args.roformer_seconds:g} s track, one run per side", flush=True)
    figures["roformer"] = {"speed": _speed("MSST demix", "msst-ref", "msst-sep", common, args.roformer_seconds, 1,
                                           tmp, args.min_free_gb)}
    figures["roformer"]["rss"] = _rss("MSST demix (whole track in memory)", "msst-ref", "msst-sep", common, args, tmp,
                                      args.roformer_stop_chunks, sep_short=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="umx,demucs,roformer", help="comma-separated: umx, demucs, roformer")
    p.add_argument("--seconds", type=float, default=60.0, help="track length of the Open-Unmix speed comparison")
    p.add_argument("--demucs-seconds", type=float, default=20.0, help="track length of the HTDemucs speed comparison")
    p.add_argument("--roformer-seconds", type=float, default=4.0, help="track length of the RoFormer speed comparison")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side (best is kept; RoFormer: 1)")
    p.add_argument("--rss-minutes", type=float, default=10.0, help="track length of the RSS comparison (0: skip)")
    p.add_argument("--long-minutes", type=float, default=60.0, help="sepcluster-only RSS track length (0: skip)")
    p.add_argument("--stop-chunks", type=int, default=4, help="HTDemucs RSS runs stop after this many chunks")
    p.add_argument("--roformer-stop-chunks", type=int, default=1, help="RoFormer RSS runs stop after this many chunks")
    p.add_argument("--min-free-gb", type=float, default=3.0, help="stop a reference below this available memory")
    p.add_argument("--quick", action="store_true", help="smoke run: short tracks, 1 repeat, 1 and 2 minute RSS")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="sepcluster's side of the demucs / roformer parts: bf16 autocast (the references stay "
                        "fp32: the ratio then includes bf16's speed, max |diff| is bf16 rounding)")
    # worker mode (internal)
    p.add_argument("--worker", choices=["umx", "umx-file", "sep", "sep-file", *WAVEFORM_WORKERS],
                   help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--bundle", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--win", default="300", help=argparse.SUPPRESS)
    p.add_argument("--chunk", default="30", help=argparse.SUPPRESS)
    p.add_argument("--wav", help=argparse.SUPPRESS)
    p.add_argument("--outdir", help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    p.add_argument("--stop-after", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if args.quick:
        args.seconds, args.repeats, args.rss_minutes, args.long_minutes = 10.0, 1, 1.0, 2.0
        args.demucs_seconds, args.stop_chunks = 8.0, 2

    import torch

    figures: dict = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    with tempfile.TemporaryDirectory(prefix="sepcluster-bench-") as tmp:
        for part in parts:
            t0 = time.perf_counter()
            {"umx": umx_part, "demucs": demucs_part, "roformer": roformer_part}[part](args, tmp, figures)
            print(f"[{part} part: {time.perf_counter() - t0:.0f} s]", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


def _fmt(walls) -> str:
    return ", ".join(f"{w:.1f}s" for w in walls)


if __name__ == "__main__":
    sys.exit(main())
