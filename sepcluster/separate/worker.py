"""The ``separate`` job's per-worker code: Ray Data map functions over one track per row.

:func:`prepare` (CPU tasks) probes a track and, for short ones, decodes and resamples it;
:class:`SeparateWorker` (an actor pool) separates it with the chunked engine
(:mod:`sepcluster.separate.engine`), writes the stems atomically and records the track's catalog
rows at once (:func:`make_rows`, :mod:`sepcluster.separate.catalog`). Both take a plain ``cfg``
dict, so the same code runs locally, in tests and on a cluster. Every failure of a track becomes
an ``error`` row naming the input; nothing escapes to stop the catalog.
"""

from __future__ import annotations

import glob
import os
import resource
import time
from typing import Optional

from sepcluster import storage
from sepcluster.errors import AudioError, SepclusterError

from . import catalog
from .estimator_base import SPECTROGRAM

DRIVER_COLUMNS = ("key", "track", "target", "status", "error", "source_uri", "duration", "peak", "clipping")


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_identity(device) -> dict:
    """The catalog's ``worker`` (``<host>:<pid>``) and ``device`` of this process: ``cpu``, or
    ``cuda (GPU <ids>)`` with the node's GPU ids Ray gave the process (``CUDA_VISIBLE_DEVICES``), so
    an operator sees which node and GPU made each track, and that actors share or spread GPUs."""
    import socket

    kind = str(device).split(":")[0]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if kind == "cuda" and visible:
        kind = f"cuda (GPU {visible})"
    return {"worker": f"{socket.gethostname()}:{os.getpid()}", "device": kind}


def error_text(exc: BaseException) -> str:
    """One line for an error row: a SepclusterError's message, else the exception's type and message (redacted)."""
    if isinstance(exc, SepclusterError):
        return storage.redact(str(exc))
    return storage.redact(f"{type(exc).__name__}: {exc}")


def prepare(row: dict, cfg: dict) -> dict:
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
        row["error"] = error_text(exc)
    row["prepare_seconds"] = time.perf_counter() - t0
    return row


class SeparateWorker:
    """Ray Data actor: separates one track per call and writes its stems and catalog rows.

    ``cfg`` is a plain dict (see :func:`separate`), so the same class runs locally, in tests
    and on a cluster.
    """

    def __init__(self, cfg: dict):
        import torch

        from .estimators import make_estimator
        from .separators import SeparatorSpec
        from .separators import load as load_separator

        self.cfg = cfg
        threads = int(cfg.get("threads") or 0)
        if threads > 0:
            torch.set_num_threads(max(1, min(threads, os.cpu_count() or threads)))
        self.device = cfg["device"]
        spec = SeparatorSpec.from_dict(cfg["separator"])
        model = load_separator(spec, targets=cfg["targets"], device=self.device)
        self.spec = spec
        self.identity = worker_identity(self.device)
        self.estimator = make_estimator(model, targets=cfg["targets"], niter=cfg["niter"], softmask=cfg["softmask"],
                                        residual=cfg["residual"], eps=cfg["eps"], double=cfg["double"],
                                        device=self.device, precision=cfg.get("precision") or "fp32",
                                        batch_size=cfg.get("batch_size"))
        self.shared = None
        if int(cfg.get("tracks_per_actor") or 1) > 1:  # several tracks at once share the model's calls
            from .batching import SharedBatches

            size = cfg.get("batch_size") or getattr(self.estimator, "batch_size", None) or cfg.get("batch_chunks")
            self.shared = SharedBatches(self.estimator, int(size or 1))

    def __call__(self, batch: dict) -> dict:
        rows = [{k: v[i] for k, v in batch.items()} for i in range(len(batch["key"]))]
        if self.shared is None or len(rows) == 1:
            done = [self.process(row) for row in rows]
        else:
            done = self._at_once(rows)
        return {c: [r.get(c) for rs in done for r in rs] for c in DRIVER_COLUMNS}

    def _at_once(self, rows: list) -> list:
        """The tracks of ``rows`` separated at once, one thread each, their chunks batched together
        (:mod:`sepcluster.separate.batching`); each track's rows, in order."""
        import threading

        from sepcluster.threads import run_in_threads

        all_in = threading.Barrier(len(rows))  # every track takes part before the first model call

        def work(row: dict) -> list:
            with self.shared.track():
                all_in.wait()
                return self.process(row, self.shared)

        return run_in_threads([lambda row=row: work(row) for row in rows], name="separate-track")

    def process(self, row: dict, estimator=None) -> list:
        """Separate one track (``estimator``: this worker's, or the shared batches of :meth:`_at_once`)."""
        import json as _json

        from sepcluster.audiostream import ArrayReader

        from .engine import separate_file, write_stems

        cfg = self.cfg
        est = estimator or self.estimator
        ext = cfg["format"]
        track = str(row["track"])
        folder = output_folder(cfg, track, row.get("subset"))
        outputs = {o: storage.join(folder, f"{o}.{ext}") for o in est.outputs}
        t0 = time.perf_counter()
        status, error, stats = catalog.DONE, None, None
        attempt = catalog.start_attempt(cfg["out"], row["key"])
        if row["status"] != "ok":
            status, error = catalog.ERROR, str(row.get("error") or "unknown error")
        elif attempt > catalog.MAX_ATTEMPTS:
            status, error = catalog.ERROR, (f"the worker process died {attempt - 1} times while separating it "
                                            f"(out of memory?)")
        else:
            try:
                _clean_stale_temps(folder)
                # spectrogram models: the pipeline's chunks per call; waveform models: the user's
                # --batch-size, else their estimator's own (on the CPU: its parallel chunks)
                batch = cfg["batch_chunks"] if est.domain == SPECTROGRAM else cfg.get("batch_size")
                common = dict(format=ext, bits=cfg["bits"], device=self.device, chunk_seconds=cfg["chunk_seconds"],
                              overlap_seconds=cfg["overlap_seconds"], batch_chunks=batch,
                              downmix=cfg["downmix"], clip=cfg.get("clip"))
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
                status, error = catalog.ERROR, error_text(exc)
                stats = None
        seconds = time.perf_counter() - t0 + float(row.get("prepare_seconds") or 0.0)
        rows = make_rows(row, est.outputs, outputs, status, error, stats, self.spec.bundle_id, seconds, cfg,
                         identity=self.identity)
        catalog.write_part(cfg["out"], row["key"], rows)
        catalog.end_attempts(cfg["out"], row["key"])
        for r in rows:
            r["key"] = row["key"]
        return rows


def worker_class(cfg: dict) -> type:
    """A :class:`SeparateWorker` subclass that carries ``cfg`` itself: Ray pickles it with the class,
    so the actor has no constructor arguments in the object store (a restarted actor needs none)."""
    return type("SeparateWorker", (SeparateWorker,), {"__init__": lambda self: SeparateWorker.__init__(self, cfg)})


def make_rows(row: dict, names, outputs: dict, status: str, error: Optional[str], stats, bundle_id: str,
              seconds: float, cfg: dict, identity: Optional[dict] = None) -> list:
    """The catalog rows of one track (one per output name); ``identity``: the worker's
    :func:`worker_identity` (None for a row the driver writes)."""
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
    separator = cfg.get("separator") or {}
    peaks = (stats.peaks if stats is not None else None) or {}
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
            "finished_at": finished, "worker_max_rss_mb": rss, "model_kind": separator.get("kind"),
            "weights_sha256": separator.get("weights_sha256"), "settings_id": cfg.get("settings_id"),
            "peak": peaks[name][0] if name in peaks else None, "clipping": peaks[name][1] if name in peaks else None,
            **(identity or {}),
        })
    return rows


def output_folder(cfg: dict, track: str, subset: Optional[str]) -> str:
    """Where a track's stems go: ``<out>/<track>`` or, with ``layout="musdb"``, ``<out>/<subset>/<track>``
    (museval's estimates layout; ``test`` when the input is not from a MUSDB root)."""
    if cfg.get("layout") == "musdb":
        return storage.join(cfg["out"], subset or "test", track)
    return storage.join(cfg["out"], track)


def _clean_stale_temps(folder: str) -> None:
    """Remove temporary stems a killed worker left in a local track folder."""
    if storage.is_remote(folder):
        return
    for path in glob.glob(os.path.join(glob.escape(folder), ".*.tmp-*")):
        try:
            os.unlink(path)
        except OSError:
            pass
