"""Command-line front ends: ``sepcluster evaluate`` and ``sepcluster report``."""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError
from .engines import ENGINES


def _list(value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = [str(value)]
    out = [p.strip() for item in items for p in item.split(",") if p.strip()]
    return out or None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``sepcluster evaluate``."""
    parser.add_argument("--references", required=True, metavar="SRC",
                        help="MUSDB18 root (with --subset; .stem.mp4 or --is-wav), a stem-folder tree "
                             "<track>/<target>.wav, or a generate dataset")
    parser.add_argument("--estimates", metavar="EST",
                        help="estimates folder <track>/<target>.wav (musdb layout) or a separate-job catalog "
                             "Parquet (track, target, output_uri, status)")
    parser.add_argument("--out", required=True, metavar="URI",
                        help="output folder: frames.parquet, track_medians.parquet, museval JSON, summary.json")
    parser.add_argument("--engine", choices=ENGINES, default="torch",
                        help="torch: sepcluster's BSS Eval v4 (fast, museval-exact); museval: the reference")
    parser.add_argument("--device", default=None, help="torch engine device (cpu, cuda); default cpu")
    parser.add_argument("--targets", nargs="+", default=None, help="targets to score (default: all estimated)")
    parser.add_argument("--window", type=float, default=1.0, help="frame length in seconds (default 1.0)")
    parser.add_argument("--hop", type=float, default=1.0, help="frame hop in seconds (default 1.0)")
    parser.add_argument("--subset", default=None, help="MUSDB subset folder (default test, else train)")
    parser.add_argument("--is-wav", action="store_true", default=None,
                        help="MUSDB18-HQ layout (<subset>/<track>/<source>.wav) instead of .stem.mp4")
    parser.add_argument("--method", default="sepcluster", help="method name in the results (default sepcluster)")
    parser.add_argument("--tracks", nargs="+", default=None, help="only these track names")
    parser.add_argument("--address", default=None,
                        help="Ray address (default: RAY_ADDRESS or a new local Ray)")
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per track task (default 1)")
    parser.add_argument("--no-json", action="store_true", help="do not write museval JSON files")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.add_argument("--report", action="store_true", help="write the SiSEC comparison report afterwards")
    parser.add_argument("--separate-with", metavar="BUNDLE", default=None,
                        help="instead of --estimates: separate each track's mixture with this model bundle and "
                             "score it in the same Ray task (no stems written)")
    parser.add_argument("--niter", type=int, default=1,
                        help="with --separate-with: Wiener EM iterations (default 1)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``sepcluster evaluate``; 0 when every track was scored, 1 when some failed."""
    from .pipeline import evaluate

    if args.separate_with and args.estimates:
        raise ConfigError("--separate-with", "give either --estimates or --separate-with, not both")
    if not args.estimates and not args.separate_with:
        raise ConfigError("--estimates", "is required (a folder <track>/<target>.wav or a separate catalog), "
                                         "unless --separate-with names a model bundle")
    summary = evaluate(args.references, args.estimates, args.out, engine=args.engine, targets=_list(args.targets),
                       window=args.window, hop=args.hop, method=args.method, address=args.address,
                       subset=args.subset, is_wav=args.is_wav, device=args.device, write_json=not args.no_json,
                       log_mlflow=not args.no_mlflow, num_cpus=args.num_cpus, tracks=_list(args.tracks),
                       separate_with=args.separate_with, niter=args.niter)
    _print_summary(summary)
    if getattr(args, "report", False):
        from .report import write_report

        rep = write_report(args.out, log_mlflow=not args.no_mlflow)
        print(f"report: {rep['markdown']}")
    return 1 if summary["n_failed"] else 0


def _print_summary(summary: dict) -> None:
    print(f"evaluated {summary['n_tracks']} track(s) with the {summary['engine']} engine "
          f"({summary['n_failed']} failed); {summary['n_frames']} frames")
    spm = summary.get("seconds_per_track_minute")
    if spm is not None:
        print(f"engine time: {spm:.2f} s per track-minute")
    if summary.get("separate_with"):
        print(f"separated in memory with {summary['separate_with']}: {summary['separate_seconds']:.1f} s")
    for target, vals in summary["scores"].items():
        print(f"  {target:<14} " + "  ".join(f"{m} {vals[m]:7.2f}" if vals[m] is not None else f"{m}     nan"
                                               for m in ("SDR", "SIR", "SAR", "ISR")))
    for track, err in summary.get("failures", {}).items():
        print(f"  FAILED {track}: {err}", file=sys.stderr)
    print(f"results: {summary['frames_uri']}")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``sepcluster report``."""
    parser.add_argument("--results", required=True, nargs="+", metavar="URI",
                        help="evaluate --out folder(s) (or their frames.parquet); several are compared")
    parser.add_argument("--out", default=None, metavar="URI", help="report folder (default <results>/report)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="SiSEC 2018 methods to show (default all), e.g. TAK1 UHL2 IRM1")
    parser.add_argument("--baselines", nargs="+", default=None,
                        help="SiSEC methods for the paired Wilcoxon test (default: --methods, else "
                             "TAK1 UHL2 IRM1 MIX)")
    parser.add_argument("--targets", nargs="+", default=None, help="only these targets")
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def run_report_from_args(args: argparse.Namespace) -> int:
    """Run ``sepcluster report``."""
    from .report import write_report

    results = args.results if len(args.results) > 1 else args.results[0]
    rep = write_report(results, out=args.out, methods=_list(args.methods), baselines=_list(args.baselines),
                       targets=_list(args.targets), log_mlflow=not args.no_mlflow, title=args.title)
    print(f"report: {rep['markdown']}\n        {rep['html']}\n        {rep['boxplot']}")
    if len(rep["wilcoxon"]):
        print(rep["wilcoxon"].to_string(index=False))
    return 0
