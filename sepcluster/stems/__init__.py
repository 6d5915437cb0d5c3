"""The ``stems`` job: write stem libraries in Scaper's layout (:mod:`sepcluster.datasets.library`).

* :func:`synthesize_library`: a synthetic, seed-deterministic multitrack library
  (:func:`render_song` renders one song).
* :func:`prepare_musdb` / :func:`prepare_moisesdb` / :func:`prepare_folders`: MUSDB18 (``.stem.mp4``
  or HQ WAV), MoisesDB, or any ``ROOT/<song>/<label>.wav`` tree.

Reading and checking a library (``list_library``, ``validate_library``, ``index_library``) is
:mod:`sepcluster.datasets.library`. Names are imported on first use (``sepcluster stems --help``
does not import scipy).
"""

from __future__ import annotations

import importlib

_EXPORTS = {"prepare_folders": ".prepare", "prepare_musdb": ".prepare", "prepare_moisesdb": ".prepare",
            "safe_name": ".prepare",
            "render_song": ".synth", "song_name": ".synth", "synthesize_library": ".synth"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
