"""Benchmark: the tutorial's plain Scaper loop vs ``sepcluster generate`` with 1 and 2 actors.

Same recipe everywhere (the source-separation tutorial's template at 10 s: mono, 44.1 kHz,
4 stems, coherent probability 0.5, fix_clipping), in three augmentation modes:

* ``quick``: pitch shift and time stretch with ``quick_pitch_time=True``;
* ``full``: full-quality pitch shift and time stretch;
* ``none``: no pitch shift, no time stretch.

For each mode it prints mixtures/s of the plain single-process loop, of ``generate`` with 1
actor (with and without the per-actor source cache) and with 2 actors, the ratios
(targets: 1 actor >= 1.0x plain, 2 actors >= 1.8x 1 actor), the peak resident memory of each
actor, and whether the dataset's audio equals the plain loop's (it must: same seeds).
Actor throughput is measured from the moment the actors are ready (Ray worker start, imports
and a warm-up mixture are shown separately as startup). Ray runs its workers at niceness 15 by
default; on a shared machine that alone would starve the actors against the plain loop (nice
0), so this benchmark starts Ray with ``RAY_worker_niceness=0``. It also prints CPU seconds per
mixture (process CPU time), a figure that other load on the machine does not distort.

    .venv/bin/python bench/generate.py [--mixtures 16] [--modes quick,full,none] [--stems DIR]

Without ``--stems`` a synthetic library (6 songs x 20 s, stereo) is made in a temp folder.
"""

from __future__ import annotations

import argparse
import os
import shutil
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

def tutorial_loop(fg: str, bg: str, mode: str, seeds) -> dict:
    """The tutorial's Option 2: for each seed, flip the coin and call coherent()/incoherent()."""
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
        t0 = time.perf_counter()
        c0 = time.process_time()
        for seed in seeds:
            coin = np.random.RandomState(seed).rand() > 0.5
            mix = (coherent if coin else incoherent)(seed)[0]
            out[seed] = mix.astype(np.float32)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
    return {"seconds": seconds, "rate": len(seeds) / seconds, "cpu_per_mix": cpu / len(seeds), "audio": out}


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mixtures", type=int, default=16, help="mixtures per measurement (default 16)")
    parser.add_argument("--plain-mixtures", type=int, help="mixtures for the plain loop (default --mixtures)")
    parser.add_argument("--modes", default="quick,full,none", help="comma list of quick, full, none")
    parser.add_argument("--stems", help="an existing stem library (default: a synthetic one)")
    parser.add_argument("--no-cache-row", action="store_true", help="skip the 1-actor run without the source cache")
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
        n = args.mixtures
        n_plain = args.plain_mixtures or n
        print(f"recipe: tutorial template, {DURATION:g} s mono 44.1 kHz, 4 stems; {n_plain} mixtures plain, "
              f"{n} per sepcluster run; machine: {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}")
        raycluster.init(address="local", num_cpus=2)
        rows = []
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            plain = tutorial_loop(fg, bg, mode, list(range(n_plain)))
            runs = {}
            configs = [("1 actor", 1, None), ("2 actors", 2, None)]
            if not args.no_cache_row:
                configs.insert(1, ("1 actor, no cache", 1, 0))
            for name, actors, cache in configs:
                out = os.path.join(work, f"{mode}-{actors}-{cache}")
                s = generate(recipe_for(mode), stems, out, n, num_actors=actors, cache_mb=cache, progress=False)
                same = all(np.array_equal(load_mixture(out, seed).mixture, plain["audio"][seed])
                           for seed in range(min(n, n_plain, 4)))
                runs[name] = (s, same)
            one = runs["1 actor"][0].mixtures_per_second
            two = runs["2 actors"][0].mixtures_per_second
            rows.append((mode, plain, runs))
            print(f"\n== {mode}: pitch/time "
                  f"{'quick' if mode == 'quick' else 'full quality' if mode == 'full' else 'off'}")
            print(f"  plain Scaper loop           {plain['rate']:6.2f} mixtures/s, {plain['cpu_per_mix']:.3f} CPU s/mix "
                  f"(1 process; peak RSS {peak_rss_mb():.0f} MB incl. this driver)")
            for name, (s, same) in runs.items():
                mem = ", ".join(f"{v:.0f}" for v in s.peak_rss_mb.values())
                print(f"  generate {name:<18} {s.mixtures_per_second:6.2f} mixtures/s, "
                      f"{s.cpu_seconds / max(1, s.generated):.3f} CPU s/mix, startup {s.startup_seconds:4.1f} s, "
                      f"peak RSS per actor {mem} MB, same audio as plain: {'yes' if same else 'NO'}")
            cpu_one = runs["1 actor"][0].cpu_seconds / max(1, runs["1 actor"][0].generated)
            print(f"  ratio 1 actor / plain   = {one / plain['rate']:.2f}x (target >= 1.0); by CPU time "
                  f"{plain['cpu_per_mix'] / cpu_one:.2f}x")
            if "1 actor, no cache" in runs:
                nc = runs["1 actor, no cache"][0].mixtures_per_second
                cpu_nc = runs["1 actor, no cache"][0].cpu_seconds / max(1, runs["1 actor, no cache"][0].generated)
                print(f"  ratio cache / no cache  = {one / nc:.2f}x; by CPU time {cpu_nc / cpu_one:.2f}x")
            print(f"  ratio 2 actors / 1 actor = {two / one:.2f}x (target >= 1.8)")
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print("\nsummary (mixtures/s): mode, plain, 1 actor, 2 actors, 1a/plain, 2a/1a")
        for mode, plain, runs in rows:
            one = runs["1 actor"][0].mixtures_per_second
            two = runs["2 actors"][0].mixtures_per_second
            print(f"  {mode:<6} {plain['rate']:6.2f} {one:6.2f} {two:6.2f}   {one / plain['rate']:.2f}x  {two / one:.2f}x")
        return 0
    finally:
        raycluster.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
