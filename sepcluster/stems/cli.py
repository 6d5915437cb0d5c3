"""``sepcluster stems prepare|synth ...``: make a stem library in Scaper's layout.

::

    sepcluster stems prepare --musdb ROOT [--is-wav] [--subset train] [--split valid] --out DIR
    sepcluster stems prepare --folders ROOT --out DIR
    sepcluster stems prepare --moisesdb ROOT [--label-map MAP.yaml] --out DIR
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
    src.add_argument("--moisesdb", metavar="ROOT", help="MoisesDB root ROOT/<provider>/<uuid>/data.json; stems of "
                                                        "several files summed into labels by --label-map")
    src.add_argument("--label-map", metavar="YAML", default=None,
                     help="with --moisesdb: YAML mapping label -> MoisesDB stems ('stem', 'stem/track_type' or '*' "
                          "for the rest; default vocals, drums, bass, other)")
    src.add_argument("--is-wav", action="store_true", help="the MUSDB18-HQ WAV layout instead of .stem.mp4")
    src.add_argument("--subset", default="train", choices=("train", "test"), help="MUSDB18 subset (default train)")
    src.add_argument("--split", default=None, choices=("train", "valid"),
                     help="musdb's train/validation split of the train subset (default: all of it)")
    src.add_argument("--labels", nargs="+", action=ListOption, default=None,
                     help="comma-separated labels to keep (default: all four for MUSDB18, all found for --folders, "
                          "every label of the label map for --moisesdb)")
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
        from .prepare import prepare_folders, prepare_moisesdb, prepare_musdb

        moises = getattr(args, "moisesdb", None)
        if sum(bool(x) for x in (args.musdb, args.folders, moises)) != 1:
            raise ConfigError("--musdb/--folders/--moisesdb",
                              "give exactly one source: --musdb ROOT, --folders ROOT or --moisesdb ROOT")
        if getattr(args, "label_map", None) and not moises:
            raise ConfigError("--label-map", "only applies to --moisesdb")
        if moises:
            if args.is_wav or args.split:
                raise ConfigError("--is-wav/--split", "only apply to --musdb")
            info = prepare_moisesdb(moises, args.out, label_map=args.label_map, labels=labels, bits=args.bits)
        elif args.musdb:
            info = prepare_musdb(args.musdb, args.out, subset=args.subset, is_wav=args.is_wav, split=args.split,
                                 labels=labels or MUSDB_SOURCES, bits=args.bits)
        else:
            if args.is_wav or args.split:
                raise ConfigError("--is-wav/--split", "only apply to --musdb")
            info = prepare_folders(args.folders, args.out, labels=labels, bits=args.bits)
    else:
        from .synth import synthesize_library

        if args.musdb or args.folders or getattr(args, "moisesdb", None):
            raise ConfigError("--musdb/--folders/--moisesdb", "belong to `stems prepare`, not `stems synth`")
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
