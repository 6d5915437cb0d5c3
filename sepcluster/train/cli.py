"""``sepcluster train``: arguments and the call into :func:`sepcluster.train.runner.train`.

Every key of a training config is an option (``lr`` -> ``--lr``): the general fields of
:class:`~sepcluster.train.config.TrainConfig` and the options of every model family of the
registry (``--hidden-size``, ``--depth``; see :func:`~sepcluster.train.config.config_options`),
so ``--config C.yaml`` (a flat mapping of option names, loaded by the main CLI as defaults) and
flags combine; values are checked by ``TrainConfig`` (ConfigError names the field). Heavy
imports (torch, ray) happen inside :func:`run_from_args`. Ray is used through
:func:`sepcluster.raycluster.session` inside :func:`~sepcluster.train.runner.train`: this
module neither starts nor shuts it down.
"""

from __future__ import annotations

import argparse

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` options to ``parser``."""
    from ..config import ListOption
    from .config import config_options

    parser.add_argument("--data", required=True, metavar="URI",
                        help="generated dataset folder (Parquet), stem library, or recipe YAML for on-the-fly "
                             "mixing (with --stems); local or s3://")
    parser.add_argument("--targets", nargs="+", action=ListOption, default=["vocals", "drums", "bass", "other"],
                        help="targets, comma-separated (default: vocals,drums,bass,other): one model each for umx/unet "
                             "(trained concurrently), the sources of one model for htdemucs/bs_roformer/mel_roformer")
    parser.add_argument("--num-workers", type=int, default=1,
                        help="Ray Train DDP workers of each trainer, i.e. per target for umx/unet (default 1)")
    parser.add_argument("--gpus", action="store_true", help="one GPU per worker (NCCL, mixed precision)")
    parser.add_argument("--out", metavar="BUNDLE", help="separator bundle folder to write "
                                                        "(default <storage-path>/<run-name>/bundle); htdemucs: a .th "
                                                        "file or a folder, RoFormers: a .ckpt file (YAML beside it) "
                                                        "or a folder")
    parser.add_argument("--run-name", help="checkpoint run name; rerun with the same name to resume "
                                           "(default: derived from data, targets and config)")
    parser.add_argument("--storage-path", metavar="URI",
                        help="checkpoint storage, local or s3:// (default $SEPCLUSTER_HOME/train-runs)")
    parser.add_argument("--address", help="Ray cluster address (default RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--heldout", metavar="STEMS",
                        help="stem library of songs never trained on: log the bundle's SI-SDR improvement on it")
    parser.add_argument("--heldout-songs", nargs="+", action=ListOption,
                        help="song names of --heldout, comma-separated (default all)")
    parser.add_argument("--register", metavar="NAME",
                        help="register the trained separator (an MLflow pyfunc model) under NAME; separate it with "
                             "--model models:/NAME/VERSION")
    parser.add_argument("--concurrent-units", type=int, metavar="N",
                        help="at most N trainers (umx/unet targets) at a time, the others wait in the driver (default: "
                             "all at once; Ray queues the worker groups that do not fit)")
    group = parser.add_argument_group("training config (also keys of --config)")
    for name, help_text in config_options().items():
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar=name.upper(), help=help_text)


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``sepcluster train`` from parsed arguments; returns the exit code."""
    from .config import config_options, load_train_config
    from .runner import train

    values = {name: getattr(args, name, None) for name in config_options()}
    config = load_train_config(None, **values)
    num_workers = args.num_workers
    if isinstance(num_workers, str):
        num_workers = int(num_workers)
    result = train(args.data, args.targets, config, num_workers=num_workers, use_gpu=bool(args.gpus),
                   out=args.out, run_name=args.run_name, storage_path=args.storage_path, address=args.address,
                   heldout=args.heldout, heldout_songs=args.heldout_songs, register=getattr(args, "register", None),
                   concurrent_units=getattr(args, "concurrent_units", None))
    print(result.format())
    return 0


__all__ = ["add_arguments", "run_from_args"]
