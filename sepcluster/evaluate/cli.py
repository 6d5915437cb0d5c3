"""Command-line front ends: ``sepcluster evaluate`` and ``sepcluster report``."""

from __future__ import annotations

import argparse

from ..config import ListOption
from ..errors import ConfigError
from .engines import ENGINES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``sepcluster evaluate``."""
    parser.add_argument("--references", required=True, metavar="SRC",
                        help="MUSDB18 root (with --subset; .stem.mp4 or --is-wav), a MoisesDB root "
                             "(<provider>/<uuid>/data.json), a stem-folder tree <track>/<target>.wav or one track "
                             "folder, or a generate dataset")
    parser.add_argument("--estimates", metavar="EST",
                        help="estimates folder <track>/<target>.wav or <subset>/<track>/<target>.wav (musdb "
                             "layouts), one track folder, or a separate-job catalog Parquet (track, target, "
                             "output_uri, status)")
    parser.add_argument("--out", required=True, metavar="URI",
                        help="output folder: track_scores.parquet, frames.parquet, track_medians.parquet, museval "
                             "JSON, summary.json")
    parser.add_argument("--metrics", nargs="+", action=ListOption, default=None, metavar="METRIC",
                        help="bss (BSS Eval v4 per frame), sdr (global SDR, uSDR), sisdr (SI-SDR), comma- or "
                             "space-separated (default: all three); sdr/sisdr alone skip BSS Eval")
    parser.add_argument("--label-map", default=None, metavar="YAML",
                        help="MoisesDB references: YAML mapping target -> stems (e.g. 'other: [\"*\"]'); "
                             "default MUSDB's vocals, drums, bass, other")
    parser.add_argument("--engine", choices=ENGINES, default="torch",
                        help="torch: sepcluster's BSS Eval v4 (fast, museval-exact); museval: the reference")
    parser.add_argument("--device", default=None, help="torch engine device (cpu, cuda); default cpu")
    parser.add_argument("--targets", nargs="+", action=ListOption, default=None,
                        help="targets to score, comma- or space-separated (default: all estimated)")
    parser.add_argument("--window", type=float, default=1.0, help="frame length in seconds (default 1.0)")
    parser.add_argument("--hop", type=float, default=1.0, help="frame hop in seconds (default 1.0)")
    parser.add_argument("--subset", default=None, help="MUSDB subset folder (default test, else train)")
    parser.add_argument("--is-wav", action="store_true", default=None,
                        help="MUSDB18-HQ layout (<subset>/<track>/<source>.wav) instead of .stem.mp4")
    parser.add_argument("--method", default="sepcluster", help="method name in the results (default sepcluster)")
    parser.add_argument("--tracks", nargs="+", action=ListOption, default=None, help="only these track names")
    parser.add_argument("--address", default=None,
                        help="Ray address (default: RAY_ADDRESS or a new local Ray)")
    parser.add_argument("--num-cpus", type=float, default=None,
                        help="CPUs per track task (default 1 with bss, else 0.5: reading overlaps scoring)")
    parser.add_argument("--no-json", action="store_true", help="do not write museval JSON files")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.add_argument("--report", action="store_true", help="write the SiSEC comparison report afterwards")
    parser.add_argument("--separate-with", metavar="BUNDLE", default=None,
                        help="instead of --estimates: separate each track's mixture with this model bundle and "
                             "score it in the same Ray task (no stems written)")
    parser.add_argument("--niter", type=int, default=1,
                        help="with --separate-with: Wiener EM iterations (default 1)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                        help="with --separate-with: autocast of a demucs / RoFormer model (bf16 on CUDA or the "
                             "CPU, fp16 on CUDA; default fp32), as separate --precision")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``sepcluster evaluate``; 0 when every track and target was scored, 1 when some failed or an
    expected target had no estimate."""
    from .pipeline import evaluate, format_summary

    if args.separate_with and args.estimates:
        raise ConfigError("--separate-with", "give either --estimates or --separate-with, not both")
    if not args.estimates and not args.separate_with:
        raise ConfigError("--estimates", "is required (a folder <track>/<target>.wav or a separate catalog), "
                                         "unless --separate-with names a model bundle")
    summary = evaluate(args.references, args.estimates, args.out, engine=args.engine, targets=args.targets,
                       window=args.window, hop=args.hop, method=args.method, address=args.address,
                       subset=args.subset, is_wav=args.is_wav, device=args.device, write_json=not args.no_json,
                       log_mlflow=not args.no_mlflow, num_cpus=args.num_cpus, tracks=args.tracks,
                       separate_with=args.separate_with, niter=args.niter, metrics=args.metrics,
                       label_map=args.label_map, precision=args.precision)
    print(format_summary(summary))
    if getattr(args, "report", False):
        from .report import write_report

        rep = write_report(args.out, log_mlflow=not args.no_mlflow)
        print(f"report: {rep['markdown']}")
    return 1 if (summary["n_failed"] or summary["n_missing_targets"]) else 0


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``sepcluster report``."""
    parser.add_argument("--results", required=True, nargs="+", action=ListOption, metavar="URI",
                        help="evaluate --out folder(s) (or their frames.parquet); several are compared")
    parser.add_argument("--out", default=None, metavar="URI", help="report folder (default <results>/report)")
    parser.add_argument("--methods", nargs="+", action=ListOption, default=None,
                        help="SiSEC 2018 methods to show (default all), e.g. TAK1 UHL2 IRM1")
    parser.add_argument("--baselines", nargs="+", action=ListOption, default=None,
                        help="SiSEC methods for the paired Wilcoxon test (default: --methods, else "
                             "TAK1 UHL2 IRM1 MIX)")
    parser.add_argument("--targets", nargs="+", action=ListOption, default=None, help="only these targets")
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument("--scatter", nargs="+", action=ListOption, default=None, metavar="METHOD",
                        help="the two methods of the paired per-track scatter plot (default: the results' first "
                             "two methods, else the first against the first baseline)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def run_report_from_args(args: argparse.Namespace) -> int:
    """Run ``sepcluster report``."""
    from .report import format_report, write_report

    results = args.results if len(args.results) > 1 else args.results[0]
    scatter = getattr(args, "scatter", None)
    if scatter is not None and len(scatter) != 2:
        raise ConfigError("--scatter", f"names two methods, got {len(scatter)}: {', '.join(scatter)}")
    rep = write_report(results, out=args.out, methods=args.methods, baselines=args.baselines,
                       targets=args.targets, log_mlflow=not args.no_mlflow, title=args.title,
                       scatter=tuple(scatter) if scatter else None)
    print(format_report(rep))
    return 0
