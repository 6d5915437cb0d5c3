"""Stem libraries in Scaper's layout: ``DIR/foreground/<label>/<song>.wav`` + ``DIR/background/``.

* :func:`synthesize_library`: a synthetic, seed-deterministic multitrack library.
* :func:`prepare_musdb` / :func:`prepare_folders`: MUSDB18 (``.stem.mp4`` or HQ WAV) or any
  ``ROOT/<song>/<label>.wav`` tree.
* :func:`list_library` / :func:`validate_library`: read and check a library.
"""

from .prepare import prepare_folders, prepare_musdb, safe_name
from .synth import LABELS, list_library, render_song, song_name, synthesize_library, validate_library

__all__ = [
    "LABELS", "list_library", "prepare_folders", "prepare_musdb", "render_song", "safe_name", "song_name",
    "synthesize_library", "validate_library",
]
