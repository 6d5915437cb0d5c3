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

from .. import storage
from ..datasets import MUSDB_SOURCES as LABELS
from ..datasets.library import LIBRARY_FILE
from ..errors import ConfigError, DataError
from .instruments import render_bass, render_drums, render_other
from .song import Song
from .voice import render_vocals

log = logging.getLogger(__name__)

GENERATOR = "sepcluster.stems.synth"
GENERATOR_VERSION = "1"
MIN_SECONDS = 0.5


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
    song = Song(rngs[0], seconds)
    vocals, vmeta, vnotes = render_vocals(song, rngs[1], n, sample_rate, channels)
    drums, dmeta, onsets = render_drums(song, rngs[2], n, sample_rate, channels)
    bass, bmeta, _ = render_bass(song, rngs[3], n, sample_rate, channels)
    other, ometa, _ = render_other(song, rngs[4], n, sample_rate, channels)
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
