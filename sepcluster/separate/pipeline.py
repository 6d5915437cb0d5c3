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
processes overlapping STFT chunks (:mod:`sepcluster.separate.chunks`) and streams every stem
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

import glob
import json
import logging
import os
import resource
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Optional

from sepcluster import storage
from sepcluster.errors import AudioError, ConfigError, SepclusterError

from . import catalog
from .chunks import DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS, RESIDUAL_NAME, output_subtype
from .inputs import assign_names, list_inputs

log = logging.getLogger(__name__)

FORMATS = ("wav", "flac", "ogg", "aiff")
_DRIVER_COLUMNS = ("key", "track", "target", "status", "error", "source_uri", "duration")
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
# per-worker code (plain configs in, plain rows out)


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, SepclusterError):
        return storage.redact(str(exc))
    return storage.redact(f"{type(exc).__name__}: {exc}")


def _prepare(row: dict, cfg: dict) -> dict:
    """Ray Data map: probe (and for short tracks decode + resample) one input."""
    import numpy as np

    from sepcluster import audio

    from sepcluster.audiostream import open_reader

    row = dict(row)
    row.update(status="ok", mode="stream", sample_rate=0, channels=0, frames=0, downmixed=False,
               audio=np.zeros((0, 0), np.float32))
    if row.get("error"):
        row["status"] = "error"
        return row
    t0 = time.perf_counter()
    try:
        with open_reader(row["source_uri"], stream=int(row["stream"])) as reader:
            rate, channels, frames = reader.sample_rate, reader.channels, reader.frames
        row.update(sample_rate=int(rate), channels=int(channels), frames=int(frames))
        if channels > 2 and not cfg["downmix"]:
            raise AudioError(f"{storage.redact(row['source_uri'])}: {channels} channels is not supported "
                                  f"(mono or stereo only; pass --downmix to average the channels to mono)")
        inline = (not cfg["oracle"]) and frames / float(rate) <= cfg["inline_seconds"]
        if inline:
            data, rate = audio.read_audio(row["source_uri"], stream=int(row["stream"]))
            row["frames"] = int(data.shape[0])
            if data.shape[1] > 2:
                data = data.mean(axis=1, keepdims=True)
                row["downmixed"] = True
            model_rate = cfg["model_rate"] or rate
            row["audio"] = audio.resample(data, rate, model_rate)
            row["mode"] = "inline"
    except Exception as exc:  # noqa: BLE001 - every failure becomes an error row
        row["status"] = "error"
        row["error"] = _error_text(exc)
    row["prepare_seconds"] = time.perf_counter() - t0
    return row


class SeparateWorker:
    """Ray Data actor: separates one track per call and writes its stems and catalog rows.

    ``cfg`` is a plain dict (see :func:`separate`), so the same class runs locally, in tests
    and on a cluster.
    """

    def __init__(self, cfg: dict):
        import torch

        from .chunks import make_estimator

        self.cfg = cfg
        threads = int(cfg.get("threads") or 0)
        if threads > 0:
            torch.set_num_threads(max(1, min(threads, os.cpu_count() or threads)))
        self.device = cfg["device"]
        if cfg["oracle"]:
            from .oracle import IdealRatioMask

            separator = IdealRatioMask.from_name(cfg["oracle"])
        else:
            from sepcluster.models import load_bundle

            separator = load_bundle(cfg["model"], targets=cfg["targets"], device=self.device)
        self.estimator = make_estimator(separator, targets=cfg["targets"], niter=cfg["niter"],
                                        softmask=cfg["softmask"], residual=cfg["residual"], eps=cfg["eps"],
                                        double=cfg["double"], device=self.device)

    def __call__(self, batch: dict) -> dict:
        n = len(batch["key"])
        out_rows: list = []
        for i in range(n):
            row = {k: v[i] for k, v in batch.items()}
            out_rows.extend(self.process(row))
        return {c: [r.get(c) for r in out_rows] for c in _DRIVER_COLUMNS}

    def process(self, row: dict) -> list:
        import json as _json

        from sepcluster.audiostream import ArrayReader

        from .chunks import separate_file, write_stems

        cfg = self.cfg
        est = self.estimator
        ext = cfg["format"]
        track = str(row["track"])
        outputs = {o: storage.join(cfg["out"], track, f"{o}.{ext}") for o in est.outputs}
        t0 = time.perf_counter()
        status, error, stats = catalog.DONE, None, None
        if row["status"] != "ok":
            status, error = catalog.ERROR, str(row.get("error") or "unknown error")
        else:
            try:
                _clean_stale_temps(cfg["out"], track)
                common = dict(format=ext, bits=cfg["bits"], device=self.device, chunk_seconds=cfg["chunk_seconds"],
                              overlap_seconds=cfg["overlap_seconds"], batch_chunks=cfg["batch_chunks"],
                              downmix=cfg["downmix"])
                if row["mode"] == "inline":
                    audio_arr = row["audio"]
                    model_rate = cfg["model_rate"] or int(row["sample_rate"])
                    reader = ArrayReader(audio_arr, model_rate, where=storage.redact(row["source_uri"]))
                    stats = write_stems(est, reader, outputs, mix_channels=reader.channels,
                                        where=storage.redact(row["source_uri"]), out_rate=int(row["sample_rate"]),
                                        out_frames=int(row["frames"]), **common)
                else:
                    refs = {k: tuple(v) for k, v in _json.loads(row.get("references") or "{}").items()}
                    stats = separate_file(est, row["source_uri"], outputs, stream=int(row["stream"]),
                                          references=refs, **common)
            except Exception as exc:  # noqa: BLE001 - every failure becomes an error row
                status, error = catalog.ERROR, _error_text(exc)
                stats = None
        seconds = time.perf_counter() - t0 + float(row.get("prepare_seconds") or 0.0)
        rows = make_rows(row, est.outputs, outputs, status, error, stats, est.bundle_id, seconds, cfg)
        catalog.write_part(cfg["out"], row["key"], rows)
        for r in rows:
            r["key"] = row["key"]
        return rows


def make_rows(row: dict, names, outputs: dict, status: str, error: Optional[str], stats, bundle_id: str,
              seconds: float, cfg: dict) -> list:
    """The catalog rows of one track (one per output name)."""
    downmixed = bool(row.get("downmixed")) or bool(stats.downmixed if stats is not None else False)
    channels = int(row.get("channels") or (stats.channels if stats is not None else 0) or 0) or None
    rate = int(row.get("sample_rate") or (stats.sample_rate if stats is not None else 0) or 0) or None
    frames = int(row.get("frames") or (stats.frames if stats is not None else 0) or 0)
    if stats is not None:
        frames, rate = stats.frames, stats.sample_rate
    out_channels = None
    if channels:
        out_channels = 1 if (downmixed or channels > 2) else channels
    model_rate = stats.model_rate if stats is not None else (cfg.get("model_rate") or None)
    finished = catalog.now()
    rss = _max_rss_mb()
    rows = []
    for name in names:
        rows.append({
            "track": str(row["track"]), "target": name, "status": status,
            "error": error if status == catalog.ERROR else None,
            "source_uri": storage.redact(row["source_uri"]), "stream": int(row.get("stream") or 0),
            "subset": row.get("subset") or None,
            "output_uri": outputs[name] if status == catalog.DONE else None,
            "duration": frames / float(rate) if rate else None, "sample_rate": rate, "channels": channels,
            "output_channels": out_channels, "downmixed": downmixed, "model_sample_rate": model_rate,
            "bundle_id": bundle_id, "format": cfg["format"], "bits": int(cfg["bits"]), "seconds": float(seconds),
            "finished_at": finished, "worker_max_rss_mb": rss,
        })
    return rows


def _clean_stale_temps(out: str, track: str) -> None:
    """Remove temporary stems a killed worker left in a local track folder."""
    if storage.is_remote(out):
        return
    folder = storage.join(out, track)
    for path in glob.glob(os.path.join(glob.escape(folder), ".*.tmp-*")):
        try:
            os.unlink(path)
        except OSError:
            pass


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
             targets=None, format: str = "wav", bits: int = 16, niter: int = 1, softmask: bool = False,
             residual: bool = False, oracle: Optional[str] = None, subset: Optional[str] = None,
             overwrite: bool = False, downmix: bool = False, address: Optional[str] = None,
             device: Optional[str] = None, chunk_seconds: Optional[float] = DEFAULT_CHUNK_SECONDS,
             overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, batch_chunks: Optional[int] = None,
             num_actors: Optional[int] = None, inline_seconds: float = DEFAULT_INLINE_SECONDS,
             eps: Optional[float] = 1e-10, double: bool = False, limit: Optional[int] = None,
             run_name: Optional[str] = None, num_cpus: Optional[int] = None) -> SeparateSummary:
    """Separate every track of ``input`` into ``out`` with a bundle (``model``) or an oracle.

    Args:
        model: separator bundle URI (see :func:`sepcluster.models.load_bundle`).
        input: a folder / s3:// prefix (recursive), a Parquet/CSV manifest, a MUSDB root (with
            ``subset``) or one audio file.
        out: output folder URI; stems go to ``<out>/<track>/<target>.<format>`` and the
            catalog to ``<out>/catalog.parquet``.
        targets: list or comma-separated names (default: all of the bundle / oracle).
        format, bits: wav (16/24/32 float), flac (16/24), ogg, aiff.
        niter, softmask, residual, eps, double: Wiener filter options
            (:func:`sepcluster.separate.wiener.wiener`); ``residual`` adds ``accompaniment``.
        oracle: ``"irm"`` (or ``irm1``/``irm2``) instead of a model (MUSDB-layout inputs).
        overwrite: redo tracks already done. downmix: average > 2 channels to mono.
        address: Ray address (None: ``RAY_ADDRESS`` or a new local Ray).
        device: ``cpu``/``cuda`` (default: cuda when the cluster has GPUs).
        chunk_seconds, overlap_seconds, batch_chunks: chunking (see ``chunks``).
        num_actors: separating actors (default: one per GPU, else CPUs // 4).
        inline_seconds: tracks up to this length are decoded by the CPU tasks; longer ones
            stream inside the actor.
        limit: only the first ``limit`` inputs.

    Returns a :class:`SeparateSummary` (``exit_code`` 1 when a track failed). Raises
    ConfigError/DataError/StorageError for bad arguments or an unreadable ``input``/``model``.
    """
    model, input, out = (storage.absolute(u) for u in (model, input, out))
    from sepcluster import tracking

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
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()] or None
    if chunk_seconds is not None and float(chunk_seconds) <= 0:
        chunk_seconds = None

    t_start = time.perf_counter()
    # what the run produces, known on the driver (the bundle is loaded on CPU once here)
    if oracle:
        from .oracle import IdealRatioMask

        est = IdealRatioMask.from_name(oracle).estimator(targets=targets, residual=residual, eps=eps)
        outputs, bundle_id, model_rate = list(est.outputs), est.bundle_id, None
    else:
        from sepcluster.models import load_bundle

        bundle = load_bundle(model, targets=targets, device="cpu")
        targets = targets or list(bundle.models)
        if residual and RESIDUAL_NAME in targets:
            raise ConfigError("residual", f"the bundle has a target named '{RESIDUAL_NAME}' already")
        outputs = list(targets) + ([RESIDUAL_NAME] if residual else [])
        bundle_id, model_rate = bundle.bundle_id, int(round(float(bundle.meta.sample_rate)))
        del bundle

    tracks = list_inputs(input, subset=subset)
    out_prefix = storage.join(out, "")
    tracks = [t for t in tracks if not str(t.source_uri).startswith(out_prefix)]  # our own stems
    if limit:
        tracks = tracks[: int(limit)]
    if oracle:
        for t in tracks:
            if not t.error and not all(r in t.references for r in ("vocals", "drums", "bass", "other")):
                t.error = (f"{storage.redact(t.source_uri)}: the oracle needs the reference stems vocals, drums, bass "
                           f"and other beside the mixture (MUSDB layout)")
    catalog.consolidate(out) if storage.exists(catalog.parts_uri(out)) else None  # parts of a killed run
    existing = catalog.read_rows(out)
    names = assign_names(tracks, catalog.names_in_use(existing))
    done = set() if overwrite else catalog.done_keys(existing, outputs, bundle_id)
    todo = [t for t in tracks if t.key not in done]
    summary = SeparateSummary(out=out, catalog_uri=catalog.catalog_uri(out), tracks_total=len(tracks),
                              tracks_skipped=len(tracks) - len(todo), outputs=outputs, bundle_id=bundle_id)
    params = {"model": model, "oracle": oracle, "input": input, "out": out, "subset": subset,
              "targets": ",".join(outputs), "format": fmt, "bits": bits, "niter": niter, "softmask": softmask,
              "residual": residual, "overwrite": overwrite, "downmix": downmix, "chunk_seconds": chunk_seconds,
              "overlap_seconds": overlap_seconds, "eps": eps, "double": double, "bundle_id": bundle_id}
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
        tracking.log_metrics({"tracks_done": summary.tracks_done, "tracks_failed": summary.tracks_failed,
                              "audio_seconds": summary.audio_seconds, "wall_seconds": summary.wall_seconds,
                              "audio_seconds_per_wall_second": summary.realtime_factor,
                              "catalog_rows": table.num_rows})
        if summary.errors:
            tracking.log_dict([{"source_uri": s, "error": e} for s, e in summary.errors], "errors.json")
        tracking.log_dict(summary.to_dict(), "summary.json")
    return summary


def _run_ray(todo: list, names: dict, summary: SeparateSummary, cfg: dict, *, address, device, num_actors,
             batch_chunks, num_cpus) -> None:
    import ray
    import ray.data

    from sepcluster import raycluster

    raycluster.init(address=address, num_cpus=num_cpus)
    res = _resources(device, num_actors, batch_chunks)
    cfg = dict(cfg, device=res["device"], threads=res["threads"], batch_chunks=res["batch_chunks"])
    items = [{"key": t.key, "track": names[t.key], "source_uri": t.source_uri, "stream": int(t.stream),
              "subset": t.subset or "", "references": json.dumps({k: list(v) for k, v in t.references.items()}),
              "error": t.error or ""} for t in todo]
    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = -1  # a worker crash on one track must not stop the others
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map(_prepare, fn_kwargs={"cfg": cfg}, num_cpus=0.5)
    with warnings.catch_warnings():
        # max_restarts / max_task_retries have no named parameter yet: a track that kills its
        # worker is retried twice (Ray Data's default retries forever), the actor restarted
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*", category=DeprecationWarning)
        ds = ds.map_batches(SeparateWorker, batch_size=1, fn_constructor_kwargs={"cfg": cfg},
                            compute=ray.data.ActorPoolStrategy(size=res["actors"]), max_restarts=-1,
                            max_task_retries=2, **res["remote"])
    seen: dict = {}
    bar = raycluster.progress(total=len(items), desc="separate", unit="track")
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
        log.error("the Ray pipeline stopped: %s", _error_text(exc))
        failure = _error_text(exc)
    else:
        failure = "the worker process died while separating it (out of memory?)"
    finally:
        bar.close()
    # tracks that produced no row: their worker died repeatedly, or the pipeline failed
    for t in todo:
        if t.key in seen:
            continue
        part = catalog.part_uri(summary.out, t.key)
        if storage.exists(part):  # finished and recorded, but its row never reached us
            rows = catalog.merged_table(summary.out)[0].to_pylist()
            mine = [r for r in rows if catalog.source_key_of(r) == storage.redact(t.key)]
            if mine and mine[0]["status"] == catalog.DONE:
                summary.tracks_done += 1
                summary.audio_seconds += float(mine[0].get("duration") or 0.0)
                continue
        rows = make_rows({"track": names[t.key], "source_uri": t.source_uri, "stream": t.stream,
                          "subset": t.subset}, summary.outputs, {}, catalog.ERROR, failure, None,
                         summary.bundle_id, 0.0, cfg)
        catalog.write_part(summary.out, t.key, rows)
        summary.tracks_failed += 1
        summary.errors.append((t.source_uri, failure))
