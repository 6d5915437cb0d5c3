"""The shape of the house, checked from the source: import layers, no circles, small functions.

- the bottom layer (``audio``, ``audiostream``, ``storage``, ``errors``, ``config``, ``memory``,
  ``compat``, ``datasets``, ``threads``) imports no job package and no ``models``;
- a job package (``stems``, ``generate``, ``train``, ``separate``, ``evaluate``) uses another job
  only through that package's own exports (``from ..generate import MixtureRenderer``), never its
  modules (``from ..generate.mixing import ...``);
- the modules of ``sepcluster`` import each other without a circle;
- no module over :data:`MAX_MODULE_LINES` lines and no function in a job package over
  :data:`MAX_FUNCTION_LINES` lines.

Imports inside functions count too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sepcluster"
JOBS = ("stems", "generate", "train", "separate", "evaluate")
BOTTOM = ("audio", "audiostream", "storage", "errors", "config", "memory", "compat", "datasets", "threads")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """The ``sepcluster`` modules ``name`` imports (absolute names, any nesting level)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("sepcluster"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("sepcluster"):
                continue
            found.add(mod)
            for alias in node.names:  # ``from . import storage`` imports a module
                found.add(f"{mod}.{alias.name}")
    modules = _modules()
    return {m for m in found if m in modules and m != name}


def _job_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in JOBS else None


def test_bottom_layer_imports_no_job_and_no_models():
    for name, path in _modules().items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in BOTTOM:
            continue
        bad = [m for m in _imports(name, path) if _job_of(m) or m.split(".")[1:2] == ["models"]
               or m in ("sepcluster.pipeline", "sepcluster.cli", "sepcluster.tracking")]
        assert not bad, f"{name} (bottom layer) imports {bad}"


def test_jobs_use_other_jobs_only_through_their_package_exports():
    for name, path in _modules().items():
        job = _job_of(name)
        if job is None:
            continue
        for mod in _imports(name, path):
            other = _job_of(mod)
            if other and other != job:
                assert mod == f"sepcluster.{other}", f"{name} imports {mod}: use sepcluster.{other}'s exports"


def test_no_import_circles():
    graph = {name: _imports(name, path) for name, path in _modules().items()}
    # a package's __init__ re-exporting its modules is not a dependency of those modules on it
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_modules_and_job_functions_stay_small():
    too_long = []
    for name, path in _modules().items():
        lines = path.read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        if _job_of(name) is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long, too_long
