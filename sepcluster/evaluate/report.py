"""``sepcluster report``: this run's scores beside the SiSEC 2018 MUS campaign.

Writes, into ``out`` (default ``<results>/report``):

- ``report.md`` and ``report.html``: per target, a table of median scores (SiSEC protocol:
  median over frames, then over tracks) of this run's method(s) beside the SiSEC 2018
  methods (packaged data, see ``data/SOURCE.md``) and published open-model SDRs; the
  boxplot; and, when this run's tracks include MUSDB18 test tracks, a paired Wilcoxon
  signed-rank test of per-track SDR medians on the common tracks against each baseline;
- ``boxplot.png``: per-track SDR medians per method and target (like the SiSEC 2018 figure);
- ``scores.csv`` (the tables) and ``wilcoxon.csv``.

The report files are logged to MLflow (experiment ``sepcluster-evaluate``, run ``report``).
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from importlib import resources

import numpy as np
import pandas as pd

from .. import storage
from ..errors import ConfigError, DataError
from . import aggregate
from .aggregate import METRICS

DEFAULT_BASELINES = ("TAK1", "UHL2", "IRM1", "MIX")
ORACLES = ("IRM1", "IRM2", "IBM1", "IBM2", "MWF")


def sisec18_track_medians() -> pd.DataFrame:
    """SiSEC 2018 per-track medians (packaged): method, track, target, SDR, SIR, SAR, ISR, n_frames."""
    with resources.files(__package__).joinpath("data/per_track_medians.csv").open("rb") as f:
        return pd.read_csv(f)


def sisec18_scores() -> dict:
    """SiSEC 2018 medians over tracks: ``{method: {target: {SDR, SIR, SAR, ISR, n_tracks}}}``."""
    with resources.files(__package__).joinpath("data/median_scores.json").open("rb") as f:
        return json.load(f)


def published_sdr() -> dict:
    """Published SDRs of later open models: ``{model: {target: SDR}}``."""
    with resources.files(__package__).joinpath("data/published.json").open("rb") as f:
        data = json.load(f)
    return {k: v for k, v in data.items() if not k.startswith("_")}


def load_frames(results) -> pd.DataFrame:
    """The frame table of an evaluate output folder (``frames.parquet``) or of a Parquet file.

    ``results`` may also be a list of them: e.g. a model's scores and the oracle's, each with its
    own ``method``; their frames are concatenated.
    """
    if isinstance(results, (list, tuple)):
        if len(results) > 1:
            return pd.concat([load_frames(p) for p in results], ignore_index=True)
        results = results[0]
    uri = str(results)
    if not storage.exists(uri):
        raise DataError(f"{storage.redact(uri)}: results not found")
    if storage.isdir(uri):
        cand = storage.join(uri, "frames.parquet")
        if not storage.exists(cand):
            raise DataError(f"{storage.redact(uri)}: no frames.parquet (is this an evaluate --out folder?)")
        uri = cand
    df = storage.read_parquet(uri).to_pandas()
    need = {"track", "target", *METRICS}
    if not need <= set(df.columns):
        raise DataError(f"{storage.redact(uri)}: not an evaluate frame table (needs {', '.join(sorted(need))})")
    if "method" not in df.columns:
        df["method"] = "sepcluster"
    return df


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "" if not np.isfinite(f) else f"{f:.2f}"


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |")
    return "\n".join(lines)


def _html_table(df: pd.DataFrame, bold: set[str] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = [html.escape(_fmt(v) if not isinstance(v, str) else v) for v in row]
        strong = str(row[0]).replace("**", "") in bold
        tds = "".join(f"<td><b>{c}</b></td>" if strong else f"<td>{c}</td>" for c in cells)
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def comparison_table(ours: pd.DataFrame, sisec: pd.DataFrame, target: str, sisec_methods: list[str],
                     published: dict) -> pd.DataFrame:
    """Rows: our methods, SiSEC methods, published models for ``target``; sorted by SDR."""
    ours_scores = aggregate.method_medians(ours[ours["target"] == target])
    ours_scores["source"] = "this run"
    s = sisec[(sisec["target"] == target) & (sisec["method"].isin(sisec_methods))]
    s_scores = aggregate.method_medians(s) if len(s) else ours_scores.iloc[0:0]
    s_scores = s_scores.assign(source=["SiSEC 2018 (oracle)" if m in ORACLES else "SiSEC 2018"
                                       for m in s_scores["method"]])
    pub = pd.DataFrame([{"method": k, "target": target, "SDR": v[target], "SIR": np.nan, "SAR": np.nan,
                         "ISR": np.nan, "n_tracks": 50, "source": "published"}
                        for k, v in published.items() if target in v])
    table = pd.concat([ours_scores, s_scores, pub], ignore_index=True)
    table = table.sort_values("SDR", ascending=False, na_position="last")
    table["n_tracks"] = table["n_tracks"].astype(int)
    return table[["method", "source", *METRICS, "n_tracks"]].reset_index(drop=True)


def wilcoxon_tests(ours: pd.DataFrame, sisec: pd.DataFrame, baselines: list[str], metric: str = "SDR"
                   ) -> pd.DataFrame:
    """Paired Wilcoxon signed-rank test of per-track medians on common tracks.

    ours, sisec: per-track medians (method, track, target, metric columns). One row per (our
    method, target, baseline): ``n`` common tracks with finite values, median of our score
    minus the baseline's, the statistic and the two-sided p-value (NaN when fewer than 2
    tracks or all differences are 0).
    """
    from scipy.stats import wilcoxon

    rows = []
    for (method, target), grp in ours.groupby(["method", "target"], sort=True):
        mine = grp.set_index("track")[metric]
        for base in baselines:
            b = sisec[(sisec["method"] == base) & (sisec["target"] == target)].set_index("track")[metric]
            common = mine.index.intersection(b.index)
            pair = pd.DataFrame({"ours": mine.loc[common], "base": b.loc[common]}).dropna()
            n = len(pair)
            if n == 0:
                continue
            diff = pair["ours"] - pair["base"]
            stat, p = np.nan, np.nan
            if n >= 2 and np.any(diff != 0):
                res = wilcoxon(pair["ours"], pair["base"], alternative="two-sided")
                stat, p = float(res.statistic), float(res.pvalue)
            rows.append({"method": method, "target": target, "baseline": base, "n": n,
                         f"median_diff_{metric}": float(diff.median()), "statistic": stat, "p_value": p,
                         "better": bool(diff.median() > 0)})
    cols = ["method", "target", "baseline", "n", f"median_diff_{metric}", "statistic", "p_value", "better"]
    return pd.DataFrame(rows, columns=cols)


def boxplot(ours: pd.DataFrame, sisec: pd.DataFrame, targets: list[str], sisec_methods: list[str],
            path: str, metric: str = "SDR") -> None:
    """Boxplot PNG of per-track ``metric`` medians per method, one panel per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours_methods = sorted(ours["method"].unique())
    fig_h = max(2.6, 2.2 * len(targets))
    n_methods = len(ours_methods) + len(sisec_methods)
    fig, axes = plt.subplots(len(targets), 1, figsize=(max(6.0, 0.42 * n_methods + 2), fig_h), squeeze=False)
    for ax, target in zip(axes[:, 0], targets):
        data, labels, colors = [], [], []
        for m in ours_methods:
            v = ours[(ours["method"] == m) & (ours["target"] == target)][metric].dropna().to_numpy()
            if v.size:
                data.append(v), labels.append(m), colors.append("#d62728")
        for m in sisec_methods:
            v = sisec[(sisec["method"] == m) & (sisec["target"] == target)][metric].dropna().to_numpy()
            if v.size:
                data.append(v), labels.append(m), colors.append("#ff7f0e" if m in ORACLES else "#1f77b4")
        if not data:
            ax.set_visible(False)
            continue
        order = np.argsort([-np.median(d) for d in data])
        data = [data[i] for i in order]
        labels = [labels[i] for i in order]
        colors = [colors[i] for i in order]
        bp = ax.boxplot(data, patch_artist=True, showfliers=False, widths=0.6)
        for patch, c in zip(bp["boxes"], colors):
            patch.set_facecolor(c)
            patch.set_alpha(0.55)
        for med in bp["medians"]:
            med.set_color("black")
        ax.set_xticks(range(1, len(labels) + 1))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel(f"{metric} (dB)")
        ax.set_title(target, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Per-track {metric} medians (this run in red, SiSEC 2018 oracles in orange)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results, out: str | None = None, methods: list[str] | None = None,
                 baselines: list[str] | None = None, targets: list[str] | None = None,
                 log_mlflow: bool = True, title: str | None = None) -> dict:
    """Write the report (module docstring) for an evaluate output and return what it holds.

    results: evaluate ``--out`` folder or a ``frames.parquet``, or a list of them. methods: SiSEC
    2018 methods to show (default all). baselines: SiSEC methods for the Wilcoxon test (default: ``methods``
    when given, else :data:`DEFAULT_BASELINES`). targets: restrict to these targets.

    Returns ``{"markdown", "html", "boxplot", "scores_csv", "wilcoxon_csv"}`` URIs plus
    ``"tables"`` (target -> DataFrame) and ``"wilcoxon"`` (DataFrame).
    """
    frames = load_frames(results)
    if targets:
        frames = frames[frames["target"].isin(targets)]
    if frames.empty:
        raise DataError(f"{storage.redact(str(results))}: no frames{' for ' + ', '.join(targets) if targets else ''}")
    ours = aggregate.track_medians(frames)
    sisec = sisec18_track_medians()
    sisec_methods, base_list = _choose_methods(sorted(sisec["method"].unique()), methods, baselines)
    from .engines import ordered_targets

    tlist = ordered_targets(ours["target"].unique())
    published = published_sdr()
    tables = {t: comparison_table(ours, sisec, t, sisec_methods, published) for t in tlist}
    tests = wilcoxon_tests(ours, sisec, base_list)
    common = sorted(set(ours["track"]) & set(sisec["track"]))

    if out is None:
        base = str(results[0] if isinstance(results, (list, tuple)) else results)
        if not storage.isdir(base):
            base = storage.parent(base)
        out = storage.join(base, "report")
    our_methods = sorted(ours["method"].unique())
    title = title or f"Evaluation report: {', '.join(our_methods)}"

    with tempfile.TemporaryDirectory(prefix="sepcluster-report-") as tmp:
        png = os.path.join(tmp, "boxplot.png")
        boxplot(ours, sisec, tlist, sisec_methods, png)
        md_text, html_text = _render(title, results, ours, tlist, tables, tests, common, our_methods)
        scores_all = pd.concat([tab.assign(target=t) for t, tab in tables.items()], ignore_index=True)
        files = {
            "report.md": md_text.encode(), "report.html": html_text.encode(),
            "scores.csv": scores_all.to_csv(index=False).encode(), "wilcoxon.csv": tests.to_csv(index=False).encode(),
        }
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
            storage.write_bytes(storage.join(out, name), data)
        with open(png, "rb") as f:
            storage.write_bytes(storage.join(out, "boxplot.png"), f.read())
        if log_mlflow:
            _log_report(tmp, results, out, ours, our_methods, sisec_methods, base_list)
    return {"markdown": storage.join(out, "report.md"), "html": storage.join(out, "report.html"),
            "boxplot": storage.join(out, "boxplot.png"), "scores_csv": storage.join(out, "scores.csv"),
            "wilcoxon_csv": storage.join(out, "wilcoxon.csv"), "tables": tables, "wilcoxon": tests}


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


def _render(title: str, results, ours: pd.DataFrame, tlist: list, tables: dict, tests: pd.DataFrame, common: list,
            our_methods: list) -> tuple[str, str]:
    """The report as Markdown and as HTML."""
    md = [f"# {title}", "",
          f"Results: `{storage.redact(str(results))}`  ",
          f"Tracks: {ours['track'].nunique()} ({len(common)} of them MUSDB18 test tracks scored in SiSEC 2018); "
          f"targets: {', '.join(tlist)}.  ",
          "Scores: BSS Eval v4 (museval), median over 1 s frames per track, then median over tracks (dB). "
          "SiSEC 2018 figures: the SiSEC 2018 MUS campaign on the 50 MUSDB18 test tracks "
          "(sigsep-mus-2018 submissions); published rows: SDR reported by the models' authors.", ""]
    if len(common) < ours["track"].nunique():
        md += ["Note: SiSEC rows are medians over the 50 MUSDB18 test tracks; this run's rows are over its own "
               "tracks, so the comparison is indicative unless the tracks are the MUSDB18 test set.", ""]
    htm = [f"<h1>{html.escape(title)}</h1>", "<p>" + "<br>".join(html.escape(x) for x in md[2:5]) + "</p>"]
    for t in tlist:
        tab = tables[t].copy()
        shown = tab.copy()
        shown["method"] = [f"**{m}**" if s == "this run" else m for m, s in zip(tab["method"], tab["source"])]
        md += [f"## {t}", "", _md_table(shown), ""]
        htm += [f"<h2>{html.escape(t)}</h2>", _html_table(tab, bold=set(our_methods))]
    md += ["## Per-track SDR medians", "", "![boxplot](boxplot.png)", ""]
    htm += ["<h2>Per-track SDR medians</h2>", '<img src="boxplot.png" alt="boxplot" style="max-width:100%">']
    md += ["## Paired test against baselines (Wilcoxon signed-rank, per-track SDR medians)", ""]
    htm += ["<h2>Paired test against baselines (Wilcoxon signed-rank, per-track SDR medians)</h2>"]
    if len(tests):
        md += [f"Common MUSDB18 test tracks: {len(common)}. Two-sided p-values; median_diff > 0: this run is "
               "better.", "", _md_table(tests.assign(better=tests["better"].map({True: "yes", False: "no"}))), ""]
        htm += [f"<p>Common MUSDB18 test tracks: {len(common)}.</p>", _html_table(tests.astype(
            {"better": str}))]
    else:
        msg = ("No track of this run is a MUSDB18 test track scored in SiSEC 2018 (or no baseline has this "
               "run's targets): the paired test was skipped.")
        md += [msg, ""]
        htm += [f"<p>{html.escape(msg)}</p>"]
    html_text = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(title) +
                 "</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
                 "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
                 "text-align:right}td:first-child,th:first-child,td:nth-child(2){text-align:left}</style>"
                 "</head><body>" + "\n".join(htm) + "</body></html>")
    return "\n".join(md), html_text


def _log_report(folder: str, results, out, ours, our_methods, sisec_methods, baselines) -> None:
    from .. import tracking

    params = {"results": str(results), "out": str(out), "methods": ",".join(sisec_methods),
              "baselines": ",".join(baselines), "our_methods": ",".join(our_methods)}
    with tracking.job_run("evaluate", params, run_name="report", tags={"sepcluster.kind": "report"}):
        scores = aggregate.method_medians(ours)
        metrics = {}
        for row in scores.itertuples(index=False):
            for m in METRICS:
                metrics[f"{row.method}.{row.target}.{m}"] = getattr(row, m)
        tracking.log_metrics(metrics)
        tracking.log_artifact(folder, artifact_path="report")


def format_report(report: dict) -> str:
    """The console summary of :func:`write_report`: where the files are and the Wilcoxon tests."""
    text = f"report: {report['markdown']}\n        {report['html']}\n        {report['boxplot']}"
    if len(report["wilcoxon"]):
        text += "\n" + report["wilcoxon"].to_string(index=False)
    return text
