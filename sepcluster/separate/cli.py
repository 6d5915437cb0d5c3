"""``sepcluster separate``: arguments and the call to :func:`sepcluster.separate.pipeline.separate`.

Inputs are positional (``sepcluster separate -m MODEL -o OUT a.wav b.flac library/``, as the
demucs and umx commands take them) and/or ``--input`` (repeatable); list options take
``a,b`` or ``a b``.
"""

from __future__ import annotations

import argparse

from ..config import ListOption

MODEL_TYPES = ("bundle", "umx", "demucs", "bs_roformer", "mel_band_roformer", "roformer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``separate`` options to ``parser``."""
    src = parser.add_argument_group("what to separate")
    src.add_argument("inputs", nargs="*", metavar="INPUT",
                     help="audio files, folders or s3:// prefixes (recursive), Parquet/CSV manifests (column uri), "
                          "or a MUSDB root (with --subset)")
    src.add_argument("--input", action="append", default=None, metavar="SRC", help="an input, as INPUT (repeatable)")
    src.add_argument("--subset", nargs="+", action=ListOption,
                     help="MUSDB subset(s) of a MUSDB root: train, test or train,test")
    src.add_argument("--limit", type=int, help="only the first N inputs")
    how = parser.add_argument_group("separator")
    sep = how.add_mutually_exclusive_group()
    sep.add_argument("-m", "--model", metavar="PATH",
                     help="a sepcluster bundle, an Open-Unmix .pth (or a folder of them), a demucs .th or bag "
                          ".yaml, or a BS-/Mel-Band RoFormer checkpoint (.ckpt) with its YAML; local or s3://; or a "
                          "registered MLflow model models:/NAME/VERSION (sepcluster train --register)")
    sep.add_argument("--oracle", choices=["irm", "irm1", "irm2"],
                     help="ideal ratio masks from the reference stems of MUSDB-layout inputs (no model)")
    how.add_argument("--model-type", choices=MODEL_TYPES,
                     help="the kind of --model when the files do not tell (default: detected from the files)")
    how.add_argument("--model-config", metavar="YAML",
                     help="the Music-Source-Separation-Training config of a RoFormer checkpoint "
                          "(default: <checkpoint>.yaml or the one YAML beside it)")
    how.add_argument("--targets", nargs="+", action=ListOption,
                     help="targets, comma-separated (default: every output of the model / oracle)")
    how.add_argument("--niter", type=int, default=1, help="Wiener EM iterations, spectrogram models (default 1)")
    how.add_argument("--softmask", action="store_true", help="ratio masks as the Wiener filter's initial estimate")
    how.add_argument("--residual", action="store_true",
                     help="add an 'accompaniment' stem: the mixture minus the targets")
    how.add_argument("--double", action="store_true", help="Wiener filter in double precision")
    how.add_argument("--downmix", action="store_true",
                     help="average inputs with more than 2 channels to mono (otherwise they are errors)")
    how.add_argument("--chunk-seconds", type=float, default=30.0,
                     help="STFT chunk length of spectrogram models; memory grows with it, not with the track "
                          "(0: whole track). Waveform models use their own segment")
    how.add_argument("--overlap-seconds", type=float, default=3.0,
                     help="cross-faded overlap between chunks (at most half of --chunk-seconds)")
    how.add_argument("--batch-size", "--batch-chunks", dest="batch_chunks", type=int,
                     help="chunks per model call, filled across tracks with --tracks-per-actor (default: 4 on "
                          "GPU; on CPU 1 for spectrogram models, the model's own for demucs / RoFormer)")
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--out", metavar="URI",
                     help="output folder: <out>/<track>/<target>.<ext> and <out>/catalog.parquet")
    out.add_argument("--layout", choices=["tracks", "musdb"], default="tracks",
                     help="tracks: <out>/<track>/<target>.<ext>; musdb: <out>/<subset>/<track>/<target>.<ext> "
                          "(museval's estimates layout)")
    out.add_argument("--format", default="wav", choices=["wav", "flac", "ogg", "aiff"])
    out.add_argument("--bits", type=int, default=16, choices=[16, 24, 32], help="16, 24 or 32 (float, wav/aiff)")
    out.add_argument("--clip", choices=["clamp", "rescale", "none"],
                     help="stems above +-1: clamp, rescale (by 1 / (1.01 * peak), as demucs) or none (float "
                          "formats); default clamp for 16/24 bits, none for float. Each is warned with its peak")
    out.add_argument("--overwrite", action="store_true", help="redo tracks already done in the catalog")
    ray = parser.add_argument_group("cluster")
    ray.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a new local Ray)")
    ray.add_argument("--device", help="cpu or cuda (default: cuda when the cluster has GPUs)")
    ray.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                     help="autocast of demucs / RoFormer models: bf16 on CUDA or a CPU with bf16 instructions "
                          "(1.5x on Zen 4 cores), fp16 on CUDA only (default fp32)")
    ray.add_argument("--gpus-per-actor", type=float, default=1.0,
                     help="GPU share of each separating actor (0.5 packs two actors on one GPU; default 1)")
    ray.add_argument("--num-actors", type=int,
                     help="separating actors (default: every GPU / --gpus-per-actor, else CPUs // 4)")
    ray.add_argument("--tracks-per-actor", type=int,
                     help="tracks each actor separates at once, their chunks sharing model calls of --batch-size "
                          "chunks (batching across tracks; default 4 on GPU, 1 on CPU)")
    ray.add_argument("--inline-seconds", type=float, default=600.0,
                     help="tracks up to this length are decoded by CPU tasks; longer ones stream in the actor")
    ray.add_argument("--run-name", help="MLflow run name")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the job; prints the summary; returns 0, or 1 when some tracks failed."""
    from ..errors import ConfigError
    from .pipeline import separate

    inputs = list(args.inputs or []) + list(args.input or [])
    if not inputs:
        raise ConfigError("input", "give what to separate: sepcluster separate -m MODEL -o OUT INPUT [INPUT ...]")
    if not args.out:
        raise ConfigError("out", "is required: -o/--out FOLDER (local or s3://)")
    summary = separate(model=args.model, input=inputs, out=args.out, targets=args.targets, format=args.format,
                       bits=args.bits, niter=args.niter, softmask=args.softmask, residual=args.residual,
                       oracle=args.oracle, subsets=args.subset, overwrite=args.overwrite, downmix=args.downmix,
                       address=args.address, device=args.device, chunk_seconds=args.chunk_seconds or None,
                       overlap_seconds=args.overlap_seconds, batch_chunks=args.batch_chunks,
                       num_actors=args.num_actors, inline_seconds=args.inline_seconds, double=args.double,
                       limit=args.limit, run_name=args.run_name, model_type=args.model_type,
                       model_config=args.model_config, precision=args.precision,
                       gpus_per_actor=args.gpus_per_actor, layout=args.layout, clip=args.clip,
                       tracks_per_actor=args.tracks_per_actor)
    print(summary.format())
    return summary.exit_code
