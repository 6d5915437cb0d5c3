"""The evaluate job: BSS Eval v4 over a catalog of tracks with Ray Data.

References (``references``), one of:

- a MUSDB18 root (``<root>/<subset>/<track>.stem.mp4``, or with ``is_wav`` the MUSDB18-HQ
  layout ``<root>/<subset>/<track>/<source>.wav``); decoded as musdb decodes them (WAV with
  soundfile, ``.stem.mp4`` with stempeg as 16-bit PCM); ``accompaniment`` (drums + bass +
  other) and ``linear_mixture`` references are summed by the engine when estimated;
- a stem-folder tree ``<root>/<track>/<target>.<wav|flac|...>`` (a ``mixture`` file is ignored);
- a generate dataset (a folder with ``_dataset.json``; its stems are the references, the
  track of seed ``s`` is named :func:`generate_track_name` ``(s)``), read with
  ``sepcluster.generate.dataset``;
- an iterable of ``(track_name, {target: (samples, channels)}, sample_rate)`` (the Python
  hook for in-memory references).

Estimates (``estimates``), one of:

- a folder in the musdb estimates layout ``<est>/<track>/<target>.wav`` (also
  ``<est>/<subset>/<track>/...``, as museval's ``eval_mus_dir``);
- a separate-job catalog: a Parquet file (or folder of them) with columns ``track, target,
  output_uri, status``; rows whose status is not one of :data:`OK_STATUSES` are skipped
  (counted); relative ``output_uri`` are relative to the catalog's folder.

Or no estimates and ``separate_with`` = a separator bundle (``sepcluster separate --model``):
each track's mixture (the MUSDB mixture stream, a ``mixture.*`` file beside the stems, the
generate dataset's mixture; else the sum of the reference stems) is separated in the same Ray
task that scores it, in memory, and no stems are written (``summary.json`` then records the
separation time as ``separate_seconds``).

Output under ``out``:

- ``frames.parquet``: one row per (method, track, target, frame): ``method, track, target,
  frame, time, duration, SDR, SIR, SAR, ISR`` (float64 dB, NaN as museval's store);
- ``track_medians.parquet``: the per-track medians (SiSEC protocol step 1);
- ``museval/<method>/<subset>/<track>.json``: museval's own JSON (``TrackStore``), so
  ``museval.MethodStore().add_eval_dir(out + "/museval/<method>")`` reads our results
  (the subset is ``test`` unless the references are a MUSDB root's other subset);
- ``summary.json``: counts, timings and per-target medians; ``failures.json`` when a track
  failed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import time
import unicodedata
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import storage
from ..errors import ConfigError, DataError, SepclusterError
from . import aggregate
from .engines import ENGINES, METRICS, evaluate_track, ordered_targets

log = logging.getLogger(__name__)

OK_STATUSES = ("ok", "done", "success", "succeeded", "completed", "written")
MUSDB_SOURCES = ("vocals", "drums", "bass", "other")
DERIVED_REFERENCES = ("accompaniment", "linear_mixture", "mixture")  # sums of the others, not stems
STEM_MP4_STREAMS = {"drums": 1, "bass": 2, "other": 3, "vocals": 4}  # 0 = mixture
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aif", ".aiff", ".mp3", ".m4a")
FRAME_SCHEMA = pa.schema([
    ("method", pa.string()), ("track", pa.string()), ("target", pa.string()), ("frame", pa.int64()),
    ("time", pa.float64()), ("duration", pa.float64()), ("SDR", pa.float64()), ("SIR", pa.float64()),
    ("SAR", pa.float64()), ("ISR", pa.float64()),
])


def generate_track_name(seed: int) -> str:
    """Track name of the mixture with ``seed`` in a generate dataset."""
    return f"seed-{int(seed):010d}"


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", str(name)).casefold().strip()


# ----------------------------------------------------------------------------- references

@dataclass
class RefSpec:
    """Where one track's references are (picklable, small)."""

    kind: str  # musdb-wav | musdb-stem | folder | generate | inline
    location: str = ""
    files: dict[str, str] = field(default_factory=dict)
    seed: int = -1
    payload: bytes = b""  # inline: pickled (references, sample_rate)
    mixture: str = ""  # folder / musdb-wav: the mixture file beside the stems, when there is one


def _is_musdb_root(root: str, subset: str | None) -> bool:
    if subset:
        return True
    return any(storage.isdir(storage.join(root, s)) for s in ("test", "train"))


def _list_musdb(root: str, subset: str | None, is_wav: bool | None) -> tuple[dict[str, RefSpec], str]:
    if subset is None:
        subset = "test" if storage.isdir(storage.join(root, "test")) else "train"
    folder = storage.join(root, subset)
    if not storage.isdir(folder):
        raise DataError(f"{storage.redact(folder)}: no subset folder '{subset}' in the MUSDB root")
    out: dict[str, RefSpec] = {}
    stems = [f for f in storage.list_files(folder, suffixes=(".stem.mp4",), recursive=False)]
    if is_wav is None:
        is_wav = not stems
    if is_wav:
        for d in storage.list_dirs(folder):
            files = {s: storage.join(d, f"{s}.wav") for s in MUSDB_SOURCES}
            present = {s: u for s, u in files.items() if storage.exists(u)}
            if present:
                mixture = storage.join(d, "mixture.wav")
                out[storage.basename(d)] = RefSpec("musdb-wav", d, present,
                                                   mixture=mixture if storage.exists(mixture) else "")
    else:
        for f in stems:
            out[storage.basename(f)[: -len(".stem.mp4")]] = RefSpec("musdb-stem", f)
    if not out:
        raise DataError(f"{storage.redact(folder)}: no MUSDB tracks ({'WAV folders' if is_wav else '.stem.mp4 files'}"
                        f"; pass --is-wav for MUSDB18-HQ)")
    return out, subset


def _list_stem_folders(root: str) -> dict[str, RefSpec]:
    out: dict[str, RefSpec] = {}
    for d in storage.list_dirs(root):
        files = {}
        mixture = ""
        for f in storage.list_files(d, suffixes=AUDIO_SUFFIXES, recursive=False):
            name = storage.basename(f)
            target = name.split(".")[0]
            if target.lower() == "mixture":
                mixture = f
                continue
            files[target] = f
        if files:
            out[storage.basename(d)] = RefSpec("folder", d, files, mixture=mixture)
    if not out:
        raise DataError(f"{storage.redact(root)}: no track folders with audio stems (<track>/<target>.wav)")
    return out


def _generate_module():
    try:
        from ..generate import dataset as gen_dataset  # public module of the generate job
    except ImportError as exc:  # pragma: no cover - depends on the generate package
        raise DataError(f"generate dataset references need sepcluster.generate.dataset ({exc})") from exc
    return gen_dataset


def _list_generate(root: str) -> dict[str, RefSpec]:
    gen = _generate_module()
    seeds = gen.read_seeds(root)
    if not seeds:
        raise DataError(f"{storage.redact(root)}: the generate dataset has no committed mixtures")
    return {generate_track_name(s): RefSpec("generate", root, seed=int(s)) for s in seeds}


def list_references(references, subset: str | None = None, is_wav: bool | None = None
                    ) -> tuple[dict[str, RefSpec], str]:
    """Tracks of a references source: ``({track: RefSpec}, subset)`` (see the module docstring)."""
    if not isinstance(references, (str, os.PathLike)):
        out = {}
        for item in references:
            try:
                name, refs, sr = item
            except (TypeError, ValueError) as exc:
                raise DataError("references iterable: items must be (track_name, {target: audio}, sample_rate)") from exc
            refs = {k: np.asarray(v, dtype=np.float32) for k, v in dict(refs).items()}
            out[str(name)] = RefSpec("inline", payload=pickle.dumps((refs, int(sr)), protocol=5))
        if not out:
            raise DataError("references iterable: it yielded no tracks")
        return out, subset or "test"
    root = str(references)
    if not storage.exists(root):
        raise DataError(f"{storage.redact(root)}: references not found")
    if storage.exists(storage.join(root, "_dataset.json")):
        return _list_generate(root), subset or "test"
    if _is_musdb_root(root, subset):
        return _list_musdb(root, subset, is_wav)
    return _list_stem_folders(root), subset or "test"


def read_references(spec: RefSpec) -> tuple[dict[str, np.ndarray], int]:
    """Decode one track's references: ``({target: float (samples, channels)}, sample_rate)``."""
    from .. import audio

    if spec.kind == "inline":
        return pickle.loads(spec.payload)
    if spec.kind == "generate":
        mix = _generate_module().load_mixture(spec.location, spec.seed)
        return dict(mix.stems), int(mix.sample_rate)
    if spec.kind == "musdb-stem":
        import stempeg

        out = {}
        rate = None
        with storage.local_copy(spec.location) as path:
            for name, stream in STEM_MP4_STREAMS.items():
                try:
                    a, rate = stempeg.read_stems(path, stem_id=stream, ffmpeg_format="s16le")
                except Exception as exc:  # stempeg raises assorted errors
                    raise DataError(f"{storage.redact(spec.location)}: cannot decode stem stream {stream} "
                                    f"({name}): {exc}") from exc
                out[name] = np.asarray(a, dtype=np.float32)  # 16-bit PCM: exact in float32
        return out, int(rate)
    out = {}
    rate = None
    for target, uri in spec.files.items():
        a, sr = audio.read_audio(uri, sample_rate=rate)
        rate = rate or sr
        out[target] = a
    return out, int(rate)


def read_mixture(spec: RefSpec, refs: dict[str, np.ndarray], sample_rate: int) -> np.ndarray:
    """One track's mixture ``float32 (samples, channels)`` at ``sample_rate``, for ``separate_with``.

    The MUSDB mixture stream, the ``mixture`` file beside the stems, or the generate dataset's
    mixture; otherwise (no mixture stored) the sum of the reference stems.
    """
    from .. import audio

    if spec.kind == "generate":
        return np.asarray(_generate_module().load_mixture(spec.location, spec.seed).mixture, dtype=np.float32)
    if spec.kind == "musdb-stem":
        import stempeg

        with storage.local_copy(spec.location) as path:
            try:
                a, _ = stempeg.read_stems(path, stem_id=0, ffmpeg_format="s16le")
            except Exception as exc:  # stempeg raises assorted errors
                raise DataError(f"{storage.redact(spec.location)}: cannot decode the mixture stream: {exc}") from exc
        return np.asarray(a, dtype=np.float32)
    if spec.mixture:
        return audio.read_audio(spec.mixture, sample_rate=sample_rate)[0]
    stems = [a for t, a in refs.items() if t not in DERIVED_REFERENCES]
    n = max(a.shape[0] for a in stems)
    out = np.zeros((n, max(a.shape[1] for a in stems)), dtype=np.float32)
    for a in stems:
        out[: a.shape[0]] += a  # mono stems broadcast over the channels
    return out


_BUNDLES: dict = {}  # (bundle uri, device) -> loaded SeparatorBundle, one per worker process


def _separate_in_memory(opts: dict, spec: RefSpec, refs: dict[str, np.ndarray], sr: int,
                        targets: list[str]) -> dict[str, np.ndarray]:
    """Separate one track's mixture with the bundle ``opts['separate_with']``: ``{target: audio}``."""
    from ..models import load_bundle
    from ..separate.chunks import separate_track

    device = opts["device"] or "cpu"
    key = (opts["separate_with"], device)
    if key not in _BUNDLES:
        _BUNDLES.clear()
        _BUNDLES[key] = load_bundle(opts["separate_with"], device=device)
    bundle = _BUNDLES[key]
    mixture = read_mixture(spec, refs, sr)
    outs = separate_track(bundle, mixture, sr, targets=targets, niter=opts["niter"], device=device,
                          downmix=mixture.shape[1] > 2)
    return {t: outs[t] for t in targets}


# ------------------------------------------------------------------------------ estimates

def _read_catalog(uri: str) -> tuple[dict[str, dict[str, str]], int]:
    try:
        table = storage.read_parquet(uri)
    except FileNotFoundError as exc:
        raise DataError(f"{storage.redact(uri)}: estimates catalog not found") from exc
    cols = set(table.column_names)
    need = {"track", "target", "output_uri"}
    if not need <= cols:
        raise DataError(f"{storage.redact(uri)}: the catalog needs columns track, target, output_uri "
                        f"(and status); has {', '.join(table.column_names)}")
    base = uri if storage.isdir(uri) else storage.parent(uri)
    out: dict[str, dict[str, str]] = {}
    skipped = 0
    for row in table.to_pylist():
        status = str(row.get("status", "ok") or "").strip().lower()
        if "status" in cols and status not in OK_STATUSES:
            skipped += 1
            continue
        ref = row.get("output_uri")
        if not ref or not row.get("track") or not row.get("target"):
            skipped += 1
            continue
        ref = str(ref)
        if not (storage.is_remote(ref) or ref.startswith("file://") or os.path.isabs(ref)):
            ref = storage.join(base, ref)
        out.setdefault(str(row["track"]), {})[str(row["target"])] = ref
    return out, skipped


def _track_estimate_files(folder: str) -> dict[str, str]:
    files = {}
    for f in storage.list_files(folder, suffixes=AUDIO_SUFFIXES, recursive=False):
        target = storage.basename(f).split(".")[0]
        if target.lower() != "mixture":
            files[target] = f
    return files


def list_estimates(estimates: str, subset: str = "test") -> tuple[dict[str, dict[str, str]], int]:
    """``({track: {target: uri}}, skipped catalog rows)`` of an estimates folder or catalog."""
    uri = str(estimates)
    if not storage.exists(uri):
        raise DataError(f"{storage.redact(uri)}: estimates not found")
    if uri.lower().endswith(".parquet"):
        return _read_catalog(uri)
    if storage.isdir(uri) and not storage.list_dirs(uri) and storage.list_files(uri, suffixes=(".parquet",),
                                                                                 recursive=False):
        return _read_catalog(uri)
    folder = storage.join(uri, subset)
    if storage.isdir(folder) and not _track_estimate_files(folder):
        uri = folder  # museval's eval_mus_dir layout <est>/<subset>/<track>/<target>.wav
    out = {}
    for d in storage.list_dirs(uri):
        files = _track_estimate_files(d)
        if files:
            out[storage.basename(d)] = files
    if not out:
        raise DataError(f"{storage.redact(uri)}: no estimates (<track>/<target>.wav folders or a catalog Parquet)")
    return out, 0


# ------------------------------------------------------------------------------- the work

def _evaluate_row(row: dict) -> list[dict]:
    """Ray Data flat_map: one work item (track) -> its frame rows (or one error row)."""
    from .. import audio

    opts = json.loads(row["options"])
    track = row["track"]
    spec: RefSpec = pickle.loads(row["ref_spec"])
    est_files: dict[str, str] = json.loads(row["est_files"])
    base = {"method": opts["method"], "track": track, "error": "", "eval_seconds": 0.0, "audio_seconds": 0.0,
            "separate_seconds": 0.0, "warnings": ""}
    try:
        refs, sr = read_references(spec)
        if opts.get("separate_with"):
            targets = [t for t in opts["bundle_targets"] if t in refs and (not opts["targets"] or t in opts["targets"])]
            if not targets:
                raise DataError(f"track '{track}': no reference for the bundle's targets {opts['bundle_targets']} "
                                f"(references: {sorted(refs)})")
            t_sep = time.perf_counter()
            ests = _separate_in_memory(opts, spec, refs, sr, targets)
            base["separate_seconds"] = time.perf_counter() - t_sep
        else:
            targets = opts["targets"] or list(est_files)
            targets = [t for t in targets if t in est_files]
            if not targets:
                raise DataError(f"track '{track}': none of the targets {opts['targets']} has an estimate "
                                f"(estimates: {sorted(est_files)})")
            ests = {t: audio.read_audio(est_files[t], sample_rate=sr)[0] for t in targets}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            df = evaluate_track(refs, ests, sr, window=opts["window"], hop=opts["hop"], engine=opts["engine"],
                                targets=targets, device=opts["device"], track=track)
            seconds = time.perf_counter() - t0
        n = max(a.shape[0] for t, a in refs.items() if t in targets) if any(t in refs for t in targets) else 0
        base.update(eval_seconds=seconds, audio_seconds=n / float(sr),
                    warnings="\n".join(sorted({str(w.message) for w in caught})))
    except Exception as exc:  # one bad track must not stop the catalog
        kind = "" if isinstance(exc, SepclusterError) else f"{type(exc).__name__}: "
        err = dict(base, error=storage.redact(f"{kind}{exc}") or type(exc).__name__)
        return [dict(err, target="", frame=-1, time=math.nan, duration=math.nan,
                     **{m: math.nan for m in METRICS})]
    rows = []
    for rec in df.to_dict("records"):
        rows.append(dict(base, **rec))
    return rows


def evaluate(references, estimates, out: str, engine: str = "torch", targets: list[str] | None = None,
             window: float = 1.0, hop: float = 1.0, method: str = "sepcluster", address: str | None = None,
             subset: str | None = None, is_wav: bool | None = None, device: str | None = None,
             write_json: bool = True, log_mlflow: bool = True, num_cpus: float = 1.0,
             tracks: list[str] | None = None, separate_with: str | None = None, niter: int = 1) -> dict:
    """Evaluate every track with both references and estimates; write Parquet + museval JSON.

    references: MUSDB root / stem-folder tree / generate dataset URI, or an iterable of
    ``(track, {target: float (samples, channels)}, sample_rate)``. estimates: estimates folder
    or separate catalog Parquet (module docstring). out: output folder URI. engine:
    ``"torch"`` or ``"museval"``; device: torch device for the torch engine (``"cuda"`` asks
    Ray for one GPU per task). targets: restrict to these targets. window/hop: seconds.
    address: Ray address (None: RAY_ADDRESS or a new local Ray). num_cpus: CPUs per track task.
    tracks: restrict to these track names. separate_with: a separator bundle; then
    ``estimates`` must be None and each track is separated in memory (``niter`` Wiener EM
    iterations, on ``device``) and scored in the same task.

    Returns the summary dict (also written to ``out/summary.json``): counts, timings
    (``seconds_per_track_minute``: engine seconds per minute of audio), per-target medians
    over tracks, output URIs, failures.
    """
    if isinstance(references, (str, os.PathLike)):
        references = storage.absolute(str(references))
    estimates, out, separate_with = (storage.absolute(u) for u in (estimates, out, separate_with))
    if engine not in ENGINES:
        raise ConfigError("engine", f"'{engine}' is not one of {', '.join(ENGINES)}")
    if not (window > 0 and hop > 0):
        raise ConfigError("window/hop", f"must be positive seconds, got {window}/{hop}")
    if not method or "/" in method:
        raise ConfigError("method", f"'{method}' must be a non-empty name without '/'")
    t_start = time.perf_counter()
    bundle_targets: list[str] = []
    if separate_with:
        if estimates:
            raise ConfigError("estimates", "give either estimates or separate_with (a model bundle), not both")
        from ..models import load_bundle

        bundle_targets = load_bundle(separate_with).targets  # fails here, before any work, if it is bad
        if targets and not set(targets) & set(bundle_targets):
            raise ConfigError("targets", f"{targets} are not in the bundle {storage.redact(separate_with)} "
                                         f"(it has {', '.join(bundle_targets)})")
    elif not estimates:
        raise ConfigError("estimates", "is required (a folder <track>/<target>.wav or a separate catalog), "
                                       "unless separate_with names a model bundle")
    ref_specs, subset_name = list_references(references, subset=subset, is_wav=is_wav)
    if separate_with:
        est_map, skipped_rows = {name: {t: "" for t in bundle_targets} for name in ref_specs}, 0
    else:
        est_map, skipped_rows = list_estimates(estimates, subset=subset_name)
    est_by_key = {_key(k): v for k, v in est_map.items()}
    items = []
    missing = []
    for name, spec in sorted(ref_specs.items()):
        if tracks is not None and name not in tracks:
            continue
        files = est_map.get(name) or est_by_key.get(_key(name))
        if not files:
            missing.append(name)
            continue
        if targets:
            files = {t: u for t, u in files.items() if t in targets}
        items.append({"track": name, "ref_spec": pickle.dumps(spec, protocol=5), "est_files": json.dumps(files)})
    orphans = sorted(set(map(_key, est_map)) - set(map(_key, ref_specs)))
    if missing:
        log.warning("%d reference track(s) have no estimates (e.g. %s)", len(missing), missing[0])
    if orphans:
        log.warning("%d estimate track(s) have no references (e.g. %s)", len(orphans), orphans[0])
    if not items:
        raise DataError(f"no track has both references ({len(ref_specs)} tracks) and estimates "
                        f"({len(est_map)} tracks): check the track names in {storage.redact(str(estimates))}")
    options = json.dumps({"method": method, "targets": list(targets) if targets else None, "window": float(window),
                          "hop": float(hop), "engine": engine, "device": device, "separate_with": separate_with,
                          "bundle_targets": bundle_targets, "niter": int(niter)})
    for it in items:
        it["options"] = options

    rows = _run_ray(items, address=address, num_cpus=num_cpus,
                    num_gpus=1.0 if (device and str(device).startswith("cuda")) else 0.0)
    df = pd.DataFrame(rows)
    errors = df[df["error"] != ""].drop_duplicates("track")
    ok = df[df["error"] == ""]
    per_track = ok.groupby("track").agg(eval_seconds=("eval_seconds", "first"),
                                        audio_seconds=("audio_seconds", "first"),
                                        separate_seconds=("separate_seconds", "first"),
                                        warnings=("warnings", "first"))
    frames = ok[[f.name for f in FRAME_SCHEMA]].copy()
    order = {t: i for i, t in enumerate(ordered_targets(frames["target"].unique()))}
    frames["_o"] = frames["target"].map(order)
    frames = frames.sort_values(["track", "_o", "frame"]).drop(columns="_o").reset_index(drop=True)

    frames_uri = storage.join(out, "frames.parquet")
    medians_uri = storage.join(out, "track_medians.parquet")
    meta = {"sepcluster.engine": engine, "sepcluster.window": window, "sepcluster.hop": hop,
            "sepcluster.method": method, "sepcluster.subset": subset_name}
    storage.write_parquet(pa.Table.from_pandas(frames, schema=FRAME_SCHEMA, preserve_index=False), frames_uri,
                          metadata=meta)
    medians = aggregate.track_medians(frames) if len(frames) else pd.DataFrame(
        columns=["method", "track", "target", *METRICS, "n_frames", "n_valid"])
    storage.write_parquet(pa.Table.from_pandas(medians, preserve_index=False), medians_uri, metadata=meta)
    json_root = storage.join(out, "museval", method)
    if write_json:
        for track, tdf in frames.groupby("track", sort=True):
            storage.write_text(storage.join(json_root, subset_name, f"{track}.json"),
                               museval_json(tdf, window=window, hop=hop))

    scores = aggregate.method_medians(medians) if len(medians) else medians
    audio_s = float(per_track["audio_seconds"].sum())
    eval_s = float(per_track["eval_seconds"].sum())
    summary = {
        "method": method, "engine": engine, "device": device or "cpu", "window": window, "hop": hop,
        "subset": subset_name,
        "n_tracks": int(len(per_track)), "n_failed": int(len(errors)), "n_missing_estimates": len(missing),
        "n_orphan_estimates": len(orphans), "n_skipped_catalog_rows": int(skipped_rows),
        "n_targets": int(frames["target"].nunique()), "n_frames": int(len(frames)),
        "n_nan_frames": int(frames["SDR"].isna().sum()),
        "audio_seconds": audio_s, "eval_seconds": eval_s,
        "separate_with": separate_with, "separate_seconds": float(per_track["separate_seconds"].sum()),
        "seconds_per_track_minute": (eval_s / (audio_s / 60.0)) if audio_s > 0 else None,
        "wall_seconds": time.perf_counter() - t_start,
        "scores": aggregate.summary_dict(scores).get(method, {}) if len(scores) else {},
        "frames_uri": frames_uri, "track_medians_uri": medians_uri,
        "json_uri": json_root if write_json else None,
        "failures": {r.track: r.error for r in errors.itertuples()},
        "warnings": {t: w for t, w in per_track["warnings"].items() if w},
    }
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2, default=str))
    if len(errors):
        storage.write_text(storage.join(out, "failures.json"), json.dumps(summary["failures"], indent=2))
        for track, err in summary["failures"].items():
            log.error("track '%s' failed: %s", track, err)
    if log_mlflow:
        _log_run(summary, references, estimates or f"separate-with:{separate_with}", out, targets)
    return summary


def _run_ray(items: list[dict], address: str | None, num_cpus: float, num_gpus: float) -> list[dict]:
    import ray

    from .. import raycluster

    raycluster.init(address=address)
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    kwargs: dict[str, Any] = {"num_cpus": num_cpus}
    if num_gpus:
        kwargs["num_gpus"] = num_gpus
    ds = ds.flat_map(_evaluate_row, **kwargs)
    rows: list[dict] = []
    seen: set[str] = set()
    bar = raycluster.progress(len(items), "evaluate", unit="track")
    try:
        for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
            rows.extend(batch.to_dict("records"))
            new = set(batch["track"].unique()) - seen
            seen |= new
            bar.update(len(new))
    finally:
        bar.close()
    return rows


def museval_json(frames: pd.DataFrame, window: float = 1.0, hop: float = 1.0) -> str:
    """museval's JSON for one track (``TrackStore(win, hop).json``) from its frame rows.

    frames: rows of one track with ``target, frame, SDR, SIR, SAR, ISR`` (any order).
    """
    from museval.aggregate import TrackStore

    track = str(frames["track"].iloc[0]) if "track" in frames.columns and len(frames) else "track"
    store = TrackStore(track_name=track, win=window, hop=hop)
    for target in ordered_targets(frames["target"].unique()):
        tdf = frames[frames["target"] == target].sort_values("frame")
        store.add_target(target_name=target, values={m: tdf[m].astype(float).tolist() for m in METRICS})
    return store.json


def _log_run(summary: dict, references, estimates, out: str, targets) -> None:
    from .. import tracking

    params = {"references": references if isinstance(references, (str, os.PathLike)) else "<iterable>",
              "estimates": estimates, "out": out, "engine": summary["engine"], "device": summary["device"],
              "window": summary["window"], "hop": summary["hop"], "method": summary["method"],
              "targets": ",".join(targets) if targets else "all", "subset": summary["subset"]}
    with tracking.job_run("evaluate", params, run_name=f"evaluate-{summary['method']}"):
        metrics = {k: summary[k] for k in ("n_tracks", "n_failed", "n_targets", "n_frames", "n_nan_frames",
                                           "audio_seconds", "eval_seconds", "wall_seconds",
                                           "seconds_per_track_minute") if summary.get(k) is not None}
        for target, vals in summary["scores"].items():
            for m in METRICS:
                if vals.get(m) is not None:
                    metrics[f"{target}.{m}"] = vals[m]
        tracking.log_metrics(metrics)
        tracking.log_dict(summary, "summary.json")
