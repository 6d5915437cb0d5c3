"""``sepcluster generate``: arguments and the call into :func:`sepcluster.generate.runner.generate`.

Heavy imports (Ray, scaper) happen inside :func:`run_from_args`, so ``sepcluster --help`` is fast.
"""

from __future__ import annotations

import argparse
import json

AUDIO_FORMATS = ("float32", "flac16", "flac24")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sepcluster generate``."""
    parser.add_argument("--recipe", metavar="R.yaml", help="mixing recipe (YAML); required unless --regenerate")
    parser.add_argument("--stems", metavar="DIR",
                        help="stem library: DIR/foreground/<label>/<song>.wav (local or s3://); with "
                             "--regenerate defaults to the library the dataset was made from")
    parser.add_argument("--out", metavar="URI", required=True, help="dataset folder (local path or s3://bucket/prefix)")
    parser.add_argument("--num-mixtures", type=int, metavar="N", help="number of mixtures (seeds base..base+N-1)")
    parser.add_argument("--base-seed", type=int, default=0, metavar="S", help="seed of mixture 0 (default 0)")
    parser.add_argument("--num-actors", type=int, metavar="K", help="Ray actors (default: one per CPU)")
    parser.add_argument("--shard-size", type=int, metavar="M",
                        help="mixtures per Parquet shard (default: ~8 shards per actor, at most 64)")
    parser.add_argument("--address", metavar="ADDR", help="Ray cluster address (default: RAY_ADDRESS or a new local Ray)")
    parser.add_argument("--audio-format", choices=AUDIO_FORMATS, default="float32",
                        help="sample format of the audio columns (default float32; flac16/flac24 are smaller)")
    parser.add_argument("--cache-mb", type=int, metavar="MB",
                        help="per-actor cache of decoded sources and, without pitch/time, their channel "
                             "conversion; used when the whole library fits (default 2048; 0 disables)")
    parser.add_argument("--regenerate", type=int, metavar="SEED",
                        help="remake mixture SEED from the dataset's recipe, compare with the stored one and print "
                             "the result (exit 1 when they differ)")
    parser.add_argument("--json", action="store_true", help="print the summary / report as JSON")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``sepcluster generate``; returns the exit code."""
    from ..errors import ConfigError

    if args.regenerate is not None:
        from .runner import print_regenerate_report, regenerate

        report = regenerate(args.out, args.regenerate, stems_dir=args.stems)
        if args.json:
            print(json.dumps(report, indent=2, default=str))
        else:
            print_regenerate_report(report)
        return 0 if report["identical"] and report["jams_render_identical"] else 1
    if not args.recipe:
        raise ConfigError("--recipe", "is required (or use --regenerate SEED with an existing --out)")
    if not args.stems:
        raise ConfigError("--stems", "is required: the stem library folder")
    if args.num_mixtures is None:
        raise ConfigError("--num-mixtures", "is required")
    from .runner import generate

    summary = generate(args.recipe, args.stems, args.out, args.num_mixtures, base_seed=args.base_seed,
                       num_actors=args.num_actors, shard_size=args.shard_size, address=args.address,
                       audio_format=args.audio_format, cache_mb=args.cache_mb, progress=not getattr(args, "no_progress", False))
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.format())
    return summary.exit_code
