"""Benchmark: the tutorial's plain Scaper loop vs ``sepcluster generate`` with 1 and 2 actors.

Same recipe everywhere (the source-separation tutorial's template at 10 s: mono, 44.1 kHz,
4 stems, coherent probability 0.5, fix_clipping), in three augmentation modes:

* ``quick``: pitch shift and time stretch with ``quick_pitch_time=True``;
* ``full``: full-quality pitch shift and time stretch;
* ``none``: no pitch shift, no time stretch.

For each mode it prints mixtures/s of the plain single-process loop, of ``generate`` with 1
actor (``--cache-row``: also without the per-actor source cache) and with 2 actors, the ratios
(targets: 1 actor >= 1.0x plain, 2 actors >= 1.8x 1 actor), the peak resident memory of each
actor, and whether the dataset's audio equals the plain loop's (it must: same seeds).
Each configuration runs ``--repeats`` times, the configurations interleaved (plain, 1 actor,
2 actors, plain, ...), and the median rate is reported: on a shared 2-core VM single runs of a
few seconds differ by 10-20%. Mixtures per run default to 20-30 s of work for one actor, so the
last shards (one actor finishing while the other idles) weigh little, as in a real dataset.
Actor throughput is measured from the moment the actors are ready (Ray worker start, imports,
a warm-up mixture and the source cache's preload of the library are shown separately as
startup). Ray runs its workers at niceness 15 by default; on a shared machine that alone would
starve the actors against the plain loop (nice 0), so this benchmark starts Ray with
``RAY_worker_niceness=0``. It also prints CPU seconds per
mixture (process CPU time), a figure that other load on the machine does not distort, and how
an actor's time per mixture splits between rendering (Scaper) and storing (Parquet encode, write,
commit): the plain loop stores nothing.

    .venv/bin/python bench/generate.py [--mixtures N] [--repeats 3] [--modes none,quick,full] [--stems DIR]
                                       [--cache-row] [--ceiling] [--out DIR]

``--ceiling`` also runs two plain Scaper loops side by side (separate processes, no Ray) on the
same seeds: the 2-way scaling the machine itself gives, to read the 2-actor ratio against.

Without ``--stems`` a synthetic library (6 songs x 20 s, stereo) is made in a temp folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("SEPCLUSTER_NO_PROGRESS", "1")
os.environ.setdefault("RAY_worker_niceness", "0")  # same priority as the plain loop
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

LABELS = ["vocals", "drums", "bass", "other"]
DURATION = 10.0
DEFAULT_MIXTURES = {"none": 384, "quick": 96, "full": 16}  # 20-30 s of work per run for one actor


def recipe_for(mode: str) -> dict:
    aug = mode != "none"
    return {
        "duration": DURATION, "sample_rate": 44100, "channels": 1, "ref_db": -20, "labels": LABELS,
        "coherent_probability": 0.5, "fix_clipping": True, "quick_pitch_time": mode == "quick",
        "event": {"source_time": ["uniform", 0, 7], "event_time": ["const", 0], "event_duration": ["const", DURATION],
                  "snr": ["uniform", -5, 5], "pitch_shift": ["uniform", -2, 2] if aug else None,
                  "time_stretch": ["uniform", 0.8, 1.2] if aug else None},
    }


# ----------------------------------------------------------------------------- the tutorial's loop

def tutorial_loop(fg: str, bg: str, mode: str, seeds, keep_audio: bool = True, barrier=None) -> dict:
    """The tutorial's Option 2: for each seed, flip the coin and call coherent()/incoherent().

    barrier: a multiprocessing barrier to wait at after the warm-up (for :func:`plain_pair`).
    """
    from sepcluster.compat import scaper

    template = {"label": ("const", "vocals"), "source_file": ("choose", []), "source_time": ("uniform", 0, 7),
                "event_time": ("const", 0), "event_duration": ("const", DURATION), "snr": ("uniform", -5, 5),
                "pitch_shift": ("uniform", -2, 2) if mode != "none" else None,
                "time_stretch": ("uniform", 0.8, 1.2) if mode != "none" else None}
    quick = mode == "quick"

    def new(seed):
        sc = scaper.Scaper(duration=DURATION, fg_path=fg, bg_path=bg, random_state=seed)
        sc.sr, sc.ref_db, sc.n_channels = 44100, -20, 1
        return sc

    def incoherent(seed):
        sc = new(seed)
        ev = template.copy()
        for label in LABELS:
            ev["label"] = ("const", label)
            sc.add_event(**ev)
        return sc.generate(fix_clipping=True, quick_pitch_time=quick)

    def coherent(seed):
        sc = new(seed)
        ev = template.copy()
        sc.add_event(**ev)
        event = sc._instantiate_event(sc.fg_spec[0])
        sc.reset_fg_event_spec()
        ev["source_time"] = ("const", event.source_time)
        ev["pitch_shift"] = None if event.pitch_shift is None else ("const", event.pitch_shift)
        ev["time_stretch"] = None if event.time_stretch is None else ("const", event.time_stretch)
        for label in LABELS:
            ev["label"] = ("const", label)
            head, name = os.path.split(event.source_file)
            ev["source_file"] = ("const", os.path.join(os.path.dirname(head), label, name))
            sc.add_event(**ev)
        return sc.generate(fix_clipping=True, quick_pitch_time=quick)

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        incoherent(10_000)  # warm-up (imports, sox init), not timed
        if barrier is not None:
            barrier.wait()
        t0 = time.perf_counter()
        c0 = time.process_time()
        for seed in seeds:
            coin = np.random.RandomState(seed).rand() > 0.5
            mix = (coherent if coin else incoherent)(seed)[0]
            if keep_audio:
                out[seed] = mix.astype(np.float32)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
    return {"seconds": seconds, "rate": len(seeds) / seconds, "cpu_per_mix": cpu / len(seeds), "audio": out}


def _pair_half(fg, bg, mode, seeds, barrier, queue) -> None:
    queue.put(tutorial_loop(fg, bg, mode, seeds, keep_audio=False, barrier=barrier)["seconds"])


def plain_pair(fg: str, bg: str, mode: str, seeds) -> float:
    """The machine's own 2-way scaling: two plain Scaper processes, half of ``seeds`` each, no Ray.

    Returns mixtures/s of the pair (both start together after their warm-up).
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    half = len(seeds) // 2
    procs = [ctx.Process(target=_pair_half, args=(fg, bg, mode, part, barrier, queue))
             for part in (seeds[:half], seeds[half:])]
    for p in procs:
        p.start()
    seconds = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return len(seeds) / max(seconds)


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mixtures", type=int,
                        help=f"mixtures per run (default per mode: {DEFAULT_MIXTURES})")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration; the median counts")
    parser.add_argument("--modes", default="none,quick,full", help="comma list of quick, full, none")
    parser.add_argument("--stems", help="an existing stem library (default: a synthetic one)")
    parser.add_argument("--out", help="folder for the datasets (default: a temp folder; e.g. /dev/shm to leave disk "
                                          "writeback out)")
    parser.add_argument("--cache-row", action="store_true", help="add a 1-actor run without the source cache")
    parser.add_argument("--ceiling", action="store_true",
                        help="add two plain Scaper processes side by side (no Ray): what 2-way scaling this "
                             "machine allows")
    args = parser.parse_args(argv)

    from sepcluster import raycluster
    from sepcluster.generate import generate, load_mixture

    work = tempfile.mkdtemp(prefix="sepcluster-bench-generate-")
    os.environ.setdefault("SEPCLUSTER_HOME", os.path.join(work, "home"))
    try:
        stems = args.stems
        if not stems:
            from sepcluster.stems.synth import synthesize_library

            stems = os.path.join(work, "stems")
            t = time.perf_counter()
            synthesize_library(stems, songs=6, seconds=20.0, seed=3, sample_rate=44100, channels=2)
            print(f"synthetic library: 6 songs x 20 s stereo ({time.perf_counter() - t:.1f} s)")
        fg, bg = os.path.join(stems, "foreground"), os.path.join(stems, "background")
        print(f"recipe: tutorial template, {DURATION:g} s mono 44.1 kHz, 4 stems; median of {args.repeats} "
              f"interleaved runs per row; machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        raycluster.init(address="local", num_cpus=2)
        rows = []
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            n = args.mixtures or DEFAULT_MIXTURES.get(mode, 32)
            configs = [("1 actor", 1, None), ("2 actors", 2, None)]
            if args.cache_row:
                configs.insert(1, ("1 actor, no cache", 1, 0))
            plains, pairs, runs = [], [], {name: [] for name, _, _ in configs}
            same = True
            for rep in range(args.repeats):
                plain = tutorial_loop(fg, bg, mode, list(range(n)))
                plains.append(plain)
                if args.ceiling:
                    pairs.append(plain_pair(fg, bg, mode, list(range(n))))
                for name, actors, cache in configs:
                    out = os.path.join(args.out or work, f"{mode}-{actors}-{cache}-{rep}")
                    s = generate(recipe_for(mode), stems, out, n, num_actors=actors, cache_mb=cache, progress=False)
                    same &= all(np.array_equal(load_mixture(out, seed).mixture, plain["audio"][seed])
                                for seed in range(min(n, 4)))
                    runs[name].append(s)
                    shutil.rmtree(out, ignore_errors=True)
            plain_rate = statistics.median(p["rate"] for p in plains)
            plain_cpu = statistics.median(p["cpu_per_mix"] for p in plains)
            rate = {name: statistics.median(s.mixtures_per_second for s in ss) for name, ss in runs.items()}
            cpu = {name: statistics.median(s.per_mixture(s.cpu_seconds) for s in ss) for name, ss in runs.items()}
            rows.append((mode, n, plain_rate, rate))
            print(f"\n== {mode}: pitch/time "
                  f"{'quick' if mode == 'quick' else 'full quality' if mode == 'full' else 'off'}, {n} mixtures per run")
            plain_runs = ", ".join(f"{p['rate']:.2f}" for p in plains)
            print(f"  plain Scaper loop           {plain_rate:6.2f} mixtures/s, {plain_cpu:.3f} CPU s/mix "
                  f"(1 process; runs {plain_runs}; peak RSS {peak_rss_mb():.0f} MB incl. this driver)")
            pair_rate = statistics.median(pairs) if pairs else None
            if pair_rate:
                print(f"  2 plain processes, no Ray   {pair_rate:6.2f} mixtures/s "
                      f"(runs {', '.join(f'{r:.2f}' for r in pairs)}): this machine's 2-way ceiling "
                      f"{pair_rate / plain_rate:.2f}x")
            for name, ss in runs.items():
                mem = max(v for s in ss for v in s.peak_rss_mb.values())
                each = ", ".join(f"{s.mixtures_per_second:.2f}" for s in ss)
                render = statistics.median(s.per_mixture(s.render_seconds) for s in ss)
                store = statistics.median(s.per_mixture(s.store_seconds) for s in ss)
                print(f"  generate {name:<18} {rate[name]:6.2f} mixtures/s, {cpu[name]:.3f} CPU s/mix "
                      f"(render {render * 1000:.0f} + store {store * 1000:.0f} ms/mix; runs {each}), startup "
                      f"{statistics.median(s.startup_seconds for s in ss):4.1f} s, peak RSS per actor <= {mem:.0f} MB")
            print(f"  same audio as the plain loop in every run: {'yes' if same else 'NO'}")
            print(f"  ratio 1 actor / plain    = {rate['1 actor'] / plain_rate:.2f}x (target >= 1.0); by CPU time "
                  f"{plain_cpu / cpu['1 actor']:.2f}x")
            if "1 actor, no cache" in rate:
                print(f"  ratio cache / no cache   = {rate['1 actor'] / rate['1 actor, no cache']:.2f}x; by CPU time "
                      f"{cpu['1 actor, no cache'] / cpu['1 actor']:.2f}x")
            ceiling = f"; 2 plain processes / 1: {pair_rate / plain_rate:.2f}x" if pair_rate else ""
            print(f"  ratio 2 actors / 1 actor = {rate['2 actors'] / rate['1 actor']:.2f}x (target >= 1.8){ceiling}")
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print("\nsummary (median mixtures/s): mode, mixtures per run, plain, 1 actor, 2 actors, 1a/plain, 2a/1a")
        for mode, n, plain_rate, rate in rows:
            one, two = rate["1 actor"], rate["2 actors"]
            print(f"  {mode:<6} {n:4d} {plain_rate:6.2f} {one:6.2f} {two:6.2f}   {one / plain_rate:.2f}x  {two / one:.2f}x")
        return 0
    finally:
        raycluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
