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

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

from sepcluster import storage
from sepcluster.datasets import MUSDB_SOURCES
from sepcluster.errors import ConfigError

from . import catalog, separators
from .engine import DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS, RESIDUAL_NAME, check_clip, output_subtype
from .inputs import assign_names, list_inputs
from .worker import error_text, make_rows, prepare, worker_class

log = logging.getLogger(__name__)

FORMATS = ("wav", "flac", "ogg", "aiff")
PRECISIONS = ("fp32", "bf16", "fp16")
LAYOUTS = ("tracks", "musdb")  # <out>/<track>/<target>.<ext> | <out>/<subset>/<track>/<target>.<ext>
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
    clipped: int = 0  # stems that peaked above +-1 (clamped, rescaled or kept: see --clip)
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
        if self.clipped:
            lines.append(f"  {self.clipped} stem(s) peaked above +-1 (warned above; catalog columns peak, clipping)")
        for src, reason in self.errors[:20]:
            src, reason = storage.redact(src), storage.redact(reason)
            lines.append(f"  error: {reason}" if reason.startswith(src) else f"  error: {src}: {reason}")
        if len(self.errors) > 20:
            lines.append(f"  ... and {len(self.errors) - 20} more errors (see the catalog)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# driver

def _resources(device: Optional[str], num_actors: Optional[int], batch_chunks: Optional[int],
               gpus_per_actor: float = 1.0, tracks_per_actor: Optional[int] = None) -> dict:
    """Actors, their resources and torch threads: on GPUs, ``gpus_per_actor`` of a GPU each and by
    default as many actors as fit on every GPU of every node (of an autoscaling cluster: every GPU
    its autoscaler may bring up, where it sets a limit); on CPUs, fractional ``num_cpus`` so the
    prepare tasks always find a CPU."""
    from sepcluster import raycluster

    cpus = max(1, raycluster.cluster_cpus())
    gpus = raycluster.cluster_gpus()
    if str(device).startswith("cuda"):
        grown = (raycluster.autoscaling_max() or {}).get("GPU", 0)
        gpus = max(gpus, int(grown) if grown < 2 ** 31 else 1)  # no limit set: at least one GPU node
    if device is None:
        device = "cuda" if gpus else "cpu"
    use_gpu = str(device).startswith("cuda")
    if use_gpu:
        if not gpus:
            raise ConfigError("device", f"{device} was asked for but the Ray cluster has no GPUs (nor an "
                                        f"autoscaler that may add GPU nodes)")
        per_gpu = max(1, int(round(1.0 / float(gpus_per_actor))))
        actors = int(num_actors or gpus * per_gpu)
        remote = {"num_gpus": float(gpus_per_actor), "num_cpus": min(1.0, max(0.25, (cpus - 0.5) / actors))}
        threads = 2
    else:
        actors = int(num_actors or max(1, cpus // 4))
        per_actor = max(0.25, min(1.0, (cpus - 0.5) / actors))
        remote = {"num_cpus": per_actor}
        threads = max(1, cpus // actors)
    return {"device": str(device), "actors": actors, "remote": remote, "threads": threads,
            "batch_chunks": int(batch_chunks or (4 if use_gpu else 1)),
            "tracks_per_actor": int(tracks_per_actor or (4 if use_gpu else 1))}


def separate(model: Optional[str] = None, input=None, out: Optional[str] = None,
             targets: Optional[list] = None, format: str = "wav", bits: int = 16, niter: int = 1,
             softmask: bool = False, residual: bool = False, oracle: Optional[str] = None,
             subsets: Optional[list] = None, overwrite: bool = False, downmix: bool = False,
             address: Optional[str] = None, device: Optional[str] = None,
             chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS, overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
             batch_chunks: Optional[int] = None, num_actors: Optional[int] = None,
             inline_seconds: float = DEFAULT_INLINE_SECONDS, eps: Optional[float] = 1e-10, double: bool = False,
             limit: Optional[int] = None, run_name: Optional[str] = None, num_cpus: Optional[int] = None,
             model_type: Optional[str] = None, model_config: Optional[str] = None, precision: str = "fp32",
             gpus_per_actor: float = 1.0, layout: str = "tracks", clip: Optional[str] = None,
             tracks_per_actor: Optional[int] = None) -> SeparateSummary:
    """Separate every track of ``input`` into ``out`` with a model (``model``) or an oracle.

    Args:
        model: a sepcluster bundle, an Open-Unmix ``.pth`` (or a folder of them), a demucs ``.th``
            or bag ``.yaml``, or a BS-/Mel-Band RoFormer checkpoint with its MSST YAML
            (:mod:`sepcluster.separate.separators`); ``model_type`` / ``model_config`` as
            ``--model-type`` / ``--model-config``.
        input: a folder / s3:// prefix (recursive), a Parquet/CSV manifest, a MUSDB root (with
            ``subsets``) or one audio file; or a list of them.
        out: output folder URI; stems go to ``<out>/<track>/<target>.<format>`` (``layout="musdb"``:
            ``<out>/<subset>/<track>/<target>.<format>``, museval's estimates layout) and the catalog
            to ``<out>/catalog.parquet``.
        targets: list of names (default: all outputs of the model / oracle).
        format, bits: wav (16/24/32 float), flac (16/24), ogg, aiff.
        niter, softmask, residual, eps, double: Wiener filter options of spectrogram models
            (:func:`sepcluster.separate.wiener.wiener`); ``residual`` adds ``accompaniment``
            (the mixture minus the targets) for every kind.
        oracle: ``"irm"`` (or ``irm1``/``irm2``) instead of a model (MUSDB-layout inputs). subsets: read
            ``input`` as a MUSDB root: e.g. ``["test"]`` or ``["train", "test"]``.
        overwrite: redo tracks already done. downmix: average > 2 channels to mono.
        address: Ray address (None: ``RAY_ADDRESS`` or a new local Ray; an open session is reused).
        device: ``cpu``/``cuda`` (default: cuda when the cluster has GPUs); ``precision``: ``fp32``,
            ``bf16`` (CUDA or CPU) or ``fp16`` (CUDA) autocast of waveform models; ``gpus_per_actor``: 0.5 packs two actors on a GPU.
        chunk_seconds, overlap_seconds: spectrogram models' chunking (waveform models use their own
            segment and overlap); batch_chunks: chunks per model call.
        num_actors: separating actors (default: every GPU / ``gpus_per_actor``, else CPUs // 4), each
            separating ``tracks_per_actor`` tracks at once (default 4 on GPUs, 1 on CPUs; :mod:`.batching`).
        clip: stems above +-1: :func:`~sepcluster.separate.engine.check_clip` (clamp, rescale, none). limit:
            only the first ``limit`` inputs. inline_seconds: tracks up to this length are decoded by the
            CPU tasks; longer ones stream inside the actor.

    Returns a :class:`SeparateSummary` (``exit_code`` 1 when a track failed). Raises ConfigError/DataError/
    StorageError for bad arguments, an unreadable input/model or an unwritable ``out``, before any track.
    """
    from sepcluster import raycluster, tracking

    inputs = [storage.absolute(u) for u in ([input] if isinstance(input, str) else list(input or []))]
    model, out = separators.absolute(model), storage.absolute(out)
    chunk_seconds = None if chunk_seconds is not None and float(chunk_seconds) <= 0 else chunk_seconds
    fmt = _check_arguments(inputs, out, format, bits, niter, chunk_seconds, overlap_seconds, precision,
                           gpus_per_actor, layout, clip, tracks_per_actor)
    t_start = time.perf_counter()
    spec, targets, outputs = _plan_outputs(model, oracle, targets, residual, model_type, model_config)
    cfg = dict(out=out, targets=targets, format=fmt, bits=int(bits), niter=int(niter), softmask=bool(softmask),
               residual=bool(residual), eps=eps, double=bool(double), downmix=bool(downmix),
               chunk_seconds=chunk_seconds, overlap_seconds=float(overlap_seconds), layout=layout,
               inline_seconds=float(inline_seconds), model_rate=spec.sample_rate, separator=spec.to_dict(),
               oracle=oracle, precision=precision, clip=clip)
    cfg["settings_id"] = settings_id(cfg)
    _check_writable(out)
    tracks = _plan_tracks(inputs, subsets, out, limit, oracle)
    todo, names = _todo(tracks, out, outputs, spec, cfg["settings_id"], overwrite)
    summary = SeparateSummary(out=out, catalog_uri=catalog.catalog_uri(out), tracks_total=len(tracks),
                              tracks_skipped=len(tracks) - len(todo), outputs=outputs, bundle_id=spec.bundle_id)
    mlflow_ready = tracking.prepare_in_background("separate")  # while Ray starts: small jobs wait for one
    with raycluster.session(address, num_cpus=num_cpus) if todo else contextlib.nullcontext():
        mlflow_ready()
        with tracking.job_run("separate", _params(model, oracle, inputs, out, subsets, outputs, cfg, overwrite,
                                                  spec), run_name=run_name) as run:
            summary.run_id = run.info.run_id
            tracking.log_metrics({"tracks_total": len(tracks), "tracks_skipped": summary.tracks_skipped,
                                  "tracks_todo": len(todo)})
            if todo:
                _run_ray(todo, names, summary, cfg, address=address, device=device, num_actors=num_actors,
                         batch_chunks=batch_chunks, num_cpus=num_cpus, gpus_per_actor=gpus_per_actor,
                         tracks_per_actor=tracks_per_actor)
            _finish(summary, spec, t_start)
    return summary


def _finish(summary: SeparateSummary, spec, t_start: float) -> None:
    """The catalog consolidated (with the run's metadata), the summary's wall time, MLflow metrics."""
    table = catalog.consolidate(summary.out, metadata={"sepcluster.bundle_id": spec.bundle_id,
                                                       "sepcluster.outputs": ",".join(summary.outputs),
                                                       "sepcluster.mlflow_run_id": summary.run_id or ""})
    summary.wall_seconds = time.perf_counter() - t_start
    _log_summary(summary, table.num_rows)


# every setting besides the model that changes what is written for a track that separates (downmix only
# decides whether > 2-channel inputs separate at all, so a rerun with it keeps the tracks already done)
def _todo(tracks: list, out: str, outputs: list, spec, settings: str, overwrite: bool) -> tuple[list, dict]:
    """The tracks still to separate (not done with this model and these settings) and every track's
    output folder name (names already in the catalog are kept)."""
    catalog.consolidate(out) if storage.exists(catalog.parts_uri(out)) else None  # parts of a killed run
    existing = catalog.read_rows(out)
    names = assign_names(tracks, catalog.names_in_use(existing))
    done = set() if overwrite else catalog.done_keys(existing, outputs, spec.bundle_id, settings)
    todo = [t for t in tracks if t.key not in done]
    redo = (catalog.done_keys(existing, outputs, spec.bundle_id) - done) & {t.key for t in todo}
    if redo and not overwrite:
        log.warning("%d track(s) in %s were separated with other settings: separating them again", len(redo),
                    storage.redact(out))
    return todo, names


SETTINGS = ("format", "bits", "niter", "softmask", "eps", "double", "chunk_seconds", "overlap_seconds", "layout",
            "precision")


def settings_id(cfg: dict) -> str:
    """A short hash of every setting besides the model that changes what is written (the resume key)."""
    settings = {k: cfg.get(k) for k in SETTINGS}
    if cfg.get("clip") is not None:  # not given: the format's default (the ids of earlier runs stay valid)
        settings["clip"] = cfg["clip"]
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _params(model, oracle, inputs, out, subsets, outputs, cfg: dict, overwrite: bool, spec) -> dict:
    return {"model": model, "oracle": oracle, "input": ",".join(inputs), "out": out,
            "subset": ",".join(subsets) if subsets else None, "targets": ",".join(outputs),
            "overwrite": overwrite, "bundle_id": spec.bundle_id, "model_kind": spec.kind,
            "weights_sha256": spec.weights_sha256, "settings_id": cfg["settings_id"],
            **{k: cfg[k] for k in ("format", "bits", "niter", "softmask", "residual", "downmix", "chunk_seconds",
                                   "overlap_seconds", "eps", "double", "layout", "precision")}}


def _check_arguments(inputs: list, out, format: str, bits: int, niter: int, chunk_seconds, overlap_seconds,
                     precision: str, gpus_per_actor: float, layout: str, clip: Optional[str] = None,
                     tracks_per_actor: Optional[int] = None) -> str:
    """ConfigError naming the option for a bad argument; returns the output format in lower case."""
    if not inputs:
        raise ConfigError("input", "is required (files, folders, s3:// prefixes or manifests to separate)")
    if not out:
        raise ConfigError("out", "is required")
    fmt = str(format).lower()
    if fmt not in FORMATS:
        raise ConfigError("format", f"must be one of {', '.join(FORMATS)}, got {format!r}")
    check_clip(clip, output_subtype(fmt, bits))
    if int(niter) < 0:
        raise ConfigError("niter", f"must be >= 0, got {niter}")
    if overlap_seconds is None or float(overlap_seconds) < 0:
        raise ConfigError("overlap-seconds", f"must be >= 0 seconds, got {overlap_seconds}")
    if chunk_seconds is not None and 2 * float(overlap_seconds) > float(chunk_seconds):
        raise ConfigError("overlap-seconds", f"{overlap_seconds} s must be at most half of --chunk-seconds "
                                             f"({chunk_seconds} s)")
    if precision not in PRECISIONS:
        raise ConfigError("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not 0 < float(gpus_per_actor) <= 1:
        raise ConfigError("gpus-per-actor", f"must be in (0, 1], got {gpus_per_actor}")
    if tracks_per_actor is not None and int(tracks_per_actor) < 1:
        raise ConfigError("tracks-per-actor", f"must be >= 1, got {tracks_per_actor}")
    if layout not in LAYOUTS:
        raise ConfigError("layout", f"must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return fmt


def _check_writable(out: str) -> None:
    """StorageError naming ``out`` unless a file can be written there (before any work starts)."""
    from sepcluster.errors import StorageError

    probe = storage.join(out, catalog.STATE_DIR, f"write-check-{os.getpid()}")
    try:
        storage.write_bytes(probe, b"")
        storage.delete(probe)
    except StorageError:
        raise
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StorageError(f"{storage.redact(out)}: cannot write the output folder ({reason})") from None


def _plan_outputs(model, oracle, targets, residual: bool, model_type=None, model_config=None) -> tuple:
    """What the run produces, known on the driver: ``(spec, targets, outputs)`` (the model is loaded
    on the CPU once here, so a bad one fails before any work)."""
    targets = list(targets) if targets else None
    spec = separators.resolve(model, oracle=oracle, model_type=model_type, model_config=model_config,
                              targets=targets)
    outputs = spec.outputs(targets, residual)
    return spec, targets or [o for o in outputs if o != RESIDUAL_NAME], outputs


def _plan_tracks(inputs: list, subsets, out: str, limit, oracle) -> list:
    """The inputs to separate (each source once, not our own stems), the first ``limit``; oracle
    inputs without their four reference stems become error tracks."""
    tracks, seen = [], set()
    for src in inputs:
        for t in list_inputs(src, subsets=subsets):
            if t.key not in seen:
                seen.add(t.key)
                tracks.append(t)
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
             batch_chunks, num_cpus, gpus_per_actor: float = 1.0, tracks_per_actor: Optional[int] = None) -> None:
    """Separate ``todo`` on the Ray Data pipeline; tracks that produced no row become error rows."""
    from sepcluster import raycluster

    with raycluster.session(address, num_cpus=num_cpus):
        res = _resources(device, num_actors, batch_chunks, gpus_per_actor, tracks_per_actor)
        # fp16 on the CPU is refused before any track
        separators.SeparatorSpec.from_dict(cfg["separator"]).check_precision(cfg["precision"], res["device"])
        # batch_size: what the user asked for (a waveform model's own default otherwise)
        cfg = dict(cfg, device=res["device"], threads=res["threads"], batch_chunks=res["batch_chunks"],
                   batch_size=batch_chunks, tracks_per_actor=res["tracks_per_actor"])
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
    # Ray Data restarts a dead actor and retries its track; the worker counts the attempts
    # (catalog.start_attempt) and records a track whose worker died MAX_ATTEMPTS times as an error
    return ds.map_batches(worker_class(cfg), batch_size=res["tracks_per_actor"],
                          compute=ray.data.ActorPoolStrategy(size=res["actors"]), **res["remote"])


def _collect_rows(ds, total: int, summary: SeparateSummary) -> tuple[dict, str]:
    """Count the tracks' rows as they come; ``(rows seen by key, why the unseen ones failed)``."""
    from sepcluster import raycluster

    seen: dict = {}
    bar = raycluster.progress(total=total, desc="separate", unit="track")
    try:
        for r in ds.iter_rows():
            key = r["key"]
            if r.get("clipping"):
                summary.clipped += 1
                log.warning("%s: stem '%s' peaks at %.2f: %s%s", storage.redact(r["source_uri"]), r["target"],
                            float(r["peak"]), r["clipping"],
                            " (--clip rescale scales the stem down instead)" if r["clipping"].startswith("clamp")
                            else "")
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
