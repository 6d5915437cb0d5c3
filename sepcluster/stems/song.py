"""The song plan and DSP building blocks of the synthetic stem library (:mod:`sepcluster.stems.synth`).

A :class:`Song` draws one tempo, key, mode and chord progression per song; the helpers are small
filters and oscillators shared by the instruments (:mod:`~sepcluster.stems.voice`,
:mod:`~sepcluster.stems.instruments`). Arrays are float64 mono unless a docstring says otherwise.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
# Progressions as 0-based scale degrees (triads are built on the scale).
_PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 0), (5, 3, 0, 4), (0, 3, 0, 4), (0, 1, 4, 0)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 5, 3, 4), (0, 6, 5, 6), (0, 3, 6, 2)),
}
_PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def midi_hz(midi):
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def one_pole(x: np.ndarray, tau_s: float, sr: int, axis: int = -1) -> np.ndarray:
    """Smooth ``x`` with a one-pole low-pass (time constant ``tau_s``), starting at x[0]."""
    a = math.exp(-1.0 / max(tau_s * sr, 1e-9))
    x = np.asarray(x, dtype=np.float64)
    first = np.take(x, [0], axis=axis)
    zi = a * first  # steady state for a constant input equal to x[0]
    y, _ = signal.lfilter([1.0 - a], [1.0, -a], x, axis=axis, zi=zi)
    return y


def saw(phase: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Band-limited (PolyBLEP) sawtooth in [-1, 1] from phase in cycles and increment dt."""
    p = phase - np.floor(phase)
    y = 2.0 * p - 1.0
    dt = np.clip(dt, 1e-9, 0.5)
    lo = p < dt
    t = p[lo] / dt[lo]
    y[lo] -= t + t - t * t - 1.0
    hi = p > 1.0 - dt
    t = (p[hi] - 1.0) / dt[hi]
    y[hi] -= t * t + t + t + 1.0
    return y


def butter(kind: str, cutoff, sr: int, order: int = 2) -> np.ndarray:
    nyq = 0.5 * sr
    if np.ndim(cutoff) == 0:
        wn = min(float(cutoff), 0.45 * sr) / nyq
    else:
        lo, hi = cutoff
        hi = min(float(hi), 0.45 * sr)
        lo = min(float(lo), 0.5 * hi)
        wn = (lo / nyq, hi / nyq)
    return signal.butter(order, wn, btype=kind, output="sos")


def pan(mono: np.ndarray, pan: float, channels: int) -> np.ndarray:
    """``(samples,)`` -> ``(samples, channels)`` with constant-power panning (pan in [-1, 1])."""
    if channels == 1:
        return mono[:, None]
    angle = (float(pan) + 1.0) * math.pi / 4.0
    return np.stack([mono * math.cos(angle), mono * math.sin(angle)], axis=1)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def steps(n: int, changes: list[tuple[int, float]], initial: float) -> np.ndarray:
    """A piecewise-constant ``(n,)`` array: ``initial`` until the first change, then each
    ``(sample, value)`` holds from its sample on (changes sorted by sample)."""
    out = np.full(n, float(initial))
    if not changes:
        return out
    pos = np.array([c[0] for c in changes], dtype=np.int64)
    val = np.array([c[1] for c in changes], dtype=np.float64)
    idx = np.searchsorted(pos, np.arange(n), side="right") - 1
    has = idx >= 0
    out[has] = val[idx[has]]
    return out


def place(out: np.ndarray, start: int, clip: np.ndarray, gain: float = 1.0) -> None:
    """Add ``clip`` into ``out`` (1-D) at ``start``, cut at the end."""
    if start >= out.shape[0] or start < 0:
        return
    end = min(out.shape[0], start + clip.shape[0])
    out[start:end] += gain * clip[: end - start]


class Song:
    """The musical plan of one song: tempo, key, chords (shared by every instrument)."""

    def __init__(self, rng: np.random.Generator, seconds: float):
        self.tempo = float(np.round(rng.uniform(78.0, 140.0), 1))
        self.beat = 60.0 / self.tempo
        self.key = int(rng.integers(12))
        self.mode = "major" if rng.random() < 0.6 else "minor"
        self.scale = _MAJOR if self.mode == "major" else _MINOR
        progs = _PROGRESSIONS[self.mode]
        self.progression = tuple(int(d) for d in progs[int(rng.integers(len(progs)))])
        self.bars_per_chord = 1 if rng.random() < 0.65 else 2
        self.seconds = float(seconds)
        self.n_bars = int(math.ceil(seconds / (4.0 * self.beat))) + 1

    def chord_degree(self, bar: int) -> int:
        return self.progression[(bar // self.bars_per_chord) % len(self.progression)]

    def degree_pc(self, degree: int) -> int:
        """Pitch class of a scale degree (any integer; wraps by octaves)."""
        return (self.key + self.scale[degree % 7]) % 12

    def chord_pcs(self, bar: int) -> tuple[int, int, int]:
        d = self.chord_degree(bar)
        return self.degree_pc(d), self.degree_pc(d + 2), self.degree_pc(d + 4)

    def scale_midi(self, index: int, base: int) -> int:
        """MIDI note of scale index ``index`` (0 = the tonic at or above MIDI ``base``)."""
        tonic = base + ((self.key - base) % 12)
        return tonic + 12 * (index // 7) + self.scale[index % 7]

    def meta(self) -> dict:
        return {
            "tempo": self.tempo, "key": _PITCH_NAMES[self.key], "key_pc": self.key, "mode": self.mode,
            "scale_pcs": sorted((self.key + s) % 12 for s in self.scale),
            "progression": list(self.progression), "bars_per_chord": self.bars_per_chord,
        }


def fit_octave(pc: int, lo: int, hi: int) -> int:
    """The lowest MIDI note with pitch class ``pc`` in ``[lo, hi)`` (hi - lo >= 12)."""
    return lo + ((pc - lo) % 12)


