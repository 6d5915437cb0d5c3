"""Stem libraries written to and listed from a real S3 server (SeaweedFS on 127.0.0.1)."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from sepcluster import storage
from sepcluster.audio import read_audio
from sepcluster.datasets import MUSDB_SOURCES as LABELS
from sepcluster.datasets.library import list_library, validate_library
from sepcluster.stems import prepare_folders, synthesize_library


def test_synth_and_prepare_to_s3(s3_bucket, tmp_path):
    lib = storage.join(s3_bucket, "stems", "synth")
    synthesize_library(lib, songs=2, seconds=0.5, seed=1, sample_rate=8000, channels=1)
    listing = validate_library(lib, LABELS)
    assert listing["drums"] == ["song000.wav", "song001.wav"]
    local = tmp_path / "local"
    synthesize_library(str(local), songs=2, seconds=0.5, seed=1, sample_rate=8000, channels=1)
    for label in LABELS:
        name = "song001.wav"
        assert storage.read_bytes(storage.join(lib, "foreground", label, name)) == \
            (local / "foreground" / label / name).read_bytes()
    assert json.loads(storage.read_text(storage.join(lib, "library.json")))["songs"] == 2

    root = tmp_path / "songs"
    (root / "tune").mkdir(parents=True)
    sf.write(root / "tune" / "lead.wav", np.full((100, 1), 0.25), 8000, subtype="PCM_16")
    out = storage.join(s3_bucket, "stems", "folders")
    prepare_folders(str(root), out)
    assert list_library(out) == {"lead": ["tune.wav"]}
    audio, rate = read_audio(storage.join(out, "foreground", "lead", "tune.wav"))
    assert rate == 8000 and audio.shape == (100, 1) and np.all(audio == 0.25)
