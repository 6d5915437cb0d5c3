"""What evaluate scores: the references and estimates of each track, through :mod:`sepcluster.datasets`.

References (``references``), one of:

- a MUSDB18 root (``<root>/<subset>/<track>.stem.mp4``, or with ``is_wav`` the MUSDB18-HQ
  layout ``<root>/<subset>/<track>/<source>.wav``); decoded as musdb decodes them (WAV with
  soundfile, ``.stem.mp4`` with stempeg as 16-bit PCM); ``accompaniment`` (drums + bass +
  other) and ``linear_mixture`` references are summed by the engine when estimated;
- a stem-folder tree ``<root>/<track>/<target>.<ext>`` (a ``mixture`` file is the mixture), or one
  such track folder ``<track>/<target>.<ext>`` (a catalog of one track, named by the folder);
- a MoisesDB root ``<root>/<provider>/<uuid>/data.json`` (:mod:`sepcluster.datasets.moisesdb`):
  each target is the sum of the source files its label map gives it (``label_map``: MUSDB's
  vocals, drums, bass and other by default, or a YAML mapping); tracks are named by their uuid
  folder; a source file listed but missing fails its track (an error row naming the file);
- a mixture dataset of ``sepcluster generate`` (its stems are the references; the track of
  seed ``s`` is named :func:`sepcluster.datasets.mixtures.track_name` ``(s)``);
- an iterable of ``(track_name, {target: (samples, channels)}, sample_rate)`` (the Python
  hook for in-memory references).

Estimates (``estimates``), one of:

- a folder in the musdb estimates layout ``<est>/<track>/<target>.wav``, or
  ``<est>/<subset>/<track>/<target>.wav`` (museval's ``eval_mus_dir`` layout, ``separate --layout
  musdb``; the subset is the references' subset), or one track folder ``<est>/<target>.wav``
  (the track named by the folder);
- a separate-job catalog: a Parquet file (or folder of them) with columns ``track, target,
  output_uri, status``; rows whose status is not one of :data:`OK_STATUSES` are skipped
  (counted); relative ``output_uri`` are relative to the catalog's folder.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field

import numpy as np

from .. import storage
from ..datasets import DERIVED_TARGETS, folders, mixtures, moisesdb, musdb
from ..errors import ConfigError, DataError

OK_STATUSES = ("ok", "done", "success", "succeeded", "completed", "written")


@dataclass
class RefSpec:
    """Where one track's references are (picklable, small).

    kind: ``files`` (audio files or ``.stem.mp4`` streams), ``mixtures`` (a generate dataset),
    ``moisesdb`` or ``inline``. ``stems``: target -> ``(uri, stream)`` (``moisesdb``: target -> list
    of source-file URIs, summed); ``mixture``: ``(uri, stream)`` or None.
    """

    kind: str
    location: str = ""
    stems: dict = field(default_factory=dict)
    mixture: tuple | None = None
    seed: int = -1
    payload: bytes = b""  # inline: pickled (references, sample_rate)


def _from_track(track: folders.TrackFiles) -> RefSpec:
    return RefSpec("files", track.folder, dict(track.stems), mixture=track.mixture)


def _inline(references) -> dict[str, RefSpec]:
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
    return out


def _moisesdb(root: str, label_map) -> dict[str, RefSpec]:
    mapping = moisesdb.load_label_map(label_map)
    return {t.name: RefSpec("moisesdb", t.folder, moisesdb.assign(t, mapping)) for t in moisesdb.list_moisesdb(root)}


def _track_folders(root: str) -> dict[str, RefSpec]:
    tracks = folders.list_track_folders(root)
    if not tracks:
        one = folders.read_track_folder(root)  # a single track folder
        tracks = [one] if one.stems else []
    if not tracks:
        raise DataError(f"{storage.redact(root)}: no track folders with audio stems (<track>/<target>.wav)")
    return {t.name: _from_track(t) for t in tracks}


def list_references(references, subset: str | None = None, is_wav: bool | None = None, label_map=None
                    ) -> tuple[dict[str, RefSpec], str]:
    """Tracks of a references source: ``({track: RefSpec}, subset)`` (see the module docstring).

    ``label_map``: MoisesDB's label map (:func:`sepcluster.datasets.moisesdb.load_label_map`: a
    mapping or a YAML URI); ConfigError for other references.
    """
    if not isinstance(references, (str, os.PathLike)):
        return _inline(references), subset or "test"
    root = str(references)
    if not storage.exists(root):
        raise DataError(f"{storage.redact(root)}: references not found")
    if moisesdb.is_moisesdb_root(root):
        return _moisesdb(root, label_map), subset or "test"
    if label_map is not None:
        raise ConfigError("label_map", f"applies to MoisesDB references only; {storage.redact(root)} is not a "
                                       "MoisesDB root (<provider>/<uuid>/data.json)")
    if mixtures.is_mixture_dataset(root):
        seeds = mixtures.read_seeds(root)
        if not seeds:
            raise DataError(f"{storage.redact(root)}: the generate dataset has no committed mixtures")
        return {mixtures.track_name(s): RefSpec("mixtures", root, seed=int(s)) for s in seeds}, subset or "test"
    if subset or musdb.is_musdb_root(root):
        subset = subset or musdb.default_subset(root)
        tracks = [t for t in musdb.list_musdb(root, [subset], is_wav=is_wav) if t.stems]
        if not tracks:
            raise DataError(f"{storage.redact(storage.join(root, subset))}: no MUSDB tracks with stems"
                            f"{'' if is_wav else '; pass --is-wav for MUSDB18-HQ'}")
        return {t.name: _from_track(t) for t in tracks}, subset
    return _track_folders(root), subset or "test"


def _read(ref: tuple, sample_rate: int | None) -> tuple[np.ndarray, int]:
    from ..audio import read_audio

    uri, stream = ref
    if folders.is_stem_mp4(uri):
        return musdb.read_stem_mp4(uri, stream)
    return read_audio(uri, sample_rate=sample_rate)


def read_references(spec: RefSpec) -> tuple[dict[str, np.ndarray], int]:
    """Decode one track's references: ``({target: float (samples, channels)}, sample_rate)``."""
    if spec.kind == "inline":
        return pickle.loads(spec.payload)
    if spec.kind == "mixtures":
        mix = mixtures.load_mixture(spec.location, spec.seed)
        return dict(mix.stems), int(mix.sample_rate)
    if spec.kind == "moisesdb":
        return moisesdb.read_targets(spec.stems, track=storage.basename(spec.location))
    out = {}
    rate = None
    for target, ref in spec.stems.items():
        out[target], sr = _read(ref, rate)
        rate = rate or sr
    return out, int(rate)


def read_mixture(spec: RefSpec, refs: dict[str, np.ndarray], sample_rate: int) -> np.ndarray:
    """One track's mixture ``float32 (samples, channels)`` at ``sample_rate``, for ``separate_with``.

    The MUSDB mixture stream, the ``mixture`` file beside the stems, or the generate dataset's
    mixture; otherwise (no mixture stored) the sum of the reference stems.
    """
    if spec.kind == "mixtures":
        return np.asarray(mixtures.load_mixture(spec.location, spec.seed).mixture, dtype=np.float32)
    if spec.mixture:
        return _read(spec.mixture, sample_rate)[0]
    stems = [a for t, a in refs.items() if t not in DERIVED_TARGETS + ("mixture",)]
    n = max(a.shape[0] for a in stems)
    out = np.zeros((n, max(a.shape[1] for a in stems)), dtype=np.float32)
    for a in stems:
        out[: a.shape[0]] += a  # mono stems broadcast over the channels
    return out


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


def _estimate_files(folder: str) -> dict[str, str]:
    return {t: ref[0] for t, ref in folders.read_track_folder(folder).stems.items()}


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
    if storage.isdir(folder) and not _estimate_files(folder):
        uri = folder  # museval's eval_mus_dir layout <est>/<subset>/<track>/<target>.wav
    out = {t.name: {k: ref[0] for k, ref in t.stems.items()} for t in folders.list_track_folders(uri)}
    if not out and _estimate_files(uri):
        out = {storage.basename(uri): _estimate_files(uri)}  # a single track folder <est>/<target>.wav
    if not out:
        raise DataError(f"{storage.redact(uri)}: no estimates (<track>/<target>.wav folders or a catalog Parquet)")
    return out, 0
