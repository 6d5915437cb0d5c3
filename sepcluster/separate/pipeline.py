"""The ``separate`` job: a whole music catalog through Ray Data, in bounded memory.

Dataflow (one Ray Data row per track)::

    driver: list inputs, read the catalog, skip tracks already done, name the outputs
      -> prepare   (CPU tasks, ``num_cpus=0.5``): probe the file (format, rate, channels,
                    length); tracks up to ``inline_seconds`` are also decoded, checked for
                    NaN, down-mixed when asked, and resampled to the model rate here
      -> separate  (an actor pool: ``num_gpus=1`` per actor when the cluster has GPUs;
                    otherwise CPU actors with fractional ``num_cpus`` so the prepare tasks
                    always find a CPU): the model (or the IRM oracle), the Wiener filter
                    and the inverse STFT chunk by chunk (chunks batched on GPUs), the stems
                    resampled back to the input's rate and written atomically to
                    ``<out>/<track>/<target>.<ext>``, then the track's catalog rows
      -> driver: progress, summary, ``<out>/catalog.parquet``, MLflow.

Bounded memory: audio crosses the Ray object store only for tracks up to
``inline_seconds`` (default 600 s, about 200 MB of float32 stereo at 44.1 kHz), as the
decoded, model-rate array. Longer tracks (and every oracle track, which needs its four
reference stems as well) carry only their URI: the actor decodes them itself in blocks,
processes overlapping chunks (:mod:`sepcluster.separate.engine`) and streams every stem
into a temporary file, so the actor's memory depends on the chunk length, never on the
track's. Stems never travel through the object store (they are 4-5x the input): the actor
writes them where it computed them.

Resumable: each finished track's rows are recorded at once (``catalog`` parts), so a killed
run (or a killed actor: Ray restarts it and retries the track) loses at most the tracks in
flight; a rerun skips the tracks whose outputs are all ``done`` with the same separator
(``overwrite=True`` redoes them). One bad input never stops the run: corrupt, empty,
unsupported, NaN-filled, unreadable or > 2-channel files (without ``downmix``) become
``error`` rows with the reason; a file that kills its worker three times is recorded as an
error too. The summary counts them and :attr:`SeparateSummary.exit_code` is 1 if any failed.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Optional

from sepcluster import storage
from sepcluster.datasets import MUSDB_SOURCES
from sepcluster.errors import ConfigError

from . import catalog
from .engine import DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS, RESIDUAL_NAME, output_subtype
from .inputs import assign_names, list_inputs
from .worker import SeparateWorker, error_text, make_rows, prepare

log = logging.getLogger(__name__)

FORMATS = ("wav", "flac", "ogg", "aiff")
DEFAULT_INLINE_SECONDS = 600.0


@dataclass
class SeparateSummary:
    """What a ``separate`` run did (returned by :func:`separate`)."""

    out: str
    catalog_uri: str
    tracks_total: int = 0
    tracks_done: int = 0
    tracks_skipped: int = 0
    tracks_failed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    outputs: list = field(default_factory=list)
    bundle_id: str = ""
    errors: list = field(default_factory=list)  # [(source uri, reason)]
    run_id: Optional[str] = None

    @property
    def realtime_factor(self) -> float:
        """Audio seconds separated per wall second of this run."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.tracks_failed else 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["realtime_factor"] = self.realtime_factor
        return d

    def format(self) -> str:
        lines = [f"separate: {self.tracks_total} tracks: {self.tracks_done} separated, "
                 f"{self.tracks_skipped} already done, {self.tracks_failed} failed",
                 f"  {self.audio_seconds / 60:.1f} min of audio in {self.wall_seconds:.1f} s "
                 f"({self.realtime_factor:.1f}x realtime); outputs: {', '.join(self.outputs)}",
                 f"  stems: {storage.redact(self.out)}/<track>/<target>.<ext>",
                 f"  catalog: {storage.redact(self.catalog_uri)}"]
        for src, reason in self.errors[:20]:
            lines.append(f"  error: {storage.redact(src)}: {storage.redact(reason)}")
        if len(self.errors) > 20:
            lines.append(f"  ... and {len(self.errors) - 20} more errors (see the catalog)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# driver

def _resources(device: Optional[str], num_actors: Optional[int], batch_chunks: Optional[int]) -> dict:
    from sepcluster import raycluster

    cpus = max(1, raycluster.cluster_cpus())
    gpus = raycluster.cluster_gpus()
    if device is None:
        device = "cuda" if gpus else "cpu"
    use_gpu = str(device).startswith("cuda")
    if use_gpu:
        if not gpus:
            raise ConfigError("device", f"{device} was asked for but the Ray cluster has no GPUs")
        actors = int(num_actors or gpus)
        remote = {"num_gpus": 1, "num_cpus": 1}
        threads = 2
    else:
        actors = int(num_actors or max(1, cpus // 4))
        per_actor = max(0.25, min(1.0, (cpus - 0.5) / actors))
        remote = {"num_cpus": per_actor}
        threads = max(1, cpus // actors)
    return {"device": str(device), "actors": actors, "remote": remote, "threads": threads,
            "batch_chunks": int(batch_chunks or (4 if use_gpu else 1))}


def separate(model: Optional[str] = None, input: Optional[str] = None, out: Optional[str] = None,
             targets: Optional[list] = None, format: str = "wav", bits: int = 16, niter: int = 1,
             softmask: bool = False, residual: bool = False, oracle: Optional[str] = None,
             subsets: Optional[list] = None, overwrite: bool = False, downmix: bool = False,
             address: Optional[str] = None, device: Optional[str] = None,
             chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS, overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
             batch_chunks: Optional[int] = None, num_actors: Optional[int] = None,
             inline_seconds: float = DEFAULT_INLINE_SECONDS, eps: Optional[float] = 1e-10, double: bool = False,
             limit: Optional[int] = None, run_name: Optional[str] = None,
             num_cpus: Optional[int] = None) -> SeparateSummary:
    """Separate every track of ``input`` into ``out`` with a bundle (``model``) or an oracle.

    Args:
        model: separator bundle URI (see :func:`sepcluster.models.load_bundle`).
        input: a folder / s3:// prefix (recursive), a Parquet/CSV manifest, a MUSDB root (with
            ``subsets``) or one audio file.
        out: output folder URI; stems go to ``<out>/<track>/<target>.<format>`` and the
            catalog to ``<out>/catalog.parquet``.
        targets: list of names (default: all of the bundle / oracle).
        format, bits: wav (16/24/32 float), flac (16/24), ogg, aiff.
        niter, softmask, residual, eps, double: Wiener filter options
            (:func:`sepcluster.separate.wiener.wiener`); ``residual`` adds ``accompaniment``.
        oracle: ``"irm"`` (or ``irm1``/``irm2``) instead of a model (MUSDB-layout inputs).
        subsets: read ``input`` as a MUSDB root: e.g. ``["test"]`` or ``["train", "test"]``.
        overwrite: redo tracks already done. downmix: average > 2 channels to mono.
        address: Ray address (None: ``RAY_ADDRESS`` or a new local Ray; an open
            :func:`sepcluster.raycluster.session` is reused).
        device: ``cpu``/``cuda`` (default: cuda when the cluster has GPUs).
        chunk_seconds, overlap_seconds, batch_chunks: chunking (see :mod:`~sepcluster.separate.engine`).
        num_actors: separating actors (default: one per GPU, else CPUs // 4).
        inline_seconds: tracks up to this length are decoded by the CPU tasks; longer ones
            stream inside the actor.
        limit: only the first ``limit`` inputs.

    Returns a :class:`SeparateSummary` (``exit_code`` 1 when a track failed). Raises
    ConfigError/DataError/StorageError for bad arguments or an unreadable ``input``/``model``.
    """
    model, input, out = (storage.absolute(u) for u in (model, input, out))
    from sepcluster import tracking

    fmt = _check_arguments(model, input, out, oracle, format, bits, niter)
    if chunk_seconds is not None and float(chunk_seconds) <= 0:
        chunk_seconds = None
    t_start = time.perf_counter()
    targets, outputs, bundle_id, model_rate = _plan_outputs(model, oracle, targets, residual, eps)
    tracks = _plan_tracks(input, subsets, out, limit, oracle)
    catalog.consolidate(out) if storage.exists(catalog.parts_uri(out)) else None  # parts of a killed run
    existing = catalog.read_rows(out)
    names = assign_names(tracks, catalog.names_in_use(existing))
    done = set() if overwrite else catalog.done_keys(existing, outputs, bundle_id)
    todo = [t for t in tracks if t.key not in done]
    summary = SeparateSummary(out=out, catalog_uri=catalog.catalog_uri(out), tracks_total=len(tracks),
                              tracks_skipped=len(tracks) - len(todo), outputs=outputs, bundle_id=bundle_id)
    params = {"model": model, "oracle": oracle, "input": input, "out": out,
              "subset": ",".join(subsets) if subsets else None, "targets": ",".join(outputs), "format": fmt,
              "bits": bits, "niter": niter, "softmask": softmask, "residual": residual, "overwrite": overwrite,
              "downmix": downmix, "chunk_seconds": chunk_seconds, "overlap_seconds": overlap_seconds, "eps": eps,
              "double": double, "bundle_id": bundle_id}
    with tracking.job_run("separate", params, run_name=run_name) as run:
        summary.run_id = run.info.run_id
        tracking.log_metrics({"tracks_total": len(tracks), "tracks_skipped": summary.tracks_skipped,
                              "tracks_todo": len(todo)})
        if todo:
            _run_ray(todo, names, summary, dict(
                model=model, oracle=oracle, out=out, targets=targets, format=fmt, bits=int(bits), niter=int(niter),
                softmask=bool(softmask), residual=bool(residual), eps=eps, double=bool(double),
                downmix=bool(downmix), chunk_seconds=chunk_seconds, overlap_seconds=float(overlap_seconds),
                inline_seconds=float(inline_seconds), model_rate=model_rate),
                address=address, device=device, num_actors=num_actors, batch_chunks=batch_chunks,
                num_cpus=num_cpus)
        table = catalog.consolidate(out, metadata={"sepcluster.bundle_id": bundle_id,
                                                   "sepcluster.outputs": ",".join(outputs),
                                                   "sepcluster.mlflow_run_id": summary.run_id or ""})
        summary.wall_seconds = time.perf_counter() - t_start
        _log_summary(summary, table.num_rows)
    return summary


def _check_arguments(model, input, out, oracle, format: str, bits: int, niter: int) -> str:
    """ConfigError for a bad argument; returns the output format in lower case."""
    if not input:
        raise ConfigError("input", "is required")
    if not out:
        raise ConfigError("out", "is required")
    if bool(model) == bool(oracle):
        raise ConfigError("model", "give exactly one of --model BUNDLE or --oracle irm")
    fmt = str(format).lower()
    if fmt not in FORMATS:
        raise ConfigError("format", f"must be one of {', '.join(FORMATS)}, got {format!r}")
    output_subtype(fmt, bits)
    if int(niter) < 0:
        raise ConfigError("niter", f"must be >= 0, got {niter}")
    return fmt


def _plan_outputs(model, oracle, targets, residual: bool, eps) -> tuple:
    """What the run produces, known on the driver: ``(targets, outputs, bundle_id, model_rate)``
    (the bundle is loaded on CPU once here, so a bad one fails before any work)."""
    targets = list(targets) if targets else None
    if oracle:
        from .oracle import IdealRatioMask

        est = IdealRatioMask.from_name(oracle).estimator(targets=targets, residual=residual, eps=eps)
        return targets, list(est.outputs), est.bundle_id, None
    from sepcluster.models import load_bundle

    bundle = load_bundle(model, targets=targets, device="cpu")
    targets = targets or list(bundle.models)
    if residual and RESIDUAL_NAME in targets:
        raise ConfigError("residual", f"the bundle has a target named '{RESIDUAL_NAME}' already")
    outputs = list(targets) + ([RESIDUAL_NAME] if residual else [])
    return targets, outputs, bundle.bundle_id, int(round(float(bundle.meta.sample_rate)))


def _plan_tracks(input: str, subsets, out: str, limit, oracle) -> list:
    """The inputs to separate (not our own stems), the first ``limit``; oracle inputs without
    their four reference stems become error tracks."""
    tracks = list_inputs(input, subsets=subsets)
    out_prefix = storage.join(out, "")
    tracks = [t for t in tracks if not str(t.source_uri).startswith(out_prefix)]  # our own stems
    if limit:
        tracks = tracks[: int(limit)]
    if oracle:
        for t in tracks:
            if not t.error and not all(r in t.references for r in MUSDB_SOURCES):
                t.error = (f"{storage.redact(t.source_uri)}: the oracle needs the reference stems "
                           f"{', '.join(MUSDB_SOURCES)} beside the mixture (MUSDB layout)")
    return tracks


def _log_summary(summary: SeparateSummary, catalog_rows: int) -> None:
    from sepcluster import tracking

    tracking.log_metrics({"tracks_done": summary.tracks_done, "tracks_failed": summary.tracks_failed,
                          "audio_seconds": summary.audio_seconds, "wall_seconds": summary.wall_seconds,
                          "audio_seconds_per_wall_second": summary.realtime_factor, "catalog_rows": catalog_rows})
    if summary.errors:
        tracking.log_dict([{"source_uri": s, "error": e} for s, e in summary.errors], "errors.json")
    tracking.log_dict(summary.to_dict(), "summary.json")


def _run_ray(todo: list, names: dict, summary: SeparateSummary, cfg: dict, *, address, device, num_actors,
             batch_chunks, num_cpus) -> None:
    """Separate ``todo`` on the Ray Data pipeline; tracks that produced no row become error rows."""
    from sepcluster import raycluster

    with raycluster.session(address, num_cpus=num_cpus):
        res = _resources(device, num_actors, batch_chunks)
        cfg = dict(cfg, device=res["device"], threads=res["threads"], batch_chunks=res["batch_chunks"])
        seen, failure = _collect_rows(_dataset(todo, names, cfg, res), len(todo), summary)
    # tracks that produced no row: their worker died repeatedly, or the pipeline failed
    for t in todo:
        if t.key not in seen:
            _record_missing(t, names, summary, cfg, failure)


def _dataset(todo: list, names: dict, cfg: dict, res: dict):
    """The Ray Data pipeline: ``prepare`` tasks, then the ``SeparateWorker`` actor pool."""
    import ray.data

    items = [{"key": t.key, "track": names[t.key], "source_uri": t.source_uri, "stream": int(t.stream),
              "subset": t.subset or "", "references": json.dumps({k: list(v) for k, v in t.references.items()}),
              "error": t.error or ""} for t in todo]
    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = -1  # a worker crash on one track must not stop the others
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map(prepare, fn_kwargs={"cfg": cfg}, num_cpus=0.5)
    with warnings.catch_warnings():
        # max_restarts / max_task_retries have no named parameter yet: a track that kills its
        # worker is retried twice (Ray Data's default retries forever), the actor restarted
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*", category=DeprecationWarning)
        return ds.map_batches(SeparateWorker, batch_size=1, fn_constructor_kwargs={"cfg": cfg},
                              compute=ray.data.ActorPoolStrategy(size=res["actors"]), max_restarts=-1,
                              max_task_retries=2, **res["remote"])


def _collect_rows(ds, total: int, summary: SeparateSummary) -> tuple[dict, str]:
    """Count the tracks' rows as they come; ``(rows seen by key, why the unseen ones failed)``."""
    from sepcluster import raycluster

    seen: dict = {}
    bar = raycluster.progress(total=total, desc="separate", unit="track")
    try:
        for r in ds.iter_rows():
            key = r["key"]
            if key not in seen:
                seen[key] = r
                bar.update(1)
                if r["status"] == catalog.DONE:
                    summary.tracks_done += 1
                    summary.audio_seconds += float(r.get("duration") or 0.0)
                else:
                    summary.tracks_failed += 1
                    summary.errors.append((r["source_uri"], r.get("error") or "unknown error"))
    except Exception as exc:  # noqa: BLE001 - the pipeline itself failed: record what is missing
        log.error("the Ray pipeline stopped: %s", error_text(exc))
        return seen, error_text(exc)
    finally:
        bar.close()
    return seen, "the worker process died while separating it (out of memory?)"


def _record_missing(t, names: dict, summary: SeparateSummary, cfg: dict, failure: str) -> None:
    """A track without a row: count it done if its catalog part exists, else write an error row."""
    part = catalog.part_uri(summary.out, t.key)
    if storage.exists(part):  # finished and recorded, but its row never reached us
        rows = catalog.merged_table(summary.out)[0].to_pylist()
        mine = [r for r in rows if catalog.source_key_of(r) == storage.redact(t.key)]
        if mine and mine[0]["status"] == catalog.DONE:
            summary.tracks_done += 1
            summary.audio_seconds += float(mine[0].get("duration") or 0.0)
            return
    rows = make_rows({"track": names[t.key], "source_uri": t.source_uri, "stream": t.stream,
                      "subset": t.subset}, summary.outputs, {}, catalog.ERROR, failure, None,
                     summary.bundle_id, 0.0, cfg)
    catalog.write_part(summary.out, t.key, rows)
    summary.tracks_failed += 1
    summary.errors.append((t.source_uri, failure))
