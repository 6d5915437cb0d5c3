"""The ``separate`` job: separate music catalogs with Ray Data in bounded memory.

Modules: ``estimators`` (what runs on each chunk: a bundle's models + the Wiener filter, the
IRM oracle), ``engine`` (chunked, streaming separation of one track; its pieces in
``chunking`` and ``istft``), ``wiener`` (multichannel Wiener filter with EM, torch),
``inputs`` (listing, naming, block decoding), ``oracle`` (ideal ratio masks),
``catalog`` (Parquet rows, resume), ``separators`` (what separates: a bundle, an Open-Unmix
``.pth``, a demucs ``.th`` / bag, an MSST RoFormer ``.ckpt``; ``resolve_separator`` checks and
describes it, ``load_separator`` loads it), ``waveform`` / ``waveform_estimators`` / ``overlap``
(the waveform models' engine and their references' chunking), ``pipeline`` (Ray Data), ``cli``. The names below are
imported lazily, so ``import sepcluster.separate`` stays light.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "separate": ".pipeline", "SeparateSummary": ".pipeline",
    "separate_track": ".engine", "separate_file": ".engine", "make_estimator": ".estimators",
    "wiener": ".wiener", "IdealRatioMask": ".oracle", "list_inputs": ".inputs", "safe_name": ".inputs",
    "SeparatorSpec": ".separators", "resolve_separator": (".separators", "resolve"),
    "load_separator": (".separators", "load"), "model_uri": (".separators", "absolute"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name] if isinstance(_LAZY[name], tuple) else (_LAZY[name], name)
        return getattr(importlib.import_module(module, __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
