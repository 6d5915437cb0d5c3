"""The synthetic library's ``vocals`` stem: a sung-vowel line.

A Rosenberg glottal pulse train (differentiated, with a little aspiration noise) through
cascaded formant resonators for five vowels, cross-faded between vowels; vibrato, portamento,
note phrases with short rests.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from .song import Song, butter, midi_hz, one_pole, pan, rms, steps

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


def _vocal_notes(song: Song, rng: np.random.Generator, voice: str) -> list[dict]:
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


def render_vocals(song: Song, rng: np.random.Generator, n: int, sr: int, channels: int):
    voice = "low" if rng.random() < 0.5 else "high"
    shift = float(rng.uniform(0.95, 1.08))
    vib_rate = float(rng.uniform(4.6, 6.4))
    vib_depth = float(rng.uniform(0.15, 0.45))  # semitones, peak
    open_q = float(rng.uniform(0.5, 0.7))
    speed_q = float(rng.uniform(2.0, 3.5))
    breath = float(rng.uniform(0.01, 0.04))
    pan_pos = float(rng.uniform(-0.15, 0.15))
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
    midi = steps(n, pitch_changes, pitch_changes[0][1] if pitch_changes else 60.0)
    vowel_idx = steps(n, vowel_changes, vowel_changes[0][1] if vowel_changes else 0).astype(np.int64)
    vowel_w = (vowel_idx[None, :] == np.arange(len(_VOWELS))[:, None]).astype(np.float64)
    # portamento, vibrato fading in after the onset, slow pitch drift
    pitch = one_pole(midi, 0.025, sr)
    vib_env = np.clip((since - 0.12) / 0.3, 0.0, 1.0)
    drift = one_pole(rng.standard_normal(n // 64 + 2), 0.3, sr // 64)
    drift = np.interp(np.arange(n) / 64.0, np.arange(drift.size), drift) * 0.08
    pitch = pitch + vib_depth * vib_env * np.sin(2.0 * np.pi * vib_rate * t) + drift
    f0 = midi_hz(pitch)
    phase = np.cumsum(f0 / sr)
    frac = phase - np.floor(phase)
    flow = _glottal_flow(frac, open_q, speed_q)
    source = np.diff(flow, prepend=flow[0])  # lip radiation: differentiated flow
    source /= max(np.max(np.abs(source)), 1e-9)
    noise = signal.sosfilt(butter("highpass", 1500.0, sr), rng.standard_normal(n))
    source = source + breath * noise * (0.3 + flow)
    # one cascade per vowel, cross-faded by smoothed vowel weights
    vowel_w = one_pole(vowel_w, 0.035, sr, axis=-1)
    table = _FORMANTS[voice]
    voiced = np.zeros(n)
    active = gate > 0
    for k, v in enumerate(_VOWELS):
        freqs, bws = table[v]
        y = signal.sosfilt(_formant_sos(freqs, bws, sr, shift), source)
        norm = rms(y[active]) if active.any() else rms(y)
        voiced += vowel_w[k] * y / max(norm, 1e-9)
    env = one_pole(gate, 0.015, sr)
    mono = voiced * env
    meta = {"voice": voice, "vibrato_hz": round(vib_rate, 3), "notes": len(notes)}
    return pan(mono, pan_pos, channels), meta, notes


