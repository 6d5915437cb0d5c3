"""A tiny MoisesDB-shaped folder with real audio, in MoisesDB's own data.json format.

Layout (github.com/moises-ai/moises-db, ``moisesdb/track.py``): ``<root>/<provider>/<uuid>/data.json`` and
``<uuid>/<stemName>/<file id>.<extension>``; each stem lists its source files under ``tracks`` with
``id``, ``trackType``, ``type``, ``extension`` and ``has_bleed``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import soundfile as sf

PROVIDER = "moisesdb_v0.1"
RATE = 8000

# uuid-like folder names, fixed so that tests can name them
TRACK_A = "0a1b2c3d-0000-4000-8000-00000000000a"
TRACK_B = "0a1b2c3d-0000-4000-8000-00000000000b"
TRACK_C = "0a1b2c3d-0000-4000-8000-00000000000c"

# track -> stemName -> [(trackType, channels)]
TRACKS = {
    TRACK_A: {"vocals": [("lead_female_singer", 2), ("background_vocals", 1)],
              "drums": [("kick_drum", 2), ("snare_drum", 2)], "bass": [("bass_guitar", 1)],
              "guitar": [("clean_electric_guitar", 2)], "piano": [("grand_piano", 2)]},
    TRACK_B: {"vocals": [("lead_male_singer", 2)], "drums": [("full_acoustic_drumkit", 2)],
              "bass": [("bass_synthesizer", 2)], "other_keys": [("synth_pad", 2)], "wind": [("brass", 1)]},
    TRACK_C: {"vocals": [("lead_male_singer", 2)], "drums": [("drum_machine", 2)], "bass": [("bass_guitar", 2)],
              "bowed_strings": [("string_section", 2)]},
}


def _audio(rng, n, channels):
    from scipy.signal import lfilter

    x = lfilter([1.0], [1.0, -0.8], rng.standard_normal((n, channels)), axis=0) * 0.05
    return np.clip(x, -0.9, 0.9)


def make_moisesdb(root: Path, seconds: float = 2.0, seed: int = 0, tracks=TRACKS) -> dict:
    """Write the tracks under ``root/PROVIDER``; returns ``{track: {stem: {trackType: float64 audio as
    written (16-bit values)}}}`` so that tests can sum them themselves."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    written: dict = {}
    for name, stems in tracks.items():
        folder = root / PROVIDER / name
        meta = {"song": f"Song {name[-1].upper()}", "artist": "Test Artist", "genre": "rock", "stems": []}
        for stem_name, sources in stems.items():
            entry = {"id": str(uuid.UUID(int=rng.integers(2 ** 62))), "stemName": stem_name, "tracks": []}
            for track_type, channels in sources:
                file_id = str(uuid.UUID(int=rng.integers(2 ** 62)))
                audio = _audio(rng, n, channels)
                path = folder / stem_name / f"{file_id}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(path), audio, RATE, subtype="PCM_16")
                back, _ = sf.read(str(path), always_2d=True)
                written.setdefault(name, {}).setdefault(stem_name, {})[track_type] = back
                entry["tracks"].append({"id": file_id, "trackType": track_type, "type": "audio/x-wav",
                                        "extension": "wav", "has_bleed": False})
            meta["stems"].append(entry)
        (folder / "data.json").write_text(json.dumps(meta, indent=2))
    return written


def stereo(a: np.ndarray) -> np.ndarray:
    return np.repeat(a, 2, axis=1) if a.shape[1] == 1 else a


def expected_targets(written_track: dict) -> dict[str, np.ndarray]:
    """MUSDB's four targets of one track, summed here from the written files (mono repeated)."""
    n = next(iter(next(iter(written_track.values())).values())).shape[0]
    out = {t: np.zeros((n, 2)) for t in ("vocals", "drums", "bass", "other")}
    for stem, sources in written_track.items():
        target = stem if stem in ("vocals", "drums", "bass") else "other"
        for audio in sources.values():
            out[target] += stereo(audio)
    return out
