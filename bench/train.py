"""Benchmark of the train job (prints figures and ratios; no assertions).

1. DDP scaling: training samples/s of ``sepcluster.train.train`` on a synthetic stem library
   with 1 and with 2 Ray Train CPU workers (1 CPU each), same config (the demo's model).
   Target: 2 workers >= 1.6x one worker.
2. Input pipeline: mixtures/s of the on-the-fly Scaper generator (``OnTheFlySource``, one
   process, the demo's 6 s stereo 44.1 kHz recipe; also with 3 excerpts per mixture) against
   the samples/s a model consumes in one process at the same batch size (the demo model and
   an Open-Unmix-size one); their ratio says how many loader workers (``loader_workers``) a
   trainer needs so the input pipeline is not the bottleneck.

Usage: ``.venv/bin/python bench/train.py [--epochs 5] [--repeats 2] [--skip-ddp] [--skip-pipeline]``.
Timings on a shared machine vary: compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SEPCLUSTER_NO_PROGRESS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")

DEMO_RECIPE = {
    "duration": 6.0, "sample_rate": 44100, "channels": 2, "ref_db": -20,
    "labels": ["vocals", "drums", "bass", "other"], "coherent_probability": 0.7, "fix_clipping": True,
    "quick_pitch_time": True,
    "event": {"source_time": ["uniform", 0, 6], "event_time": ["const", 0], "event_duration": ["const", 6.0],
              "snr": ["uniform", -5, 5], "pitch_shift": ["uniform", -1, 1], "time_stretch": None},
}


def demo_config(**kw) -> dict:
    from sepcluster.config import load_yaml

    cfg = load_yaml(str(ROOT / "sepcluster" / "train" / "demo.yaml"))
    cfg.update(kw)
    return cfg


def bench_ddp(lib: str, work: str, epochs: int, repeats: int) -> dict:
    """Samples/s with 1 and 2 workers: ``repeats`` jobs each, interleaved (1, 2, 1, 2, ...);
    the median over the epochs after the first of every job of that size."""
    from sepcluster import raycluster
    from sepcluster.train import train

    raycluster.init(num_cpus=2)
    rates: dict = {1: [], 2: []}
    walls: dict = {1: [], 2: []}
    try:
        for rep in range(repeats):
            for workers in (1, 2):
                cfg = demo_config(epochs=epochs, samples_per_epoch=512, patience=1000, lr_decay_patience=1000,
                                  valid_fraction=0.1, cpus_per_worker=1)
                started = time.perf_counter()
                res = train(lib, "vocals", cfg, num_workers=workers, run_name=f"bench-{workers}w-{rep}",
                            storage_path=os.path.join(work, "runs"), out=os.path.join(work, f"bundle{workers}-{rep}"))
                walls[workers].append(time.perf_counter() - started)
                hist = res.targets["vocals"].history
                rates[workers] += [h["samples_per_s"] for h in hist[1:]] or [hist[0]["samples_per_s"]]
    finally:
        raycluster.shutdown()
    out = {}
    for workers in (1, 2):
        out[workers] = {"samples_per_s": statistics.median(rates[workers]), "all": rates[workers], "wall_s": walls[workers]}
        print(f"  {workers} worker(s): {out[workers]['samples_per_s']:.1f} samples/s (median of {len(rates[workers])} "
              f"epochs, first epoch of each job left out; {', '.join(f'{r:.0f}' for r in rates[workers])}), job wall "
              f"{', '.join(f'{w:.0f}' for w in walls[workers])} s", flush=True)
    return out


def _consumption(cfg, channels: int, batches: int) -> float:
    """Training samples/s of ``cfg``'s model in this process (random waveforms; speed only)."""
    import torch

    from sepcluster.models import ISTFT, STFT, get_loss
    from sepcluster.train.epoch import make_model, make_optimizer, train_epoch

    seq = int(cfg.seq_dur * cfg.sample_rate)
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(cfg.batch_size, channels, seq, generator=gen) * 0.1,
             torch.randn(cfg.batch_size, channels, seq, generator=gen) * 0.05) for _ in range(batches)]
    model = make_model(cfg, channels, cfg.sample_rate)
    optimizer, _ = make_optimizer(model, cfg)
    stft, istft = STFT(cfg.n_fft, cfg.n_hop), ISTFT(cfg.n_fft, cfg.n_hop)
    loss = get_loss(cfg.loss)
    train_epoch(model, data[:1], stft, istft, loss, optimizer, torch.device("cpu"))  # warm-up
    stats = train_epoch(model, data, stft, istft, loss, optimizer, torch.device("cpu"))
    return stats["samples"] / stats["seconds"]


def _independent_worker(batches: int, queue) -> None:
    import torch

    from sepcluster.train.config import TrainConfig

    torch.set_num_threads(1)
    queue.put(_consumption(TrainConfig.from_dict(demo_config()), 2, batches))


def bench_independent(batches: int = 12) -> dict:
    """The machine's own ceiling: 1 vs 2 plain processes training the demo model (no DDP, no Ray)."""
    import multiprocessing as mp

    out = {}
    for procs in (1, 2):
        queue = mp.get_context("spawn").Queue()
        ps = [mp.get_context("spawn").Process(target=_independent_worker, args=(batches, queue)) for _ in range(procs)]
        for p in ps:
            p.start()
        rates = [queue.get() for _ in ps]
        for p in ps:
            p.join()
        out[procs] = sum(rates)
    return out


def bench_pipeline(lib: str, batch_size: int, batches: int) -> dict:
    """Generator mixtures/s (the OnTheFlySource's render + cut) against model samples/s."""
    import torch

    from sepcluster.train.config import TrainConfig
    from sepcluster.train.data import DataSpec
    from sepcluster.train.sources import OnTheFlySource
    from sepcluster.generate.recipe import parse_recipe

    torch.set_num_threads(1)
    recipe = parse_recipe(DEMO_RECIPE)
    cfg = TrainConfig.from_dict(dict(demo_config(), batch_size=batch_size))
    spec = DataSpec(kind="onthefly", uri="bench", sample_rate=recipe.sample_rate, channels=recipe.channels,
                    labels=list(recipe.labels), recipe_hash=recipe.hash, recipe_json=recipe.to_json(),
                    recipe_yaml=recipe.to_yaml(), stems_dir=lib, num_samples=recipe.samples())
    out = {}
    for k in (1, 3):
        c = TrainConfig.from_dict(dict(cfg.to_dict(), excerpts_per_mixture=k))
        src = OnTheFlySource(spec, c, "vocals", 0, 1, c.sample_rate, recipe.channels)
        src.batch(0, 0)  # index the library, warm the source cache
        started = time.perf_counter()
        for step in range(1, batches + 1):
            src.batch(0, step)
        seconds = time.perf_counter() - started
        out[f"samples_per_s_k{k}"] = batches * batch_size / seconds
        out[f"mixtures_per_s_k{k}"] = batches * -(-batch_size // k) / seconds
    out["demo_model"] = _consumption(cfg, recipe.channels, batches)
    umx = TrainConfig.from_dict({"batch_size": batch_size, "sample_rate": 44100, "seq_dur": 6.0})
    out["umx_full"] = _consumption(umx, recipe.channels, 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per training job (512 samples each)")
    parser.add_argument("--repeats", type=int, default=2, help="training jobs of each size, interleaved")
    parser.add_argument("--batches", type=int, default=4, help="batches for the pipeline comparison")
    parser.add_argument("--skip-ddp", action="store_true")
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    from sepcluster.stems.synth import synthesize_library

    with tempfile.TemporaryDirectory(prefix="sepcluster-bench-train-") as work:
        os.environ["SEPCLUSTER_HOME"] = os.path.join(work, "home")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        lib = os.path.join(work, "lib")
        synthesize_library(lib, songs=12, seconds=12.0, seed=5, sample_rate=44100)
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
              f"(other processes share these cores)")
        if not args.skip_ddp:
            print("== DDP scaling (demo config: umx hidden 32, 22.05 kHz, n_fft 1024, batch 16, 512 samples per epoch, stem library)")
            ddp = bench_ddp(lib, work, args.epochs, args.repeats)
            ratio = ddp[2]["samples_per_s"] / ddp[1]["samples_per_s"]
            print(f"  speed-up 2 workers / 1 worker: {ratio:.2f}x (target >= 1.6x)")
            ind = bench_independent()
            ceiling = ind[2] / ind[1]
            print(f"  machine ceiling now: 2 independent processes (no DDP, no Ray) train {ind[2]:.1f} samples/s "
                  f"vs {ind[1]:.1f} for one: {ceiling:.2f}x; DDP speed-up / ceiling = {ratio / ceiling:.2f}")
            print(f"  load average after: {os.getloadavg()[0]:.1f}")
        if not args.skip_pipeline:
            cfg = demo_config()
            b = int(cfg["batch_size"])
            print(f"== on-the-fly input pipeline vs model, batch {b}, one process, one thread each")
            p = bench_pipeline(lib, b, args.batches)
            print(f"  generator: {p['mixtures_per_s_k1']:.2f} mixtures/s = {p['samples_per_s_k1']:.2f} samples/s "
                  f"(Scaper, 6 s stereo 44.1 kHz, resampled to 22.05 kHz, one 2 s excerpt each)")
            print(f"  generator, excerpts_per_mixture=3: {p['mixtures_per_s_k3']:.2f} mixtures/s = "
                  f"{p['samples_per_s_k3']:.2f} samples/s")
            for name, label in (("demo_model", "demo model (umx hidden 32, 22.05 kHz, n_fft 1024, 2 s)"),
                                ("umx_full", "Open-Unmix size (umx hidden 512, 44.1 kHz, n_fft 4096, 6 s)")):
                rate = p[name]
                print(f"  {label} consumes {rate:.2f} samples/s: generator/model = "
                      f"{p['samples_per_s_k1'] / rate:.2f} (k=1), {p['samples_per_s_k3'] / rate:.2f} (k=3); "
                      f"loader_workers needed about {max(0, int(rate / p['samples_per_s_k1'] + 0.999))} (k=1), "
                      f"{max(0, int(rate / p['samples_per_s_k3'] + 0.999))} (k=3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
