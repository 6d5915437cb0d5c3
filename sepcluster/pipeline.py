"""The whole pipeline from one YAML config: stems -> mixtures -> models -> separated catalog ->
scores and report. ``make demo`` and ``jobs/pipeline.py`` run it.

Every stage writes under ``workdir`` (a local path or ``s3://``) and is resumable, so a rerun
of the same config skips what is done::

    workdir/stems/                      synthetic stem library (training songs)
    workdir/heldout/test/<song>/*.wav   held-out songs, MUSDB-HQ layout (mixture + 4 stems)
    workdir/mixtures/                   generate: Parquet shards + _dataset.json
    workdir/model/                      train: separator bundle (bundle.json + <target>.pth)
    workdir/separated/                  separate: <song>/<target>.wav + catalog.parquet
    workdir/oracle/                     separate --oracle irm: the upper bound
    workdir/scores/, workdir/scores-oracle/   evaluate: per-frame Parquet + museval JSON
    workdir/report/                     report: report.md, report.html, boxplot PNG

Each stage is the same code path as its CLI command (the stage builds that command's
arguments and calls it), so the pipeline never does anything a user could not do by hand.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

import numpy as np

from . import storage
from .config import load_yaml, reject_unknown
from .errors import ConfigError, SepclusterError

log = logging.getLogger(__name__)

SECTIONS = ("workdir", "address", "stems", "heldout", "generate", "train", "separate", "evaluate", "report")
TARGETS = ("vocals", "drums", "bass", "other")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", metavar="URI", help="overrides the config's workdir (local path or s3://)")
    parser.add_argument("--address", metavar="ADDR", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument("--stages", default="stems,generate,train,separate,evaluate,report",
                        help="comma-separated stages to run (default: all, in order)")
    parser.epilog = ("The config is a YAML file with sections: " + ", ".join(SECTIONS) +
                     ". See cluster/demo.yaml.")


def run_from_args(args: argparse.Namespace) -> int:
    if not getattr(args, "config", None):
        raise ConfigError("--config", "the pipeline needs a YAML config (e.g. cluster/demo.yaml)")
    config = load_yaml(args.config)
    if args.workdir:
        config["workdir"] = args.workdir
    if args.address:
        config["address"] = args.address
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    return run_pipeline(config, stages=stages, config_dir=os.path.dirname(os.path.abspath(args.config)))


def _cli(argv: list[str]) -> int:
    from .cli import main

    log.info("pipeline: sepcluster %s", " ".join(storage.redact(a) for a in argv))
    code = main(argv)
    if code == 2:
        raise SepclusterError(f"stage `sepcluster {argv[0]}` failed on bad input (see the error above)")
    return code


def _path(value: str, config_dir: str) -> str:
    """A config path: relative paths are taken from the repo root (cwd) first, then the config's folder."""
    if "://" in value or os.path.isabs(value) or os.path.exists(value):
        return value
    return os.path.join(config_dir, value)


def write_heldout(out: str, songs: int, seconds: float, seed: int, sample_rate: int, channels: int,
                  first_index: int = 0) -> list[str]:
    """Synthesise held-out songs as a MUSDB-HQ root: ``out/test/<song>/{mixture,vocals,...}.wav``.

    The mixture is the exact sum of the stems (scaled together if it would clip), so the
    references are exact. Returns the song names. Skips songs already written.
    """
    from .audio import write_audio
    from .stems.synth import render_song, song_name

    names = []
    for i in range(first_index, first_index + songs):
        name = f"heldout-{song_name(i)}"
        names.append(name)
        folder = storage.join(out, "test", name)
        if storage.exists(storage.join(folder, "mixture.wav")):
            continue
        stems, _meta = render_song(seed, i, seconds, sample_rate=sample_rate, channels=channels)
        mixture = sum(stems[t] for t in TARGETS)
        peak = float(np.max(np.abs(mixture)))
        gain = 0.95 / peak if peak > 0.95 else 1.0
        for target in TARGETS:
            write_audio(storage.join(folder, f"{target}.wav"), stems[target] * gain, sample_rate, bits=24)
        write_audio(storage.join(folder, "mixture.wav"), mixture * gain, sample_rate, bits=24)  # last: marks done
    return names


def run_pipeline(config: dict[str, Any], stages: list[str] | None = None, config_dir: str = ".") -> int:
    """Run the stages of ``config`` in order; returns 0, or 1 if a stage reported failed items."""
    from . import raycluster

    reject_unknown(config, set(SECTIONS))
    stages = stages or ["stems", "generate", "train", "separate", "evaluate", "report"]
    for s in stages:
        if s not in ("stems", "generate", "train", "separate", "evaluate", "report"):
            raise ConfigError("--stages", f"unknown stage {s!r}")
    work = storage.absolute(config.get("workdir") or "demo-out")  # workers run in other folders
    address = config.get("address")
    st = dict(config.get("stems") or {})
    ho = dict(config.get("heldout") or {})
    gen = dict(config.get("generate") or {})
    tr = dict(config.get("train") or {})
    sep = dict(config.get("separate") or {})
    ev = dict(config.get("evaluate") or {})
    paths = {k: storage.join(work, k) for k in ("stems", "heldout", "mixtures", "model", "separated", "oracle",
                                                 "scores", "scores-oracle", "report")}
    targets = tr.get("targets") or ["vocals"]
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",")]
    sample_rate = int(st.get("sample_rate", 44100))
    channels = int(st.get("channels", 2))
    status = 0
    timings: dict[str, float] = {}

    raycluster.init(address=address)
    try:
        if "stems" in stages:
            t0 = time.time()
            _cli(["stems", "synth", "--out", paths["stems"], "--songs", str(st.get("songs", 16)),
                  "--seconds", str(st.get("seconds", 12)), "--seed", str(st.get("seed", 0)),
                  "--sample-rate", str(sample_rate), "--channels", str(channels)])
            names = write_heldout(paths["heldout"], songs=int(ho.get("songs", 3)),
                                  seconds=float(ho.get("seconds", st.get("seconds", 12))),
                                  seed=int(ho.get("seed", 1000)), sample_rate=sample_rate, channels=channels)
            log.info("pipeline: held-out songs %s in %s", names, paths["heldout"])
            timings["stems"] = time.time() - t0

        if "generate" in stages:
            t0 = time.time()
            argv = ["generate", "--recipe", _path(gen.get("recipe", "cluster/recipes/demo.yaml"), config_dir),
                    "--stems", paths["stems"], "--out", paths["mixtures"],
                    "--num-mixtures", str(gen.get("num_mixtures", 300)), "--base-seed", str(gen.get("base_seed", 0))]
            for key in ("num_actors", "shard_size", "audio_format"):
                if gen.get(key) is not None:
                    argv += ["--" + key.replace("_", "-"), str(gen[key])]
            status |= _cli(argv)
            timings["generate"] = time.time() - t0

        if "train" in stages:
            t0 = time.time()
            argv = ["train", "--data", paths["mixtures"], "--targets", ",".join(targets), "--out", paths["model"]]
            heldout_test = storage.join(paths["heldout"], "test")
            if storage.exists(heldout_test):
                # the quality bar: SI-SDR improvement over the mixture on songs never trained on
                argv += ["--heldout", heldout_test]
            if tr.get("config"):
                argv += ["--config", _path(tr["config"], config_dir)]
            for key in ("num_workers", "run_name", "storage_path"):
                if tr.get(key) is not None:
                    argv += ["--" + key.replace("_", "-"), str(tr[key])]
            if tr.get("gpus"):
                argv.append("--gpus")
            status |= _cli(argv)
            timings["train"] = time.time() - t0

        if "separate" in stages:
            t0 = time.time()
            common = ["--input", paths["heldout"], "--subset", "test", "--targets", ",".join(targets),
                      "--niter", str(sep.get("niter", 1))]
            if sep.get("residual", True):
                common.append("--residual")
            status |= _cli(["separate", "--model", paths["model"], "--out", paths["separated"], *common])
            if sep.get("oracle", True):
                status |= _cli(["separate", "--oracle", "irm", "--out", paths["oracle"], *common])
            timings["separate"] = time.time() - t0

        if "evaluate" in stages:
            t0 = time.time()
            common = ["--references", paths["heldout"], "--subset", "test", "--is-wav",
                      "--engine", ev.get("engine", "torch")]  # every estimated target (+ accompaniment)
            status |= _cli(["evaluate", *common, "--estimates", paths["separated"], "--out", paths["scores"],
                            "--method", ev.get("method", "sepcluster-demo")])
            if sep.get("oracle", True):
                status |= _cli(["evaluate", *common, "--estimates", paths["oracle"], "--out", paths["scores-oracle"],
                                "--method", "IRM-oracle"])
            timings["evaluate"] = time.time() - t0

        if "report" in stages:
            t0 = time.time()
            results = [paths["scores"]] + ([paths["scores-oracle"]] if sep.get("oracle", True) else [])
            argv = ["report", "--results", *results, "--out", paths["report"]]
            methods = (config.get("report") or {}).get("methods")
            if methods:
                argv += ["--methods", *(methods if isinstance(methods, list) else str(methods).split(","))]
            status |= _cli(argv)
            timings["report"] = time.time() - t0
    finally:
        raycluster.shutdown()

    print("\nsepcluster pipeline finished" + (" (some items failed, see above)" if status else ""))
    for stage, seconds in timings.items():
        print(f"  {stage:<9} {seconds:7.1f} s")
    print(f"  outputs:  {storage.redact(work)}")
    from . import tracking

    print(f"  MLflow:   {storage.redact(tracking.tracking_uri())}  (experiments sepcluster-<job>)")
    if "report" in stages:
        print(f"  report:   {storage.join(paths['report'], 'report.md')}")
    return status
