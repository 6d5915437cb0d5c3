"""``sepcluster train``: arguments and the call into :func:`sepcluster.train.runner.train`.

Every field of :class:`~sepcluster.train.config.TrainConfig` is an option (``lr`` ->
``--lr``), so ``--config C.yaml`` (a flat mapping of option names, loaded by the main CLI as
defaults) and flags combine; values are checked by ``TrainConfig`` (ConfigError names the
field). Heavy imports (torch, ray) happen inside :func:`run_from_args`.
"""

from __future__ import annotations

import argparse

_RUN_OPTIONS = ("data", "targets", "num_workers", "gpus", "out", "run_name", "storage_path", "address", "heldout",
                "heldout_songs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` options to ``parser``."""
    from .config import config_fields

    parser.add_argument("--data", required=True, metavar="URI",
                        help="generated dataset folder (Parquet), stem library, or recipe YAML for on-the-fly "
                             "mixing (with --stems); local or s3://")
    parser.add_argument("--targets", default="vocals,drums,bass,other",
                        help="comma-separated targets, one model each (default: vocals,drums,bass,other)")
    parser.add_argument("--num-workers", type=int, default=1, help="Ray Train DDP workers (default 1)")
    parser.add_argument("--gpus", action="store_true", help="one GPU per worker (NCCL, mixed precision)")
    parser.add_argument("--out", metavar="BUNDLE", help="separator bundle folder to write "
                                                        "(default <storage-path>/<run-name>/bundle)")
    parser.add_argument("--run-name", help="checkpoint run name; rerun with the same name to resume "
                                           "(default: derived from data, targets and config)")
    parser.add_argument("--storage-path", metavar="URI",
                        help="checkpoint storage, local or s3:// (default $SEPCLUSTER_HOME/train-runs)")
    parser.add_argument("--address", help="Ray cluster address (default RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--heldout", metavar="STEMS",
                        help="stem library of songs never trained on: log the bundle's SI-SDR improvement on it")
    parser.add_argument("--heldout-songs", help="comma-separated song names of --heldout (default all)")
    group = parser.add_argument_group("training config (also keys of --config)")
    for f in config_fields():
        flag = "--" + f.name.replace("_", "-")
        group.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                           help=f"default {f.default!r}" if f.default is not None else "default: from the data")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``sepcluster train`` from parsed arguments; returns the exit code."""
    from .. import raycluster, storage
    from .config import config_fields, load_train_config
    from .runner import train

    values = {f.name: getattr(args, f.name, None) for f in config_fields()}
    config = load_train_config(None, **values)
    heldout_songs = None
    if getattr(args, "heldout_songs", None):
        heldout_songs = [s.strip() for s in str(args.heldout_songs).split(",") if s.strip()]
    num_workers = args.num_workers
    if isinstance(num_workers, str):
        num_workers = int(num_workers)
    try:
        result = train(args.data, args.targets, config, num_workers=num_workers, use_gpu=bool(args.gpus),
                       out=args.out, run_name=args.run_name, storage_path=args.storage_path, address=args.address,
                       heldout=args.heldout, heldout_songs=heldout_songs)
    finally:
        raycluster.shutdown()
    print(f"bundle: {storage.redact(result.bundle)}")
    print(f"run name: {result.run_name} (rerun with --run-name {result.run_name} to resume)")
    print(f"mlflow run: {result.mlflow_run_id}")
    for t, r in result.targets.items():
        line = (f"{t}: {r.epoch} epochs, best valid loss {r.best_valid_loss:.5g} at epoch {r.best_epoch}"
                f" ({r.stop_reason or 'stopped'})")
        if r.heldout:
            line += f"; held-out SI-SDR {r.heldout['sisdr']:.2f} dB, {r.heldout['improvement']:+.2f} dB over the mixture"
        print(line)
    return 0


__all__ = ["add_arguments", "run_from_args"]
