"""The report's figures (matplotlib, Agg, PNG): boxplot, paired per-track scatter, per-frame SDR of the worst tracks.

Inputs are per-track tables ``method, track, target, <metric>`` and, for :func:`worst_frames`,
the BSS Eval frame table ``method, track, target, time, SDR``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ORACLES = ("IRM1", "IRM2", "IBM1", "IBM2", "MWF")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def boxplot(ours: pd.DataFrame, sisec: pd.DataFrame, targets: list[str], sisec_methods: list[str],
            path: str, metric: str = "SDR", title: str | None = None) -> None:
    """Boxplot PNG of per-track ``metric`` medians per method, one panel per target."""
    plt = _plt()
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
    fig.suptitle(title or f"Per-track {metric} medians (this run in red, SiSEC 2018 oracles in orange)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scatter(per_track: pd.DataFrame, a: str, b: str, metric: str, targets: list[str], path: str) -> int:
    """Paired per-track scatter of ``metric``: method ``a`` (x) against ``b`` (y), one panel per target,
    the diagonal drawn (above it: ``b`` better). Returns the number of points drawn (0: nothing written)."""
    plt = _plt()
    panels = []
    for target in targets:
        sel = per_track[per_track["target"] == target]
        x = sel[sel["method"] == a].set_index("track")[metric]
        y = sel[sel["method"] == b].set_index("track")[metric]
        common = x.index.intersection(y.index)
        pair = pd.DataFrame({"x": x.loc[common], "y": y.loc[common]}).dropna()
        if len(pair):
            panels.append((target, pair))
    if not panels:
        return 0
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.6, 3.6), squeeze=False)
    for ax, (target, pair) in zip(axes[0], panels):
        lo = float(min(pair["x"].min(), pair["y"].min())) - 1
        hi = float(max(pair["x"].max(), pair["y"].max())) + 1
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--")
        ax.scatter(pair["x"], pair["y"], s=16, color="#1f77b4", alpha=0.8)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"{a} {metric} (dB)", fontsize=8)
        ax.set_ylabel(f"{b} {metric} (dB)", fontsize=8)
        ax.set_title(f"{target} ({len(pair)} tracks)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Per-track {metric}: {b} against {a} (above the diagonal: {b} better)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return int(sum(len(p) for _, p in panels))


def worst_tracks(medians: pd.DataFrame, method: str, target: str, k: int = 3) -> list[str]:
    """The ``k`` tracks of ``method`` with the lowest per-track median SDR for ``target``."""
    sel = medians[(medians["method"] == method) & (medians["target"] == target)].dropna(subset=["SDR"])
    return list(sel.sort_values(["SDR", "track"])["track"].head(k))


def worst_frames(frames: pd.DataFrame, medians: pd.DataFrame, method: str, targets: list[str], path: str,
                 k: int = 3) -> dict[str, list[str]]:
    """Per-frame SDR over time of the ``k`` worst tracks (lowest per-track median SDR) of ``method``,
    one panel per target. Returns ``{target: tracks drawn}`` (empty: nothing written)."""
    plt = _plt()
    chosen = {t: worst_tracks(medians, method, t, k) for t in targets}
    chosen = {t: v for t, v in chosen.items() if v}
    if not chosen:
        return {}
    fig, axes = plt.subplots(len(chosen), 1, figsize=(9, 2.3 * len(chosen) + 0.5), squeeze=False)
    for ax, (target, tracks) in zip(axes[:, 0], chosen.items()):
        for track in tracks:
            f = frames[(frames["method"] == method) & (frames["target"] == target) & (frames["track"] == track)]
            f = f.sort_values("time")
            ax.plot(f["time"], f["SDR"], lw=1.2, marker=".", ms=3, label=track)
        ax.set_ylabel("SDR (dB)", fontsize=8)
        ax.set_title(f"{target}: the {len(tracks)} lowest per-track median SDRs of {method}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return chosen
