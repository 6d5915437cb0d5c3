"""The ``generate`` job: Scaper mixtures on Ray actors, seed-addressed, into Parquet.

Public API (imported lazily, so ``import sepcluster.generate`` stays light); other jobs use
only these names:

* :func:`generate` (``runner``): make a dataset of mixtures with a Ray actor pool;
  :func:`regenerate`: remake one mixture and compare it with the dataset;
* :class:`MixtureRenderer` (``mixing``): recipe + seed -> one mixture, with its own scoped
  source cache (what training's on-the-fly data source renders with); :func:`make_mixture`:
  the same without a cache;
* :func:`load_recipe`, :func:`parse_recipe`, :func:`validate_recipe`, :class:`Recipe`
  (``recipe``): recipes; :func:`dataset_recipe` (``dataset``): the recipe a dataset was made with;
* reading a dataset back: :func:`load_mixture`, :func:`iter_mixtures`, :func:`read_manifest`,
  :func:`dataset_info` (the layout's readers, :mod:`sepcluster.datasets.mixtures`).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "generate": ".runner", "regenerate": ".runner", "GenerateSummary": ".runner",
    "MixtureRenderer": ".mixing", "make_mixture": ".mixing", "MixResult": ".mixing",
    "load_recipe": ".recipe", "parse_recipe": ".recipe", "validate_recipe": ".recipe", "Recipe": ".recipe",
    "dataset_recipe": ".dataset",
    "load_mixture": "sepcluster.datasets.mixtures", "iter_mixtures": "sepcluster.datasets.mixtures",
    "read_manifest": "sepcluster.datasets.mixtures", "dataset_info": "sepcluster.datasets.mixtures",
    "Mixture": "sepcluster.datasets.mixtures",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name], __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
