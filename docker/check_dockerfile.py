"""Run docker/Dockerfile's install steps for one variant in a fresh venv: proof that they work where no
image builder runs (no Docker engine, no registry to pull the Ray base image from).

The Dockerfile is read, its ARGs resolved (defaults, then ``--build-arg NAME=VALUE``) and the final
stage followed:

- ``RUN`` steps that call apt-get are not run: each package they install must be installed here (dpkg);
- ``WORKDIR`` / ``COPY`` build the image's folders under a scratch root (files from the repository);
- every other ``RUN`` runs as written with bash, in the WORKDIR, with the stage's ARGs and ENVs in the
  environment and a fresh venv's ``bin`` first on PATH (so ``pip``, ``python`` and ``sepcluster`` are
  the venv's, as the Ray image's Python is in the image).

Then it checks what the image would hold: sepcluster imports, ``sepcluster --help`` runs, every
installed package that requirements.lock names has the locked version, and torch is the build TORCH
names. pip's cache is kept (``PIP_NO_CACHE_DIR`` is not applied) so a second check is quicker.

    .venv/bin/python docker/check_dockerfile.py [--build-arg TORCH=cpu] [--build-arg TORCH_CPU_INDEX=]

Where download.pytorch.org cannot be reached but torch's CPU wheel lies in one of pip's find-links
folders (the machines this repository is built on), pass ``--build-arg TORCH_CPU_INDEX=``: the
Dockerfile then takes the wheel from pip's own configuration. Exit status 0 when every check passes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
_VAR = re.compile(r"\$\{(\w+)(?::([-+])([^}]*))?\}|\$(\w+)")


@dataclass
class Instruction:
    keyword: str
    text: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    steps: list[Instruction] = field(default_factory=list)


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comment lines dropped."""
    out, parts, start = [], [], 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not parts and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if parts and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        parts.append(line)
        joined = " ".join(p.strip() for p in parts)
        keyword, _, rest = joined.partition(" ")
        out.append(Instruction(keyword.upper(), rest.strip(), start))
        parts = []
    return out


def substitute(text: str, env: dict[str, str]) -> str:
    """Docker's ``$VAR`` / ``${VAR}`` / ``${VAR:-default}`` / ``${VAR:+word}`` expansion."""
    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(4)
        value = env.get(name, "")
        if m.group(2) == "-":
            return value or m.group(3)
        if m.group(2) == "+":
            return m.group(3) if value else ""
        return value
    return _VAR.sub(one, text)


def _declare(text: str, scope: dict[str, str], overrides: dict[str, str], inherited: dict[str, str]):
    """``ARG NAME[=default]``: the --build-arg value, else the default, else the global ARG's value."""
    name, eq, default = text.partition("=")
    name = name.strip()
    if name in overrides:
        return name, overrides[name]
    if eq:
        return name, substitute(default.strip().strip('"'), scope)
    return name, inherited.get(name, "")


def stages(insts: list[Instruction], overrides: dict[str, str]) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages with their FROM resolved."""
    global_args: dict[str, str] = {}
    out: list[Stage] = []
    for inst in insts:
        if inst.keyword == "ARG" and not out:
            name, value = _declare(inst.text, global_args, overrides, {})
            global_args[name] = value
        elif inst.keyword == "FROM":
            words = substitute(inst.text, global_args).split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            out.append(Stage(words[0], name))
        elif out:
            out[-1].steps.append(inst)
    return global_args, out


def chain(final: Stage, all_stages: list[Stage]) -> tuple[str, list[Stage]]:
    """The external base image of ``final`` and the stages from it down to ``final``."""
    by_name = {s.name: s for s in all_stages if s.name}
    path = [final]
    while path[0].base in by_name:
        path.insert(0, by_name[path[0].base])
    return path[0].base, path


def _copy(text: str, env: dict, workdir: Path, image_root: Path) -> None:
    """``COPY [--flags] SRC... DEST``: a folder's content goes into DEST; files into DEST/ or as DEST."""
    words = [w for w in shlex.split(substitute(text, env)) if not w.startswith("--")]
    *sources, dest = words
    target = image_root / dest.lstrip("/") if dest.startswith("/") else workdir / dest
    into_folder = dest.endswith("/") or len(sources) > 1
    for src in sources:
        path = ROOT / src
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            (target if into_folder else target.parent).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name if into_folder else target)


def _apt_packages(script: str) -> list[str]:
    words = script.split()
    i = words.index("install")
    pkgs = []
    for word in words[i + 1:]:
        if word.startswith("&&") or word in ("&&", ";"):
            break
        if not word.startswith("-"):
            pkgs.append(word)
    return pkgs


def _dpkg_installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return result.returncode == 0 and "install ok installed" in result.stdout


def run_stage(path: list[Stage], args: dict[str, str], overrides: dict[str, str], venv: Path,
              image_root: Path, log) -> dict:
    """Follow the stages' steps; returns the final environment (ARGs and ENVs)."""
    env = {}
    workdir = image_root
    for stage in path:
        for inst in stage.steps:
            if inst.keyword == "ARG":
                name, value = _declare(inst.text, env, overrides, args)
                env[name] = value
            elif inst.keyword == "ENV":
                for token in shlex.split(inst.text):
                    name, _, value = token.partition("=")
                    env[name] = substitute(value, env)
            elif inst.keyword == "WORKDIR":
                workdir = image_root / substitute(inst.text, env).lstrip("/")
                workdir.mkdir(parents=True, exist_ok=True)
            elif inst.keyword == "COPY":
                _copy(inst.text, env, workdir, image_root)
            elif inst.keyword == "RUN" and "apt-get" in inst.text:
                missing = [p for p in _apt_packages(inst.text) if not _dpkg_installed(p)]
                log(f"line {inst.line}: RUN apt-get (not run): system packages "
                    + ("all installed here" if not missing else f"MISSING here: {missing}"))
                if missing:
                    raise SystemExit(f"system packages of the Dockerfile are not installed here: {missing}")
            elif inst.keyword == "RUN":
                log(f"line {inst.line}: RUN {inst.text[:100]}...")
                run_env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
                run_env.update({k: v for k, v in env.items() if k != "PIP_NO_CACHE_DIR"})
                run_env["PATH"] = f"{venv / 'bin'}:{os.environ['PATH']}"
                run_env["VIRTUAL_ENV"] = str(venv)
                subprocess.run(["bash", "-eo", "pipefail", "-c", inst.text], cwd=workdir, env=run_env, check=True)
    env["__workdir__"] = str(workdir)
    return env


def check_installed(venv: Path, workdir: Path, torch_build: str, log) -> list[str]:
    """Problems with what the venv holds (empty when all is as the image should be)."""
    problems = []
    python = str(venv / "bin" / "python")
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))")
    installed = json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)
    locked = {}
    for line in (workdir / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            locked[name.lower().replace("_", "-")] = version
    for name, version in sorted(installed.items()):
        want = locked.get(name)
        if want is not None and version.split("+", 1)[0] != want:
            problems.append(f"{name} {version} installed, the lock says {want}")
    torch = installed.get("torch", "")
    if torch_build == "cpu" and not torch.endswith("+cpu"):
        problems.append(f"torch {torch or '(none)'} installed, not the CPU build")
    if torch_build == "cuda" and torch.endswith("+cpu"):
        problems.append(f"torch {torch} installed, not a CUDA build")
    log(f"{len(installed)} packages installed, {sum(1 for n in installed if n in locked)} of them named by the lock; "
        f"torch {torch}")
    code = "import sepcluster, sepcluster.cli, sepcluster.storage; print(sepcluster.__file__)"
    run = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=tempfile.gettempdir())
    if run.returncode:
        problems.append(f"sepcluster does not import: {run.stderr.strip()[-500:]}")
    else:
        log(f"sepcluster imports from {run.stdout.strip()}")
    helped = subprocess.run([str(venv / "bin" / "sepcluster"), "--help"], capture_output=True, text=True,
                            cwd=tempfile.gettempdir())
    if helped.returncode or "usage" not in helped.stdout.lower():
        problems.append(f"`sepcluster --help` failed ({helped.returncode}): {helped.stderr.strip()[-500:]}")
    else:
        log("`sepcluster --help` runs")
    return problems


def local_cpu_wheel() -> str | None:
    """torch's CPU wheel at the locked version in one of pip's find-links folders, as the Makefile looks."""
    lock = (ROOT / "requirements.lock").read_text()
    version = re.search(r"^torch==([^\s#]+)", lock, re.M)
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    folders = [w for m in re.finditer(r"find-links='(.*)'", listing) for w in m.group(1).split()]
    folders += os.environ.get("PIP_FIND_LINKS", "").split()
    for folder in folders:
        hits = sorted(Path(folder).glob(f"torch-{version[1]}+cpu-*.whl")) if version and Path(folder).is_dir() else []
        if hits:
            return str(hits[0])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dockerfile", type=Path, default=DOCKERFILE)
    parser.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a new one under /tmp, removed after)")
    args = parser.parse_args(argv)
    overrides = dict(a.split("=", 1) if "=" in a else (a, os.environ.get(a, "")) for a in args.build_arg)

    def log(message: str) -> None:
        print(f"[check_dockerfile] {message}", flush=True)

    if "TORCH_CPU_INDEX" not in overrides and local_cpu_wheel():
        # as `make install` does: the CPU wheel pip already finds is the one the index would serve
        overrides["TORCH_CPU_INDEX"] = ""
        log(f"torch's CPU wheel lies in pip's find-links ({local_cpu_wheel()}): TORCH_CPU_INDEX=''")
    global_args, all_stages = stages(instructions(args.dockerfile.read_text()), overrides)
    base, path = chain(all_stages[-1], all_stages)
    log(f"variant {', '.join(f'{k}={v}' for k, v in global_args.items())}: base image {base}")
    py_tag = re.search(r"-py(\d)(\d+)", base)
    if py_tag and (sys.version_info.major, sys.version_info.minor) != (int(py_tag[1]), int(py_tag[2])):
        log(f"the base image runs Python {py_tag[1]}.{py_tag[2]}; this check runs {sys.version.split()[0]}")
        return 2
    scratch = args.workdir or Path(tempfile.mkdtemp(prefix="sepcluster-dockerfile-check-"))
    try:
        venv = scratch / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        log(f"fresh venv {venv} ({sys.version.split()[0]})")
        image_root = scratch / "image"
        image_root.mkdir(parents=True, exist_ok=True)
        env = run_stage(path, global_args, overrides, venv, image_root, log)
        problems = check_installed(venv, Path(env["__workdir__"]), env.get("TORCH", global_args.get("TORCH", "")), log)
    finally:
        if args.workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    for problem in problems:
        log(f"PROBLEM: {problem}")
    log("all install steps work" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
