"""One interface over two BSS Eval v4 engines: ``museval`` (the reference) and ``torch``.

:func:`evaluate_track` scores one track's estimates against its references and returns a
per-frame table. Both engines see exactly the same prepared inputs, and targets are grouped
the way museval's ``eval_mus_track`` groups them, so the numbers (and the JSON written from
them) are what museval itself would produce for the same track:

- targets are scored jointly (the interference of one target is the others); when both
  ``vocals`` and ``accompaniment`` are estimated, the pair ``(vocals, accompaniment)`` is
  scored on its own and ``vocals`` is taken from that pair (museval's convention), the other
  targets with ``vocals`` but without ``accompaniment``;
- an ``accompaniment`` reference missing from the references is built as the sum of every
  reference but ``vocals`` (MUSDB's definition), ``linear_mixture`` as the sum of all.

Edge cases are handled with a :class:`EvaluationWarning`, never an exception:

- estimate longer than the reference: trimmed to the reference length; shorter: padded with
  zeros at the end (museval's ``pad_or_truncate``); references of different lengths are padded
  to the longest;
- a track shorter than one window: one frame of the whole track (museval's ``Framing``
  does the same; ``duration`` in the table is then the track's length);
- a frame where any reference or estimate is silent (museval's test: channel sum exactly 0
  on the whole frame): NaN for every target of that group in that frame, as museval; a
  source silent over the whole track (museval raises) gives NaN frames;
- mono vs stereo: a mono signal is repeated on every channel when others have more;
  other channel mismatches raise :class:`~sepcluster.errors.AudioError`;
- a single target (museval scores nothing): scored alone; SIR is then NaN (no interference);
- ``+inf`` (a zero denominator) becomes NaN, as museval's JSON store does.
"""

from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np
import pandas as pd

from ..errors import AudioError, DataError

ENGINES = ("torch", "museval")
METRICS = ("SDR", "SIR", "SAR", "ISR")
FRAME_COLUMNS = ["target", "frame", "time", "duration", "SDR", "SIR", "SAR", "ISR"]
# museval/musdb's target order (musdb's mus.yaml); other targets follow in sorted order
MUSDB_TARGET_ORDER = ("vocals", "drums", "bass", "other", "accompaniment", "linear_mixture")


class EvaluationWarning(UserWarning):
    """An input was adjusted (padded, trimmed, broadcast) or a frame could not be scored."""


def _warn(message: str) -> None:
    warnings.warn(message, EvaluationWarning, stacklevel=3)


def _as_2d(name: str, kind: str, audio) -> np.ndarray:
    arr = np.asarray(audio)
    # float32 stays float32 (exact in float64; halves the memory of long tracks), else float64
    arr = arr.astype(np.float32 if arr.dtype == np.float32 else np.float64, copy=False)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise AudioError(f"{kind} '{name}': expected an array (samples, channels), got shape {arr.shape}")
    if arr.shape[0] < arr.shape[1] and arr.shape[1] > 8:
        raise AudioError(f"{kind} '{name}': shape {arr.shape} looks like (channels, samples); "
                         "pass (samples, channels)")
    if not np.all(np.isfinite(arr)):
        raise AudioError(f"{kind} '{name}': holds NaN or infinite samples")
    return arr


def ordered_targets(names) -> list[str]:
    """Targets in museval's order (vocals, drums, bass, other, accompaniment, ...), then sorted."""
    names = list(dict.fromkeys(names))
    known = [t for t in MUSDB_TARGET_ORDER if t in names]
    return known + sorted(t for t in names if t not in MUSDB_TARGET_ORDER)


def scored_targets(refs: dict, ests: dict, targets, track: str) -> tuple[dict, list[str]]:
    """``(references, targets)`` to score: ``targets`` (default every estimate) in museval's order, each
    with an estimate (else DataError naming the track), the references completed with accompaniment /
    linear_mixture sums, a target without a reference skipped with a warning (DataError where none is left)."""
    wanted = ordered_targets(targets if targets is not None else ests.keys())
    missing_est = [t for t in wanted if t not in ests]
    if missing_est:
        raise DataError(f"track '{track}': no estimate for target(s) {', '.join(missing_est)}")
    refs = _complete_references(refs, wanted, track)
    no_ref = [t for t in wanted if t not in refs]
    if no_ref:
        _warn(f"track '{track}': no reference for target(s) {', '.join(no_ref)}; skipped")
        wanted = [t for t in wanted if t in refs]
    if not wanted:
        raise DataError(f"track '{track}': no target has both a reference and an estimate "
                        f"(references: {sorted(refs)}, estimates: {sorted(ests)})")
    return refs, wanted


def _complete_references(references: dict[str, np.ndarray], wanted: list[str], track: str) -> dict:
    refs = dict(references)
    for target in wanted:
        if target in refs:
            continue
        if target == "accompaniment":
            parts = [k for k in refs if k not in ("vocals", "accompaniment", "linear_mixture", "mixture")]
            if parts and "vocals" in refs:
                refs[target] = _sum_aligned([refs[k] for k in parts])
        elif target == "linear_mixture":
            parts = [k for k in refs if k not in ("accompaniment", "linear_mixture", "mixture")]
            if parts:
                refs[target] = _sum_aligned([refs[k] for k in parts])
    return refs


def _sum_aligned(arrays: list[np.ndarray]) -> np.ndarray:
    n = max(a.shape[0] for a in arrays)
    c = max(a.shape[1] for a in arrays)
    out = np.zeros((n, c))  # float64: sums of stems are not float32-exact
    for a in arrays:
        out[: a.shape[0]] += a if a.shape[1] == c else np.repeat(a, c, axis=1)
    return out


def groups_for(targets: list[str]) -> list[tuple[list[str], list[str]]]:
    """museval's grouping: list of ``(targets scored jointly, targets whose scores are kept)``."""
    targets = ordered_targets(targets)
    has_acc = "vocals" in targets and "accompaniment" in targets
    rest = [t for t in targets if not (has_acc and t == "accompaniment")]
    keep = [t for t in rest if not (has_acc and t == "vocals")]
    out = []
    if keep:
        out.append((rest, keep))
    if has_acc:
        out.append((["vocals", "accompaniment"], ["vocals", "accompaniment"]))
    return out


def _run_engine(engine: str, refs: np.ndarray, ests: np.ndarray, win: int, hop: int, device) -> tuple:
    """(sdr, isr, sir, sar) each (nsrc, nframes) for stacked (nsrc, samples, channels) inputs."""
    if engine == "torch":
        from .bsseval import bss_eval

        r = bss_eval(refs, ests, window=win, hop=hop, device=device)
        return r.sdr, r.isr, r.sir, r.sar
    import museval.metrics

    refs, ests = refs.astype(np.float64, copy=False), ests.astype(np.float64, copy=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sdr, isr, sir, sar, _ = museval.metrics.bss_eval(
            refs, ests, window=win, hop=hop, compute_permutation=False, filters_len=512,
            framewise_filters=False, bsseval_sources_version=False)
    return sdr, isr, sir, sar


def evaluate_track(references: Mapping[str, np.ndarray], estimates: Mapping[str, np.ndarray], sample_rate: int,
                   window: float = 1.0, hop: float = 1.0, engine: str = "torch", targets=None,
                   device: str | None = None, track: str = "track") -> pd.DataFrame:
    """BSS Eval v4 of one track: one row per (target, frame).

    references, estimates: target name -> audio ``(samples, channels)`` (or ``(samples,)``),
    any float dtype, at ``sample_rate``. ``targets``: which estimates to score (default: every
    estimate that has, or can be given, a reference). ``window``/``hop`` in seconds (museval:
    ``int(seconds * rate)`` samples). ``engine``: ``"torch"`` (``device`` ``"cpu"``/``"cuda"``)
    or ``"museval"``. ``track`` only names the track in messages.

    Returns a DataFrame with columns ``target, frame, time, duration, SDR, SIR, SAR, ISR``
    (``time`` = frame * hop seconds as museval's JSON; dB values, NaN where museval's store has
    NaN). See the module docstring for edge cases (warnings, not errors).
    """
    if engine not in ENGINES:
        raise DataError(f"engine '{engine}': unknown (choose from {', '.join(ENGINES)})")
    refs, ests, wanted, nsampl = align_track(references, estimates, sample_rate, targets, track)
    win = int(window * sample_rate)
    hp = int(hop * sample_rate)
    if win <= 0 or hp <= 0:
        raise DataError(f"window {window} s / hop {hop} s: must be at least one sample at {sample_rate} Hz")
    if nsampl < win:
        _warn(f"track '{track}': {nsampl / sample_rate:.3f} s is shorter than one {window} s window; "
              "scored as one frame of the whole track")
    rows = {}
    for group, keep in groups_for(wanted):
        rows.update(_score_group(group, keep, refs, ests, nsampl, win, hp, engine, device, track))
    duration = min(win, nsampl) / float(sample_rate) if nsampl < win else float(window)
    frames = [_frame_rows(t, rows[t], hop, duration) for t in wanted]
    return pd.concat(frames, ignore_index=True)[FRAME_COLUMNS]


def align_track(references: Mapping[str, np.ndarray], estimates: Mapping[str, np.ndarray], sample_rate: int,
                targets=None, track: str = "track") -> tuple[dict, dict, list, int]:
    """Check and align one track's signals the way museval does; ``(refs, ests, targets, samples)``.

    The targets to score (``targets``, default every estimate; accompaniment / linear_mixture
    references are summed when missing), each reference and estimate ``(samples, channels)``
    with mono broadcast to the others' channel count, references padded to the longest and
    estimates padded or trimmed to it (each adjustment an :class:`EvaluationWarning`).
    Raises DataError / AudioError naming the track for what cannot be scored.
    """
    if not sample_rate or sample_rate <= 0:
        raise DataError(f"track '{track}': invalid sample rate {sample_rate!r}")
    if not references:
        raise DataError(f"track '{track}': no references")
    if not estimates:
        raise DataError(f"track '{track}': no estimates")
    refs = {k: _as_2d(k, f"track '{track}' reference", v) for k, v in references.items()}
    ests = {k: _as_2d(k, f"track '{track}' estimate", v) for k, v in estimates.items()}
    refs, wanted = scored_targets(refs, ests, targets, track)
    _broadcast_channels(refs, ests, wanted, track)
    return refs, ests, wanted, _align_lengths(refs, ests, wanted, track)


def _broadcast_channels(refs: dict, ests: dict, wanted: list, track: str) -> None:
    """Broadcast mono signals to the others' channel count (in place); reject other mismatches."""
    counts = {(kind, t): store[t].shape[1] for kind, store in (("reference", refs), ("estimate", ests))
              for t in wanted}
    multi = sorted({c for c in counts.values() if c > 1})
    if len(multi) > 1:
        listing = ", ".join(f"{kind} '{t}' {c}" for (kind, t), c in counts.items())
        raise AudioError(f"track '{track}': channel counts differ ({listing} channels); only mono is broadcast")
    nchan = multi[0] if multi else 1
    for kind, store in (("reference", refs), ("estimate", ests)):
        for t in wanted:
            if store[t].shape[1] != nchan:
                _warn(f"track '{track}': mono {kind} '{t}' repeated on {nchan} channels")
                store[t] = np.repeat(store[t], nchan, axis=1)


def _align_lengths(refs: dict, ests: dict, wanted: list, track: str) -> int:
    """References padded to the longest, estimates padded/trimmed to them (in place); the length."""
    nsampl = max(refs[t].shape[0] for t in wanted)
    if nsampl == 0:
        raise DataError(f"track '{track}': references are empty")
    for t in wanted:
        n = refs[t].shape[0]
        if n != nsampl:
            _warn(f"track '{track}': reference '{t}' has {n} samples, others {nsampl}; padded with zeros")
            refs[t] = np.pad(refs[t], ((0, nsampl - n), (0, 0)))
        n = ests[t].shape[0]
        if n > nsampl:
            _warn(f"track '{track}': estimate '{t}' is {n - nsampl} samples longer than the reference; trimmed")
            ests[t] = ests[t][:nsampl]
        elif n < nsampl:
            _warn(f"track '{track}': estimate '{t}' is {nsampl - n} samples shorter than the reference; "
                  "padded with zeros")
            ests[t] = np.pad(ests[t], ((0, nsampl - n), (0, 0)))
    return nsampl


def _score_group(group: list, keep: list, refs: dict, ests: dict, nsampl: int, win: int, hp: int, engine: str,
                 device, track: str) -> dict:
    """BSS Eval of one group of jointly scored targets: ``{target: {metric: (frames,)}}`` for ``keep``."""
    if len(group) < 2:
        _warn(f"track '{track}': only one target ({group[0]}) in its group; scored alone, SIR is NaN")
    silent = [t for t in group if _silent(refs[t]) or _silent(ests[t])]
    dtype = np.result_type(*[refs[t].dtype for t in group], *[ests[t].dtype for t in group])
    r = np.stack([refs[t].astype(dtype, copy=False) for t in group])
    e = np.stack([ests[t].astype(dtype, copy=False) for t in group])
    if silent:
        _warn(f"track '{track}': silent reference or estimate for {', '.join(silent)}; "
              f"every frame of {', '.join(group)} is NaN")
        from .bsseval import framing

        nfr = len(framing(nsampl, win, hp)[0])
        res = tuple(np.full((len(group), nfr), np.nan) for _ in range(4))
    else:
        res = _run_engine(engine, r, e, win, hp, device)
    sdr, isr, sir, sar = (np.asarray(x, dtype=np.float64) for x in res)
    nanframes = np.isnan(sdr).all(axis=0)
    if nanframes.any() and not silent:
        _warn(f"track '{track}': {int(nanframes.sum())} of {nanframes.size} frames have a silent "
              f"reference or estimate among {', '.join(group)}; they are NaN")
    return {t: {"SDR": sdr[group.index(t)], "SIR": sir[group.index(t)], "SAR": sar[group.index(t)],
                "ISR": isr[group.index(t)]} for t in keep}


def _frame_rows(target: str, vals: dict, hop: float, duration: float) -> pd.DataFrame:
    nfr = len(vals["SDR"])
    return pd.DataFrame({
        "target": target,
        "frame": np.arange(nfr, dtype=np.int64),
        "time": np.arange(nfr, dtype=np.float64) * float(hop),
        "duration": duration,
        **{m: np.where(np.isinf(vals[m]), np.nan, vals[m]) for m in METRICS},
    })


def _silent(audio: np.ndarray) -> bool:
    """museval's whole-signal silence test: channel sum exactly 0 at every sample."""
    return bool(np.all(audio.sum(axis=1) == 0))
