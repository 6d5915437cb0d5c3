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

Each stage calls its job's public function (the one its CLI command calls) with the
section's settings and prints the job's summary, so the pipeline never does anything a user
could not do by hand. All stages share one Ray session (:func:`sepcluster.raycluster.session`):
``address:`` (or ``RAY_ADDRESS``) names an existing cluster, otherwise a local Ray is started
for the run and stopped at its end.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import storage
from .config import ListOption, load_yaml, reject_unknown
from .datasets import MUSDB_SOURCES
from .errors import ConfigError

log = logging.getLogger(__name__)

SECTIONS = ("workdir", "address", "stems", "heldout", "generate", "train", "separate", "evaluate", "report")
STAGES = ("stems", "generate", "train", "separate", "evaluate", "report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", metavar="URI", help="overrides the config's workdir (local path or s3://)")
    parser.add_argument("--address", metavar="ADDR", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    parser.add_argument("--stages", nargs="+", action=ListOption, default=list(STAGES),
                        help="stages to run, comma-separated (default: all, in order)")
    parser.epilog = ("The config is a YAML file with sections: " + ", ".join(SECTIONS) +
                     ". See cluster/demo.yaml.\n\n" + (parser.epilog or ""))


def run_from_args(args: argparse.Namespace) -> int:
    if not getattr(args, "config", None):
        raise ConfigError("--config", "the pipeline needs a YAML config (e.g. cluster/demo.yaml)")
    config = load_yaml(args.config)
    if args.workdir:
        config["workdir"] = args.workdir
    if args.address:
        config["address"] = args.address
    result = run_pipeline(config, stages=args.stages, config_dir=os.path.dirname(os.path.abspath(args.config)))
    print(result.format())
    return result.status


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
        mixture = sum(stems[t] for t in MUSDB_SOURCES)
        peak = float(np.max(np.abs(mixture)))
        gain = 0.95 / peak if peak > 0.95 else 1.0
        for target in MUSDB_SOURCES:
            write_audio(storage.join(folder, f"{target}.wav"), stems[target] * gain, sample_rate, bits=24)
        write_audio(storage.join(folder, "mixture.wav"), mixture * gain, sample_rate, bits=24)  # last: marks done
    return names


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` did: ``status`` (0, or 1 when a stage reported failed items), the
    seconds per stage, each stage's summary (the job function's return value), the output paths
    and the Ray cluster the stages ran on (:func:`sepcluster.raycluster.current_cluster`)."""

    status: int = 0
    timings: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    workdir: str = ""
    ray: dict = field(default_factory=dict)

    def format(self) -> str:
        from . import tracking

        lines = ["", "sepcluster pipeline finished" + (" (some items failed, see above)" if self.status else "")]
        lines += [f"  {stage:<9} {seconds:7.1f} s" for stage, seconds in self.timings.items()]
        lines.append(f"  outputs:  {storage.redact(self.workdir)}")
        lines.append(f"  MLflow:   {storage.redact(tracking.tracking_uri())}  (experiments sepcluster-<job>)")
        if "report" in self.timings:
            lines.append(f"  report:   {storage.join(self.paths['report'], 'report.md')}")
        return "\n".join(lines)


class _Stages:
    """The stages of one pipeline run; each method runs one job and prints its summary."""

    def __init__(self, config: dict, config_dir: str, result: PipelineResult):
        self.config, self.config_dir, self.result = config, config_dir, result
        self.paths = result.paths
        self.st = dict(config.get("stems") or {})
        self.sep = dict(config.get("separate") or {})
        tr = dict(config.get("train") or {})
        targets = tr.get("targets") or ["vocals"]
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        self.sample_rate = int(self.st.get("sample_rate", 44100))
        self.channels = int(self.st.get("channels", 2))

    def _section(self, name: str) -> dict:
        return dict(self.config.get(name) or {})

    def _path(self, value: str) -> str:
        return _path(value, self.config_dir)

    def stems(self) -> None:
        from .stems import synthesize_library

        st, ho = self.st, self._section("heldout")
        info = synthesize_library(self.paths["stems"], songs=int(st.get("songs", 16)), seconds=float(st.get("seconds", 12)),
                                  seed=int(st.get("seed", 0)), sample_rate=self.sample_rate, channels=self.channels)
        print(f"stems: {info['songs']} songs ({', '.join(info['labels'])}) in {storage.redact(self.paths['stems'])}")
        names = write_heldout(self.paths["heldout"], songs=int(ho.get("songs", 3)),
                              seconds=float(ho.get("seconds", st.get("seconds", 12))), seed=int(ho.get("seed", 1000)),
                              sample_rate=self.sample_rate, channels=self.channels)
        log.info("pipeline: held-out songs %s in %s", names, self.paths["heldout"])

    def generate(self) -> int:
        from .generate import generate

        gen = self._section("generate")
        summary = generate(self._path(gen.get("recipe", "cluster/recipes/demo.yaml")), self.paths["stems"],
                           self.paths["mixtures"], int(gen.get("num_mixtures", 300)),
                           base_seed=int(gen.get("base_seed", 0)), num_actors=gen.get("num_actors"),
                           shard_size=gen.get("shard_size"), audio_format=gen.get("audio_format") or "float32")
        self.result.results["generate"] = summary
        print(summary.format())
        return summary.exit_code

    def train(self) -> int:
        from .train import train

        tr = self._section("train")
        heldout_test = storage.join(self.paths["heldout"], "test")
        # the quality bar: SI-SDR improvement over the mixture on songs never trained on
        heldout = heldout_test if storage.exists(heldout_test) else None
        result = train(self.paths["mixtures"], self.targets, self._path(tr["config"]) if tr.get("config") else None,
                       num_workers=int(tr.get("num_workers", 1)), use_gpu=bool(tr.get("gpus")),
                       out=self.paths["model"], run_name=tr.get("run_name"), storage_path=tr.get("storage_path"),
                       heldout=heldout)
        self.result.results["train"] = result
        print(result.format())
        return 0

    def separate(self) -> int:
        from .separate import separate

        common = dict(input=self.paths["heldout"], subsets=["test"], targets=self.targets,
                      niter=int(self.sep.get("niter", 1)), residual=bool(self.sep.get("residual", True)))
        status = 0
        runs = [("separate", dict(model=self.paths["model"], out=self.paths["separated"]))]
        if self.sep.get("oracle", True):
            runs.append(("separate-oracle", dict(oracle="irm", out=self.paths["oracle"])))
        for name, args in runs:
            summary = separate(**args, **common)
            self.result.results[name] = summary
            print(summary.format())
            status |= summary.exit_code
        return status

    def evaluate(self) -> int:
        from .evaluate.pipeline import evaluate, format_summary

        ev = self._section("evaluate")
        runs = [("evaluate", self.paths["separated"], self.paths["scores"], ev.get("method", "sepcluster-demo"))]
        if self.sep.get("oracle", True):
            runs.append(("evaluate-oracle", self.paths["oracle"], self.paths["scores-oracle"], "IRM-oracle"))
        status = 0
        for name, estimates, out, method in runs:  # every estimated target (+ accompaniment)
            summary = evaluate(self.paths["heldout"], estimates, out, engine=ev.get("engine", "torch"),
                               method=method, subset="test", is_wav=True)
            self.result.results[name] = summary
            print(format_summary(summary))
            status |= 1 if summary["n_failed"] or summary.get("n_missing_targets") else 0
        return status

    def report(self) -> int:
        from .evaluate.report import format_report, write_report

        results = [self.paths["scores"]] + ([self.paths["scores-oracle"]] if self.sep.get("oracle", True) else [])
        methods = self._section("report").get("methods")
        if isinstance(methods, str):
            methods = [m.strip() for m in methods.split(",") if m.strip()]
        rep = write_report(results, out=self.paths["report"], methods=methods or None)
        self.result.results["report"] = rep
        print(format_report(rep))
        return 0


def run_pipeline(config: dict[str, Any], stages: list[str] | None = None, config_dir: str = ".") -> PipelineResult:
    """Run the stages of ``config`` in order in one Ray session; returns a :class:`PipelineResult`."""
    from . import raycluster

    reject_unknown(config, set(SECTIONS))
    stages = list(stages or STAGES)
    for s in stages:
        if s not in STAGES:
            raise ConfigError("--stages", f"unknown stage {s!r} (stages: {', '.join(STAGES)})")
    work = storage.absolute(config.get("workdir") or "demo-out")  # workers run in other folders
    paths = {k: storage.join(work, k) for k in ("stems", "heldout", "mixtures", "model", "separated", "oracle",
                                                 "scores", "scores-oracle", "report")}
    result = PipelineResult(paths=paths, workdir=work)
    runner = _Stages(config, config_dir, result)
    with raycluster.session(address=config.get("address")):
        result.ray = raycluster.current_cluster()
        for stage in STAGES:
            if stage not in stages:
                continue
            t0 = time.time()
            result.status |= getattr(runner, stage)() or 0
            result.timings[stage] = time.time() - t0
    return result
