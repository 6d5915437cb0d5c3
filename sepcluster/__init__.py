"""sepcluster: distributed batch processing for music source separation on Ray.

Four jobs, each a CLI command (``sepcluster <job>``) and a Ray Jobs entrypoint (``jobs/``):
generate (Scaper mixtures), train (per-target separators), separate (catalogs), evaluate
(BSS Eval v4). Audio at the edges is ``float32 (samples, channels)``.
"""

__version__ = "0.1.0"
