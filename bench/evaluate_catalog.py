"""The evaluate job on a synthetic catalog (``bench/evaluate.py --catalog``): throughput and worker memory.

Catalog: ``<tmp>/refs/<track>/<target>.wav`` and ``<tmp>/est/<track>/<target>.wav``, 16-bit PCM,
stereo, 44.1 kHz, 4 targets (MUSDB18-HQ's format). Each track is made of 3-minute coloured-noise
pools shifted and scaled by the track's seed (distinct audio per track, cheap to make); estimates
are 0.8 x reference + leakage of another target + noise. Every file is written, fsync'ed and
evicted from the page cache (``posix_fadvise(DONTNEED)``), and evicted again before each run, so
reads come from the disk. Disk needed: tracks x 8 files x seconds x 44100 x 4 B (200 x 3 min:
50.8 GB); the run refuses when the free space is short by more than 5 GB.

Runs, each on a fresh local Ray with 2 CPUs (``raycluster.init(num_cpus=2)``):

1. a plain sequential read of every file with soundfile (one process): the disk's speed;
2. ``evaluate(metrics=["sdr", "sisdr"])`` on every track;
3. the same on the first ``--rss-tracks`` tracks: the workers' peak RSS (``getrusage`` in each task,
   ``summary["worker_peak_rss_mb"]``) against run 2's;
4. ``evaluate(metrics=["bss"])`` on every track (``--bss-tracks N``: the first N only, and the whole
   catalog's time is then printed as an extrapolation);
5. with ``--cluster``: runs 2 and 4 again on a local 2-node Ray cluster (``ray start`` head + one
   worker node, 1 CPU each, :class:`sepcluster.localcluster.RayLocalCluster`): the same 2 CPUs
   spread over two raylets and object stores.

``--keep`` leaves the catalog in place and ``--reuse DIR`` runs on it again (no writing).
Measured here (200 x 3 min, 50.8 GB): see the README's evaluate section.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATE = 44100
TARGETS = ("vocals", "drums", "bass", "other")


def _pool(seconds: float, seed: int = 0) -> np.ndarray:
    """4 coloured-noise stems and one noise signal, int16-safe float32 ``(5, samples, 2)``."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = np.empty((5, n, 2), dtype=np.float32)
    for j in range(5):
        x = rng.standard_normal((n, 2)).astype(np.float32)
        out[j] = lfilter([0.05], [1.0, -0.6 - 0.08 * j], x, axis=0) if j < 4 else 0.01 * x
    return out


def _write_evicted(path: Path, audio: np.ndarray) -> int:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1, 1), RATE, subtype="PCM_16")
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return path.stat().st_size


def make_catalog(folder: Path, tracks: int, seconds: float) -> int:
    """Write the catalog; returns its size in bytes."""
    pool = _pool(seconds)
    n = pool.shape[1]
    total = 0
    t0 = time.perf_counter()
    for i in range(tracks):
        rng = np.random.default_rng(1000 + i)
        shifts = rng.integers(0, n, 6)
        refs = [np.roll(pool[j], shifts[j], axis=0) * rng.uniform(0.5, 1.5) for j in range(4)]
        noise = np.roll(pool[4], shifts[4], axis=0)
        for j, t in enumerate(TARGETS):
            est = 0.8 * refs[j] + 0.1 * refs[(j + 1) % 4] + noise
            total += _write_evicted(folder / "refs" / f"track-{i:04d}" / f"{t}.wav", refs[j])
            total += _write_evicted(folder / "est" / f"track-{i:04d}" / f"{t}.wav", est)
        if (i + 1) % 20 == 0:
            print(f"  wrote {i + 1}/{tracks} tracks ({total / 1e9:.1f} GB, {time.perf_counter() - t0:.0f} s)",
                  flush=True)
    return total


def evict(folder: Path) -> None:
    for p in folder.rglob("*.wav"):
        fd = os.open(str(p), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def plain_read(folder: Path) -> tuple[float, int]:
    """(seconds, bytes) of reading every WAV once as float32, sequentially."""
    import soundfile as sf

    evict(folder)
    files = sorted(folder.rglob("*.wav"))
    t0 = time.perf_counter()
    for p in files:
        sf.read(str(p), dtype="float32", always_2d=True)
    return time.perf_counter() - t0, sum(p.stat().st_size for p in files)


def _subset(folder: Path, n: int, tag: str) -> Path:
    """A catalog of the first n tracks (symlinked folders)."""
    sub = folder / f"subset-{tag}"
    for kind in ("refs", "est"):
        (sub / kind).mkdir(parents=True, exist_ok=True)
        for d in sorted((folder / kind).iterdir())[:n]:
            link = sub / kind / d.name
            if not link.exists():
                link.symlink_to(d, target_is_directory=True)
    return sub


def run_evaluate(cat: Path, out: Path, metrics: list[str], address: str | None = None) -> dict:
    """One evaluate call on a fresh local Ray with 2 CPUs, or on the running cluster at ``address``."""
    from sepcluster import raycluster
    from sepcluster.evaluate.pipeline import evaluate

    evict(cat.resolve() if not cat.is_symlink() else cat)
    for kind in ("refs", "est"):
        for d in (cat / kind).iterdir():
            evict(d.resolve())
    raycluster.init(address=address or "local", num_cpus=None if address else 2)
    try:
        t0 = time.perf_counter()
        summary = evaluate(str(cat / "refs"), str(cat / "est"), str(out), metrics=metrics, log_mlflow=False,
                           write_json=False, address=address)
        summary["bench_wall_s"] = time.perf_counter() - t0
    finally:
        raycluster.shutdown()
    print(f"  [{'2-node cluster' if address else 'local Ray, 2 CPUs'}] {','.join(metrics)} on "
          f"{summary['n_tracks']} tracks: {summary['bench_wall_s']:.1f} s ({summary['n_failed']} failed)", flush=True)
    return summary


def run_on_cluster(folder: Path, subset: Path) -> dict:
    """sdr,sisdr on the whole catalog and bss on ``subset`` on a local 2-node cluster (1 CPU per node)."""
    from sepcluster.localcluster import RayLocalCluster

    cluster = RayLocalCluster(str(folder / "ray-cluster"), workers=1, num_cpus=1)
    cluster.env = {"RAY_worker_niceness": "0"}
    t0 = time.perf_counter()
    cluster.start()
    up = time.perf_counter() - t0
    saved = {k: os.environ.get(k) for k in RayLocalCluster.client_env()}
    os.environ.update(RayLocalCluster.client_env())
    try:
        s = run_evaluate(folder, folder / "out-cluster-sdr", ["sdr", "sisdr"], address=cluster.address)
        b = run_evaluate(subset, folder / "out-cluster-bss", ["bss"], address=cluster.address)
    finally:
        cluster.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"nodes_up_s": up,
            "sdr_sisdr": {"wall_s": s["bench_wall_s"], "tracks": s["n_tracks"], "n_failed": s["n_failed"],
                          "worker_peak_rss_mb": s["worker_peak_rss_mb"]},
            "bss": {"wall_s": b["bench_wall_s"], "tracks": b["n_tracks"], "n_failed": b["n_failed"],
                    "worker_peak_rss_mb": b["worker_peak_rss_mb"]}}


def _check_disk(folder: Path, tracks: int, seconds: float) -> None:
    need = tracks * 8 * seconds * RATE * 4
    free = shutil.disk_usage(folder).free
    if need > free - 5e9:
        raise SystemExit(f"the catalog needs {need / 1e9:.1f} GB; {folder} has {free / 1e9:.1f} GB free "
                         "(keep 5 GB): lower --catalog-tracks or --catalog-seconds")


def _report(res: dict, args) -> None:
    n, secs = args.catalog_tracks, args.catalog_seconds
    made = "reused" if args.reuse else f"made in {res['make_s']:.0f} s"
    print(f"\ncatalog: {n} tracks x {secs:g} s, 4 targets, stereo 16-bit 44.1 kHz: {res['catalog_gb']:.1f} GB "
          f"({made}); load average before the runs {res['load_before']:.2f}")
    print(f"  plain read, 1 process        : {res['read_s']:7.1f} s  {res['read_mb_s']:6.0f} MB/s (file bytes)")
    s = res["sdr_sisdr"]
    print(f"  evaluate --metrics sdr,sisdr : {s['wall_s']:7.1f} s  {s['mb_s']:6.0f} MB/s  {s['tracks_s']:.2f} tracks/s "
          f"({s['n_failed']} failed); {s['wall_s'] / res['read_s']:.2f}x the plain read")
    b = res["bss"]
    whole = b["tracks"] == n
    print(f"  evaluate --metrics bss       : {b['wall_s']:7.1f} s for {b['tracks']} tracks = {b['s_per_track']:.1f} s "
          f"per track ({b['s_per_track_minute']:.2f} s per track-minute of wall on 2 CPUs)"
          + ("" if whole else f"; {n} tracks extrapolated: {b['extrapolated_s'] / 60:.0f} min (an extrapolation, "
                              "not a run)"))
    c = res.get("cluster")
    if c:
        cs, cb = c["sdr_sisdr"], c["bss"]
        print(f"  2-node cluster (1 CPU each, nodes up in {c['nodes_up_s']:.0f} s):")
        print(f"    sdr,sisdr {cs['tracks']} tracks: {cs['wall_s']:7.1f} s ({cs['n_failed']} failed), "
              f"{s['wall_s'] / cs['wall_s']:.2f}x the single node's speed; worker peak RSS {cs['worker_peak_rss_mb']:.0f} MB")
        print(f"    bss       {cb['tracks']} tracks: {cb['wall_s']:7.1f} s ({cb['n_failed']} failed), "
              f"{b['wall_s'] / cb['wall_s']:.2f}x the single node's speed; worker peak RSS {cb['worker_peak_rss_mb']:.0f} MB")
    r = res["rss"]
    print(f"  worker peak RSS, sdr,sisdr   : {r['small_tracks']} tracks {r['small_mb']:.0f} MB, "
          f"{r['large_tracks']} tracks {r['large_mb']:.0f} MB (ratio {r['large_mb'] / r['small_mb']:.2f})")


def _reused(folder: Path, tracks: int) -> int:
    """The size of a catalog kept by an earlier ``--keep`` run (checked to hold ``tracks`` tracks)."""
    found = sorted(d.name for d in (folder / "refs").iterdir())
    if len(found) != tracks or sorted(d.name for d in (folder / "est").iterdir()) != found:
        raise SystemExit(f"{folder} does not hold {tracks} tracks of references and estimates")
    return sum(p.stat().st_size for p in folder.rglob("*.wav"))


def run_catalog(args) -> int:
    base = Path(args.workdir or tempfile.gettempdir())
    res: dict = {"tracks": args.catalog_tracks, "seconds": args.catalog_seconds}
    if args.reuse:
        folder = Path(args.reuse)
    else:
        _check_disk(base, args.catalog_tracks, args.catalog_seconds)
        folder = Path(tempfile.mkdtemp(prefix="sepcluster-bench-catalog-", dir=base))
    try:
        t0 = time.perf_counter()
        if args.reuse:
            size = _reused(folder, args.catalog_tracks)
        else:
            size = make_catalog(folder, args.catalog_tracks, args.catalog_seconds)
        res.update(catalog_gb=size / 1e9, make_s=time.perf_counter() - t0)
        res["load_before"] = os.getloadavg()[0]
        read_s, nbytes = plain_read(folder)
        res.update(read_s=read_s, read_mb_s=nbytes / 1e6 / read_s)
        s = run_evaluate(folder, folder / "out-sdr", ["sdr", "sisdr"])
        res["sdr_sisdr"] = {"wall_s": s["bench_wall_s"], "mb_s": nbytes / 1e6 / s["bench_wall_s"],
                            "tracks_s": s["n_tracks"] / s["bench_wall_s"], "n_failed": s["n_failed"],
                            "worker_peak_rss_mb": s["worker_peak_rss_mb"], "read_s": s["read_seconds"],
                            "metric_s": s["metric_seconds"]}
        small = run_evaluate(_subset(folder, args.rss_tracks, "rss"), folder / "out-rss", ["sdr", "sisdr"])
        res["rss"] = {"small_tracks": small["n_tracks"], "small_mb": small["worker_peak_rss_mb"],
                      "large_tracks": s["n_tracks"], "large_mb": s["worker_peak_rss_mb"],
                      "small_by_pid": small["worker_peak_rss_mb_by_pid"],
                      "large_by_pid": s["worker_peak_rss_mb_by_pid"]}
        bss_cat = _subset(folder, args.bss_tracks, "bss") if 0 < args.bss_tracks < args.catalog_tracks else folder
        b = run_evaluate(bss_cat, folder / "out-bss", ["bss"])
        per = b["bench_wall_s"] / b["n_tracks"]
        res["bss"] = {"tracks": b["n_tracks"], "wall_s": b["bench_wall_s"], "s_per_track": per,
                      "s_per_track_minute": per / (args.catalog_seconds / 60),
                      "extrapolated_s": per * args.catalog_tracks,
                      "worker_peak_rss_mb": b["worker_peak_rss_mb"], "engine_s_per_track_minute":
                      b["seconds_per_track_minute"]}
        if args.cluster:
            res["cluster"] = run_on_cluster(folder, bss_cat)
        _report(res, args)
    finally:
        if args.reuse or args.keep:  # keep the catalog, drop this run's outputs
            for out in folder.glob("out-*"):
                shutil.rmtree(out, ignore_errors=True)
            for sub in folder.glob("subset-*"):
                shutil.rmtree(sub, ignore_errors=True)
            print(f"catalog kept in {folder} (--reuse it)")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0
