"""The ``separate`` job: separate music catalogs with Ray Data in bounded memory.

Modules: ``estimators`` (what runs on each chunk: a bundle's models + the Wiener filter, the
IRM oracle), ``engine`` (chunked, streaming separation of one track; its pieces in
``chunking`` and ``istft``), ``wiener`` (multichannel Wiener filter with EM, torch),
``inputs`` (listing, naming, block decoding), ``oracle`` (ideal ratio masks),
``catalog`` (Parquet rows, resume), ``pipeline`` (Ray Data), ``cli``. The names below are
imported lazily, so ``import sepcluster.separate`` stays light.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "separate": ".pipeline", "SeparateSummary": ".pipeline",
    "separate_track": ".engine", "separate_file": ".engine", "make_estimator": ".estimators",
    "wiener": ".wiener", "IdealRatioMask": ".oracle", "list_inputs": ".inputs", "safe_name": ".inputs",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
