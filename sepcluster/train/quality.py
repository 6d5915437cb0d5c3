"""Held-out quality of a trained separator: SI-SDR of its estimates against the mixture baseline.

For each held-out song of a stem library the mixture is the plain sum of its stems; each
target's estimate is the model's magnitude with the mixture phase (no Wiener filter), over
the whole song, for a bundle; a multi-source model file (HTDemucs ``.th``, RoFormer ``.ckpt``)
separates the whole song in chunks (:func:`sepcluster.models.inference.load_separator`). The
figure of merit is the mean over songs of
``SI-SDR(estimate, reference) - SI-SDR(mixture, reference)`` (dB).
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from .. import storage
from ..errors import ConfigError, DataError


def evaluate_heldout(bundle: str, stems_dir: str, songs: Optional[Iterable[str]] = None,
                     targets: Optional[Iterable[str]] = None, max_seconds: Optional[float] = None) -> dict:
    """Score ``bundle`` on held-out songs of the stem library ``stems_dir``.

    songs: song names (file names without suffix; default all songs). targets: default the
    bundle's. max_seconds: crop each song (None = whole songs). Audio is read at the bundle's
    sample rate and channel count. Returns ``{"songs": [...], "targets": {target: {"sisdr",
    "mix_sisdr", "improvement", "per_song": {song: {"sisdr", "mix_sisdr"}}}}}`` (dB, means over songs).
    """
    import torch

    from ..models import load_bundle, si_sdr
    from ..datasets.library import index_stems
    from .stem_reader import AudioReader, fit_length

    if not storage.isdir(bundle) and not str(bundle).lower().endswith(".pth"):
        return _evaluate_separator(bundle, stems_dir, songs, targets, max_seconds)
    b = load_bundle(bundle, targets=list(targets) if targets is not None else None)
    library = index_stems(stems_dir)
    all_songs = sorted({s for files in library.values() for s in files})
    chosen = list(songs) if songs is not None else all_songs
    if not chosen:
        raise DataError(f"{storage.redact(stems_dir)}: no songs to evaluate")
    missing = [s for s in chosen if s not in all_songs]
    if missing:
        raise ConfigError("songs", f"song '{missing[0]}' is not in {storage.redact(stems_dir)}")
    for t in b.models:
        if t not in library:
            raise ConfigError("targets", f"the library {storage.redact(stems_dir)} has no '{t}' stems")
    channels = int(b.meta.nb_channels or 2)
    reader = AudioReader(int(round(b.meta.sample_rate)), channels)
    stft, istft = b.stft(), b.istft()
    per: dict = {t: {} for t in b.models}
    with torch.no_grad():
        for song in chosen:
            stems = {lab: reader.full(files[song]) for lab, files in library.items() if song in files}
            length = max(a.shape[0] for a in stems.values())
            if max_seconds is not None:
                length = min(length, int(max_seconds * reader.sample_rate))
            mix = np.zeros((length, channels), dtype=np.float32)
            for a in stems.values():
                mix += fit_length(a, length)
            mix_t = torch.from_numpy(np.ascontiguousarray(mix.T[None]))
            spec = stft(mix_t)
            mag = spec.abs()
            phase = spec / mag.clamp_min(1e-8)
            for t, model in b.models.items():
                ref = fit_length(stems[t], length) if t in stems else np.zeros_like(mix)
                ref_t = torch.from_numpy(np.ascontiguousarray(ref.T[None]))
                est = istft(model(mag) * phase, length=length)
                per[t][song] = {"sisdr": float(si_sdr(est, ref_t)[0]), "mix_sisdr": float(si_sdr(mix_t, ref_t)[0])}
    return _summary(bundle, stems_dir, chosen, per)


def _evaluate_separator(path: str, stems_dir: str, songs, targets, max_seconds) -> dict:
    """:func:`evaluate_heldout` for a multi-source model file (every output a target)."""
    import torch

    from ..datasets.library import index_stems
    from ..models.inference import load_separator
    from ..models.losses import si_sdr
    from .stem_reader import AudioReader, fit_length

    sep = load_separator(path)
    library = index_stems(stems_dir)
    chosen = list(songs) if songs is not None else sorted({s for files in library.values() for s in files})
    wanted = list(targets) if targets is not None else list(sep.outputs)
    for t in wanted:
        if t not in sep.outputs or t not in library:
            raise ConfigError("targets", f"'{t}' is not both an output of {storage.redact(path)} and a stem of "
                                         f"{storage.redact(stems_dir)}")
    missing = [s for s in chosen if not any(s in files for files in library.values())]
    if missing or not chosen:
        raise ConfigError("songs", f"song '{(missing or ['(none)'])[0]}' is not in {storage.redact(stems_dir)}")
    reader = AudioReader(sep.sample_rate, sep.channels)
    per: dict = {t: {} for t in wanted}
    for song in chosen:
        stems = {lab: reader.full(files[song]) for lab, files in library.items() if song in files}
        length = max(a.shape[0] for a in stems.values())
        length = min(length, int(max_seconds * reader.sample_rate)) if max_seconds is not None else length
        mix = sum(fit_length(a, length) for a in stems.values()).astype(np.float32)
        est = sep(mix)
        mix_t = torch.from_numpy(np.ascontiguousarray(mix.T[None]))
        for t in wanted:
            ref = torch.from_numpy(np.ascontiguousarray(fit_length(stems[t], length).T[None])) if t in stems \
                else torch.zeros_like(mix_t)
            est_t = torch.from_numpy(np.ascontiguousarray(est[t].T[None]))
            per[t][song] = {"sisdr": float(si_sdr(est_t, ref)[0]), "mix_sisdr": float(si_sdr(mix_t, ref)[0])}
    return _summary(path, stems_dir, chosen, per)


def _summary(model: str, stems_dir: str, chosen: list, per: dict) -> dict:
    """The held-out result: per target the mean SI-SDR of the estimates and of the mixture, and per song."""
    out: dict = {"bundle": storage.redact(model), "stems": storage.redact(stems_dir), "songs": chosen, "targets": {}}
    for t, rows in per.items():
        s = float(np.mean([r["sisdr"] for r in rows.values()]))
        m = float(np.mean([r["mix_sisdr"] for r in rows.values()]))
        out["targets"][t] = {"sisdr": s, "mix_sisdr": m, "improvement": s - m, "per_song": rows}
    return out


__all__ = ["evaluate_heldout"]


def main(argv: Optional[list] = None) -> int:
    """``python -m sepcluster.train.quality BUNDLE STEMS [--songs a,b] [--targets vocals]``: print the figures."""
    import argparse
    import json

    from ..config import ListOption

    parser = argparse.ArgumentParser(description="SI-SDR of a separator bundle on held-out songs of a stem "
                                                 "library, against the mixture-as-estimate baseline")
    parser.add_argument("bundle")
    parser.add_argument("stems")
    parser.add_argument("--songs", nargs="+", action=ListOption, help="song names, comma-separated (default all)")
    parser.add_argument("--targets", nargs="+", action=ListOption, help="targets, comma-separated (default the "
                                                                         "bundle's)")
    parser.add_argument("--max-seconds", type=float)
    args = parser.parse_args(argv)
    report = evaluate_heldout(args.bundle, args.stems,
                              songs=args.songs, targets=args.targets,
                              max_seconds=args.max_seconds)
    for t, r in report["targets"].items():
        print(f"{t}: SI-SDR {r['sisdr']:.2f} dB, mixture {r['mix_sisdr']:.2f} dB, improvement "
              f"{r['improvement']:+.2f} dB over {len(report['songs'])} song(s)")
    print(json.dumps({t: {k: round(v, 3) for k, v in r.items() if k != "per_song"}
                      for t, r in report["targets"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
