"""Benchmark of the train job (prints figures and ratios; no assertions).

1. ``families``: training samples/s of every model family at its demo size on the CPU (one process,
   one thread, random waveforms: the model's own cost): umx / unet (``sepcluster/train/demo.yaml``),
   htdemucs (``demo_htdemucs.yaml``), bs_roformer (``demo_bs_roformer.yaml``), mel_roformer (the same
   with 32 mel bands).
2. ``ddp``: for each family, training samples/s of ``sepcluster.train.train`` on a synthetic stem
   library with 1 and with 2 Ray Train CPU workers (1 CPU each) on a local 2-CPU Ray, same config:
   median over the epochs after the first (the slowest rank's training time). Target: 2 workers
   >= 1.7x one worker.
3. ``fanout``: the 4-target per-target fan-out on a local 2-node Ray cluster (head + 1 worker node,
   1 CPU each, real ``ray start`` processes): wall time of the 4 targets one after another (4 train
   calls of one target) against one call with the 4 targets, whose trainers run concurrently (2 at a
   time, one per node). Target: sequential / concurrent >= 1.7x. Also printed: the cores the machine
   kept busy on average in each phase (/proc/stat) and when each concurrent trainer began.
4. ``queueing`` (not run by default): the concurrent phase of ``fanout`` with the driver starting 2
   trainers at a time (``--concurrent-units 2``) against all 4 at once queued by Ray (the default),
   alternating, ``--repeats`` (at least 2) each.
5. ``pipeline`` (not run by default): mixtures/s of the on-the-fly Scaper generator against the
   samples/s the demo model consumes (how many ``loader_workers`` a trainer needs).

On a GPU (not on these machines): samples/s with bf16 against fp32 for HTDemucs and BS-RoFormer and
the peak GPU memory are printed by ``--gpu``.

Usage: ``.venv/bin/python bench/train.py [--sections families,ddp,fanout] [--epochs 3] [--families ...]``
(about 15 minutes here with the defaults). Timings on a shared machine vary: compare ratios measured
in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SEPCLUSTER_NO_PROGRESS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")

FAMILIES = ("umx", "unet", "htdemucs", "bs_roformer", "mel_roformer")
TARGETS = ["vocals", "drums", "bass", "other"]
DEMO_RECIPE = {
    "duration": 6.0, "sample_rate": 44100, "channels": 2, "ref_db": -20,
    "labels": TARGETS, "coherent_probability": 0.7, "fix_clipping": True, "quick_pitch_time": True,
    "event": {"source_time": ["uniform", 0, 6], "event_time": ["const", 0], "event_duration": ["const", 6.0],
              "snr": ["uniform", -5, 5], "pitch_shift": ["uniform", -1, 1], "time_stretch": None},
}
# samples per epoch of the ddp section: about 10-20 s of one worker's training per epoch here
EPOCH_SAMPLES = {"umx": 512, "unet": 256, "htdemucs": 48, "bs_roformer": 48, "mel_roformer": 48}


def demo_config(family: str = "umx", **kw) -> dict:
    """The demo config of ``family`` (a mapping for :func:`sepcluster.train.train`)."""
    from sepcluster.config import load_yaml

    name = {"htdemucs": "demo_htdemucs.yaml", "bs_roformer": "demo_bs_roformer.yaml",
            "mel_roformer": "demo_bs_roformer.yaml"}.get(family, "demo.yaml")
    cfg = load_yaml(str(ROOT / "sepcluster" / "train" / name))
    cfg["model"] = family
    if family == "unet":
        for key in ("hidden_size", "nb_layers"):
            cfg.pop(key, None)
    if family == "mel_roformer":
        cfg["num_bands"] = 32
    cfg.update(kw)
    return cfg


def consumption(cfg, channels: int, batches: int, sources=None) -> float:
    """Training samples/s of ``cfg``'s model in this process (random waveforms; speed only)."""
    import torch

    from sepcluster.models import ISTFT, STFT, get_loss
    from sepcluster.train.epoch import make_model, make_optimizer, train_epoch

    seq = int(cfg.seq_dur * cfg.sample_rate)
    gen = torch.Generator().manual_seed(0)
    shape = (cfg.batch_size, len(sources), channels, seq) if sources else (cfg.batch_size, channels, seq)
    data = [(torch.randn(cfg.batch_size, channels, seq, generator=gen) * 0.1,
             torch.randn(*shape, generator=gen) * 0.05) for _ in range(batches)]
    model = make_model(cfg, channels, cfg.sample_rate, sources, cfg.seq_dur if sources else None)
    optimizer, _ = make_optimizer(model, cfg)
    stft, istft = STFT(cfg.n_fft, cfg.n_hop), ISTFT(cfg.n_fft, cfg.n_hop)
    loss = get_loss(cfg.loss)
    train_epoch(model, data[:1], stft, istft, loss, optimizer, torch.device("cpu"))  # warm-up
    stats = train_epoch(model, data, stft, istft, loss, optimizer, torch.device("cpu"))
    return stats["samples"] / stats["seconds"]


def bench_families(families, batches: int) -> dict:
    import torch

    from sepcluster.train.config import TrainConfig

    torch.set_num_threads(1)
    out = {}
    for family in families:
        cfg = TrainConfig.from_dict(demo_config(family))
        rate = consumption(cfg, 2, batches, TARGETS if cfg.multi_source else None)
        out[family] = rate
        per = "all 4 targets" if cfg.multi_source else "one target"
        print(f"  {family:13s} {rate:7.2f} samples/s ({per}; batch {cfg.batch_size}, {cfg.seq_dur:g} s at "
              f"{cfg.sample_rate} Hz, 1 thread)", flush=True)
    return out


def bench_ddp(lib: str, work: str, families, epochs: int, repeats: int) -> dict:
    """Samples/s with 1 and 2 workers per family: ``repeats`` jobs each, interleaved (1, 2, 1, 2, ...)."""
    from sepcluster import raycluster
    from sepcluster.train import train

    raycluster.init(num_cpus=2)
    out = {}
    try:
        for family in families:
            rates: dict = {1: [], 2: []}
            for rep in range(repeats):
                for workers in (1, 2):
                    cfg = demo_config(family, epochs=epochs, samples_per_epoch=EPOCH_SAMPLES[family], patience=1000,
                                      lr_decay_patience=1000, valid_fraction=0.1, valid_seq_dur=4.0,
                                      cpus_per_worker=1, diagnostics_every=0)
                    targets = TARGETS if family in ("htdemucs", "bs_roformer", "mel_roformer") else "vocals"
                    res = train(lib, targets, cfg, num_workers=workers, run_name=f"bench-{family}-{workers}w-{rep}",
                                storage_path=os.path.join(work, "runs"), out=os.path.join(work, f"{family}{workers}-{rep}"))
                    hist = next(iter(res.targets.values())).history
                    rates[workers] += [h["samples_per_s"] for h in hist[1:]] or [hist[0]["samples_per_s"]]
            one, two = statistics.median(rates[1]), statistics.median(rates[2])
            out[family] = {"1": one, "2": two, "ratio": two / one}
            print(f"  {family:13s} 1 worker {one:7.2f}, 2 workers {two:7.2f} samples/s: {two / one:.2f}x "
                  f"(target >= 1.7x; epochs {', '.join(f'{r:.1f}' for r in rates[1])} | "
                  f"{', '.join(f'{r:.1f}' for r in rates[2])})", flush=True)
    finally:
        raycluster.shutdown()
    return out


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


def _independent_worker(batches: int, queue) -> None:
    import torch

    from sepcluster.train.config import TrainConfig

    torch.set_num_threads(1)
    queue.put(consumption(TrainConfig.from_dict(demo_config()), 2, batches))


def _cpu_ticks() -> Optional[int]:
    """Busy CPU ticks of the whole machine from /proc/stat (user, nice, system, irq, softirq; not idle,
    iowait or steal); None where there is none."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except OSError:
        return None
    fields += [0] * (7 - len(fields))  # user nice system idle iowait irq softirq (guest is in user)
    return fields[0] + fields[1] + fields[2] + fields[5] + fields[6]


def _cores_busy(start: Optional[int], wall_s: float) -> float:
    """Cores the machine kept busy on average since ``start`` (a ``_cpu_ticks()``), over ``wall_s``."""
    now = _cpu_ticks()
    if start is None or now is None or wall_s <= 0:
        return float("nan")
    return (now - start) / os.sysconf("SC_CLK_TCK") / wall_s


def _fanout_cluster(work: str, name: str, epochs: int, samples: int):
    """A started 2-node local cluster (head + 1 worker node, 1 CPU each; stop it) and the umx demo
    config of the fan-out sections."""
    from sepcluster.localcluster import RayLocalCluster

    cluster = RayLocalCluster(os.path.join(work, name), workers=1, num_cpus=1)
    cluster.env = {"RAY_worker_niceness": "0", "SEPCLUSTER_HOME": os.environ["SEPCLUSTER_HOME"],
                   "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", "")}
    os.environ.update(RayLocalCluster.client_env())
    cluster.start()
    cfg = demo_config("umx", epochs=epochs, samples_per_epoch=samples, patience=1000, lr_decay_patience=1000,
                      valid_fraction=0.1, valid_seq_dur=4.0, cpus_per_worker=1, diagnostics_every=0)
    return cluster, cfg


def bench_fanout(lib: str, work: str, epochs: int, samples: int = 2048) -> dict:
    """Wall time of 4 umx targets one after another vs concurrently on a 2-node local cluster
    (``samples`` per epoch: with a few hundred, each trainer's start-up outweighs its training)."""
    from sepcluster import raycluster
    from sepcluster.train import train

    cluster, cfg = _fanout_cluster(work, "ray-fanout", epochs, samples)
    runs = os.path.join(work, "fanout-runs")
    out = {}
    try:
        with raycluster.session(cluster.address):
            t0, ticks = time.perf_counter(), _cpu_ticks()
            for target in TARGETS:
                train(lib, target, cfg, run_name=f"seq-{target}", storage_path=runs, out=os.path.join(work, f"s-{target}"))
            out["sequential_s"] = time.perf_counter() - t0
            out["sequential_cores"] = _cores_busy(ticks, out["sequential_s"])
            t0, ticks, wall0 = time.perf_counter(), _cpu_ticks(), time.time()
            res = train(lib, TARGETS, cfg, run_name="concurrent", storage_path=runs, out=os.path.join(work, "c"))
            out["concurrent_s"] = time.perf_counter() - t0
            out["concurrent_cores"] = _cores_busy(ticks, out["concurrent_s"])
            out["starts_s"] = sorted(r.attempts[0]["time"] - wall0 for r in res.targets.values())
            out["start_spread_s"] = out["starts_s"][-1] - out["starts_s"][0]
    finally:
        cluster.stop()
    out["ratio"] = out["sequential_s"] / out["concurrent_s"]
    print(f"  4 targets (umx demo size, 1 worker each, {epochs} epochs of {samples} samples): sequential "
          f"{out['sequential_s']:.0f} s, concurrent {out['concurrent_s']:.0f} s: {out['ratio']:.2f}x (target >= "
          f"1.7x); the 4 trainers started within {out['start_spread_s']:.0f} s of each other (2 at a time)",
          flush=True)
    # the ratio the concurrent phase's CPU work would give if it kept every core busy all the time
    out["cpu_bound_ratio"] = out["sequential_s"] * os.cpu_count() / (out["concurrent_cores"] * out["concurrent_s"])
    starts = ", ".join(f"{s:.0f}" for s in out["starts_s"])
    print(f"  machine CPU busy on average: sequential {out['sequential_cores']:.2f} cores, concurrent "
          f"{out['concurrent_cores']:.2f} of {os.cpu_count()} (CPU work of the concurrent phase: "
          f"{out['concurrent_cores'] * out['concurrent_s']:.0f} core-s, at most {out['cpu_bound_ratio']:.2f}x on "
          f"these cores); concurrent trainers' first attempts began at {starts} s", flush=True)
    return out


def bench_queueing(lib: str, work: str, epochs: int, samples: int, repeats: int) -> dict:
    """The 4 umx targets on the 2-node cluster of ``fanout``, trained concurrently with the driver
    starting 2 trainers at a time (``concurrent_units=2``: what the nodes hold) against all 4 at once
    with Ray queueing the worker groups (the default): wall time, alternating, ``repeats`` each."""
    from sepcluster import raycluster
    from sepcluster.train import train

    cluster, cfg = _fanout_cluster(work, "ray-queueing", epochs, samples)
    walls: dict = {"driver": [], "ray": []}
    try:
        with raycluster.session(cluster.address):
            for rep in range(repeats):
                for mode, units in (("driver", 2), ("ray", None)):
                    t0, wall0 = time.perf_counter(), time.time()
                    res = train(lib, TARGETS, cfg, run_name=f"q-{mode}-{rep}", concurrent_units=units,
                                storage_path=os.path.join(work, "queueing-runs"), out=os.path.join(work, f"q{mode}{rep}"))
                    walls[mode].append(time.perf_counter() - t0)
                    starts = ", ".join(f"{s:.0f}" for s in sorted(r.attempts[0]["time"] - wall0
                                                                   for r in res.targets.values()))
                    print(f"  {mode:6s} queueing, run {rep + 1}: {walls[mode][-1]:.0f} s (trainers began at {starts} s)",
                          flush=True)
    finally:
        cluster.stop()
    out = {m: statistics.median(w) for m, w in walls.items()}
    print(f"  median: 2 at a time from the driver {out['driver']:.0f} s, 4 at once queued by Ray {out['ray']:.0f} s: "
          f"{out['ray'] / out['driver']:.2f}x", flush=True)
    return out


def bench_pipeline(lib: str, batch_size: int, batches: int) -> dict:
    """Generator mixtures/s (the OnTheFlySource's render + cut) against model samples/s."""
    import torch

    from sepcluster.generate import parse_recipe
    from sepcluster.train.config import TrainConfig
    from sepcluster.train.data import DataSpec
    from sepcluster.train.sources import OnTheFlySource

    torch.set_num_threads(1)
    recipe = parse_recipe(DEMO_RECIPE)
    cfg = TrainConfig.from_dict(dict(demo_config(), batch_size=batch_size))
    spec = DataSpec(kind="onthefly", uri="bench", sample_rate=recipe.sample_rate, channels=recipe.channels,
                    labels=list(recipe.labels), recipe_hash=recipe.hash, recipe_json=recipe.to_json(),
                    recipe_yaml=recipe.to_yaml(), stems_dir=lib, num_samples=recipe.samples())
    src = OnTheFlySource(spec, cfg, "vocals", 0, 1, cfg.sample_rate, recipe.channels)
    src.batch(0, 0)  # index the library, warm the source cache
    started = time.perf_counter()
    for step in range(1, batches + 1):
        src.batch(0, step)
    generator = batches * batch_size / (time.perf_counter() - started)
    model = consumption(cfg, recipe.channels, batches)
    print(f"  generator {generator:.2f} samples/s, demo model {model:.2f} samples/s: loader_workers needed about "
          f"{max(0, int(model / generator + 0.999))}", flush=True)
    return {"generator": generator, "model": model}


def bench_gpu(batches: int) -> None:
    """bf16 vs fp32 samples/s and peak memory of HTDemucs and BS-RoFormer on the GPU (when there is one)."""
    import torch

    if not torch.cuda.is_available():
        print("  no GPU here: skipped")
        return
    from sepcluster.models import get_loss
    from sepcluster.train.config import TrainConfig
    from sepcluster.train.epoch import make_model, make_optimizer, make_precision, train_epoch

    device = torch.device("cuda")
    for family in ("htdemucs", "bs_roformer"):
        for precision in ("fp32", "bf16"):
            cfg = TrainConfig.from_dict(demo_config(family, precision=precision, batch_size=16))
            seq = int(cfg.seq_dur * cfg.sample_rate)
            data = [(torch.randn(16, 2, seq, device=device), torch.randn(16, 4, 2, seq, device=device))
                    for _ in range(batches)]
            model = make_model(cfg, 2, cfg.sample_rate, TARGETS, cfg.seq_dur).to(device)
            optimizer, _ = make_optimizer(model, cfg)
            torch.cuda.reset_peak_memory_stats()
            prec = make_precision(cfg, device)
            train_epoch(model, data[:1], None, None, get_loss(cfg.loss), optimizer, device, prec)
            torch.cuda.synchronize()
            stats = train_epoch(model, data, None, None, get_loss(cfg.loss), optimizer, device, prec)
            torch.cuda.synchronize()
            print(f"  {family} {precision}: {stats['samples'] / stats['seconds']:.1f} samples/s, peak memory "
                  f"{torch.cuda.max_memory_allocated() / 2 ** 30:.2f} GiB", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="families,ddp,fanout",
                        help="comma-separated: families, ddp, fanout, queueing, pipeline, gpu (default "
                             "families,ddp,fanout)")
    parser.add_argument("--families", default=",".join(FAMILIES), help="families of the families and ddp sections")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training job")
    parser.add_argument("--fanout-samples", type=int, default=2048,
                        help="fanout: samples per epoch (default 2048, about 20 s of umx training per epoch here)")
    parser.add_argument("--repeats", type=int, default=1, help="training jobs of each size, interleaved")
    parser.add_argument("--batches", type=int, default=3, help="batches for the in-process measurements")
    parser.add_argument("--ceiling", action="store_true", help="also measure 2 plain processes vs 1 (no Ray)")
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    from sepcluster.stems.synth import synthesize_library

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sepcluster-bench-train-") as work:
        os.environ["SEPCLUSTER_HOME"] = os.path.join(work, "home")
        os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + os.path.join(work, "home", "mlflow.db")
        lib = os.path.join(work, "lib")
        synthesize_library(lib, songs=12, seconds=12.0, seed=5, sample_rate=44100)
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
              f"(other processes share these cores)", flush=True)
        if "families" in sections:
            print("== samples/s per family at the demo size (CPU, one process, one thread)")
            bench_families(families, args.batches)
        if "ddp" in sections:
            print("== DDP: 2 workers / 1 worker per family (local Ray, 2 CPUs, stem library, demo configs)")
            bench_ddp(lib, work, families, args.epochs, args.repeats)
            if args.ceiling:
                ind = bench_independent()
                print(f"  machine ceiling now: 2 plain processes {ind[2]:.1f} vs 1 {ind[1]:.1f} samples/s: "
                      f"{ind[2] / ind[1]:.2f}x")
        if "fanout" in sections:
            print("== per-target fan-out on a 2-node local cluster (1 CPU per node)")
            bench_fanout(lib, work, args.epochs, args.fanout_samples)
        if "queueing" in sections:
            print("== fan-out queueing: the driver's 2 at a time vs Ray's queue (2-node local cluster)")
            bench_queueing(lib, work, args.epochs, args.fanout_samples, max(args.repeats, 2))
        if "pipeline" in sections:
            print("== on-the-fly input pipeline vs the demo model (one process, one thread each)")
            bench_pipeline(lib, int(demo_config()["batch_size"]), args.batches)
        if "gpu" in sections:
            print("== GPU: bf16 vs fp32")
            bench_gpu(args.batches)
    print(f"load average after: {os.getloadavg()[0]:.1f}; {time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
