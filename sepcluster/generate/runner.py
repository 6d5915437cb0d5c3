"""``generate``: Scaper mixtures on Ray actors, one Parquet shard per contiguous seed range.

The driver validates the recipe against the stem library before any work, writes
``OUT/_dataset.json`` (a rerun with another recipe into the same ``OUT`` is refused), plans the
shards whose files are not committed yet, and hands them to a pool of actors (one per CPU by
default, ``num_cpus=1`` each). Each actor indexes the stem library once, keeps a cache of
decoded sources (same output, fewer file reads) and renders its shard seed by seed
(:func:`~sepcluster.generate.mixing.make_mixture`), streaming one row group per mixture into a
temporary file that becomes the shard atomically. An actor that dies (killed, OOM, node lost)
loses only its in-flight shard, which goes back to the queue and is redone by a fresh actor;
shards already written are never redone, so the final dataset holds every seed exactly once.
Since mixture ``i`` depends only on ``(recipe, base_seed + i)``, the dataset is the same for
any number of actors, shard size, node or retry.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import storage
from ..errors import ConfigError
from ..datasets import MAX_SEED
from ..datasets import mixtures as layout
from . import dataset as ds
from ..datasets.library import index_library
from .actors import ShardPool
from .mixing import make_mixture, render_jams
from .recipe import Recipe, load_recipe, validate_recipe

log = logging.getLogger(__name__)

DEFAULT_CACHE_MB = int(os.environ.get("SEPCLUSTER_SOURCE_CACHE_MB", "2048"))
MAX_DEFAULT_SHARD = 64


@dataclass
class GenerateSummary:
    """What a :func:`generate` call did. ``mixtures_per_second`` counts mixtures made in this call."""

    out: str
    recipe_hash: str
    num_mixtures: int
    base_seed: int
    shard_size: int
    num_actors: int
    audio_format: str
    generated: int = 0
    skipped: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    coherent: int = 0
    actor_failures: int = 0
    seconds: float = 0.0          # from actors ready to the last shard committed
    cpu_seconds: float = 0.0      # CPU time the actors spent on committed shards
    render_seconds: float = 0.0   # actor wall time in Scaper (summed over actors, committed shards)
    store_seconds: float = 0.0    # the rest of the shards' actor wall time: encode, write, commit
    startup_seconds: float = 0.0  # starting the actors (Ray workers, imports, library index)
    mixtures_per_second: float = 0.0
    peak_rss_mb: dict = field(default_factory=dict)   # actor pid -> peak resident memory (MB)
    run_id: str | None = None
    complete: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def per_mixture(self, total: float) -> float:
        """``total`` (seconds over the committed shards) per generated mixture; 0 when none was made."""
        return total / self.generated if self.generated else 0.0

    @property
    def exit_code(self) -> int:
        """0 when every mixture of the dataset is committed, else 1."""
        return 0 if self.complete else 1

    def format(self) -> str:
        """The console summary of the run."""
        lines = [f"dataset: {self.out}",
                 f"mixtures: {self.generated} made, {self.skipped} already there ({self.shards_written} shards "
                 f"written, {self.shards_skipped} skipped), {self.mixtures_per_second:.2f} mixtures/s with "
                 f"{self.num_actors} actor(s)"]
        if self.actor_failures:
            lines.append(f"actor failures recovered: {self.actor_failures}")
        lines += [f"recipe hash: {self.recipe_hash}", f"MLflow run: {self.run_id}"]
        return "\n".join(lines)


# --------------------------------------------------------------------------- planning

def plan_shards(base_seed: int, num_mixtures: int, shard_size: int, committed: set[int]) -> list[tuple[int, int]]:
    """Seed ranges ``(first, last)`` still to make: a grid of ``shard_size`` from ``base_seed``,
    minus committed seeds (a partly committed cell becomes its missing runs)."""
    out = []
    end = base_seed + num_mixtures
    for start in range(base_seed, end, shard_size):
        stop = min(start + shard_size, end)
        run_start = None
        for seed in range(start, stop):
            if seed in committed:
                if run_start is not None:
                    out.append((run_start, seed - 1))
                    run_start = None
            elif run_start is None:
                run_start = seed
        if run_start is not None:
            out.append((run_start, stop - 1))
    return out


def default_shard_size(num_mixtures: int, num_actors: int) -> int:
    """About eight shards per actor, at most 64 mixtures per shard.

    The last shards decide when a job ends: with ``k`` shards per actor an actor idles about
    ``1 / (2k)`` of a small job while the others finish theirs (4 per actor cost 2 actors ~10%).
    """
    return max(1, min(MAX_DEFAULT_SHARD, math.ceil(num_mixtures / (8 * max(1, num_actors)))))


def _check_int(value, name: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(name, f"must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(name, f"must be {bound}, got {value!r}")
    return int(value)


def prepare_output(out: str, recipe: Recipe, num_mixtures: int, base_seed: int, shard_size: int | None,
                   audio_format: str, stems_dir: str) -> dict:
    """Check ``out`` against an existing dataset there and write ``_dataset.json`` (first).

    Refuses (ConfigError) another recipe, base seed or audio format in the same ``out``; a
    larger ``num_mixtures`` extends the dataset, a smaller one is refused.
    """
    if storage.exists(storage.join(out, layout.DATASET_FILE)):
        info = layout.dataset_info(out)
        if info.get("recipe_hash") != recipe.hash:
            raise ConfigError("recipe", f"{storage.redact(out)} already holds a dataset made with another recipe "
                                        f"(hash {str(info.get('recipe_hash'))[:12]}..., this recipe "
                                        f"{recipe.hash[:12]}...): use a new --out, or the recipe of that dataset")
        if int(info["base_seed"]) != base_seed:
            raise ConfigError("base_seed", f"{storage.redact(out)} was generated with base seed {info['base_seed']}, "
                                           f"not {base_seed}")
        if info["audio_format"] != audio_format:
            raise ConfigError("audio_format", f"{storage.redact(out)} stores {info['audio_format']} audio, "
                                              f"not {audio_format}")
        if num_mixtures < int(info["num_mixtures"]):
            raise ConfigError("num_mixtures", f"{storage.redact(out)} already holds a dataset of "
                                              f"{info['num_mixtures']} mixtures; ask for at least that many")
        changed = False
        if num_mixtures != int(info["num_mixtures"]):
            info["num_mixtures"] = int(num_mixtures)
            changed = True
        if shard_size is not None and shard_size != int(info.get("shard_size", 0)):
            info["shard_size"] = int(shard_size)
            changed = True
        if changed:
            ds.write_dataset_info(out, info)
        return info
    if storage.exists(out) and any(layout.parse_shard_name(f) for f in
                                   (storage.list_files(out, recursive=False) if storage.isdir(out) else [])):
        raise ConfigError("out", f"{storage.redact(out)} holds shard files but no {layout.DATASET_FILE}: "
                                 f"not a dataset this command can resume; use a new --out")
    info = ds.new_dataset_info(recipe, num_mixtures, base_seed, shard_size or 0, audio_format, stems_dir)
    if not storage.is_remote(out):
        storage.makedirs(out)
    ds.write_dataset_info(out, info)
    return info


# --------------------------------------------------------------------------- driver

def generate(recipe: "Recipe | dict | str", stems_dir: str, out: str, num_mixtures: int, base_seed: int = 0,
             num_actors: int | None = None, shard_size: int | None = None, address: str | None = None,
             audio_format: str = "float32", cache_mb: int | None = None, progress: bool = True,
             run_name: str | None = None) -> GenerateSummary:
    """Generate mixtures ``base_seed .. base_seed + num_mixtures - 1`` into the dataset ``out``.

    recipe: a :class:`Recipe`, a mapping, or a YAML file/URI. stems_dir: a stem library
    (``foreground/<label>/<song>.wav``; local, shared by every node, or ``s3://``). out: local
    path, ``file://`` or ``s3://``. num_actors: default one per CPU of the cluster. shard_size:
    mixtures per shard file (default: about eight shards per actor, at most 64, or the size the
    dataset was started with). address: a Ray cluster (None: RAY_ADDRESS or a new local Ray).
    audio_format: ``float32`` | ``flac16`` | ``flac24``. Returns :class:`GenerateSummary`; the
    run is logged to MLflow (experiment ``sepcluster-generate``).
    """
    stems_dir, out = storage.absolute(stems_dir), storage.absolute(out)
    from .. import raycluster, tracking

    # ---- validate everything before any work
    recipe = load_recipe(recipe)
    num_mixtures = _check_int(num_mixtures, "num_mixtures", 1)
    base_seed = _check_int(base_seed, "base_seed", 0, MAX_SEED)
    if base_seed + num_mixtures - 1 > MAX_SEED:
        raise ConfigError("num_mixtures", f"seeds must stay below 2**32: base_seed {base_seed} + num_mixtures "
                                          f"{num_mixtures} is too large")
    if num_actors is not None:
        num_actors = _check_int(num_actors, "num_actors", 1)
    if shard_size is not None:
        shard_size = _check_int(shard_size, "shard_size", 1)
    layout.check_audio_format(audio_format)
    layout.schema(recipe.labels)  # column names (clashing labels are refused here)
    library = index_library(stems_dir, recipe.labels)
    for warning in validate_recipe(recipe, library):
        log.warning("recipe: %s", warning)
    cache_mb = DEFAULT_CACHE_MB if cache_mb is None else int(cache_mb)

    info = prepare_output(out, recipe, num_mixtures, base_seed, shard_size, audio_format, stems_dir)
    with raycluster.session(address):
        actors_wanted = num_actors or max(1, raycluster.cluster_cpus())
        if shard_size is None:
            shard_size = int(info.get("shard_size") or 0) or default_shard_size(num_mixtures, actors_wanted)
        if int(info.get("shard_size") or 0) != shard_size:
            info["shard_size"] = shard_size
            ds.write_dataset_info(out, info)
        committed = layout.read_manifest(out)
        done_seeds = set()
        for s in committed:
            done_seeds.update(range(s["first_seed"], s["last_seed"] + 1))
        todo = plan_shards(base_seed, num_mixtures, shard_size, done_seeds)
        summary = GenerateSummary(out=storage.redact(out), recipe_hash=recipe.hash, num_mixtures=num_mixtures,
                                  base_seed=base_seed, shard_size=shard_size,
                                  num_actors=min(actors_wanted, max(1, len(todo))), audio_format=audio_format,
                                  skipped=len(done_seeds), shards_skipped=len(committed))
        params = dict(recipe.mlflow_params())
        params.update({"recipe_hash": recipe.hash, "num_mixtures": num_mixtures, "base_seed": base_seed,
                       "num_actors": summary.num_actors, "shard_size": shard_size, "audio_format": audio_format,
                       "out": storage.redact(out), "stems": storage.redact(str(stems_dir)),
                       "address": address or os.environ.get("RAY_ADDRESS") or "local"})
        with tracking.job_run("generate", params, run_name=run_name,
                              tags={"sepcluster.output": storage.redact(out)}) as run:
            summary.run_id = run.info.run_id
            tracking.log_text(recipe.to_yaml(), "recipe.yaml")
            if todo:
                ShardPool(recipe, stems_dir, out, audio_format, cache_mb, summary, progress,
                          already=len(done_seeds)).run(todo)
            summary.mixtures_per_second = summary.generated / summary.seconds if summary.seconds > 0 else 0.0
            _remove_stale_temporaries(out)
            final = layout.read_manifest(out)
            covered = sum(s["num_mixtures"] for s in final)
            summary.complete = covered == num_mixtures
            if summary.complete:
                ds.write_manifest(out, final, info)
            _log_metrics(summary, covered)
            tracking.log_dict(summary.to_dict(), "summary.json")
        log.info("generate: %d mixtures made, %d already there, %.2f mixtures/s, dataset %s", summary.generated,
                 summary.skipped, summary.mixtures_per_second, storage.redact(out))
        return summary


def _log_metrics(summary: GenerateSummary, covered: int) -> None:
    from .. import tracking

    tracking.log_metrics({
        "mixtures_generated": summary.generated, "mixtures_skipped": summary.skipped,
        "mixtures_total": covered, "shards_written": summary.shards_written,
        "shards_skipped": summary.shards_skipped, "mixtures_per_s": summary.mixtures_per_second,
        "wall_seconds": summary.seconds, "actor_failures": summary.actor_failures,
        "startup_seconds": summary.startup_seconds,
        "cpu_seconds_per_mixture": summary.per_mixture(summary.cpu_seconds),
        "render_seconds_per_mixture": summary.per_mixture(summary.render_seconds),
        "store_seconds_per_mixture": summary.per_mixture(summary.store_seconds),
        "coherent_fraction": summary.per_mixture(summary.coherent),
        "peak_rss_mb_max": max(summary.peak_rss_mb.values(), default=0.0),
    })


def _remove_stale_temporaries(out: str) -> None:
    """Delete temporary shard files left by actors that were killed while writing (local only)."""
    if storage.is_remote(out):
        return  # S3 objects appear only when whole; actors stage in their own temp folder
    folder = storage.join(out)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name.startswith(".shard-") and ".tmp-" in name:
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


# --------------------------------------------------------------------------- regenerate

def regenerate(out: str, seed: int, stems_dir: str | None = None) -> dict:
    """Remake mixture ``seed`` from the dataset's recipe and compare it with the stored one.

    Also re-renders the stored JAMS with ``scaper.generate_from_jams``. Returns a dict with
    ``identical`` (the remade audio, stored in the dataset's format, equals the stored audio),
    ``jams_identical``, ``jams_render_identical``, per-array ``max_abs_diff`` and the events.
    """
    recipe = ds.dataset_recipe(out)
    info = layout.dataset_info(out)
    stems_dir = stems_dir or info.get("stems")
    if not stems_dir:
        raise ConfigError("stems", "the dataset does not record its stem library: pass --stems")
    library = index_library(stems_dir, recipe.labels)
    stored = layout.load_mixture(out, seed)
    fresh = make_mixture(recipe, library, int(seed))
    rendered = render_jams(stored.jams, library, recipe, seed=int(seed), coherent=stored.coherent)
    fmt = info["audio_format"]
    sr = recipe.sample_rate

    def diff(a, b) -> float:
        if a.shape != b.shape:
            return float("inf")
        return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0

    diffs = {"mixture": diff(layout.roundtrip(fresh.mixture, sr, fmt), stored.mixture)}
    render_diffs = {"mixture": diff(layout.roundtrip(rendered.mixture, sr, fmt), stored.mixture)}
    for label in recipe.labels:
        diffs[label] = diff(layout.roundtrip(fresh.stems[label], sr, fmt), stored.stems[label])
        render_diffs[label] = diff(layout.roundtrip(rendered.stems[label], sr, fmt), stored.stems[label])
    return {
        "seed": int(seed), "coherent": fresh.coherent, "stored_coherent": stored.coherent,
        "identical": all(v == 0.0 for v in diffs.values()) and fresh.coherent == stored.coherent,
        "max_abs_diff": diffs, "jams_identical": fresh.jams == stored.jams,
        "jams_render_identical": all(v == 0.0 for v in render_diffs.values()),
        "jams_render_max_abs_diff": render_diffs, "events": fresh.events, "recipe_hash": recipe.hash,
        "audio_format": fmt, "num_samples": int(fresh.mixture.shape[0]), "channels": int(fresh.mixture.shape[1]),
    }


def print_regenerate_report(report: dict, file=None) -> None:
    file = file or sys.stdout
    kind = "coherent" if report["coherent"] else "incoherent"
    print(f"seed {report['seed']}: {kind} mixture, {report['num_samples']} samples x {report['channels']} "
          f"channel(s), stored as {report['audio_format']}", file=file)
    for label, ev in report["events"].items():
        ps = "none" if ev["pitch_shift"] is None else f"{ev['pitch_shift']:+.3f} st"
        ts = "none" if ev["time_stretch"] is None else f"{ev['time_stretch']:.3f}x"
        print(f"  {label:>8}: {ev['source_file']} from {ev['source_time']:.3f} s, snr {ev['snr']:+.2f} dB, "
              f"pitch {ps}, stretch {ts}", file=file)
    for name, d in report["max_abs_diff"].items():
        print(f"  {name:>8}: max |regenerated - stored| = {d:.3g}", file=file)
    print(f"regenerated audio identical to the dataset: {'yes' if report['identical'] else 'NO'}", file=file)
    print(f"JAMS text identical: {'yes' if report['jams_identical'] else 'no (paths differ?)'}; "
          f"scaper.generate_from_jams on the stored JAMS reproduces the audio: "
          f"{'yes' if report['jams_render_identical'] else 'NO'}", file=file)
