"""The ``stems`` job: write stem libraries in Scaper's layout (:mod:`sepcluster.datasets.library`).

* :func:`synthesize_library`: a synthetic, seed-deterministic multitrack library
  (:func:`render_song` renders one song).
* :func:`prepare_musdb` / :func:`prepare_folders`: MUSDB18 (``.stem.mp4`` or HQ WAV) or any
  ``ROOT/<song>/<label>.wav`` tree.

Reading and checking a library (``list_library``, ``validate_library``, ``index_library``) is
:mod:`sepcluster.datasets.library`.
"""

from .prepare import prepare_folders, prepare_musdb, safe_name
from .synth import render_song, song_name, synthesize_library

__all__ = ["prepare_folders", "prepare_musdb", "render_song", "safe_name", "song_name", "synthesize_library"]
