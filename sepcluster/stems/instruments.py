"""The synthetic library's ``drums``, ``bass`` and ``other`` stems.

* drums: a kick (sine with a pitch sweep and a click), a snare (tone plus band-passed noise),
  closed and open hats (high-passed noise) in per-song patterns with per-bar variation, fills
  and ghost notes;
* bass: a band-limited sawtooth plus sub sine, low-passed, following the chord roots with
  fifths and octaves;
* other: a detuned-sawtooth chord pad (stereo by detuning) and a Karplus-Strong pluck arpeggio
  over the chord tones.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from .song import Song, butter, fit_octave, midi_hz, one_pole, pan, place, rms, saw, steps

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
    click = signal.sosfilt(butter("lowpass", 5000.0, sr), rng.standard_normal(length)) * np.exp(-t / 0.003)
    kick = np.tanh(1.5 * (kick + 0.3 * click)) / np.tanh(1.5)
    out["kick"] = [kick]
    # snare: two tones plus band-passed noise
    length = int(0.35 * sr)
    t = np.arange(length) / sr
    f_tone = rng.uniform(170.0, 250.0)
    tone = (np.sin(2.0 * np.pi * f_tone * t) + 0.5 * np.sin(2.0 * np.pi * 1.62 * f_tone * t)) * np.exp(-t / 0.06)
    band = butter("bandpass", (rng.uniform(900.0, 1800.0), rng.uniform(7000.0, 10000.0)), sr)
    tau_n = rng.uniform(0.08, 0.16)
    snares = []
    for _ in range(3):
        noise = signal.sosfilt(band, rng.standard_normal(length)) * np.exp(-t / tau_n)
        s = 0.5 * tone + noise / max(np.max(np.abs(noise)), 1e-9)
        snares.append(s / np.max(np.abs(s)))
    out["snare"] = snares
    # hats: high-passed noise
    hp = butter("highpass", rng.uniform(6000.0, 8500.0), sr, order=4)
    for name, tau, count, dur in (("hat", rng.uniform(0.015, 0.04), 3, 0.12), ("open", rng.uniform(0.15, 0.3), 2, 0.6)):
        length = int(dur * sr)
        t = np.arange(length) / sr
        clips = []
        for _ in range(count):
            h = signal.sosfilt(hp, rng.standard_normal(length)) * np.exp(-t / tau)
            clips.append(h / max(np.max(np.abs(h)), 1e-9))
        out[name] = clips
    return out


def render_drums(song: Song, rng: np.random.Generator, n: int, sr: int, channels: int):
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
        panned = pan(inst, pans[name], channels)
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


def render_bass(song: Song, rng: np.random.Generator, n: int, sr: int, channels: int):
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
            midi = fit_octave(pc, 28, 40)
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
        changes.append((s, float(midi_hz(midi))))
        t = np.arange(e - s) / sr
        env[s:e] = vel * (0.55 + 0.45 * np.exp(-t / decay))
    f0 = steps(n, changes, changes[0][1])
    env = one_pole(env, 0.006, sr)
    dt = f0 / sr
    phase = np.cumsum(dt)
    tone = saw(phase, dt) + sub * 1.5 * np.sin(2.0 * np.pi * phase)
    tone = signal.sosfilt(butter("lowpass", cutoff, sr), tone)
    mono = tone * env
    return pan(mono, 0.0, channels), {"cutoff_hz": round(cutoff, 1), "notes": len(notes)}, notes


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


def render_other(song: Song, rng: np.random.Generator, n: int, sr: int, channels: int):
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
        notes = sorted(fit_octave(pc, 55, 67) for pc in pcs)
        if voices == 4:
            notes = [fit_octave(pcs[0], 43, 55)] + notes
        s = int(round(bar * bar_s * sr))
        if s >= n:
            break
        e = min(n, int(round((bar + seg_bars) * bar_s * sr)))
        for j, m in enumerate(notes):
            changes[j].append((s, float(midi_hz(m))))
        t = np.arange(e - s) / sr
        env[s:e] = np.minimum(1.0, t / attack) * np.minimum(1.0, (t[-1] - t + 1.0 / sr) / release)
    freqs = np.stack([steps(n, c, c[0][1]) for c in changes])
    lp = butter("lowpass", cutoff, sr)
    pad_ch = []
    for sign in (-1.0, 1.0):
        ratio = 2.0 ** (sign * detune / 1200.0)
        acc = np.zeros(n)
        for j in range(voices):
            dt = freqs[j] * ratio / sr
            acc += saw(np.cumsum(dt) + rng.random(), dt)
            # a second, slightly different detune per side thickens the pad
            dt2 = freqs[j] * (2.0 ** (sign * 0.37 * detune / 1200.0)) / sr
            acc += 0.6 * saw(np.cumsum(dt2) + rng.random(), dt2)
        pad_ch.append(signal.sosfilt(lp, acc) * env)
    pad = np.stack(pad_ch, axis=1)
    pad = pad / max(rms(pad), 1e-9)
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
        tones = sorted(fit_octave(pc, 60, 72) for pc in pcs)
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
                cache[m] = _karplus_strong(float(midi_hz(m)), ring, t60, bright, rng, sr)
            place(plucks, s, cache[m], float(rng.uniform(0.6, 1.0)))
            count += 1
    plucks = pan(plucks, pluck_pan, channels)
    plucks = plucks / max(rms(plucks), 1e-9)
    pad_gain, pluck_gain = float(rng.uniform(0.3, 1.0)), float(rng.uniform(0.3, 1.0))
    mixed = pad_gain * pad + pluck_gain * plucks
    return mixed, {"pad_voices": voices, "arpeggio": order, "plucks": count}, None


