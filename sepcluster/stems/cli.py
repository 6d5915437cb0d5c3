"""``sepcluster stems prepare|synth ...``: make a stem library in Scaper's layout.

::

    sepcluster stems prepare --musdb ROOT [--is-wav] [--subset train] [--split valid] --out DIR
    sepcluster stems prepare --folders ROOT --out DIR
    sepcluster stems synth --out DIR --songs N --seconds S --seed K [--sample-rate 44100] [--channels 2]

The action is a positional choice and every option lives on the one ``stems`` parser, so
that the top-level ``--config FILE.yaml`` (option names as keys) works for both actions.
"""

from __future__ import annotations

import argparse
import json

from .. import storage
from ..config import ListOption
from ..errors import ConfigError

ACTIONS = ("prepare", "synth")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``prepare`` / ``synth`` action and their options to ``parser``."""
    parser.add_argument("action", choices=ACTIONS,
                        help="prepare: MUSDB18 or a folder tree -> stem library; synth: synthetic stem library")
    parser.add_argument("--out", metavar="DIR", help="output stem library (local path or s3://); required")
    src = parser.add_argument_group("prepare")
    src.add_argument("--musdb", metavar="ROOT", help="MUSDB18 root holding SUBSET/*.stem.mp4 (or SUBSET/<track>/*.wav "
                                                     "with --is-wav)")
    src.add_argument("--folders", metavar="ROOT", help="any ROOT/<song>/<label>.wav tree (mixture.wav is skipped)")
    src.add_argument("--is-wav", action="store_true", help="the MUSDB18-HQ WAV layout instead of .stem.mp4")
    src.add_argument("--subset", default="train", choices=("train", "test"), help="MUSDB18 subset (default train)")
    src.add_argument("--split", default=None, choices=("train", "valid"),
                     help="musdb's train/validation split of the train subset (default: all of it)")
    src.add_argument("--labels", nargs="+", action=ListOption, default=None,
                     help="comma-separated labels to keep (default: all four for MUSDB18, all found for --folders)")
    src.add_argument("--bits", type=int, default=16, choices=(16, 24, 32), help="WAV sample format (32 = float)")
    syn = parser.add_argument_group("synth")
    syn.add_argument("--songs", type=int, default=None, help="number of songs (required for synth)")
    syn.add_argument("--seconds", type=float, default=None, help="length of each song in seconds (required for synth)")
    syn.add_argument("--seed", type=int, default=0, help="library seed (default 0)")
    syn.add_argument("--sample-rate", type=int, default=44100, help="sample rate (default 44100)")
    syn.add_argument("--channels", type=int, default=2, choices=(1, 2), help="1 (mono) or 2 (stereo, default)")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``prepare`` or ``synth`` from parsed arguments; prints a JSON summary; returns 0."""
    if not args.out:
        raise ConfigError("--out", "is required: the stem library folder to write")
    labels = getattr(args, "labels", None)
    if args.action == "prepare":
        from ..datasets import MUSDB_SOURCES
        from .prepare import prepare_folders, prepare_musdb

        if bool(args.musdb) == bool(args.folders):
            raise ConfigError("--musdb/--folders", "give exactly one source: --musdb ROOT or --folders ROOT")
        if args.musdb:
            info = prepare_musdb(args.musdb, args.out, subset=args.subset, is_wav=args.is_wav, split=args.split,
                                 labels=labels or MUSDB_SOURCES, bits=args.bits)
        else:
            if args.is_wav or args.split:
                raise ConfigError("--is-wav/--split", "only apply to --musdb")
            info = prepare_folders(args.folders, args.out, labels=labels, bits=args.bits)
    else:
        from .synth import synthesize_library

        if args.musdb or args.folders:
            raise ConfigError("--musdb/--folders", "belong to `stems prepare`, not `stems synth`")
        if args.songs is None:
            raise ConfigError("--songs", "is required for synth")
        if args.seconds is None:
            raise ConfigError("--seconds", "is required for synth")
        if labels is not None:
            raise ConfigError("--labels", "synth always writes vocals, drums, bass, other")
        info = synthesize_library(args.out, songs=args.songs, seconds=args.seconds, seed=args.seed,
                                  sample_rate=args.sample_rate, channels=args.channels, bits=args.bits)
    summary = {k: info[k] for k in ("generator", "songs", "labels") if k in info}
    summary["out"] = storage.redact(args.out)
    print(json.dumps(summary))
    return 0
