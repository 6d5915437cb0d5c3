"""``sepcluster report``: this run's scores beside SiSEC 2018 and published models, each convention apart.

Writes, into ``out`` (default ``<results>/report``):

- ``report.md`` and ``report.html``:
  * per target, a **SiSEC median** table (BSS Eval v4: median over frames per track, then median
    over tracks) of this run's method(s) beside the SiSEC 2018 methods (packaged data, see
    ``data/SOURCE.md``) and the published models whose papers report that convention;
  * per target and ``all``, an **SDX mean** table (whole-track uSDR and SI-SDR: mean over tracks;
    ``all``: mean over tracks of each track's mean over targets) beside the published models that
    report that convention. A table holds one convention; every aggregated column says which
    (``SDR (SiSEC median)``, ``uSDR (SDX mean)``); a published figure appears only in the table of
    its own convention, an unpublished one stays empty; the sources are listed;
  * bootstrap 95 % confidence intervals of each method's median and mean over tracks per target;
  * paired Wilcoxon signed-rank tests of per-track scores: each method of this run against each
    SiSEC baseline on their common tracks (SDR), and each pair of this run's methods (every metric
    they share), Holm-corrected over all the comparisons of the report (``p_holm``, ``significant``);
  * the figures, each linked: ``boxplot.png`` (per-track SDR medians per method, or per-track uSDR
    without BSS Eval), ``scatter.png`` (paired per-track scores of two methods), and
    ``worst_frames.png`` (per-frame SDR over time of the worst tracks);
- ``scores.csv`` (the SiSEC tables), ``sdx_scores.csv``, ``confidence.csv``, ``wilcoxon.csv``.

The report files are logged to MLflow (experiment ``sepcluster-evaluate``, run ``report``).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd

from .. import storage
from ..errors import ConfigError, DataError
from . import aggregate, figures, statistics
from .aggregate import METRICS, SDX, SISEC, convention_column
from .figures import ORACLES, boxplot  # noqa: F401  (re-exported)
from .report_data import (load_frames, load_results, load_track_scores, published_entries,  # noqa: F401
                          published_sdr, sisec18_scores, sisec18_track_medians)
from .report_render import Doc

DEFAULT_BASELINES = ("TAK1", "UHL2", "IRM1", "MIX")
WHOLE = ("uSDR", "SI-SDR")


def comparison_table(ours: pd.DataFrame, sisec: pd.DataFrame, target: str, sisec_methods: list[str],
                     published: dict) -> pd.DataFrame:
    """SiSEC-median rows for ``target``: our methods, SiSEC methods, published models; sorted by SDR.

    ours, sisec: per-track BSS Eval medians. published: ``{model: {target: SDR}}`` of the SiSEC
    convention (:func:`published_sdr`). Columns ``method, source, SDR, SIR, SAR, ISR, n_tracks``.
    """
    ours_scores = aggregate.method_medians(ours[ours["target"] == target])
    ours_scores["source"] = "this run"
    s = sisec[(sisec["target"] == target) & (sisec["method"].isin(sisec_methods))]
    s_scores = aggregate.method_medians(s) if len(s) else ours_scores.iloc[0:0]
    s_scores = s_scores.assign(source=["SiSEC 2018 (oracle)" if m in ORACLES else "SiSEC 2018"
                                       for m in s_scores["method"]])
    pub = pd.DataFrame([{"method": k, "target": target, "SDR": v[target], "SIR": np.nan, "SAR": np.nan,
                         "ISR": np.nan, "n_tracks": 50, "source": "published"}
                        for k, v in published.items() if target in v])
    table = pd.concat([x for x in (ours_scores, s_scores, pub) if len(x)], ignore_index=True)
    table = table.sort_values("SDR", ascending=False, na_position="last")
    table["n_tracks"] = table["n_tracks"].astype(int)
    return table[["method", "source", *METRICS, "n_tracks"]].reset_index(drop=True)


def sdx_table(scores: pd.DataFrame, target: str, entries: list[dict]) -> pd.DataFrame:
    """SDX-mean rows for ``target`` (or ``"all"``): our methods, then published SDX figures (uSDR only
    where that is what they publish). Columns ``method, source, uSDR (SDX mean), SI-SDR (SDX mean),
    n_tracks``, sorted by uSDR."""
    present = tuple(m for m in WHOLE if m in scores.columns)
    cols = [convention_column(m, SDX) for m in WHOLE]
    ours = aggregate.sdx_scores(scores, metrics=present) if present and len(scores) else pd.DataFrame()
    rows = []
    if len(ours):
        for r in ours[ours["target"] == target].to_dict("records"):
            rows.append({"method": r["method"], "source": "this run",
                         **{c: r.get(c, np.nan) for c in cols}, "n_tracks": r[convention_column("n_tracks", SDX)]})
    for e in entries:
        if e["convention"] == SDX and target in e["scores"]:
            rows.append({"method": e["model"], "source": "published",
                         **{convention_column(e["metric"], SDX): e["scores"][target]}, "n_tracks": 50})
    table = pd.DataFrame(rows, columns=["method", "source", *cols, "n_tracks"])
    table = table.sort_values(cols[0], ascending=False, na_position="last").reset_index(drop=True)
    table["n_tracks"] = table["n_tracks"].astype(int)
    return table


def wilcoxon_tests(ours: pd.DataFrame, sisec: pd.DataFrame, baselines: list[str], metric: str = "SDR"
                   ) -> pd.DataFrame:
    """Paired Wilcoxon tests of per-track ``metric`` of each of our methods against each SiSEC baseline.

    ours, sisec: per-track medians. Columns :data:`.statistics.TEST_COLUMNS` (``baseline``: the
    SiSEC method); no Holm column here (:func:`write_report` corrects over the whole report).
    """
    both = pd.concat([ours[["method", "track", "target", metric]],
                      sisec[sisec["method"].isin(baselines)][["method", "track", "target", metric]]],
                     ignore_index=True)
    pairs = [(m, b) for m in sorted(ours["method"].unique()) for b in baselines if b != m]
    return statistics.paired_tests(both, pairs, metric)


def _our_pairs_tests(ours: pd.DataFrame, scores: pd.DataFrame) -> list[pd.DataFrame]:
    """Each pair of this run's methods, on every metric both have."""
    out = []
    for table, metric_list in ((ours, ("SDR",)), (scores, WHOLE)):
        methods = sorted(table["method"].unique()) if len(table) else []
        pairs = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]]
        for metric in metric_list:
            if pairs and metric in table.columns:
                out.append(statistics.paired_tests(table, pairs, metric))
    return out


def _confidence(ours: pd.DataFrame, sisec: pd.DataFrame, scores: pd.DataFrame, baselines: list[str],
                n_resamples: int) -> dict[str, pd.DataFrame]:
    """Bootstrap intervals: SDR (per-track medians; our methods and the baselines) and uSDR / SI-SDR
    (per-track, plus ``all``: each track's mean over targets)."""
    out = {}
    if len(ours):
        sdr = pd.concat([ours, sisec[sisec["method"].isin(baselines) & sisec["target"].isin(ours["target"])]],
                        ignore_index=True)
        out["SDR"] = statistics.confidence_table(sdr, "SDR", {"median": convention_column("SDR", SISEC),
                                                              "mean": "SDR (mean of track medians)"},
                                                 n_resamples=n_resamples)
    for m in WHOLE:
        if m in scores.columns and len(scores):
            songs = scores.groupby(["method", "track"], as_index=False)[m].mean().assign(target=aggregate.ALL_TARGETS)
            out[m] = statistics.confidence_table(pd.concat([scores, songs], ignore_index=True), m,
                                                 {"mean": convention_column(m, SDX), "median": f"{m} (median)"},
                                                 n_resamples=n_resamples)
    return out


def _choose_methods(available: list, methods, baselines) -> tuple[list, list]:
    """The SiSEC 2018 methods to show and the baselines of the paired tests (ConfigError for unknown ones)."""
    for name, asked in (("methods", methods), ("baselines", baselines)):
        unknown = [m for m in (asked or []) if m not in available]
        if unknown:
            raise ConfigError(name, f"unknown SiSEC 2018 method(s) {', '.join(unknown)} "
                                    f"(available: {', '.join(available)})")
    sisec_methods = list(methods) if methods else available
    if baselines:
        return sisec_methods, list(baselines)
    return sisec_methods, list(methods) if methods else [m for m in DEFAULT_BASELINES if m in available]


def _scatter_pair(ours: pd.DataFrame, scores: pd.DataFrame, sisec: pd.DataFrame, baselines: list, scatter
                  ) -> tuple | None:
    """``(a, b, metric, table)`` of the scatter plot: ``scatter`` if given, else this run's first two methods,
    else this run's method against the first baseline with common tracks."""
    table, metric = (ours, "SDR") if len(ours) else (scores, "uSDR" if "uSDR" in scores.columns else "SI-SDR")
    mine = sorted(table["method"].unique()) if len(table) else []
    if scatter:
        a, b = scatter
        pool = pd.concat([table, sisec], ignore_index=True) if metric == "SDR" else table
        known = set(pool["method"])
        if a not in known or b not in known:
            raise ConfigError("scatter", f"{a}, {b}: both must be methods of the results or SiSEC 2018")
        return a, b, metric, pool
    if len(mine) >= 2:
        return mine[0], mine[1], metric, table
    if mine and metric == "SDR":
        for base in baselines:
            if set(sisec.loc[sisec["method"] == base, "track"]) & set(table["track"]):
                return base, mine[0], metric, pd.concat([table, sisec], ignore_index=True)
    return None


def _figures(tmp: str, ours, scores, frames, sisec, sisec_methods, tlist, pair) -> dict:
    """Draw the figures into ``tmp``; ``{file name: (alt, caption)}`` of those drawn."""
    drawn = {}
    if len(ours):
        boxplot(ours, sisec, [t for t in tlist if t in set(ours["target"])], sisec_methods,
                os.path.join(tmp, "boxplot.png"))
        drawn["boxplot.png"] = ("boxplot", "Per-track SDR medians per method (this run in red, SiSEC 2018 "
                                           "oracles in orange); boxes sorted by median.")
    elif len(scores):
        m = "uSDR" if "uSDR" in scores.columns else "SI-SDR"
        boxplot(scores, sisec.iloc[0:0], tlist, [], os.path.join(tmp, "boxplot.png"), metric=m,
                title=f"Per-track {m} (whole track) per method")
        drawn["boxplot.png"] = ("boxplot", f"Per-track {m} per method (no BSS Eval in these results).")
    if pair:
        a, b, metric, table = pair
        if figures.scatter(table, a, b, metric, tlist, os.path.join(tmp, "scatter.png")):
            drawn["scatter.png"] = ("scatter", f"Per-track {metric}: {b} (y) against {a} (x), paired by track; "
                                               f"above the diagonal {b} is better.")
    if len(frames):
        method = sorted(frames["method"].unique())[0]
        worst = figures.worst_frames(frames, ours, method, [t for t in tlist if t in set(ours["target"])],
                                     os.path.join(tmp, "worst_frames.png"))
        if worst:
            drawn["worst_frames.png"] = ("worst frames", f"SDR per 1 s frame over time of the tracks of {method} "
                                                         "with the lowest per-track median SDR, per target.")
    return drawn


def _intro(doc: Doc, results, ours, scores, tlist, common) -> None:
    n_tracks = len(set(ours["track"]) | set(scores["track"]))
    doc.para(f"Results: {storage.redact(str(results))}",
             f"Tracks: {n_tracks} ({len(common)} of them MUSDB18 test tracks scored in SiSEC 2018); "
             f"targets: {', '.join(tlist)}.")
    doc.para(f"Two conventions, never mixed in one column. {SISEC}: BSS Eval v4 (museval) SDR/SIR/SAR/ISR, median "
             "over 1 s frames per track, then median over tracks (SiSEC 2018). "
             f"{SDX}: whole-track global SDR (uSDR: 10 log10 of the reference energy over the error energy, all "
             "channels, epsilon 1e-7) and SI-SDR (channels joined), mean over tracks per target; 'all' is the mean "
             "over tracks of each track's mean over targets (the Music/Sound Demixing challenges). Published rows "
             "are figures reported by their authors in that convention; a convention they do not report stays empty.")
    if len(common) < ours["track"].nunique():
        doc.para("Note: SiSEC rows are medians over the 50 MUSDB18 test tracks; this run's rows are over its own "
                 "tracks, so the comparison is indicative unless the tracks are the MUSDB18 test set.", note=True)


def _tables_sections(doc: Doc, tables: dict, sdx_tables: dict, our_methods: list) -> None:
    headers = {m: convention_column(m, SISEC) for m in METRICS}
    headers["n_tracks"] = convention_column("n_tracks", SISEC)
    for t, tab in tables.items():
        doc.heading(f"{t}: {SISEC}")
        doc.table(tab, bold=set(our_methods), headers=headers)
    for t, tab in sdx_tables.items():
        doc.heading(f"{t}: {SDX}")
        doc.table(tab, bold=set(our_methods))


def _stats_sections(doc: Doc, confidence: dict, tests: pd.DataFrame, common: list, n_resamples: int) -> None:
    if confidence:
        doc.heading(f"Bootstrap 95 % confidence intervals (percentile, {n_resamples} resamples over tracks)")
        for metric, table in confidence.items():
            doc.heading(metric, level=3)
            doc.table(table)
    doc.heading("Paired tests (Wilcoxon signed-rank, two-sided; Holm-corrected over every comparison below)")
    if len(tests):
        doc.para(f"Common MUSDB18 test tracks with SiSEC 2018: {len(common)}. median_diff > 0: the method is "
                 "better than the baseline; significant: p_holm < 0.05.")
        doc.table(tests)
    else:
        doc.para("No comparison to make: no track of this run is a MUSDB18 test track scored in SiSEC 2018 (or no "
                 "baseline has this run's targets) and the results hold one method; the paired test was skipped.")


def _sources_section(doc: Doc) -> None:
    doc.heading("Sources of the published figures")
    entries = pd.DataFrame(published_entries())[["model", "convention", "metric", "test_set", "extra_data", "source"]]
    doc.table(entries)


def write_report(results, out: str | None = None, methods: list[str] | None = None,
                 baselines: list[str] | None = None, targets: list[str] | None = None,
                 log_mlflow: bool = True, title: str | None = None, scatter: tuple[str, str] | None = None,
                 n_resamples: int = 9999) -> dict:
    """Write the report (module docstring) for evaluate output(s) and return what it holds.

    results: evaluate ``--out`` folder or a ``frames.parquet``, or a list of them. methods: SiSEC
    2018 methods to show (default all). baselines: SiSEC methods for the paired tests (default:
    ``methods`` when given, else :data:`DEFAULT_BASELINES`). targets: restrict to these targets.
    scatter: the two methods of the scatter plot (default: this run's first two, else this run's
    against the first baseline). n_resamples: bootstrap resamples.

    Returns the URIs ``markdown, html, boxplot, scores_csv, sdx_csv, confidence_csv, wilcoxon_csv``,
    ``figures`` (file name -> URI), and ``tables`` (target -> SiSEC DataFrame), ``sdx_tables``
    (target -> SDX DataFrame), ``confidence`` (metric -> DataFrame), ``wilcoxon`` (every test, with
    ``p_holm``).
    """
    frames, scores = load_results(results)
    if targets:
        frames, scores = frames[frames["target"].isin(targets)], scores[scores["target"].isin(targets)]
    if frames.empty and scores.empty:
        raise DataError(f"{storage.redact(str(results))}: no scores for {', '.join(targets or [])}")
    ours = aggregate.track_medians(frames) if len(frames) else pd.DataFrame(columns=["method", "track", "target",
                                                                                      *METRICS, "n_frames"])
    sisec = sisec18_track_medians()
    sisec_methods, base_list = _choose_methods(sorted(sisec["method"].unique()), methods, baselines)
    from .engines import ordered_targets

    tlist = ordered_targets(list(ours["target"].unique()) + list(scores["target"].unique()))
    tables = {t: comparison_table(ours, sisec, t, sisec_methods, published_sdr()) for t in tlist
              if t in set(ours["target"])}
    sdx_tables = {t: sdx_table(scores, t, published_entries()) for t in tlist + [aggregate.ALL_TARGETS]
                  if t in set(scores["target"]) or (t == aggregate.ALL_TARGETS and len(scores))}
    tests = statistics.with_holm(pd.concat(
        [x for x in [wilcoxon_tests(ours, sisec, base_list), *_our_pairs_tests(ours, scores)] if len(x)]
        or [pd.DataFrame(columns=statistics.TEST_COLUMNS)], ignore_index=True))
    confidence = _confidence(ours, sisec, scores, base_list, n_resamples)
    common = sorted(set(ours["track"]) & set(sisec["track"]))
    out = out or storage.join(_results_folder(results), "report")
    our_methods = sorted(set(ours["method"]) | set(scores["method"]))
    doc = Doc(title or f"Evaluation report: {', '.join(our_methods)}")
    _intro(doc, results, ours, scores, tlist, common)
    _tables_sections(doc, tables, sdx_tables, our_methods)
    with tempfile.TemporaryDirectory(prefix="sepcluster-report-") as tmp:
        drawn = _figures(tmp, ours, scores, frames, sisec, sisec_methods, tlist,
                         _scatter_pair(ours, scores, sisec, base_list, scatter))
        _stats_sections(doc, confidence, tests, common, n_resamples)
        doc.heading("Figures")
        for name, (alt, caption) in drawn.items():
            doc.figure(name, alt, caption)
        _sources_section(doc)
        uris = _write_files(tmp, out, doc, tables, sdx_tables, confidence, tests)
        if log_mlflow:
            _log_report(tmp, results, out, ours, scores, our_methods, sisec_methods, base_list)
    return {**uris, "tables": tables, "sdx_tables": sdx_tables, "confidence": confidence, "wilcoxon": tests}


def _results_folder(results) -> str:
    base = str(results[0] if isinstance(results, (list, tuple)) else results)
    return base if storage.isdir(base) else storage.parent(base)


def _write_files(tmp: str, out: str, doc: Doc, tables: dict, sdx_tables: dict, confidence: dict,
                 tests: pd.DataFrame) -> dict:
    """Write the report files (also into ``tmp``, for MLflow); their URIs."""
    md_text, html_text = doc.render()

    def concat(parts: dict, key: str) -> bytes:
        frames = [tab.assign(**{key: k}) for k, tab in parts.items()]
        return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()).to_csv(index=False).encode()

    files = {"report.md": md_text.encode(), "report.html": html_text.encode(),
             "scores.csv": concat(tables, "target"), "sdx_scores.csv": concat(sdx_tables, "target"),
             "confidence.csv": concat(confidence, "metric"), "wilcoxon.csv": tests.to_csv(index=False).encode()}
    for name, data in files.items():
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(data)
        storage.write_bytes(storage.join(out, name), data)
    figs = {}
    for name in doc.figures:
        with open(os.path.join(tmp, name), "rb") as f:
            storage.write_bytes(storage.join(out, name), f.read())
        figs[name] = storage.join(out, name)
    return {"markdown": storage.join(out, "report.md"), "html": storage.join(out, "report.html"),
            "boxplot": figs.get("boxplot.png"), "figures": figs, "scores_csv": storage.join(out, "scores.csv"),
            "sdx_csv": storage.join(out, "sdx_scores.csv"), "confidence_csv": storage.join(out, "confidence.csv"),
            "wilcoxon_csv": storage.join(out, "wilcoxon.csv")}


def _log_report(folder: str, results, out, ours, scores, our_methods, sisec_methods, baselines) -> None:
    from .. import tracking

    params = {"results": str(results), "out": str(out), "methods": ",".join(sisec_methods),
              "baselines": ",".join(baselines), "our_methods": ",".join(our_methods)}
    with tracking.job_run("evaluate", params, run_name="report", tags={"sepcluster.kind": "report"}):
        metrics = {}
        if len(ours):
            for row in aggregate.method_medians(ours).itertuples(index=False):
                for m in METRICS:
                    metrics[f"{row.method}.{row.target}.{m}"] = getattr(row, m)
        present = tuple(m for m in WHOLE if m in scores.columns)
        if present and len(scores):
            for row in aggregate.sdx_scores(scores, metrics=present).to_dict("records"):
                for m in present:
                    metrics[f"{row['method']}.{row['target']}.{m}.sdx_mean"] = row[convention_column(m, SDX)]
        tracking.log_metrics({k: v for k, v in metrics.items() if v == v})
        tracking.log_artifact(folder, artifact_path="report")


def format_report(report: dict) -> str:
    """The console summary of :func:`write_report`: where the files are and the paired tests."""
    text = "\n        ".join([f"report: {report['markdown']}", report["html"], *report["figures"].values()])
    if len(report["wilcoxon"]):
        text += "\n" + report["wilcoxon"].to_string(index=False)
    return text
