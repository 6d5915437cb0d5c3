"""Write ``requirements.lock`` from the installed venv (``make lock``).

The lock holds every package that the project's dependencies and its ``test`` extra (read from
``pyproject.toml``) pull, plus the test-only oracles the Makefile installs without their dependencies,
each at the version installed in the venv this runs in: the versions ``make test`` passed with. The
project itself, and anything else installed in the venv by hand, stays out. torch is written without
its local label (``2.13.0``, not ``2.13.0+cpu``): which build of that version is installed is chosen
by ``make install TORCH=cpu|cuda`` and by the image's ``TORCH`` build argument.

Markers are evaluated for the running interpreter and platform (Linux, Python 3.11: CI and the images).

    .venv/bin/python docker/lock.py [--no-deps-roots openunmix ...] > requirements.lock
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCAL_LABEL_FREE = {"torch"}  # the build (CPU / CUDA) is chosen at install time, not by the lock

HEADER = """\
# requirements.lock: every package sepcluster and its test extra use, at the versions the tests passed
# with (Linux, Python 3.11). Used as constraints by `make install` and the images (docker/Dockerfile).
# Regenerate with `make lock` (from the current .venv, after `make test` passed); do not edit by hand.
# torch: the version is pinned here; the wheel (CPU or CUDA build) is chosen by `make install TORCH=cpu|cuda`
# and the image's TORCH build argument.
"""


def _installed() -> dict[str, md.Distribution]:
    return {canonicalize_name(d.metadata["Name"]): d for d in md.distributions()}


def _direct_url(dist: md.Distribution) -> dict | None:
    text = dist.read_text("direct_url.json")
    return json.loads(text) if text else None


def closure(roots: list[Requirement], no_deps: list[Requirement], installed: dict) -> dict[str, str]:
    """``{name: version}`` of ``roots`` and everything they pull (extras followed), plus ``no_deps``."""
    seen: dict[str, set[str]] = {}
    stack = [(canonicalize_name(r.name), set(r.extras), "pyproject.toml") for r in roots]
    stack += [(canonicalize_name(r.name), None, "the Makefile (no deps)") for r in no_deps]
    missing = []
    while stack:
        name, extras, via = stack.pop()
        if name not in installed:
            missing.append(f"{name} (wanted by {via})")
            continue
        if extras is None:  # installed without its dependencies
            seen.setdefault(name, set())
            continue
        if name in seen and extras <= seen[name]:
            continue
        seen[name] = seen.get(name, set()) | extras
        for text in installed[name].requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in seen[name] | {""}):
                continue
            stack.append((canonicalize_name(req.name), set(req.extras), name))
    if missing:
        raise SystemExit("not installed (run `make install` first): " + ", ".join(sorted(set(missing))))
    out = {}
    for name in seen:
        dist = installed[name]
        url = _direct_url(dist)
        if url and not url.get("dir_info", {}).get("editable"):
            raise SystemExit(f"{name} is installed from {url.get('url')}, not from a package index: cannot lock it")
        version = dist.version
        if name in LOCAL_LABEL_FREE:
            version = version.split("+", 1)[0]
        out[name] = version
    return out


def project_requirements(pyproject: Path) -> tuple[str, list[Requirement]]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for r in project.get("optional-dependencies", {}).get("test", [])]
    return canonicalize_name(project["name"]), reqs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--no-deps-roots", nargs="*", default=[],
                        help="requirements the Makefile installs with --no-deps (test-only oracles)")
    args = parser.parse_args(argv)
    name, roots = project_requirements(args.pyproject)
    versions = closure(roots, [Requirement(r) for r in args.no_deps_roots], _installed())
    versions.pop(name, None)
    lines = [HEADER]
    for pkg in sorted(versions):
        note = "  # the build: TORCH=cpu|cuda" if pkg in LOCAL_LABEL_FREE else ""
        lines.append(f"{pkg}=={versions[pkg]}{note}\n")
    sys.stdout.write("".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
