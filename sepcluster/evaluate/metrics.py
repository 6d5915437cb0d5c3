"""Whole-track metrics: global SDR (SDX "SDR", BSRNN's "uSDR") and SI-SDR, per track and target.

Both are computed from four float64 energies per (target, channel), gathered in one pass over
the audio (float32 or float64 ``(samples, channels)``, converted to float64 block by block):
``ss = sum s^2``, ``ds = sum s (s - s_hat)``, ``dd = sum (s - s_hat)^2``, ``ee = sum s_hat^2``
(and, for ``zero_mean``, the per-channel sums of ``s`` and ``s - s_hat``). ``s`` is the
reference, ``s_hat`` the estimate.

Global SDR (uSDR), channels summed together (not averaged per channel)::

    uSDR = 10 log10((ss + eps) / (dd + eps)),   ss, dd summed over every sample of every channel

- ``variant="demucs"`` (default), ``eps = 1e-7``: facebookresearch/demucs ``demucs/evaluate.py``
  ``new_sdr`` (L30-43 at e976d93: ``delta = 1e-7`` added to the sums over time and channels,
  L37-41), computed in float64 (``eval_track`` L47-48 ``.double()``); "the MDX challenge
  definition", adapted from AIcrowd's music-demixing-challenge-starter-kit.
- ``variant="msst"``, ``eps = 1e-8``: ZFTurbo/Music-Source-Separation-Training ``utils/metrics.py``
  ``sdr`` (L29-34 at ccc011a), the same placement (added to both sums), called per target on one
  ``(channels, samples)`` array (``get_metrics`` L431-434).

The two differ only in the value of eps. Where both differ from us: a silent reference
(``ss == 0``) gives NaN with a warning (they return ``10 log10(eps / (ee + eps))``); lengths follow
:mod:`.engines` (estimate padded with zeros / trimmed to the reference) where MSST trims both
to the shorter (``get_metrics`` L426-428).

SI-SDR (Le Roux et al. 2019, "SDR - half-baked or well done?")::

    alpha = (<s_hat, s> + eps_a) / (ss + eps_a)
    torchmetrics:  SI-SDR = 10 log10((||alpha s||^2 + eps) / (||alpha s - s_hat||^2 + eps))
    msst:          SI-SDR = 10 log10(||alpha s||^2 / (||alpha s - s_hat||^2 + eps) + eps)

- ``variant="torchmetrics"`` (default): ``eps_a = eps = finfo(float64).eps`` (2.2e-16), as
  torchmetrics 1.9.0 ``functional/audio/sdr.py`` ``scale_invariant_signal_distortion_ratio``
  (L226-238; it uses the eps of the input dtype, ours is float64 since we compute in float64).
- ``variant="msst"``: ``eps = 1e-8`` and ``eps_a = N * 1e-8`` (MSST adds eps to every element
  before summing, ``utils/metrics.py`` ``si_sdr`` L64-70; ``N`` = channels x samples).
- ``channels="joint"`` (default): the channels concatenated into one vector, one ``alpha`` per
  track and target; this is MSST's handling (``axis=(0, 1)`` over ``(channels, samples)``, L65,
  L70, called at L437) and what torchmetrics gives on the concatenated signal.
  ``channels="mean"``: SI-SDR per channel (torchmetrics' handling of ``(..., channels, time)``:
  time is its last axis), then the mean over channels.
- ``zero_mean=False`` (default), as both MSST and torchmetrics' default: music stems carry no
  meaningful offset, and removing the mean would leave an offset error of the estimate unscored.
  ``zero_mean=True`` removes each channel's mean from reference and estimate first
  (torchmetrics' ``zero_mean=True`` on ``(channels, time)``).
- SI-SDR is also undefined (0/0) for a silent estimate (``ee == 0``), a reference silent after
  centring (``zero_mean``; centred energies below 1e-12 of the raw ones count as silent) and,
  with ``channels="mean"``, a silent channel: NaN with a warning.
  The noise energy is formed from ``dd`` and ``ds`` (``||alpha s - s_hat||^2 = dd - 2 (1 - alpha)
  ds + (1 - alpha)^2 ss``), exact for any alpha and precise for good estimates.

Inputs follow :func:`.engines.evaluate_track`'s conventions and messages: estimates longer than
the reference are trimmed, shorter ones padded with zeros, references padded to the longest
(each with an :class:`~.engines.EvaluationWarning`; the padding is logical, nothing is copied);
a mono signal is repeated on every channel when others have more, other channel mismatches
raise :class:`~sepcluster.errors.AudioError`; NaN or infinite samples raise ``AudioError``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import AudioError, DataError
from .engines import _warn, scored_targets

SDR_EPSILON = {"demucs": 1e-7, "msst": 1e-8}
SISDR_VARIANTS = ("torchmetrics", "msst")
SISDR_CHANNELS = ("joint", "mean")
MSST_EPS = 1e-8
FLOAT64_EPS = float(np.finfo(np.float64).eps)
TRACK_METRICS = ("uSDR", "SI-SDR")
SCORE_COLUMNS = ["target", *TRACK_METRICS]
# float64 elements per block (64 KiB): fits the cache, and OpenBLAS keeps dot products of this
# size on one thread (it splits longer ones, which costs 10-100x on a loaded machine)
_BLOCK = 8192
_SS, _DS, _DD, _EE, _SSUM, _DSUM = range(6)


def _as_audio(name: str, kind: str, audio) -> np.ndarray:
    """Shape checks of :func:`.engines._as_2d` without its finiteness pass (the sums check that)."""
    arr = np.asarray(audio)
    if arr.dtype.kind not in "fiu":
        raise AudioError(f"{kind} '{name}': dtype {arr.dtype} is not audio")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise AudioError(f"{kind} '{name}': expected an array (samples, channels), got shape {arr.shape}")
    if arr.shape[0] < arr.shape[1] and arr.shape[1] > 8:
        raise AudioError(f"{kind} '{name}': shape {arr.shape} looks like (channels, samples); "
                         "pass (samples, channels)")
    return np.ascontiguousarray(arr)


def _align(refs: dict, ests: dict, wanted: list[str], track: str) -> int:
    """Channels and lengths as :func:`.engines.evaluate_track` (in place, mono repeated); returns
    the common length ``n``. Estimates stay at their length: padding/trimming is logical."""
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
    nsampl = max(refs[t].shape[0] for t in wanted)
    if nsampl == 0:
        raise DataError(f"track '{track}': references are empty")
    for t in wanted:
        n = refs[t].shape[0]
        if n != nsampl:
            _warn(f"track '{track}': reference '{t}' has {n} samples, others {nsampl}; padded with zeros")
        n = ests[t].shape[0]
        if n > nsampl:
            _warn(f"track '{track}': estimate '{t}' is {n - nsampl} samples longer than the reference; trimmed")
        elif n < nsampl:
            _warn(f"track '{track}': estimate '{t}' is {nsampl - n} samples shorter than the reference; "
                  "padded with zeros")
    return nsampl


def _both(ref: np.ndarray, est: np.ndarray, acc: np.ndarray, per_channel: bool) -> None:
    """Add ss, ds, dd, ee (and the sums of s and s - s_hat) of equal-shape blocks to ``acc``."""
    nchan = ref.shape[1]
    r, e = ref.reshape(-1), est.reshape(-1)
    size = r.shape[0]
    step = max(nchan, _BLOCK // nchan * nchan)
    bs, bd, be = np.empty(step), np.empty(step), np.empty(step)
    copyto, subtract, dot = np.copyto, np.subtract, np.dot
    if not per_channel:
        ss = ds = dd = ee = 0.0
        for a in range(0, size, step):
            k = min(step, size - a)
            s, d, x = bs[:k], bd[:k], be[:k]
            copyto(s, r[a:a + k])
            copyto(x, e[a:a + k])
            subtract(s, x, out=d)
            ss += dot(s, s)
            ds += dot(s, d)
            dd += dot(d, d)
            ee += dot(x, x)
        acc[:4, 0] += (ss, ds, dd, ee)
        return
    part = np.zeros((6, nchan))
    for a in range(0, size, step):
        k = min(step, size - a)
        s, d, x = bs[:k], bd[:k], be[:k]
        copyto(s, r[a:a + k])
        copyto(x, e[a:a + k])
        subtract(s, x, out=d)
        for c in range(nchan):
            sc, dc, xc = s[c::nchan], d[c::nchan], x[c::nchan]
            part[:, c] += (dot(sc, sc), dot(sc, dc), dot(dc, dc), dot(xc, xc), sc.sum(), dc.sum())
    acc += part


def _one(audio: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """(sum of squares, sum) per channel, or in total as shape (1,)."""
    nchan = audio.shape[1]
    flat = audio.reshape(-1)
    step = max(nchan, _BLOCK // nchan * nchan)
    buf = np.empty(step)
    q, t = np.zeros(nchan), np.zeros(nchan)
    for a in range(0, flat.shape[0], step):
        k = min(step, flat.shape[0] - a)
        x = buf[:k]
        np.copyto(x, flat[a:a + k])
        if per_channel:
            for c in range(nchan):
                xc = x[c::nchan]
                q[c] += np.dot(xc, xc)
                t[c] += xc.sum()
        else:
            q[0] += np.dot(x, x)
    return (q, t) if per_channel else (q[:1], t[:1])


def _pair_sums(ref: np.ndarray, est: np.ndarray, n: int, per_channel: bool) -> np.ndarray:
    """(6, channels or 1) energies of one pair: ``ref`` padded to ``n``, ``est`` padded/trimmed to ``n``."""
    acc = np.zeros((6, ref.shape[1] if per_channel else 1))
    m = min(ref.shape[0], est.shape[0])
    _both(ref[:m], est[:m], acc, per_channel)
    if ref.shape[0] > m:  # the estimate is padded with zeros there: s - s_hat = s
        q, t = _one(ref[m:], per_channel)
        acc[[_SS, _DS, _DD]] += q
        acc[[_SSUM, _DSUM]] += t
    end = min(est.shape[0], n)
    if end > m:  # the reference is zero (padded) there: s - s_hat = -s_hat
        q, t = _one(est[m:end], per_channel)
        acc[[_DD, _EE]] += q
        acc[_DSUM] -= t
    return acc


def _check_finite(acc: np.ndarray, ref: np.ndarray, est: np.ndarray, target: str, track: str) -> None:
    if np.all(np.isfinite(acc)):
        return
    for kind, arr in (("reference", ref), ("estimate", est)):
        if not np.all(np.isfinite(arr)):
            raise AudioError(f"track '{track}' {kind} '{target}': holds NaN or infinite samples")
    raise AudioError(f"track '{track}' target '{target}': sums of squares overflow float64 "
                     "(samples far outside [-1, 1])")


def _gather(refs: dict, ests: dict, wanted: list[str], track: str, per_channel: bool
            ) -> tuple[np.ndarray, int, int]:
    """Energies of every wanted target, shape (targets, 6, channels or 1); the length ``n`` and
    the channel count."""
    n = _align(refs, ests, wanted, track)
    out = []
    for t in wanted:
        acc = _pair_sums(refs[t], ests[t], n, per_channel)
        _check_finite(acc, refs[t], ests[t], t, track)
        out.append(acc)
    return np.stack(out), n, refs[wanted[0]].shape[1]


def _warn_silent(sums: np.ndarray, names: Sequence[str], track: str, metrics: str) -> None:
    for i in np.flatnonzero(sums[:, _SS].sum(axis=1) == 0):
        _warn(f"track '{track}': reference '{names[i]}' is silent (sum of squares 0); {metrics} NaN")


def _usdr(sums: np.ndarray, variant: str) -> np.ndarray:
    """Global SDR per target from :func:`_gather`'s sums; NaN for silent references."""
    eps = SDR_EPSILON[variant]
    ss = sums[:, _SS].sum(axis=1)
    dd = sums[:, _DD].sum(axis=1)
    silent = ss == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        val = 10 * np.log10((ss + eps) / (dd + eps))
    return np.where(silent, np.nan, val)


def _sisdr(sums: np.ndarray, n: int, nchan: int, channels: str, zero_mean: bool, variant: str,
           names: Sequence[str], track: str) -> np.ndarray:
    """SI-SDR per target from :func:`_gather`'s sums (per-channel sums when ``channels="mean"`` or
    ``zero_mean``); NaN (and a warning) where it is undefined."""
    ss, ds, dd, ee = (sums[:, i].copy() for i in (_SS, _DS, _DD, _EE))
    raw_ss = ss.sum(axis=1)
    if zero_mean:
        s_sum, d_sum = sums[:, _SSUM], sums[:, _DSUM]
        e_sum = s_sum - d_sum
        ss = np.maximum(ss - s_sum * s_sum / n, 0.0)
        ds = ds - s_sum * d_sum / n
        dd = np.maximum(dd - d_sum * d_sum / n, 0.0)
        ee_c = np.maximum(ee - e_sum * e_sum / n, 0.0)
        ee = np.where(ee_c <= 1e-12 * ee, 0.0, ee_c)
        ss = np.where(ss <= 1e-12 * sums[:, _SS], 0.0, ss)
    nelem = n
    if channels == "joint":
        ss, ds, dd, ee = (x.sum(axis=1, keepdims=True) for x in (ss, ds, dd, ee))
        nelem = n * nchan
    eps_a = FLOAT64_EPS if variant == "torchmetrics" else nelem * MSST_EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        oma = ds / (ss + eps_a)  # 1 - alpha, exactly: (ss - <s_hat, s>) / (ss + eps_a)
        alpha = 1.0 - oma
        target = alpha * alpha * ss
        noise = np.maximum(dd - 2.0 * oma * ds + oma * oma * ss, 0.0)
        if variant == "torchmetrics":
            val = 10 * np.log10((target + FLOAT64_EPS) / (noise + FLOAT64_EPS))
        else:
            val = 10 * np.log10(target / (noise + MSST_EPS) + MSST_EPS)
    undefined = (ss == 0).any(axis=1) | (ee == 0).any(axis=1)
    for i in np.flatnonzero(undefined):
        if raw_ss[i] == 0:
            continue  # silent reference: the caller warns (:func:`_warn_silent`)
        what = "silent after removing the mean" if zero_mean else "silent"
        which = "estimate" if (ee[i] == 0).any() and not (ss[i] == 0).any() else "reference"
        scope = " in a channel" if channels == "mean" and which == "reference" else ""
        _warn(f"track '{track}': {which} '{names[i]}' is {what}{scope}; SI-SDR is NaN (0/0)")
    return np.where(undefined, np.nan, val.mean(axis=1))


def _check_options(sdr_variant: str | None, channels: str | None, sisdr_variant: str | None) -> None:
    if sdr_variant is not None and sdr_variant not in SDR_EPSILON:
        raise DataError(f"global SDR variant '{sdr_variant}': unknown (choose from {', '.join(SDR_EPSILON)})")
    if channels is not None and channels not in SISDR_CHANNELS:
        raise DataError(f"SI-SDR channels '{channels}': unknown (choose from {', '.join(SISDR_CHANNELS)})")
    if sisdr_variant is not None and sisdr_variant not in SISDR_VARIANTS:
        raise DataError(f"SI-SDR variant '{sisdr_variant}': unknown (choose from {', '.join(SISDR_VARIANTS)})")


def _stacked(references, estimates, targets, track: str) -> tuple[dict, dict, list[str]]:
    """Per-target dicts from stacked ``(targets, samples, channels)`` arrays, lists of 2-D arrays,
    or one 2-D target."""
    def split(x):
        return list(x) if isinstance(x, (list, tuple)) or np.ndim(x) > 2 else [x]

    refs, ests = split(references), split(estimates)
    if len(refs) != len(ests):
        raise DataError(f"track '{track}': {len(refs)} references but {len(ests)} estimates")
    names = [str(t) for t in targets] if targets is not None else [f"#{i}" for i in range(len(refs))]
    if len(names) != len(refs) or len(set(names)) != len(names):
        raise DataError(f"track '{track}': targets {names} do not name the {len(refs)} stacked sources")
    r = {t: _as_audio(t, f"track '{track}' reference", a) for t, a in zip(names, refs)}
    e = {t: _as_audio(t, f"track '{track}' estimate", a) for t, a in zip(names, ests)}
    return r, e, names


def global_sdr(references, estimates, *, variant: str = "demucs", track: str = "track",
               targets: Sequence[str] | None = None) -> np.ndarray:
    """Global SDR (uSDR) per target in dB, float64 ``(targets,)``.

    references, estimates: ``(targets, samples, channels)`` arrays, or lists of ``(samples,
    channels)`` arrays (or one such target), float32 or float64; lengths and mono may differ
    (module docstring). ``variant``:
    ``"demucs"`` (eps 1e-7, default) or ``"msst"`` (eps 1e-8). ``track``/``targets`` name the
    inputs in warnings and errors. NaN for a silent reference.
    """
    _check_options(variant, None, None)
    refs, ests, names = _stacked(references, estimates, targets, track)
    sums, _, _ = _gather(refs, ests, names, track, per_channel=False)
    _warn_silent(sums, names, track, "global SDR is")
    return _usdr(sums, variant)


def si_sdr(references, estimates, *, channels: str = "joint", zero_mean: bool = False,
           variant: str = "torchmetrics", track: str = "track", targets: Sequence[str] | None = None) -> np.ndarray:
    """SI-SDR per target in dB, float64 ``(targets,)``.

    references, estimates: as :func:`global_sdr`. ``channels``: ``"joint"`` (channels
    concatenated, default) or ``"mean"`` (per channel, then the mean); ``zero_mean``: remove each
    channel's mean first; ``variant``: ``"torchmetrics"`` (eps = float64 eps) or ``"msst"``. NaN
    where undefined (silent reference or estimate), with a warning.
    """
    _check_options(None, channels, variant)
    refs, ests, names = _stacked(references, estimates, targets, track)
    per_channel = channels == "mean" or zero_mean
    sums, n, nchan = _gather(refs, ests, names, track, per_channel)
    _warn_silent(sums, names, track, "SI-SDR is")
    return _sisdr(sums, n, nchan, channels, zero_mean, variant, names, track)


def track_scores(references: Mapping[str, np.ndarray], estimates: Mapping[str, np.ndarray], *,
                 targets=None, track: str = "track", sdr_variant: str = "demucs", sisdr_channels: str = "joint",
                 sisdr_zero_mean: bool = False, sisdr_variant: str = "torchmetrics") -> pd.DataFrame:
    """Global SDR and SI-SDR of one track in one pass: one row per target.

    references, estimates: target name -> audio ``(samples, channels)`` (or ``(samples,)``),
    float32 or float64, at one sample rate. ``targets``: which estimates to score (default: every
    estimate that has, or can be given, a reference; ``accompaniment`` and ``linear_mixture``
    references are built as :func:`.engines.evaluate_track` builds them). Options as
    :func:`global_sdr` (``sdr_variant``) and :func:`si_sdr` (``sisdr_*``).

    Returns a DataFrame with columns ``target, uSDR, SI-SDR`` (dB, float64; NaN where undefined),
    targets in museval's order.
    """
    _check_options(sdr_variant, sisdr_channels, sisdr_variant)
    if not references:
        raise DataError(f"track '{track}': no references")
    if not estimates:
        raise DataError(f"track '{track}': no estimates")
    refs = {k: _as_audio(k, f"track '{track}' reference", v) for k, v in references.items()}
    ests = {k: _as_audio(k, f"track '{track}' estimate", v) for k, v in estimates.items()}
    refs, wanted = scored_targets(refs, ests, targets, track)
    per_channel = sisdr_channels == "mean" or sisdr_zero_mean
    sums, n, nchan = _gather(refs, ests, wanted, track, per_channel)
    _warn_silent(sums, wanted, track, "uSDR and SI-SDR are")
    usdr = _usdr(sums, sdr_variant)
    sisdr = _sisdr(sums, n, nchan, sisdr_channels, sisdr_zero_mean, sisdr_variant, wanted, track)
    return pd.DataFrame({"target": wanted, "uSDR": usdr, "SI-SDR": sisdr})[SCORE_COLUMNS]
