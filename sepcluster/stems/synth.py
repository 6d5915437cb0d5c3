"""A synthetic multitrack stem library, deterministic from a seed.

:func:`synthesize_library` writes Scaper's layout ``out_dir/foreground/<label>/<song>.wav``
(labels ``vocals``, ``drums``, ``bass``, ``other``) and an empty ``out_dir/background/``.
All stems of one song share the file name (``song000.wav``, ``song001.wav``, ...), which is
what lets Scaper mix coherently (the stems of one song, time-aligned).

Each song is music-like, so that separation is learnable and not trivial: one tempo, key and
chord progression per song;

* ``vocals``: a sung-vowel line: a Rosenberg glottal pulse train (differentiated, with a
  little aspiration noise) through cascaded formant resonators for five vowels, cross-faded
  between vowels; vibrato, portamento, note phrases with short rests;
* ``drums``: a kick (sine with a pitch sweep and a click), a snare (tone plus band-passed
  noise), closed and open hats (high-passed noise) in per-song patterns with per-bar
  variation, fills and ghost notes;
* ``bass``: a band-limited sawtooth plus sub sine, low-passed, following the chord roots
  with fifths and octaves;
* ``other``: a detuned-sawtooth chord pad (stereo by detuning) and a Karplus-Strong pluck
  arpeggio over the chord tones.

Stereo stems are panned and then get a faint room: independent decaying-noise reverb tails
per channel (``_stereo_room``), so that the two channels are never exact (filtered) copies of
each other, as in real recordings; and every stem has a faint noise floor (``_noise_floor``,
-60 dB under its RMS), so that BSS Eval's ISR/SIR/SAR are well-defined on them.

Song ``i`` is a pure function of ``(seed, i, seconds, sample_rate, channels)``: its random
numbers come from ``numpy.random.SeedSequence([seed, i])``, so adding songs never changes
the existing ones, and the same arguments give bit-identical files.

Audio arrays here are ``float32 (samples, channels)``.
"""

from __future__ import annotations

import json
import logging
import math
import time

import numpy as np
from scipy import signal

from .. import storage
from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)

LABELS = ("vocals", "drums", "bass", "other")
GENERATOR = "sepcluster.stems.synth"
GENERATOR_VERSION = "1"
LIBRARY_FILE = "library.json"
MIN_SECONDS = 0.5
AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".ogg", ".mp3")

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
# Progressions as 0-based scale degrees (triads are built on the scale).
_PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 0), (5, 3, 0, 4), (0, 3, 0, 4), (0, 1, 4, 0)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 5, 3, 4), (0, 6, 5, 6), (0, 3, 6, 2)),
}
_PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# Formant frequencies and bandwidths (Hz) of five vowels (the classic Csound tables).
_VOWELS = ("a", "e", "i", "o", "u")
_FORMANTS = {
    "low": {  # tenor
        "a": ((650, 1080, 2650, 2900, 3250), (80, 90, 120, 130, 140)),
        "e": ((400, 1700, 2600, 3200, 3580), (70, 80, 100, 120, 120)),
        "i": ((290, 1870, 2800, 3250, 3540), (40, 90, 100, 120, 120)),
        "o": ((400, 800, 2600, 2800, 3000), (40, 80, 100, 120, 120)),
        "u": ((350, 600, 2700, 2900, 3300), (40, 60, 100, 120, 120)),
    },
    "high": {  # alto
        "a": ((800, 1150, 2800, 3500, 4950), (80, 90, 120, 130, 140)),
        "e": ((400, 1600, 2700, 3300, 4950), (60, 80, 120, 150, 200)),
        "i": ((350, 1700, 2700, 3700, 4950), (50, 100, 120, 150, 200)),
        "o": ((450, 800, 2830, 3500, 4950), (70, 80, 100, 130, 135)),
        "u": ((325, 700, 2530, 3500, 4950), (50, 60, 170, 180, 200)),
    },
}
# Vocal ranges (MIDI) per voice type.
_VOICE_RANGE = {"low": (50, 67), "high": (60, 77)}


# ----------------------------------------------------------------------------- helpers

def _midi_hz(midi):
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _one_pole(x: np.ndarray, tau_s: float, sr: int, axis: int = -1) -> np.ndarray:
    """Smooth ``x`` with a one-pole low-pass (time constant ``tau_s``), starting at x[0]."""
    a = math.exp(-1.0 / max(tau_s * sr, 1e-9))
    x = np.asarray(x, dtype=np.float64)
    first = np.take(x, [0], axis=axis)
    zi = a * first  # steady state for a constant input equal to x[0]
    y, _ = signal.lfilter([1.0 - a], [1.0, -a], x, axis=axis, zi=zi)
    return y


def _saw(phase: np.ndarray, dt: np.ndarray) -> np.ndarray:
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


def _butter(kind: str, cutoff, sr: int, order: int = 2) -> np.ndarray:
    nyq = 0.5 * sr
    if np.ndim(cutoff) == 0:
        wn = min(float(cutoff), 0.45 * sr) / nyq
    else:
        lo, hi = cutoff
        hi = min(float(hi), 0.45 * sr)
        lo = min(float(lo), 0.5 * hi)
        wn = (lo / nyq, hi / nyq)
    return signal.butter(order, wn, btype=kind, output="sos")


def _pan(mono: np.ndarray, pan: float, channels: int) -> np.ndarray:
    """``(samples,)`` -> ``(samples, channels)`` with constant-power panning (pan in [-1, 1])."""
    if channels == 1:
        return mono[:, None]
    angle = (float(pan) + 1.0) * math.pi / 4.0
    return np.stack([mono * math.cos(angle), mono * math.sin(angle)], axis=1)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _steps(n: int, changes: list[tuple[int, float]], initial: float) -> np.ndarray:
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


def _place(out: np.ndarray, start: int, clip: np.ndarray, gain: float = 1.0) -> None:
    """Add ``clip`` into ``out`` (1-D) at ``start``, cut at the end."""
    if start >= out.shape[0] or start < 0:
        return
    end = min(out.shape[0], start + clip.shape[0])
    out[start:end] += gain * clip[: end - start]


# ----------------------------------------------------------------------------- song plan

class _Song:
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


def _fit_octave(pc: int, lo: int, hi: int) -> int:
    """The lowest MIDI note with pitch class ``pc`` in ``[lo, hi)`` (hi - lo >= 12)."""
    return lo + ((pc - lo) % 12)


# ----------------------------------------------------------------------------- vocals

def _vocal_notes(song: _Song, rng: np.random.Generator, voice: str) -> list[dict]:
    """Phrases of notes on an eighth-note grid; rests of at most two beats between phrases."""
    lo, hi = _VOICE_RANGE[voice]
    base = lo
    # scale indices whose MIDI note lies in the range
    idx = [i for i in range(-7, 28) if lo <= song.scale_midi(i, base) <= hi]
    imin, imax = idx[0], idx[-1]
    step_s = song.beat / 2.0
    total_steps = int(math.ceil(song.seconds / step_s)) + 1
    pos = 0  # the voice enters at once, so no stem is ever silent
    cur = int(rng.integers(imin + 2, imax - 2))
    notes = []
    while pos < total_steps:
        phrase_end = pos + int(rng.integers(6, 17))  # 3 to 8 beats
        while pos < phrase_end and pos < total_steps:
            dur = int(rng.choice((1, 2, 2, 2, 3, 4, 4, 6)))
            cur += int(rng.choice((-2, -1, -1, 0, 1, 1, 2)))
            if cur < imin:
                cur = imin + (imin - cur)
            if cur > imax:
                cur = imax - (cur - imax)
            bar = pos // 8
            if pos % 4 == 0:  # strong beats land on a chord tone
                chord = song.chord_pcs(bar)
                cands = [j for j in range(imin, imax + 1) if song.scale_midi(j, base) % 12 in chord]
                cur = min(cands, key=lambda j: (abs(j - cur), j))
            vowel = int(rng.integers(len(_VOWELS)))
            vowel2 = int(rng.integers(len(_VOWELS))) if (dur >= 3 and rng.random() < 0.35) else vowel
            notes.append({
                "start": pos * step_s, "dur": dur * step_s, "midi": int(song.scale_midi(cur, base)),
                "vowel": _VOWELS[vowel], "vowel2": _VOWELS[vowel2],
                "vel": float(rng.uniform(0.7, 1.0)),
            })
            pos += dur
        pos += int(rng.integers(1, 5))  # rest: half a beat to two beats
    return [nt for nt in notes if nt["start"] < song.seconds]


def _glottal_flow(frac: np.ndarray, open_q: float, speed_q: float) -> np.ndarray:
    """Rosenberg glottal flow pulse as a function of the phase fraction in [0, 1)."""
    tp = open_q * speed_q / (1.0 + speed_q)  # opening part
    tn = open_q - tp  # closing part
    g = np.zeros_like(frac)
    rising = frac < tp
    g[rising] = 0.5 * (1.0 - np.cos(np.pi * frac[rising] / tp))
    falling = (frac >= tp) & (frac < open_q)
    g[falling] = np.cos(0.5 * np.pi * (frac[falling] - tp) / tn)
    return g


def _formant_sos(freqs, bws, sr: int, shift: float) -> np.ndarray:
    """Cascade of two-pole resonators with unity gain at DC (Klatt cascade)."""
    sos = []
    for f, bw in zip(freqs, bws):
        f = f * shift
        if f >= 0.45 * sr:
            continue
        r = math.exp(-math.pi * bw / sr)
        a1 = -2.0 * r * math.cos(2.0 * math.pi * f / sr)
        a2 = r * r
        sos.append([1.0 + a1 + a2, 0.0, 0.0, 1.0, a1, a2])
    return np.asarray(sos, dtype=np.float64)


def _render_vocals(song: _Song, rng: np.random.Generator, n: int, sr: int, channels: int):
    voice = "low" if rng.random() < 0.5 else "high"
    shift = float(rng.uniform(0.95, 1.08))
    vib_rate = float(rng.uniform(4.6, 6.4))
    vib_depth = float(rng.uniform(0.15, 0.45))  # semitones, peak
    open_q = float(rng.uniform(0.5, 0.7))
    speed_q = float(rng.uniform(2.0, 3.5))
    breath = float(rng.uniform(0.01, 0.04))
    pan = float(rng.uniform(-0.15, 0.15))
    notes = _vocal_notes(song, rng, voice)

    t = np.arange(n) / sr
    gate = np.zeros(n)
    since = np.zeros(n)  # seconds since the current note's onset
    pitch_changes: list[tuple[int, float]] = []
    vowel_changes: list[tuple[int, float]] = []
    for nt in notes:
        s = int(round(nt["start"] * sr))
        e = min(n, int(round((nt["start"] + nt["dur"]) * sr)))
        if s >= n or e <= s:
            continue
        pitch_changes.append((s, nt["midi"]))
        gap = int(min(0.04, 0.15 * nt["dur"]) * sr)
        gate[s:max(s + 1, e - gap)] = nt["vel"]
        since[s:e] = t[s:e] - t[s]
        v1, v2 = _VOWELS.index(nt["vowel"]), _VOWELS.index(nt["vowel2"])
        vowel_changes.append((s, v1))
        if v2 != v1:
            vowel_changes.append((s + int(0.6 * (e - s)), v2))
    midi = _steps(n, pitch_changes, pitch_changes[0][1] if pitch_changes else 60.0)
    vowel_idx = _steps(n, vowel_changes, vowel_changes[0][1] if vowel_changes else 0).astype(np.int64)
    vowel_w = (vowel_idx[None, :] == np.arange(len(_VOWELS))[:, None]).astype(np.float64)
    # portamento, vibrato fading in after the onset, slow pitch drift
    pitch = _one_pole(midi, 0.025, sr)
    vib_env = np.clip((since - 0.12) / 0.3, 0.0, 1.0)
    drift = _one_pole(rng.standard_normal(n // 64 + 2), 0.3, sr // 64)
    drift = np.interp(np.arange(n) / 64.0, np.arange(drift.size), drift) * 0.08
    pitch = pitch + vib_depth * vib_env * np.sin(2.0 * np.pi * vib_rate * t) + drift
    f0 = _midi_hz(pitch)
    phase = np.cumsum(f0 / sr)
    frac = phase - np.floor(phase)
    flow = _glottal_flow(frac, open_q, speed_q)
    source = np.diff(flow, prepend=flow[0])  # lip radiation: differentiated flow
    source /= max(np.max(np.abs(source)), 1e-9)
    noise = signal.sosfilt(_butter("highpass", 1500.0, sr), rng.standard_normal(n))
    source = source + breath * noise * (0.3 + flow)
    # one cascade per vowel, cross-faded by smoothed vowel weights
    vowel_w = _one_pole(vowel_w, 0.035, sr, axis=-1)
    table = _FORMANTS[voice]
    voiced = np.zeros(n)
    active = gate > 0
    for k, v in enumerate(_VOWELS):
        freqs, bws = table[v]
        y = signal.sosfilt(_formant_sos(freqs, bws, sr, shift), source)
        norm = _rms(y[active]) if active.any() else _rms(y)
        voiced += vowel_w[k] * y / max(norm, 1e-9)
    env = _one_pole(gate, 0.015, sr)
    mono = voiced * env
    meta = {"voice": voice, "vibrato_hz": round(vib_rate, 3), "notes": len(notes)}
    return _pan(mono, pan, channels), meta, notes


# ----------------------------------------------------------------------------- drums

_KICK_PATTERNS = ((0, 8), (0, 7, 8), (0, 10), (0, 3, 8, 11), (0, 6, 10), (0, 8, 10))
_SNARE_PATTERNS = ((4, 12), (4, 12), (4, 12, 15), (8,))


def _drum_samples(rng: np.random.Generator, sr: int) -> dict[str, list[np.ndarray]]:
    """One-shot samples: 1 kick, 3 snares, 3 closed hats, 2 open hats (mono)."""
    out: dict[str, list[np.ndarray]] = {}
    # kick: sine with an exponential pitch sweep, plus a click
    length = int(0.45 * sr)
    t = np.arange(length) / sr
    f_start, f_end = rng.uniform(110.0, 190.0), rng.uniform(42.0, 62.0)
    tau_p, tau_a = rng.uniform(0.025, 0.06), rng.uniform(0.12, 0.28)
    freq = f_end + (f_start - f_end) * np.exp(-t / tau_p)
    kick = np.sin(2.0 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / tau_a)
    click = signal.sosfilt(_butter("lowpass", 5000.0, sr), rng.standard_normal(length)) * np.exp(-t / 0.003)
    kick = np.tanh(1.5 * (kick + 0.3 * click)) / np.tanh(1.5)
    out["kick"] = [kick]
    # snare: two tones plus band-passed noise
    length = int(0.35 * sr)
    t = np.arange(length) / sr
    f_tone = rng.uniform(170.0, 250.0)
    tone = (np.sin(2.0 * np.pi * f_tone * t) + 0.5 * np.sin(2.0 * np.pi * 1.62 * f_tone * t)) * np.exp(-t / 0.06)
    band = _butter("bandpass", (rng.uniform(900.0, 1800.0), rng.uniform(7000.0, 10000.0)), sr)
    tau_n = rng.uniform(0.08, 0.16)
    snares = []
    for _ in range(3):
        noise = signal.sosfilt(band, rng.standard_normal(length)) * np.exp(-t / tau_n)
        s = 0.5 * tone + noise / max(np.max(np.abs(noise)), 1e-9)
        snares.append(s / np.max(np.abs(s)))
    out["snare"] = snares
    # hats: high-passed noise
    hp = _butter("highpass", rng.uniform(6000.0, 8500.0), sr, order=4)
    for name, tau, count, dur in (("hat", rng.uniform(0.015, 0.04), 3, 0.12), ("open", rng.uniform(0.15, 0.3), 2, 0.6)):
        length = int(dur * sr)
        t = np.arange(length) / sr
        clips = []
        for _ in range(count):
            h = signal.sosfilt(hp, rng.standard_normal(length)) * np.exp(-t / tau)
            clips.append(h / max(np.max(np.abs(h)), 1e-9))
        out[name] = clips
    return out


def _render_drums(song: _Song, rng: np.random.Generator, n: int, sr: int, channels: int):
    samples = _drum_samples(rng, sr)
    kick_pat = _KICK_PATTERNS[int(rng.integers(len(_KICK_PATTERNS)))]
    snare_pat = _SNARE_PATTERNS[int(rng.integers(len(_SNARE_PATTERNS)))]
    sixteenths = bool(rng.random() < 0.4)
    open_hat = bool(rng.random() < 0.5)
    ghost_p = float(rng.uniform(0.0, 0.15))
    levels = {"kick": 1.0, "snare": float(rng.uniform(0.6, 0.9)), "hat": float(rng.uniform(0.2, 0.4)),
              "open": float(rng.uniform(0.2, 0.35))}
    pans = {"kick": 0.0, "snare": float(rng.uniform(-0.1, 0.1)), "hat": float(rng.uniform(-0.4, 0.4))}
    pans["open"] = pans["hat"]
    step_s = song.beat / 4.0
    jitter = int(0.004 * sr)
    hits: dict[str, list[tuple[int, int, float]]] = {k: [] for k in samples}  # (sample, variant, gain)

    def hit(name: str, bar: int, step: int, vel: float) -> None:
        pos = int(round((bar * 16 + step) * step_s * sr)) + int(rng.integers(-jitter, jitter + 1))
        hits[name].append((max(pos, 0), int(rng.integers(len(samples[name]))), vel))

    onsets = []
    for bar in range(song.n_bars):
        fill = bar % 4 == 3 and rng.random() < 0.5
        kicks = set(kick_pat)
        if rng.random() < 0.3:
            kicks.add(int(rng.choice((2, 6, 10, 14, 11))))
        for step in range(16):
            if step in kicks:
                hit("kick", bar, step, float(rng.uniform(0.85, 1.0)))
                onsets.append((bar * 16 + step) * step_s)
            if fill and step >= 12:
                hit("snare", bar, step, float(rng.uniform(0.55, 1.0)))
            elif step in snare_pat:
                hit("snare", bar, step, float(rng.uniform(0.85, 1.0)))
                onsets.append((bar * 16 + step) * step_s)
            elif step % 2 == 1 and rng.random() < ghost_p:
                hit("snare", bar, step, float(rng.uniform(0.15, 0.3)))
            if open_hat and step == 14 and not fill:
                hit("open", bar, step, float(rng.uniform(0.8, 1.0)))
            elif sixteenths or step % 2 == 0:
                accent = 1.0 if step % 4 == 0 else (0.75 if step % 2 == 0 else 0.5)
                hit("hat", bar, step, accent * float(rng.uniform(0.8, 1.0)))
    left = np.zeros(n)
    right = np.zeros(n) if channels == 2 else None
    for name, clips in samples.items():
        inst = np.zeros(n)
        for variant, clip in enumerate(clips):
            train = np.zeros(n)
            for pos, var, vel in hits[name]:
                if var == variant and pos < n:
                    train[pos] += vel
            if train.any():
                inst += signal.oaconvolve(train, clip)[:n]
        inst *= levels[name]
        panned = _pan(inst, pans[name], channels)
        left += panned[:, 0]
        if right is not None:
            right += panned[:, 1]
    stereo = left[:, None] if right is None else np.stack([left, right], axis=1)
    meta = {"sixteenth_hats": sixteenths, "kick_pattern": list(kick_pat), "snare_pattern": list(snare_pat)}
    return stereo, meta, sorted(set(round(o, 6) for o in onsets if o < song.seconds))


# ----------------------------------------------------------------------------- bass

_BASS_PATTERNS = (
    (0, 2, 4, 6), (0, 3, 6), (0, 1, 2, 3, 4, 5, 6, 7), (0, 3, 4, 6), (0, 4), (0, 2, 3, 4, 6, 7), (0, 6),
)


def _render_bass(song: _Song, rng: np.random.Generator, n: int, sr: int, channels: int):
    pattern = _BASS_PATTERNS[int(rng.integers(len(_BASS_PATTERNS)))]
    legato = float(rng.uniform(0.55, 0.95))
    cutoff = float(rng.uniform(350.0, 1200.0))
    sub = float(rng.uniform(0.2, 0.7))
    decay = float(rng.uniform(0.12, 0.4))
    step_s = song.beat / 2.0
    notes = []
    for bar in range(song.n_bars):
        degree = song.chord_degree(bar)
        for k, step in enumerate(pattern):
            pc = song.degree_pc(degree)
            if step != 0 and rng.random() < 0.2:
                pc = song.degree_pc(degree + 4) if rng.random() < 0.6 else pc
            midi = _fit_octave(pc, 28, 40)
            if step != 0 and rng.random() < 0.1:
                midi += 12
            nxt = pattern[k + 1] if k + 1 < len(pattern) else 8
            notes.append((bar * 8 + step, nxt - step, midi, float(rng.uniform(0.75, 1.0))))
    env = np.zeros(n)
    changes = []
    for start, length, midi, vel in notes:
        s = int(round(start * step_s * sr))
        if s >= n:
            break
        e = min(n, s + max(1, int(length * legato * step_s * sr)))
        changes.append((s, float(_midi_hz(midi))))
        t = np.arange(e - s) / sr
        env[s:e] = vel * (0.55 + 0.45 * np.exp(-t / decay))
    f0 = _steps(n, changes, changes[0][1])
    env = _one_pole(env, 0.006, sr)
    dt = f0 / sr
    phase = np.cumsum(dt)
    tone = _saw(phase, dt) + sub * 1.5 * np.sin(2.0 * np.pi * phase)
    tone = signal.sosfilt(_butter("lowpass", cutoff, sr), tone)
    mono = tone * env
    return _pan(mono, 0.0, channels), {"cutoff_hz": round(cutoff, 1), "notes": len(notes)}, notes


# ----------------------------------------------------------------------------- other: pad + plucks

def _karplus_strong(f0: float, length: int, t60: float, bright: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    """A plucked string: noise burst through a tuned delay loop, computed a period at a time."""
    d = sr / f0
    delay = max(int(math.floor(d - 0.5)), 2)
    fr = d - 0.5 - delay
    g = 10.0 ** (-3.0 * (d / sr) / t60)
    c0, c1, c2 = g * 0.5 * (1.0 - fr), g * 0.5, g * 0.5 * fr
    burst = rng.uniform(-1.0, 1.0, delay)
    burst = signal.lfilter([1.0 - bright], [1.0, -bright], burst)
    burst -= burst.mean()
    pad = delay + 2
    y = np.zeros(pad + length)
    y[pad:pad + delay] = burst
    for k in range(pad, pad + length, delay):
        m = min(delay, pad + length - k)
        y[k:k + m] += c0 * y[k - delay:k - delay + m] + c1 * y[k - delay - 1:k - delay - 1 + m] + \
            c2 * y[k - delay - 2:k - delay - 2 + m]
    out = y[pad:]
    fade = min(length, int(0.05 * sr))
    out[length - fade:] *= np.linspace(1.0, 0.0, fade)
    return out


def _render_other(song: _Song, rng: np.random.Generator, n: int, sr: int, channels: int):
    bar_s = 4.0 * song.beat
    # --- pad: the chord (three or four voices around middle C), two detuned saws per voice
    voices = 4 if rng.random() < 0.5 else 3
    detune = float(rng.uniform(4.0, 12.0))  # cents
    attack = float(rng.uniform(0.05, 0.4))
    release = float(rng.uniform(0.08, 0.25))
    cutoff = float(rng.uniform(1400.0, 3500.0))
    env = np.zeros(n)
    seg_bars = song.bars_per_chord
    changes: list[list[tuple[int, float]]] = [[] for _ in range(voices)]
    for bar in range(0, song.n_bars, seg_bars):
        pcs = song.chord_pcs(bar)
        notes = sorted(_fit_octave(pc, 55, 67) for pc in pcs)
        if voices == 4:
            notes = [_fit_octave(pcs[0], 43, 55)] + notes
        s = int(round(bar * bar_s * sr))
        if s >= n:
            break
        e = min(n, int(round((bar + seg_bars) * bar_s * sr)))
        for j, m in enumerate(notes):
            changes[j].append((s, float(_midi_hz(m))))
        t = np.arange(e - s) / sr
        env[s:e] = np.minimum(1.0, t / attack) * np.minimum(1.0, (t[-1] - t + 1.0 / sr) / release)
    freqs = np.stack([_steps(n, c, c[0][1]) for c in changes])
    lp = _butter("lowpass", cutoff, sr)
    pad_ch = []
    for sign in (-1.0, 1.0):
        ratio = 2.0 ** (sign * detune / 1200.0)
        acc = np.zeros(n)
        for j in range(voices):
            dt = freqs[j] * ratio / sr
            acc += _saw(np.cumsum(dt) + rng.random(), dt)
            # a second, slightly different detune per side thickens the pad
            dt2 = freqs[j] * (2.0 ** (sign * 0.37 * detune / 1200.0)) / sr
            acc += 0.6 * _saw(np.cumsum(dt2) + rng.random(), dt2)
        pad_ch.append(signal.sosfilt(lp, acc) * env)
    pad = np.stack(pad_ch, axis=1)
    pad = pad / max(_rms(pad), 1e-9)
    if channels == 1:
        pad = pad.mean(axis=1, keepdims=True)
    # --- plucks: an arpeggio over the chord tones (Karplus-Strong)
    rate = 4 if rng.random() < 0.4 else 2  # notes per beat
    order = str(rng.choice(("up", "down", "updown", "random")))
    on_pattern = rng.random(4 * rate) < rng.uniform(0.55, 1.0)
    on_pattern[0] = True
    t60 = float(rng.uniform(0.5, 1.6))
    bright = float(rng.uniform(0.0, 0.5))
    pluck_pan = float(rng.choice((-1.0, 1.0)) * rng.uniform(0.2, 0.6))
    cache: dict[int, np.ndarray] = {}
    ring = int(min(1.3 * t60, 2.5) * sr)
    plucks = np.zeros(n)
    step_s = song.beat / rate
    count = 0
    for bar in range(song.n_bars):
        pcs = song.chord_pcs(bar)
        tones = sorted(_fit_octave(pc, 60, 72) for pc in pcs)
        tones = tones + [m + 12 for m in tones]
        seq = {"up": tones, "down": tones[::-1], "updown": tones + tones[-2:0:-1]}.get(order)
        for step in range(4 * rate):
            if not on_pattern[step] or (step > 0 and rng.random() < 0.1):
                continue
            s = int(round((bar * 4 * rate + step) * step_s * sr))
            if s >= n:
                break
            m = int(seq[step % len(seq)]) if seq is not None else int(tones[int(rng.integers(len(tones)))])
            if m not in cache:
                cache[m] = _karplus_strong(float(_midi_hz(m)), ring, t60, bright, rng, sr)
            _place(plucks, s, cache[m], float(rng.uniform(0.6, 1.0)))
            count += 1
    plucks = _pan(plucks, pluck_pan, channels)
    plucks = plucks / max(_rms(plucks), 1e-9)
    pad_gain, pluck_gain = float(rng.uniform(0.3, 1.0)), float(rng.uniform(0.3, 1.0))
    mixed = pad_gain * pad + pluck_gain * plucks
    return mixed, {"pad_voices": voices, "arpeggio": order, "plucks": count}, None


# ----------------------------------------------------------------------------- a song

ROOM_SECONDS = 0.25  # length of the stereo room's impulse responses
ROOM_DECAY_S = 0.05  # their exponential decay time constant
ROOM_WET = 0.3       # wet gain (about -10 dB under the dry signal: vocals L/R correlation ~0.95)


NOISE_FLOOR_DB = -60.0  # per-channel white noise under the stem's RMS


def _noise_floor(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add independent white noise per channel, ``NOISE_FLOOR_DB`` under the stem's RMS.

    Real stems always carry some noise. Purely synthetic tones do not, and their delayed copies
    are then nearly linearly dependent: BSS Eval v4's 512-tap distortion filters become
    ill-conditioned and its framewise ISR/SIR/SAR meaningless (an ideal-ratio-mask estimate got
    a vocals ISR of -5 dB; with this floor 13 dB, as on real recordings). SDR is unaffected.
    """
    rms = float(np.sqrt(np.mean(np.square(audio))))
    return audio + rng.standard_normal(audio.shape) * (rms * 10.0 ** (NOISE_FLOOR_DB / 20.0))


def _stereo_room(audio: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Add a faint room: each channel its own decaying-noise reverb (stereo only).

    ``(samples, channels)`` -> same shape. Panning alone makes the two channels of a stem exact
    scaled copies, and any short filter pair leaves them exact filtered copies: no real
    recording is like that, and BSS Eval's 512-tap image model is then rank-deficient (its ISR,
    SIR and SAR ill-defined). Independent reverb tails longer than the filters decorrelate the
    channels the way a real stereo room does.
    """
    if audio.shape[1] != 2:
        return audio
    from scipy.signal import fftconvolve

    n = audio.shape[0]
    length = max(2, int(ROOM_SECONDS * sr))
    t = np.arange(length) / sr
    out = np.array(audio, dtype=np.float64)
    for c in range(2):
        ir = rng.standard_normal(length) * np.exp(-t / ROOM_DECAY_S)
        ir[0] = 0.0  # the dry path stays as it is
        ir *= ROOM_WET / np.sqrt(np.sum(ir ** 2))
        out[:, c] += fftconvolve(audio[:, c], ir)[:n]
    return out


def render_song(seed: int, index: int, seconds: float, sample_rate: int = 44100,
                channels: int = 2) -> tuple[dict[str, np.ndarray], dict]:
    """Render song ``index`` of the library seeded by ``seed``.

    Returns ``(stems, meta)``: ``stems`` maps each label of :data:`LABELS` to float32
    ``(samples, channels)`` audio with ``samples = round(seconds * sample_rate)`` and every
    peak in [0.3, 0.9]; ``meta`` holds the song's tempo, key, mode, scale pitch classes,
    and the ground truth used by the tests: ``vocal_notes`` (start s, duration s, MIDI,
    vowel) and ``drum_onsets`` (kick and main snare hit times in s, before a few ms jitter).
    Depends only on ``(seed, index, seconds, sample_rate, channels)``.
    """
    _check_args(1, seconds, seed, sample_rate, channels)
    if int(index) < 0:
        raise ConfigError("index", f"must be >= 0, got {index!r}")
    n = int(round(float(seconds) * sample_rate))
    children = np.random.SeedSequence([int(seed), int(index)]).spawn(8)
    rngs = [np.random.default_rng(c) for c in children]
    song = _Song(rngs[0], seconds)
    vocals, vmeta, vnotes = _render_vocals(song, rngs[1], n, sample_rate, channels)
    drums, dmeta, onsets = _render_drums(song, rngs[2], n, sample_rate, channels)
    bass, bmeta, _ = _render_bass(song, rngs[3], n, sample_rate, channels)
    other, ometa, _ = _render_other(song, rngs[4], n, sample_rate, channels)
    mix_rng = rngs[5]
    fade = min(n // 4, int(0.005 * sample_rate))
    ramp = np.ones(n)
    if fade > 0:
        ramp[:fade] = np.linspace(0.0, 1.0, fade)
        ramp[n - fade:] = np.linspace(1.0, 0.0, fade)
    stems = {}
    peaks = {}
    room_rng, noise_rng = rngs[6], rngs[7]
    for label, audio in zip(LABELS, (vocals, drums, bass, other)):
        audio = _noise_floor(_stereo_room(audio, room_rng, sample_rate), noise_rng) * ramp[:, None]
        peak = float(np.max(np.abs(audio)))
        if not np.isfinite(peak) or peak <= 0.0:
            raise DataError(f"synth song {index} (seed {seed}): the {label} stem came out silent or not finite")
        target = float(mix_rng.uniform(0.3, 0.9))
        stems[label] = np.ascontiguousarray(audio * (target / peak), dtype=np.float32)
        peaks[label] = round(target, 4)
    meta = {"index": int(index), **song.meta(), "peaks": peaks,
            "vocals": vmeta, "drums": dmeta, "bass": bmeta, "other": ometa,
            "vocal_notes": [{"start": round(nt["start"], 6), "dur": round(nt["dur"], 6), "midi": nt["midi"],
                             "vowel": nt["vowel"], "vowel2": nt["vowel2"]} for nt in vnotes],
            "drum_onsets": onsets}
    return stems, meta


def song_name(index: int) -> str:
    """File stem of song ``index``: ``song000``, ``song001``, ... (``song1000`` after 999)."""
    return f"song{int(index):03d}"


def _check_args(songs, seconds, seed, sample_rate, channels) -> None:
    if isinstance(songs, bool) or not isinstance(songs, (int, np.integer)) or songs < 1:
        raise ConfigError("songs", f"must be an integer >= 1, got {songs!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.number)) \
            or not math.isfinite(seconds) or seconds < MIN_SECONDS:
        raise ConfigError("seconds", f"must be a number >= {MIN_SECONDS}, got {seconds!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError("seed", f"must be an integer >= 0, got {seed!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate < 8000:
        raise ConfigError("sample_rate", f"must be an integer >= 8000, got {sample_rate!r}")
    if channels not in (1, 2) or isinstance(channels, bool):
        raise ConfigError("channels", f"must be 1 or 2, got {channels!r}")


def _remove_stale_songs(out_dir: str, songs: int) -> None:
    """When ``out_dir`` already holds a synthetic library, delete its songs numbered
    ``songs`` and above, so that the folder matches the new ``library.json``."""
    info_uri = storage.join(out_dir, LIBRARY_FILE)
    if not storage.exists(info_uri):
        return
    try:
        previous = json.loads(storage.read_text(info_uri))
    except ValueError:
        return
    if not isinstance(previous, dict) or previous.get("generator") != GENERATOR:
        return
    for label in LABELS:
        folder = storage.join(out_dir, "foreground", label)
        if not storage.isdir(folder):
            continue
        for uri in storage.list_files(folder, suffixes=(".wav",), recursive=False):
            stem = storage.basename(uri)[: -len(".wav")]
            if stem.startswith("song") and stem[4:].isdigit() and int(stem[4:]) >= songs:
                storage.delete(uri)
                log.info("synth: removed %s (the library now has %d songs)", storage.redact(uri), songs)


def synthesize_library(out_dir: str, songs: int = 10, seconds: float = 12.0, seed: int = 0,
                       sample_rate: int = 44100, channels: int = 2, bits: int = 16) -> dict:
    """Write a synthetic stem library in Scaper's layout and return its description.

    Files: ``out_dir/foreground/<label>/songNNN.wav`` for each label of :data:`LABELS`
    (``(samples, channels)`` PCM WAV, ``bits`` 16/24 or 32 = float), an empty
    ``out_dir/background/`` and ``out_dir/library.json`` (generator, version, seed, songs,
    seconds, sample_rate, channels, labels and a short per-song summary: tempo, key, mode).
    ``out_dir`` is a local path, ``file://`` or ``s3://`` URI; every write is atomic.
    The same arguments give bit-identical files; song ``i`` depends only on ``(seed, i)``
    and the audio format arguments.
    """
    from ..audio import write_audio

    _check_args(songs, seconds, seed, sample_rate, channels)
    if bits not in (16, 24, 32):
        raise ConfigError("bits", f"must be 16, 24 or 32, got {bits!r}")
    started = time.perf_counter()
    fg = storage.join(out_dir, "foreground")
    bg = storage.join(out_dir, "background")
    if not storage.is_remote(out_dir):
        storage.makedirs(bg)
        for label in LABELS:
            storage.makedirs(storage.join(fg, label))
    _remove_stale_songs(out_dir, int(songs))
    summary = []
    for i in range(int(songs)):
        stems, meta = render_song(seed, i, seconds, sample_rate, channels)
        name = song_name(i) + ".wav"
        for label in LABELS:
            write_audio(storage.join(fg, label, name), stems[label], sample_rate, format="wav", bits=bits)
        summary.append({"name": name, "tempo": meta["tempo"], "key": meta["key"], "mode": meta["mode"],
                        "voice": meta["vocals"]["voice"]})
        log.debug("synth: wrote %s (%.1f BPM, %s %s)", name, meta["tempo"], meta["key"], meta["mode"])
    info = {
        "generator": GENERATOR, "version": GENERATOR_VERSION, "seed": int(seed), "songs": int(songs),
        "seconds": float(seconds), "sample_rate": int(sample_rate), "channels": int(channels), "bits": int(bits),
        "labels": list(LABELS), "tracks": summary,
    }
    storage.write_text(storage.join(out_dir, LIBRARY_FILE), json.dumps(info, indent=2) + "\n")
    log.info("synth: %d songs x %.1f s in %s (%.1f s)", songs, seconds, storage.redact(out_dir),
             time.perf_counter() - started)
    return info


# ----------------------------------------------------------------------------- reading a library

def list_library(stems_dir: str) -> dict[str, list[str]]:
    """Map each label folder under ``stems_dir/foreground`` to its sorted audio file names.

    Raises DataError naming the folder when ``stems_dir/foreground`` does not exist.
    """
    fg = storage.join(stems_dir, "foreground")
    if not storage.isdir(fg):
        if not storage.exists(stems_dir):
            raise DataError(f"{storage.redact(stems_dir)}: the stem library folder does not exist")
        raise DataError(f"{storage.redact(fg)}: not found; a stem library needs foreground/<label>/<song>.wav "
                        f"(make one with `sepcluster stems prepare` or `sepcluster stems synth`)")
    out: dict[str, list[str]] = {}
    for folder in storage.list_dirs(fg):
        label = storage.basename(folder)
        files = storage.list_files(folder, suffixes=AUDIO_SUFFIXES, recursive=False)
        out[label] = sorted(storage.basename(f) for f in files)
    return out


def validate_library(stems_dir: str, labels=LABELS) -> dict[str, list[str]]:
    """Check that every label in ``labels`` has a non-empty folder; return ``{label: files}``.

    Raises ConfigError(``labels``) when a label has no folder under ``stems_dir/foreground``,
    DataError when its folder holds no audio files; both name the label and the folder.
    """
    labels = list(labels)
    if not labels:
        raise ConfigError("labels", "is empty: name at least one label")
    found = list_library(stems_dir)
    fg = storage.join(stems_dir, "foreground")
    out = {}
    for label in labels:
        folder = storage.join(fg, str(label))
        if label not in found:
            have = ", ".join(sorted(found)) or "none"
            raise ConfigError("labels", f"label '{label}' has no folder {storage.redact(folder)} "
                                        f"(labels in this library: {have})")
        if not found[label]:
            raise DataError(f"{storage.redact(folder)}: label '{label}' has no audio files")
        out[label] = found[label]
    return out
