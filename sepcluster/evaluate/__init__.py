"""The evaluate job: BSS Eval v4 (museval-exact torch engine or museval), global SDR and SI-SDR over a catalog.

Public API (imported lazily):

- :func:`sepcluster.evaluate.bsseval.bss_eval` — torch BSS Eval v4 on stacked arrays;
- :func:`sepcluster.evaluate.engines.evaluate_track` — one track, either engine;
- :func:`sepcluster.evaluate.metrics.track_scores` — global SDR (uSDR) and SI-SDR of one track;
- :func:`sepcluster.evaluate.pipeline.evaluate` — the Ray Data job (``metrics=["bss", "sdr", "sisdr"]``);
- :func:`sepcluster.evaluate.aggregate.track_medians` / ``method_medians`` — SiSEC protocol;
  ``sisec_scores`` / ``sdx_scores`` / ``side_by_side`` — the conventions, named;
- :mod:`sepcluster.evaluate.statistics` — Wilcoxon + Holm, bootstrap intervals;
- :func:`sepcluster.evaluate.report.write_report` — Markdown/HTML report beside SiSEC 2018 and published models.
"""

from __future__ import annotations

__all__ = ["bss_eval", "evaluate_track", "evaluate", "write_report", "track_medians", "method_medians"]


def __getattr__(name):
    if name == "bss_eval":
        from .bsseval import bss_eval

        return bss_eval
    if name == "evaluate_track":
        from .engines import evaluate_track

        return evaluate_track
    if name == "evaluate":
        from .pipeline import evaluate

        return evaluate
    if name == "write_report":
        from .report import write_report

        return write_report
    if name in ("track_medians", "method_medians"):
        from . import aggregate

        return getattr(aggregate, name)
    raise AttributeError(name)
