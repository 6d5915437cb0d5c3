"""The ``generate`` job: Scaper mixtures on Ray actors, seed-addressed, into Parquet.

Public API (imported lazily, so ``import sepcluster.generate`` stays light):

* :func:`generate` (``runner``): make a dataset of mixtures with a Ray actor pool;
* :func:`load_mixture`, :func:`iter_mixtures`, :func:`read_manifest`, :func:`dataset_recipe`
  (``dataset``): read a dataset back;
* :func:`make_mixture` (``mixing``): render one mixture from ``(recipe, seed)``;
* :func:`load_recipe`, :class:`Recipe` (``recipe``): parse and validate recipes;
* :func:`regenerate` (``runner``): remake one mixture and compare it with the dataset.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "generate": "runner", "regenerate": "runner", "GenerateSummary": "runner",
    "load_mixture": "dataset", "iter_mixtures": "dataset", "read_manifest": "dataset",
    "dataset_recipe": "dataset", "dataset_info": "dataset", "Mixture": "dataset",
    "make_mixture": "mixing", "MixResult": "mixing",
    "load_recipe": "recipe", "Recipe": "recipe", "index_library": "recipe", "validate_recipe": "recipe",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
